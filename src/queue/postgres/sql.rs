//! The SQL of the PostgreSQL engine: every statement, written once with `{s}` for
//! the schema beside the code that runs it, and filled in here at open with the
//! fragments statements share.

use super::{
    accept, audit, claim, due, erase, expiry, lease, ledger, limit, outbox, prune, receipts,
    record, records, replies, search, settle, spend, staging,
};

/// The state a message `m` returns to when it goes back to the queue: its batch's
/// pause or cancel wins over `pending`. The key-share lock makes a concurrent
/// control (which locks the batch `FOR UPDATE` first) either wait for us or be seen
/// by us, so a message never goes back to `pending` in a batch just paused.
const REQUEUED_STATE: &str = "(SELECT CASE b.control WHEN 'paused' THEN 'paused'
        WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END
    FROM {s}.batches b WHERE b.seq = m.id >> 32 FOR KEY SHARE)";

/// The SQL of every statement, with the schema filled in.
pub(super) struct Sql {
    pub(super) accept: String,
    pub(super) replay: String,
    pub(super) requeue: String,
    pub(super) requeue_unsubscribed: String,
    pub(super) subscribed_due: String,
    pub(super) expire_pending_unsubscribed: String,
    pub(super) record_events: String,
    pub(super) lock_finishing: String,
    pub(super) record_finished: String,
    pub(super) record_deliveries: String,
    pub(super) claim_deliveries: String,
    pub(super) settle_delivery: String,
    pub(super) deliveries: String,
    pub(super) deliveries_of: String,
    pub(super) replay_event: String,
    pub(super) replay_failed: String,
    pub(super) delivery_counts: String,
    pub(super) prune_deliveries: String,
    pub(super) claim: String,
    pub(super) expire_pending: String,
    pub(super) sweep: String,
    pub(super) renew: String,
    pub(super) take_bucket: String,
    pub(super) store_bucket: String,
    pub(super) lock_caps: String,
    pub(super) candidates: String,
    pub(super) recent_sends: String,
    pub(super) defer: String,
    pub(super) record_sends: String,
    pub(super) prune_sends: String,
    pub(super) claim_ids: String,
    pub(super) due_segments: String,
    pub(super) stage_batch: String,
    pub(super) stage_messages: String,
    pub(super) stage_report: String,
    pub(super) settle: String,
    pub(super) record_segments: String,
    pub(super) lock_receipts: String,
    pub(super) lock_receipts_shared: String,
    pub(super) receipt_candidates: String,
    pub(super) apply_receipt: String,
    pub(super) hold_receipt: String,
    pub(super) expire_receipts: String,
    pub(super) held_receipts: String,
    pub(super) forget_receipt: String,
    pub(super) summary: String,
    pub(super) window: String,
    pub(super) batches: String,
    pub(super) pending: String,
    pub(super) next_due: String,
    pub(super) messages: String,
    pub(super) lock_batch: String,
    pub(super) set_control: String,
    pub(super) retry_failed: String,
    pub(super) prune: prune::PruneSql,
    pub(super) audit: audit::AuditSql,
    pub(super) create_template: String,
    pub(super) replace_template: String,
    pub(super) template: String,
    pub(super) templates: String,
    pub(super) templates_after: String,
    pub(super) delete_template: String,
    pub(super) suppress: String,
    pub(super) unsuppress: String,
    pub(super) any_suppressed: String,
    pub(super) suppressed: String,
    pub(super) suppressions: String,
    pub(super) suppressions_after: String,
    pub(super) remember_sends: String,
    pub(super) any_recently_sent: String,
    pub(super) recently_sent: String,
    pub(super) forget_sends: String,
    pub(super) expire_unacked: String,
    pub(super) mark_unacked: String,
    pub(super) unacked: String,
    pub(super) unmark_unacked: String,
    pub(super) replies: replies::ReplySql,
    pub(super) spend: spend::SpendSql,
    pub(super) search: search::SearchSql,
    pub(super) erase: erase::EraseSql,
}

