//! The embedded engine's schema: the versioned migrations and `migrate`, which
//! applies them, and how stored states and channels read back.

use rusqlite::Connection;

use super::connection::{unavailable, write_transaction};
use crate::domain::{Channel, MessageState};
use crate::queue::{Error, Result};

/// Versioned migrations, applied in order; a store's `user_version` is how many it
/// has had. Never edit one that has shipped: add one.
pub(super) const MIGRATIONS: &[&str] = &["
CREATE TABLE batches (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    channel         TEXT NOT NULL,
    source          TEXT NOT NULL,
    control         TEXT NOT NULL DEFAULT 'active',
    priority        INTEGER NOT NULL,
    send_at         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT,
    report          TEXT NOT NULL,
    -- The batch's messages have ids first_row .. first_row + size - 1, in index
    -- order, so a batch needs no index of its own on messages.
    first_row       INTEGER NOT NULL,
    size            INTEGER NOT NULL
);
CREATE TABLE messages (
    id                  INTEGER PRIMARY KEY,
    batch               INTEGER NOT NULL REFERENCES batches(seq),
    provider            TEXT NOT NULL,
    state               TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    available_at        INTEGER NOT NULL,
    lease               INTEGER,
    lease_until         INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0,
    to_addr             TEXT NOT NULL,
    ref                 TEXT,
    subject             TEXT,
    body                TEXT NOT NULL,
    last_error          TEXT,
    provider_message_id TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    sent_at             INTEGER
);
CREATE INDEX messages_ready ON messages(provider, priority DESC, available_at, id) WHERE state = 'pending';
CREATE INDEX messages_leased ON messages(lease_until) WHERE state = 'sending';
", "
-- One token bucket per rate-limited provider, shared by every process on the store.
CREATE TABLE rate_buckets (
    provider TEXT PRIMARY KEY,
    tokens   REAL NOT NULL,
    at       INTEGER NOT NULL
);
-- When each recipient was claimed for, per provider with per-recipient caps; rows
-- older than the provider's longest cap window are pruned by its claims.
CREATE TABLE recipient_sends (
    provider TEXT NOT NULL,
    to_addr  TEXT NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX recipient_sends_to ON recipient_sends(provider, to_addr, at);
CREATE INDEX recipient_sends_at ON recipient_sends(provider, at);
", "
-- Message templates by the id their user chose. `providers` is a JSON object:
-- provider name → that provider's template code and sign name.
CREATE TABLE templates (
    id         TEXT PRIMARY KEY,
    channel    TEXT NOT NULL,
    subject    TEXT,
    body       TEXT NOT NULL,
    providers  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
-- Recipients that must not be messaged, per channel. Every submitted batch looks
-- its recipients up here by the primary key.
CREATE TABLE suppressions (
    channel    TEXT NOT NULL,
    address    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel, address)
) WITHOUT ROWID;
", "
-- Fingerprints of (recipient, content) pairs accepted recently, per channel, with
-- when. A batch looks its recipients up by the primary key; the (channel, at) index
-- tells whether a channel has any recent ones and finds the old ones to forget.
CREATE TABLE send_fingerprints (
    channel     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (channel, fingerprint)
) WITHOUT ROWID;
CREATE INDEX send_fingerprints_at ON send_fingerprints(channel, at);
", "
-- What per-segment rate limits count, and what providers that render a stored
-- template on their side need: its id and the recipient's variables (JSON).
ALTER TABLE messages ADD COLUMN segments INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN template TEXT;
ALTER TABLE messages ADD COLUMN vars TEXT;
-- The batches being stored in chunks: every accept finds the ids they reserve, and
-- the sweep the abandoned ones, without reading every batch.
CREATE INDEX batches_staging ON batches(first_row) WHERE control = 'staging';
", "
-- Delivery receipts: the code and time of the receipt that set a message's
-- delivered / undelivered, receipts looking messages up by the provider's id, and
-- the receipts that came before their send was recorded (kept a day at most).
ALTER TABLE messages ADD COLUMN receipt_code TEXT;
ALTER TABLE messages ADD COLUMN receipt_at INTEGER;
CREATE INDEX messages_provider_id ON messages(provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE TABLE early_receipts (
    provider            TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    to_addr             TEXT,
    delivered           INTEGER NOT NULL,
    code                TEXT,
    at                  INTEGER,
    received_at         INTEGER NOT NULL
);
CREATE INDEX early_receipts_id ON early_receipts(provider, provider_message_id);
CREATE INDEX early_receipts_received ON early_receipts(received_at);
-- Unknown outcomes: when the first attempt whose outcome is unknown was made
-- (cleared once the message is sent), and the unknown messages by when they are
-- due again.
ALTER TABLE messages ADD COLUMN unknown_since INTEGER;
CREATE INDEX messages_unknown ON messages(available_at) WHERE state = 'unknown';
", "
-- Migration 7: messages an ingest source stored as batches whose acknowledgement
-- its broker may not have taken, by source and body hash.
CREATE TABLE ingest_unacked (
    source TEXT NOT NULL,
    hash   TEXT NOT NULL,
    key    TEXT NOT NULL,
    at     INTEGER NOT NULL,
    PRIMARY KEY (source, hash, key)
);
CREATE INDEX ingest_unacked_at ON ingest_unacked(at);
", "
-- Migration 8: the template a batch's messages are rendered from when they are
-- claimed (JSON: body, subject). Its messages keep their variables in `vars` and
-- an empty `body`; batches without it keep each rendered body.
ALTER TABLE batches ADD COLUMN template_source TEXT;
", "
-- Migration 9: deadlines. A batch's deadline, and each message's copy of it (a
-- retry gives the batch a fresh one); the index finds the unsent messages whose
-- deadline has passed, by state, for claims and the expiry sweep.
ALTER TABLE batches ADD COLUMN expires_at INTEGER;
ALTER TABLE messages ADD COLUMN expires_at INTEGER;
CREATE INDEX messages_expiring ON messages(state, expires_at) WHERE expires_at IS NOT NULL;
", "
-- Migration 10: the outbox. A batch's own callback URL and its subscriptions (JSON:
-- endpoint and kinds wanted; NULL when none, so the index of subscribed batches
-- tells every change at once whether it has anything to record). A delivery is one
-- event for one endpoint, unique on (endpoint, event_id): recorded in the change's
-- transaction, claimed under a lease (`due_at` is then the lease's end), posted or
-- failed. Message events name their message and batch; a reply keeps its payload.
ALTER TABLE batches ADD COLUMN callback_url TEXT;
ALTER TABLE batches ADD COLUMN subscriptions TEXT;
CREATE INDEX batches_subscribed ON batches(seq) WHERE subscriptions IS NOT NULL;
CREATE TABLE deliveries (
    seq        INTEGER PRIMARY KEY,
    endpoint   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    batch      INTEGER,
    message    INTEGER,
    at         INTEGER NOT NULL,
    code       TEXT,
    payload    TEXT,
    state      TEXT NOT NULL DEFAULT 'pending',
    attempts   INTEGER NOT NULL DEFAULT 0,
    first_at   INTEGER NOT NULL,
    due_at     INTEGER,
    lease      INTEGER,
    last_error TEXT,
    posted_at  INTEGER,
    UNIQUE (endpoint, event_id)
);
CREATE INDEX deliveries_due ON deliveries(due_at, seq) WHERE state = 'pending';
CREATE INDEX deliveries_endpoint ON deliveries(endpoint, seq);
CREATE INDEX deliveries_failed ON deliveries(endpoint) WHERE state = 'failed';
CREATE INDEX deliveries_posted ON deliveries(posted_at) WHERE state = 'posted';
", "
-- Migration 11: replies, each once by its id (a hash of its provider and the
-- provider's key for it), with the message it answers; the index of sent messages
-- by provider and recipient finds that message.
CREATE TABLE replies (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    provider    TEXT NOT NULL,
    from_addr   TEXT NOT NULL,
    to_addr     TEXT,
    body        TEXT NOT NULL,
    sent_at     INTEGER,
    received_at INTEGER NOT NULL,
    keyword     TEXT,
    batch_id    TEXT,
    message_id  TEXT,
    ref         TEXT
);
CREATE INDEX replies_from ON replies(from_addr, seq);
CREATE INDEX messages_sent_to ON messages(provider, to_addr, sent_at) WHERE sent_at IS NOT NULL;
", "
-- Migration 12: a batch's sending window (JSON: window, timezone), which its
-- messages are held to at claim.
ALTER TABLE batches ADD COLUMN send_window TEXT;
", "
-- Migration 13: idle claimers. The pending messages by provider and due time, so
-- that a claimer finds when its provider's next message is due with one index
-- read, however many wait (the ready index orders by priority first).
CREATE INDEX messages_due ON messages(provider, available_at) WHERE state = 'pending';
", "
-- Migration 14: spend caps and daily budgets, in millionths of the currency. A
-- batch's cap and what it has spent; each message's charge, with the provider and
-- local day it counts on; each provider's spend per local day. A charge cleared
-- (the attempt never reached the provider) is taken off both sums by the trigger.
ALTER TABLE batches ADD COLUMN max_cost INTEGER;
ALTER TABLE batches ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN charge INTEGER;
ALTER TABLE messages ADD COLUMN charge_provider TEXT;
ALTER TABLE messages ADD COLUMN charge_day TEXT;
CREATE TABLE provider_spend (
    provider TEXT NOT NULL,
    day      TEXT NOT NULL,
    amount   INTEGER NOT NULL,
    PRIMARY KEY (provider, day)
);
CREATE TRIGGER messages_refund AFTER UPDATE OF charge ON messages
WHEN OLD.charge IS NOT NULL AND NEW.charge IS NULL
BEGIN
    UPDATE batches SET spent = spent - OLD.charge WHERE seq = OLD.batch;
    UPDATE provider_spend SET amount = amount - OLD.charge
    WHERE provider = OLD.charge_provider AND day = OLD.charge_day;
END;
", "
-- Migration 15: finding and erasing a person. Messages by recipient (the address
-- without a mailbox's display name: `search::TO_KEY`, written the same here) and by
-- ref, newest row last; the stored payloads of reply events by their event id; the
-- salt that erased addresses are hashed with, made once per store.
CREATE INDEX messages_to ON messages((CASE WHEN substr(to_addr, -1) = '>' \
     THEN rtrim(substr(to_addr, length(rtrim(to_addr, replace(to_addr, '<', ''))) + 1), '>') \
     ELSE to_addr END), id);
CREATE INDEX messages_ref ON messages(ref, id) WHERE ref IS NOT NULL;
CREATE INDEX deliveries_reply ON deliveries(event_id) WHERE kind = 'reply';
CREATE TABLE erase_salt (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    salt BLOB NOT NULL
);
", "
-- Migration 16: retention and the audit trail. Replies and webhook deliveries by
-- age, which the pruner removes oldest first; the audit trail in order, by age
-- for its own pruning, and by actor and action for its filters.
CREATE INDEX replies_received ON replies(received_at);
CREATE INDEX deliveries_first ON deliveries(first_at);
CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_actor ON audit(actor, seq);
CREATE INDEX audit_action ON audit(action, seq);
", "
-- Migration 17: the provider's ids of a message's other parts (an SMPP long
-- message's segments after the first), which its delivery receipts may name as
-- they name `provider_message_id`; by message, for pruning.
CREATE TABLE message_segments (
    provider   TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    message    INTEGER NOT NULL,
    PRIMARY KEY (provider, segment_id, message)
) WITHOUT ROWID;
CREATE INDEX message_segments_message ON message_segments(message);
"];

/// The state a message returns to when it goes back to the queue: its batch's
/// pause or cancel wins over `pending`.
pub(super) const REQUEUED_STATE: &str =
    "CASE (SELECT control FROM batches WHERE seq = messages.batch)
    WHEN 'paused' THEN 'paused' WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END";

/// Applies the migrations the store has not had yet; a store newer than this
/// herald is refused as [`Error::Corrupt`].
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    // Under the write lock, so processes starting together migrate once.
    let tx = write_transaction(conn)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    let latest = MIGRATIONS.len() as i64;
    if version > latest {
        return Err(Error::Corrupt(format!(
            "the store has schema version {version}, this herald knows up to {latest}: upgrade herald"
        )));
    }
    for (applied, migration) in (version.max(0)..).zip(&MIGRATIONS[version.max(0) as usize..]) {
        tx.execute_batch(&format!(
            "{migration} PRAGMA user_version = {};",
            applied + 1
        ))
        .map_err(unavailable)?;
    }
    tx.commit().map_err(unavailable)
}

/// A stored channel; an unknown one means a corrupt store.
pub(super) fn parse_channel(s: String) -> Result<Channel> {
    s.parse().map_err(Error::Corrupt)
}

/// A stored message state; an unknown one means a corrupt store.
pub(super) fn parse_state(s: &str) -> Result<MessageState> {
    MessageState::parse(s).ok_or_else(|| Error::Corrupt(format!("unknown message state `{s}`")))
}
