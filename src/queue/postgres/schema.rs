//! The PostgreSQL store's schema: its versioned migrations and how a store is
//! brought up to date, once, however many processes start at the same time.

use deadpool_postgres::Object;

use super::db;
use super::sql::quote_ident;
use crate::domain::now_ms;
use crate::queue::{Error, Result};

/// Versioned migrations, applied in order; a store's version is how many it has had.
/// `{s}` stands for the quoted schema name. Never edit one that has shipped: add one.
pub(super) const MIGRATIONS: &[&str] = &["
CREATE TABLE {s}.batches (
    -- At most 2^31 - 1, so that `seq << 32` fits a positive BIGINT (see messages.id).
    seq             BIGINT GENERATED ALWAYS AS IDENTITY (MAXVALUE 2147483647) PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    channel         TEXT NOT NULL,
    source          TEXT NOT NULL,
    control         TEXT NOT NULL DEFAULT 'active',
    priority        INTEGER NOT NULL,
    send_at         BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT,
    report          TEXT NOT NULL
);
CREATE INDEX batches_created ON {s}.batches (created_at);
-- A message's id is its batch's seq in the high 32 bits and its index in the low
-- 32 bits: a batch's messages are one primary-key range (no index of their own),
-- the index needs no column, and id order is arrival order.
CREATE TABLE {s}.messages (
    id                  BIGINT PRIMARY KEY,
    provider            TEXT NOT NULL,
    state               TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    available_at        BIGINT NOT NULL,
    lease               BIGINT,
    lease_until         BIGINT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    to_addr             TEXT NOT NULL,
    ref                 TEXT,
    subject             TEXT,
    body                TEXT NOT NULL,
    last_error          TEXT,
    provider_message_id TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    sent_at             BIGINT
);
CREATE INDEX messages_ready ON {s}.messages (provider, priority DESC, available_at, id) WHERE state = 'pending';
-- lease_until is set exactly while a message is sending. The predicate is not
-- `state = 'sending'` so that a settlement's `state = 'sending'` guard cannot lure
-- the planner into scanning this index instead of looking each row up by id.
CREATE INDEX messages_leased ON {s}.messages (lease_until) WHERE lease_until IS NOT NULL;
", "
-- One token bucket per rate-limited provider, shared by every process on the store.
CREATE TABLE {s}.rate_buckets (
    provider TEXT PRIMARY KEY,
    tokens   DOUBLE PRECISION NOT NULL,
    at       BIGINT NOT NULL
);
-- When each recipient was claimed for, per provider with per-recipient caps; rows
-- older than the provider's longest cap window are pruned by its claims.
CREATE TABLE {s}.recipient_sends (
    provider TEXT NOT NULL,
    to_addr  TEXT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX recipient_sends_to ON {s}.recipient_sends (provider, to_addr, at);
CREATE INDEX recipient_sends_at ON {s}.recipient_sends (provider, at);
", "
-- Message templates by the id their user chose. `providers` is a JSON object:
-- provider name → that provider's template code and sign name. Ids, channels and
-- addresses compare as bytes (\"C\"), so pages come in the same order on every engine
-- and whatever the database's collation.
CREATE TABLE {s}.templates (
    id         TEXT COLLATE \"C\" PRIMARY KEY,
    channel    TEXT NOT NULL,
    subject    TEXT,
    body       TEXT NOT NULL,
    providers  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- Recipients that must not be messaged, per channel. Every submitted batch looks
-- its recipients up here by the primary key.
CREATE TABLE {s}.suppressions (
    channel    TEXT COLLATE \"C\" NOT NULL,
    address    TEXT COLLATE \"C\" NOT NULL,
    reason     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (channel, address)
);
", "
-- Fingerprints of (recipient, content) pairs accepted recently, per channel, with
-- when. A batch looks its recipients up by the primary key; the (channel, at) index
-- tells whether a channel has any recent ones and finds the old ones to forget.
CREATE TABLE {s}.send_fingerprints (
    channel     TEXT COLLATE \"C\" NOT NULL,
    fingerprint TEXT COLLATE \"C\" NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (channel, fingerprint)
);
CREATE INDEX send_fingerprints_at ON {s}.send_fingerprints (channel, at);
", "
-- What per-segment rate limits count, and what providers that render a stored
-- template on their side need: the batch's template id and each recipient's
-- variables (JSON).
ALTER TABLE {s}.batches ADD COLUMN template TEXT;
ALTER TABLE {s}.messages ADD COLUMN segments INTEGER NOT NULL DEFAULT 1;
ALTER TABLE {s}.messages ADD COLUMN vars TEXT;
", "
-- Delivery receipts: the code and time of the receipt that set a message's
-- delivered / undelivered, receipts looking messages up by the provider's id, and
-- the receipts that came before their send was recorded (kept a day at most).
ALTER TABLE {s}.messages ADD COLUMN receipt_code TEXT;
ALTER TABLE {s}.messages ADD COLUMN receipt_at BIGINT;
CREATE INDEX messages_provider_id ON {s}.messages (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE TABLE {s}.early_receipts (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider            TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    to_addr             TEXT,
    delivered           BOOLEAN NOT NULL,
    code                TEXT,
    at                  BIGINT,
    received_at         BIGINT NOT NULL
);
CREATE INDEX early_receipts_id ON {s}.early_receipts (provider, provider_message_id);
CREATE INDEX early_receipts_received ON {s}.early_receipts (received_at);
-- Unknown outcomes: when the first attempt whose outcome is unknown was made
-- (cleared once the message is sent), and the unknown messages by when they are
-- due again.
ALTER TABLE {s}.messages ADD COLUMN unknown_since BIGINT;
CREATE INDEX messages_unknown ON {s}.messages (available_at) WHERE state = 'unknown';
", "
-- Migration 7: messages an ingest source stored as batches whose acknowledgement
-- its broker may not have taken, by source and body hash.
CREATE TABLE {s}.ingest_unacked (
    source TEXT NOT NULL,
    hash   TEXT NOT NULL,
    key    TEXT NOT NULL,
    at     BIGINT NOT NULL,
    PRIMARY KEY (source, hash, key)
);
CREATE INDEX ingest_unacked_at ON {s}.ingest_unacked (at);
", "
-- Migration 8: the template a batch's messages are rendered from when they are
-- claimed (JSON: body, subject). Its messages keep their variables in `vars` and
-- an empty `body`; batches without it keep each rendered body.
ALTER TABLE {s}.batches ADD COLUMN template_source TEXT;
", "
-- Migration 9: deadlines. A batch's deadline, and each message's copy of it (a
-- retry gives the batch a fresh one); the index finds the unsent messages whose
-- deadline has passed, by state, for claims and the expiry sweep.
ALTER TABLE {s}.batches ADD COLUMN expires_at BIGINT;
ALTER TABLE {s}.messages ADD COLUMN expires_at BIGINT;
CREATE INDEX messages_expiring ON {s}.messages (state, expires_at) WHERE expires_at IS NOT NULL;
", "
-- Migration 10: the outbox. A batch's own callback URL and its subscriptions (JSON:
-- endpoint and kinds wanted; NULL when none, so the index of subscribed batches
-- tells every change at once whether it has anything to record). A delivery is one
-- event for one endpoint, unique on (endpoint, event_id): recorded in the change's
-- transaction, claimed under a lease (`due_at` is then the lease's end), posted or
-- failed. Message events name their message and batch; a reply keeps its payload.
ALTER TABLE {s}.batches ADD COLUMN callback_url TEXT;
ALTER TABLE {s}.batches ADD COLUMN subscriptions JSONB;
CREATE INDEX batches_subscribed ON {s}.batches (seq) WHERE subscriptions IS NOT NULL;
CREATE TABLE {s}.deliveries (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint   TEXT COLLATE \"C\" NOT NULL,
    event_id   TEXT COLLATE \"C\" NOT NULL,
    kind       TEXT NOT NULL,
    batch      BIGINT,
    message    BIGINT,
    at         BIGINT NOT NULL,
    code       TEXT,
    payload    TEXT,
    state      TEXT NOT NULL DEFAULT 'pending',
    attempts   INTEGER NOT NULL DEFAULT 0,
    first_at   BIGINT NOT NULL,
    due_at     BIGINT,
    lease      BIGINT,
    last_error TEXT,
    posted_at  BIGINT,
    UNIQUE (endpoint, event_id)
);
CREATE INDEX deliveries_due ON {s}.deliveries (due_at, seq) WHERE state = 'pending';
CREATE INDEX deliveries_endpoint ON {s}.deliveries (endpoint, seq);
CREATE INDEX deliveries_failed ON {s}.deliveries (endpoint) WHERE state = 'failed';
CREATE INDEX deliveries_posted ON {s}.deliveries (posted_at) WHERE state = 'posted';
", "
-- Migration 11: replies, each once by its id (a hash of its provider and the
-- provider's key for it), with the message it answers; the index of sent messages
-- by provider and recipient finds that message.
CREATE TABLE {s}.replies (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    provider    TEXT NOT NULL,
    from_addr   TEXT NOT NULL,
    to_addr     TEXT,
    body        TEXT NOT NULL,
    sent_at     BIGINT,
    received_at BIGINT NOT NULL,
    keyword     TEXT,
    batch_id    TEXT,
    message_id  TEXT,
    ref         TEXT
);
CREATE INDEX replies_from ON {s}.replies (from_addr, seq);
CREATE INDEX messages_sent_to ON {s}.messages (provider, to_addr, sent_at) WHERE sent_at IS NOT NULL;
", "
-- Migration 12: a batch's sending window (JSON: window, timezone), which its
-- messages are held to at claim.
ALTER TABLE {s}.batches ADD COLUMN send_window TEXT;
", "
-- Migration 13: idle claimers. The pending messages by provider and due time, so
-- that a claimer finds when its provider's next message is due with one index
-- read, however many wait (the ready index orders by priority first).
CREATE INDEX messages_due ON {s}.messages (provider, available_at) WHERE state = 'pending';
", "
-- Migration 14: spend caps and daily budgets, in millionths of the currency. A
-- batch's cap and what it has spent; each message's charge, with the provider and
-- local day it counts on; each provider's spend per local day. A charge cleared
-- (the attempt never reached the provider) is taken off both sums by the trigger.
ALTER TABLE {s}.batches ADD COLUMN max_cost BIGINT;
ALTER TABLE {s}.batches ADD COLUMN spent BIGINT NOT NULL DEFAULT 0;
ALTER TABLE {s}.messages ADD COLUMN charge BIGINT;
ALTER TABLE {s}.messages ADD COLUMN charge_provider TEXT;
ALTER TABLE {s}.messages ADD COLUMN charge_day TEXT;
CREATE TABLE {s}.provider_spend (
    provider TEXT NOT NULL,
    day      TEXT NOT NULL,
    amount   BIGINT NOT NULL,
    PRIMARY KEY (provider, day)
);
CREATE FUNCTION {s}.messages_refund() RETURNS trigger LANGUAGE plpgsql AS $refund$
BEGIN
    UPDATE {s}.batches SET spent = spent - OLD.charge WHERE seq = OLD.id >> 32;
    UPDATE {s}.provider_spend SET amount = amount - OLD.charge
    WHERE provider = OLD.charge_provider AND day = OLD.charge_day;
    RETURN NULL;
END
$refund$;
CREATE TRIGGER messages_refund AFTER UPDATE OF charge ON {s}.messages
FOR EACH ROW WHEN (OLD.charge IS NOT NULL AND NEW.charge IS NULL)
EXECUTE FUNCTION {s}.messages_refund();
", "
-- Migration 15: finding and erasing a person. Messages by recipient (the address
-- without a mailbox's display name: `search::TO_KEY`, written the same here) and by
-- ref, in id order; the stored payloads of reply events by their event id; the
-- salt that erased addresses are hashed with, made once per store.
CREATE INDEX messages_to ON {s}.messages ((CASE WHEN right(to_addr, 1) = '>' \
    THEN substring(to_addr from '<([^<]*)>$') ELSE to_addr END), id);
CREATE INDEX messages_ref ON {s}.messages (ref, id) WHERE ref IS NOT NULL;
CREATE INDEX deliveries_reply ON {s}.deliveries (event_id) WHERE kind = 'reply';
CREATE TABLE {s}.erase_salt (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    salt BYTEA NOT NULL
);
", "
-- Migration 16: retention and the audit trail. Replies and webhook deliveries by
-- age, which the pruner removes oldest first; the audit trail in order, by age
-- for its own pruning, and by actor and action for its filters.
CREATE INDEX replies_received ON {s}.replies (received_at);
CREATE INDEX deliveries_first ON {s}.deliveries (first_at);
CREATE TABLE {s}.audit (
    seq    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT COLLATE \"C\" NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX audit_at ON {s}.audit (at);
CREATE INDEX audit_actor ON {s}.audit (actor, seq);
CREATE INDEX audit_action ON {s}.audit (action, seq);
", "
-- Migration 17: the provider's ids of a message's other parts (an SMPP long
-- message's segments after the first), which its delivery receipts may name as
-- they name `provider_message_id`; by message, for pruning.
CREATE TABLE {s}.message_segments (
    provider   TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    message    BIGINT NOT NULL,
    PRIMARY KEY (provider, segment_id, message)
);
CREATE INDEX message_segments_message ON {s}.message_segments (message);
"];

pub(super) async fn migrate(client: &mut Object, schema: &str) -> Result<()> {
    let quoted = quote_ident(schema);
    let tx = client.transaction().await.map_err(db)?;
    // Concurrent starts take turns, so the schema is created and migrated once.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(db)?;
    // Only create what is missing: CREATE SCHEMA needs a privilege on the database
    // that a user of an existing schema need not have.
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(db)?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {quoted}"))
            .await
            .map_err(db)?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {quoted}.herald_schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at BIGINT NOT NULL
         )"
    ))
    .await
    .map_err(db)?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {quoted}.herald_schema_version"),
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let latest = i32::try_from(MIGRATIONS.len()).expect("a handful of migrations");
    if current > latest {
        return Err(Error::Corrupt(format!(
            "the PostgreSQL schema `{schema}` has version {current}, this herald knows up to {latest}: upgrade herald"
        )));
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(&sql.replace("{s}", &quoted))
            .await
            .map_err(db)?;
        tx.execute(
            &format!(
                "INSERT INTO {quoted}.herald_schema_version (version, applied_at) VALUES ($1, $2)"
            ),
            &[&version, &now_ms()],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

/// The advisory lock that serializes migrations of one schema (FNV-1a, so every
/// Herald version agrees on it).
fn lock_key(schema: &str) -> i64 {
    let hash = format!("herald schema {schema}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    i64::from_ne_bytes(hash.to_ne_bytes())
}