impl Sql {
    pub(super) fn new(schema: &str) -> Sql {
        let quoted = quote_ident(schema);
        let fill = |sql: &str| {
            let sql = record::fill_kinds(
                &sql.replace("{record}", record::RECORD)
                    .replace("{finishing}", record::FINISHING),
            );
            sql.replace("{claimed}", claim::CLAIMED)
                .replace("{subscribed}", claim::SUBSCRIBED)
                .replace("{delivery}", outbox::DELIVERY)
                .replace("{replayed}", outbox::REPLAYED)
                .replace("{requeued}", REQUEUED_STATE)
                .replace("{template}", records::SELECT_TEMPLATE)
                .replace("{clock}", limit::CLOCK)
                .replace("{schema}", &quote_literal(schema))
                .replace("{s}", &quoted)
        };
        Sql {
            accept: fill(accept::ACCEPT),
            replay: fill(accept::REPLAY),
            requeue: fill(&claim::requeue()),
            requeue_unsubscribed: fill(&claim::requeue_unsubscribed()),
            subscribed_due: fill(claim::SUBSCRIBED_DUE),
            expire_pending_unsubscribed: fill(expiry::EXPIRE_PENDING_UNSUBSCRIBED),
            record_events: fill(record::RECORD_EVENTS),
            lock_finishing: fill(record::LOCK_FINISHING),
            record_finished: fill(record::RECORD_FINISHED),
            record_deliveries: fill(record::RECORD_DELIVERIES),
            claim_deliveries: fill(outbox::CLAIM),
            settle_delivery: fill(outbox::SETTLE),
            deliveries: fill(outbox::LIST),
            deliveries_of: fill(outbox::LIST_OF),
            replay_event: fill(outbox::REPLAY_EVENT),
            replay_failed: fill(outbox::REPLAY_FAILED),
            delivery_counts: fill(outbox::COUNTS),
            prune_deliveries: fill(outbox::PRUNE),
            claim: fill(claim::CLAIM),
            expire_pending: fill(expiry::EXPIRE_PENDING),
            sweep: fill(expiry::SWEEP),
            renew: fill(lease::RENEW),
            take_bucket: fill(limit::TAKE_BUCKET),
            store_bucket: fill(limit::STORE_BUCKET),
            lock_caps: fill(limit::LOCK_CAPS),
            candidates: fill(limit::CANDIDATES),
            recent_sends: fill(limit::RECENT_SENDS),
            defer: fill(limit::DEFER),
            record_sends: fill(limit::RECORD_SENDS),
            prune_sends: fill(limit::PRUNE_SENDS),
            claim_ids: fill(claim::CLAIM_IDS),
            due_segments: fill(limit::DUE_SEGMENTS),
            stage_batch: fill(staging::STAGE_BATCH),
            stage_messages: fill(staging::STAGE_MESSAGES),
            stage_report: fill(staging::STAGE_REPORT),
            settle: fill(settle::SETTLE),
            record_segments: fill(settle::RECORD_SEGMENTS),
            lock_receipts: fill(receipts::LOCK_RECEIPTS),
            lock_receipts_shared: fill(receipts::LOCK_RECEIPTS_SHARED),
            receipt_candidates: fill(receipts::RECEIPT_CANDIDATES),
            apply_receipt: fill(receipts::APPLY_RECEIPT),
            hold_receipt: fill(receipts::HOLD_RECEIPT),
            expire_receipts: fill(receipts::EXPIRE_RECEIPTS),
            held_receipts: fill(receipts::HELD_RECEIPTS),
            forget_receipt: fill(receipts::FORGET_RECEIPT),
            summary: fill(ledger::SUMMARY),
            window: fill(ledger::WINDOW),
            batches: fill(ledger::BATCHES),
            pending: fill(ledger::PENDING),
            next_due: fill(due::NEXT_DUE),
            messages: fill(ledger::MESSAGES),
            lock_batch: fill(ledger::LOCK_BATCH),
            set_control: fill(ledger::SET_CONTROL),
            retry_failed: fill(ledger::RETRY_FAILED),
            prune: prune::PruneSql::new(&fill),
            audit: audit::AuditSql::new(&fill),
            create_template: fill(records::CREATE_TEMPLATE),
            replace_template: fill(records::REPLACE_TEMPLATE),
            template: fill(records::TEMPLATE),
            templates: fill(records::TEMPLATES),
            templates_after: fill(records::TEMPLATES_AFTER),
            delete_template: fill(records::DELETE_TEMPLATE),
            suppress: fill(records::SUPPRESS),
            unsuppress: fill(records::UNSUPPRESS),
            any_suppressed: fill(records::ANY_SUPPRESSED),
            suppressed: fill(records::SUPPRESSED),
            suppressions: fill(records::SUPPRESSIONS),
            suppressions_after: fill(records::SUPPRESSIONS_AFTER),
            remember_sends: fill(records::REMEMBER_SENDS),
            any_recently_sent: fill(records::ANY_RECENTLY_SENT),
            recently_sent: fill(records::RECENTLY_SENT),
            forget_sends: fill(records::FORGET_SENDS),
            expire_unacked: fill(records::EXPIRE_UNACKED),
            mark_unacked: fill(records::MARK_UNACKED),
            unacked: fill(records::UNACKED),
            unmark_unacked: fill(records::UNMARK_UNACKED),
            replies: replies::ReplySql::new(&fill),
            spend: spend::SpendSql::new(&fill),
            search: search::SearchSql::new(&fill),
            erase: erase::EraseSql::new(&fill),
        }
    }
}

/// `text` as an SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `name` as an SQL identifier, case preserved.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
