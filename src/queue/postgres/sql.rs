//! The SQL of the PostgreSQL engine: the versioned schema migrations and every
//! statement, written once with `{s}` for the schema and filled in at open.

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
"];

/// The server's clock in ms: rate buckets are counted on one clock, whichever
/// machine claims.
const CLOCK: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Locks provider `$1`'s bucket until the transaction ends (creating it full, with
/// `$2` tokens, if it is new) and returns it with the server's clock.
const TAKE_BUCKET: &str = "
INSERT INTO {s}.rate_buckets AS r (provider, tokens, at) VALUES ($1, $2, {clock})
ON CONFLICT (provider) DO UPDATE SET provider = r.provider
RETURNING r.tokens, r.at, {clock}";

const STORE_BUCKET: &str = "UPDATE {s}.rate_buckets SET tokens = $2, at = $3 WHERE provider = $1";

/// The state a message `m` returns to when it goes back to the queue: its batch's
/// pause or cancel wins over `pending`. The key-share lock makes a concurrent
/// control (which locks the batch `FOR UPDATE` first) either wait for us or be seen
/// by us, so a message never goes back to `pending` in a batch just paused.
const REQUEUED_STATE: &str = "(SELECT CASE b.control WHEN 'paused' THEN 'paused'
        WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END
    FROM {s}.batches b WHERE b.seq = m.id >> 32 FOR KEY SHARE)";

/// One statement: the batch row (unless its idempotency key is taken) and all its
/// messages. A taken key inserts nothing and returns no row.
const ACCEPT: &str = "
WITH batch AS (
    INSERT INTO {s}.batches (id, channel, source, priority, send_at, created_at, idempotency_key,
                             request_hash, report, template)
    VALUES ($1, $2, $3, $4::integer, $5::bigint, $6::bigint, $7, $8, $9, $18)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING seq
), inserted AS (
    INSERT INTO {s}.messages (id, provider, state, priority, available_at, to_addr, ref, subject, body,
                              segments, vars, created_at, updated_at)
    SELECT (batch.seq << 32) | m.idx, m.provider, 'pending', $4, $5, m.to_addr, m.ref, m.subject, m.body,
           m.segments, m.vars, $6, $6
    FROM batch, UNNEST($10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                       $16::integer[], $17::text[])
         AS m(idx, provider, to_addr, ref, subject, body, segments, vars)
)
SELECT seq FROM batch";

/// The batch row of a batch stored in chunks (in one transaction of its own
/// connection); its report is set at the end by [`STAGE_REPORT`].
const STAGE_BATCH: &str = "
INSERT INTO {s}.batches (id, channel, source, priority, send_at, created_at, idempotency_key,
                         request_hash, report, template)
VALUES ($1, $2, $3, $4::integer, $5::bigint, $6::bigint, $7, $8, '{}', $9)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING seq";

/// One chunk of a batch being stored in chunks.
const STAGE_MESSAGES: &str = "
INSERT INTO {s}.messages (id, provider, state, priority, available_at, to_addr, ref, subject, body,
                          segments, vars, created_at, updated_at)
SELECT ($1::bigint << 32) | m.idx, m.provider, 'pending', $2::integer, $3::bigint, m.to_addr, m.ref,
       m.subject, m.body, m.segments, m.vars, $4::bigint, $4::bigint
FROM UNNEST($5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
            $11::integer[], $12::text[])
     AS m(idx, provider, to_addr, ref, subject, body, segments, vars)";

const STAGE_REPORT: &str = "UPDATE {s}.batches SET report = $2 WHERE seq = $1";

const REPLAY: &str = "SELECT id, request_hash, report FROM {s}.batches WHERE idempotency_key = $1";

/// Expired leases, and unknown outcomes whose time has come, back to the queue.
/// `SKIP LOCKED`: a row being settled right now is left to its settlement, and
/// concurrent claimers never queue up behind each other. (`= ANY(ARRAY(…))` here
/// and in [`CLAIM`] keeps the plan an index lookup by id whatever the row estimates
/// of a generic plan.)
const REQUEUE: &str = "
UPDATE {s}.messages m SET state = {requeued}, lease = NULL, lease_until = NULL, updated_at = $1
WHERE m.id = ANY(ARRAY(
    SELECT id FROM {s}.messages
    WHERE lease_until <= $1 AND state = 'sending'
    LIMIT 1000
    FOR UPDATE SKIP LOCKED) || ARRAY(
    SELECT id FROM {s}.messages
    WHERE state = 'unknown' AND available_at <= $1
    LIMIT 1000
    FOR UPDATE SKIP LOCKED))";

/// Leases up to `$3` due messages of provider `$1`. The `LIMIT 1` keeps the batch
/// lookup a per-row index probe rather than a hash join over all batches.
const CLAIM: &str = "
WITH claimed AS (
    UPDATE {s}.messages m SET state = 'sending', lease = $4, lease_until = $5, updated_at = $2
    WHERE m.id = ANY(ARRAY(
        SELECT id FROM {s}.messages
        WHERE state = 'pending' AND provider = $1 AND available_at <= $2
        ORDER BY priority DESC, available_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED))
    RETURNING m.id, m.priority, m.available_at, m.to_addr, m.ref, m.subject, m.body, m.attempts,
              m.segments, m.vars, m.unknown_since
)
SELECT c.id, c.priority, c.available_at, c.to_addr, c.ref, c.subject, c.body, c.attempts, b.id, b.channel,
       c.segments, b.template, c.vars, c.unknown_since
FROM claimed c
CROSS JOIN LATERAL (SELECT id, channel, template FROM {s}.batches WHERE seq = c.id >> 32 LIMIT 1) b";

/// The segments of up to `$3` due messages of provider `$1`, in due order.
const DUE_SEGMENTS: &str = "
SELECT segments FROM {s}.messages
WHERE state = 'pending' AND provider = $1 AND available_at <= $2
ORDER BY priority DESC, available_at, id
LIMIT $3";

/// Makes capped claims for provider `$1` take turns until the transaction ends.
const LOCK_CAPS: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended({schema} || ':recipient caps:' || $1, 0))";

/// Up to `$3` due messages of provider `$1`, in due order, locked for this claim.
const CANDIDATES: &str = "
SELECT id, to_addr FROM {s}.messages
WHERE state = 'pending' AND provider = $1 AND available_at <= $2
ORDER BY priority DESC, available_at, id
LIMIT $3
FOR UPDATE SKIP LOCKED";

const RECENT_SENDS: &str = "
SELECT to_addr, at FROM {s}.recipient_sends
WHERE provider = $1 AND at > $2 AND to_addr = ANY($3::text[])";

const DEFER: &str = "
UPDATE {s}.messages m SET available_at = d.at, updated_at = $3
FROM UNNEST($1::bigint[], $2::bigint[]) AS d(id, at)
WHERE m.id = d.id";

const RECORD_SENDS: &str = "
INSERT INTO {s}.recipient_sends (provider, to_addr, at) SELECT $1, t, $2 FROM UNNEST($3::text[]) AS t";

const PRUNE_SENDS: &str = "
DELETE FROM {s}.recipient_sends WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {s}.recipient_sends WHERE provider = $1 AND at <= $2 LIMIT 1000))";

/// Leases the messages `$1` (locked by [`CANDIDATES`] in this transaction).
const CLAIM_IDS: &str = "
WITH claimed AS (
    UPDATE {s}.messages m SET state = 'sending', lease = $2, lease_until = $3, updated_at = $4
    WHERE m.id = ANY($1::bigint[]) AND m.state = 'pending'
    RETURNING m.id, m.priority, m.available_at, m.to_addr, m.ref, m.subject, m.body, m.attempts,
              m.segments, m.vars, m.unknown_since
)
SELECT c.id, c.priority, c.available_at, c.to_addr, c.ref, c.subject, c.body, c.attempts, b.id, b.channel,
       c.segments, b.template, c.vars, c.unknown_since
FROM claimed c
CROSS JOIN LATERAL (SELECT id, channel, template FROM {s}.batches WHERE seq = c.id >> 32 LIMIT 1) b";

/// Settles leased messages (`confirmed` is `sent` without an attempt) and returns the
/// provider and id of each message now sent with one, for held receipts. A message
/// sent by another provider than its own (`sent_by`, failover) records that one,
/// which `RETURNING` then names.
const SETTLE: &str = "
UPDATE {s}.messages m SET
    state = CASE s.kind WHEN 'sent' THEN 'sent' WHEN 'confirmed' THEN 'sent' WHEN 'failed' THEN 'failed'
        WHEN 'unknown' THEN 'unknown' ELSE {requeued} END,
    attempts = m.attempts + CASE s.kind WHEN 'release' THEN 0 WHEN 'confirmed' THEN 0 ELSE 1 END,
    available_at = COALESCE(s.at, m.available_at),
    last_error = CASE WHEN s.kind IN ('sent', 'confirmed') THEN NULL ELSE COALESCE(s.error, m.last_error) END,
    provider_message_id = CASE WHEN s.kind IN ('sent', 'confirmed') THEN s.provider_message_id
        ELSE m.provider_message_id END,
    sent_at = CASE WHEN s.kind IN ('sent', 'confirmed') THEN $7 ELSE m.sent_at END,
    unknown_since = CASE WHEN s.kind IN ('sent', 'confirmed') THEN NULL
        WHEN s.kind = 'unknown' THEN COALESCE(m.unknown_since, $7) ELSE m.unknown_since END,
    provider = CASE WHEN s.kind IN ('sent', 'confirmed') THEN COALESCE(s.sent_by, m.provider)
        ELSE m.provider END,
    lease = NULL, lease_until = NULL, updated_at = $7
FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $8::text[])
     AS s(id, token, kind, at, error, provider_message_id, sent_by)
WHERE m.id = s.id AND m.lease = s.token AND m.state = 'sending'
RETURNING CASE WHEN s.kind IN ('sent', 'confirmed') THEN m.provider END, s.provider_message_id";

/// Receipts and settlements that record provider ids take turns on this lock (the
/// receipts alone, settlements shared), so that a receipt that finds no message is
/// held before a settlement looks for held receipts, or sees its id.
const LOCK_RECEIPTS: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended({schema} || ':receipts', 0))";
const LOCK_RECEIPTS_SHARED: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtextextended({schema} || ':receipts', 0))";

/// The messages of provider `$1` with the provider id `$2`, with their batch's channel.
const RECEIPT_CANDIDATES: &str = "
SELECT m.id, m.state, m.to_addr, b.channel FROM {s}.messages m
CROSS JOIN LATERAL (SELECT channel FROM {s}.batches WHERE seq = m.id >> 32 LIMIT 1) b
WHERE m.provider = $1 AND m.provider_message_id = $2";

const APPLY_RECEIPT: &str = "
UPDATE {s}.messages SET state = $2, receipt_code = $3, receipt_at = $4, updated_at = $5
WHERE id = $1 AND state = $6";

const HOLD_RECEIPT: &str = "
INSERT INTO {s}.early_receipts (provider, provider_message_id, to_addr, delivered, code, at, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Held receipts past their time (`$1`), and all but the newest `$2`.
const EXPIRE_RECEIPTS: &str = "
DELETE FROM {s}.early_receipts WHERE received_at < $1 OR id = ANY(ARRAY(
    SELECT id FROM {s}.early_receipts ORDER BY received_at DESC OFFSET $2))";

/// The held receipts of the (provider, id) pairs `$1`, `$2`, oldest first.
const HELD_RECEIPTS: &str = "
SELECT e.id, e.provider, e.provider_message_id, e.to_addr, e.delivered, e.code, e.at
FROM {s}.early_receipts e
JOIN UNNEST($1::text[], $2::text[]) AS k(provider, provider_message_id)
  ON e.provider = k.provider AND e.provider_message_id = k.provider_message_id
ORDER BY e.received_at, e.id";

const FORGET_RECEIPT: &str = "DELETE FROM {s}.early_receipts WHERE id = $1";

const SUMMARY: &str = "
SELECT b.channel, b.source, b.control, b.priority, b.created_at, b.send_at, c.state, c.n
FROM {s}.batches b
LEFT JOIN LATERAL (
    SELECT state, COUNT(*) AS n FROM {s}.messages
    WHERE id >= b.seq << 32 AND id < (b.seq + 1) << 32
    GROUP BY state
) c ON true
WHERE b.id = $1";

/// A page of batches, newest first, as the rows of [`SUMMARY`] with the batch id
/// last. Ids are canonical hyphenated UUIDs: every collation orders them as their
/// bytes (digits before letters, hyphens in the same places), so the unique index
/// on `id` serves the order.
const BATCHES: &str = "
SELECT b.channel, b.source, b.control, b.priority, b.created_at, b.send_at, c.state, c.n, b.id
FROM (
    SELECT * FROM {s}.batches WHERE $1::text IS NULL OR id < $1 ORDER BY id DESC LIMIT $2
) b
LEFT JOIN LATERAL (
    SELECT state, COUNT(*) AS n FROM {s}.messages
    WHERE id >= b.seq << 32 AND id < (b.seq + 1) << 32
    GROUP BY state
) c ON true
ORDER BY b.id DESC";

/// Provider `$1`'s pending messages, counted no further than `$2`, from the ready
/// index (which holds exactly the pending ones).
const PENDING: &str = "
SELECT COUNT(*) FROM (
    SELECT 1 FROM {s}.messages WHERE provider = $1 AND state = 'pending' LIMIT $2
) p";

const MESSAGES: &str = "
SELECT m.id, m.to_addr, m.ref, m.state, m.provider, m.attempts, m.last_error, m.provider_message_id,
       m.created_at, m.updated_at, m.sent_at, m.receipt_code, m.receipt_at
FROM {s}.batches b
JOIN {s}.messages m ON m.id >= (b.seq << 32) + $2 AND m.id < (b.seq + 1) << 32
WHERE b.id = $1 AND ($3::text IS NULL OR m.state = $3)
ORDER BY m.id
LIMIT $4";

const LOCK_BATCH: &str = "SELECT seq, control FROM {s}.batches WHERE id = $1 FOR UPDATE";

/// Sets a batch's control and moves its messages in states `$5` to state `$3`.
const SET_CONTROL: &str = "
WITH batch AS (UPDATE {s}.batches SET control = $2 WHERE seq = $1)
UPDATE {s}.messages SET state = $3, updated_at = $4
WHERE id >= $1::bigint << 32 AND id < ($1::bigint + 1) << 32 AND state = ANY($5::text[])";

const RETRY_FAILED: &str = "
UPDATE {s}.messages SET state = $2, attempts = 0, available_at = $3, updated_at = $3
WHERE id >= $1::bigint << 32 AND id < ($1::bigint + 1) << 32 AND state = 'failed'";

/// Removes up to `$2` batches created before `$1` whose messages all finished
/// before `$1`, with their messages. Batches a control holds are left for next time.
const PRUNE: &str = "
WITH doomed AS (
    SELECT b.seq FROM {s}.batches b
    WHERE b.created_at < $1
      AND NOT EXISTS (
          SELECT 1 FROM {s}.messages m
          WHERE m.id >= b.seq << 32 AND m.id < (b.seq + 1) << 32
            AND (m.state IN ('pending', 'sending', 'paused', 'unknown') OR m.updated_at >= $1))
    ORDER BY b.seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), messages AS (
    DELETE FROM {s}.messages m USING doomed d
    WHERE m.id >= d.seq << 32 AND m.id < (d.seq + 1) << 32
    RETURNING 1
), batches AS (
    DELETE FROM {s}.batches b USING doomed d WHERE b.seq = d.seq RETURNING 1
)
SELECT (SELECT COUNT(*) FROM batches), (SELECT COUNT(*) FROM messages)";

/// Both take the template as `$1`…`$5`, the time as `$6`, and return the stored
/// version and creation time, or no row (create: the id is taken; replace: there is
/// no such template).
const CREATE_TEMPLATE: &str = "
INSERT INTO {s}.templates (id, channel, subject, body, providers, version, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, 1, $6, $6)
ON CONFLICT (id) DO NOTHING
RETURNING version, created_at";

const REPLACE_TEMPLATE: &str = "
UPDATE {s}.templates SET channel = $2, subject = $3, body = $4, providers = $5,
    version = version + 1, updated_at = $6
WHERE id = $1
RETURNING version, created_at";

/// What `{template}` stands for in the statements that read templates.
const SELECT_TEMPLATE: &str = "SELECT id, channel, subject, body, providers, version, created_at, updated_at FROM {s}.templates";

const TEMPLATE: &str = "{template} WHERE id = $1";

const TEMPLATES: &str = "{template} ORDER BY id LIMIT $1";

const TEMPLATES_AFTER: &str = "{template} WHERE id > $1 ORDER BY id LIMIT $2";

const DELETE_TEMPLATE: &str = "DELETE FROM {s}.templates WHERE id = $1";

/// Upserts the entries `($1, $2, $3)[i]` (no two alike) and counts the new ones:
/// a row whose `xmax` is 0 was inserted by this statement, not updated. A reason
/// that did not change is not rewritten.
const SUPPRESS: &str = "
WITH upserted AS (
    INSERT INTO {s}.suppressions AS x (channel, address, reason, created_at)
    SELECT e.channel, e.address, e.reason, $4
    FROM UNNEST($1::text[], $2::text[], $3::text[]) AS e(channel, address, reason)
    ON CONFLICT (channel, address) DO UPDATE SET reason = EXCLUDED.reason
        WHERE x.reason <> EXCLUDED.reason
    RETURNING x.xmax = 0 AS new
)
SELECT COUNT(*) FILTER (WHERE new) FROM upserted";

const UNSUPPRESS: &str =
    "DELETE FROM {s}.suppressions WHERE channel = $1 AND address = ANY($2::text[])";

const ANY_SUPPRESSED: &str = "SELECT EXISTS (SELECT 1 FROM {s}.suppressions WHERE channel = $1)";

const SUPPRESSED: &str =
    "SELECT address FROM {s}.suppressions WHERE channel = $1 AND address = ANY($2::text[])";

const SUPPRESSIONS: &str = "
SELECT address, reason, created_at FROM {s}.suppressions
WHERE channel = $1
ORDER BY address LIMIT $2";

const SUPPRESSIONS_AFTER: &str = "
SELECT address, reason, created_at FROM {s}.suppressions
WHERE channel = $1 AND address > $2
ORDER BY address LIMIT $3";

/// Upserts the fingerprints `$2` (no two alike) of channel `$1` at `$3`; one already
/// there keeps the later time, and is not rewritten when that is its own.
const REMEMBER_SENDS: &str = "
INSERT INTO {s}.send_fingerprints AS x (channel, fingerprint, at)
SELECT $1, f, $3 FROM UNNEST($2::text[]) AS f
ON CONFLICT (channel, fingerprint) DO UPDATE SET at = EXCLUDED.at
    WHERE x.at < EXCLUDED.at";

const ANY_RECENTLY_SENT: &str =
    "SELECT EXISTS (SELECT 1 FROM {s}.send_fingerprints WHERE channel = $1 AND at >= $2)";

const RECENTLY_SENT: &str = "
SELECT fingerprint FROM {s}.send_fingerprints
WHERE channel = $1 AND at >= $2 AND fingerprint = ANY($3::text[])";

/// Deletes up to `$3` fingerprints of channel `$1` remembered before `$2`. One
/// upserted meanwhile has a new row version, which the `ctid` no longer matches.
const FORGET_SENDS: &str = "
DELETE FROM {s}.send_fingerprints WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {s}.send_fingerprints WHERE channel = $1 AND at < $2 LIMIT $3))";

/// Deletes up to 100 markers marked before `$1`.
const EXPIRE_UNACKED: &str = "
DELETE FROM {s}.ingest_unacked WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {s}.ingest_unacked WHERE at < $1 LIMIT 100))";

const MARK_UNACKED: &str = "
INSERT INTO {s}.ingest_unacked (source, hash, key, at) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING";

const UNACKED: &str = "
SELECT key FROM {s}.ingest_unacked WHERE source = $1 AND hash = $2 AND at >= $3
ORDER BY at, key LIMIT $4";

const UNMARK_UNACKED: &str =
    "DELETE FROM {s}.ingest_unacked WHERE source = $1 AND hash = $2 AND key = $3";

/// The SQL of every statement, with the schema filled in.
pub(super) struct Sql {
    pub(super) accept: String,
    pub(super) replay: String,
    pub(super) requeue: String,
    pub(super) claim: String,
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
    pub(super) lock_receipts: String,
    pub(super) lock_receipts_shared: String,
    pub(super) receipt_candidates: String,
    pub(super) apply_receipt: String,
    pub(super) hold_receipt: String,
    pub(super) expire_receipts: String,
    pub(super) held_receipts: String,
    pub(super) forget_receipt: String,
    pub(super) summary: String,
    pub(super) batches: String,
    pub(super) pending: String,
    pub(super) messages: String,
    pub(super) lock_batch: String,
    pub(super) set_control: String,
    pub(super) retry_failed: String,
    pub(super) prune: String,
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
}

impl Sql {
    pub(super) fn new(schema: &str) -> Sql {
        let quoted = quote_ident(schema);
        let fill = |sql: &str| {
            sql.replace("{requeued}", REQUEUED_STATE)
                .replace("{template}", SELECT_TEMPLATE)
                .replace("{clock}", CLOCK)
                .replace("{schema}", &quote_literal(schema))
                .replace("{s}", &quoted)
        };
        Sql {
            accept: fill(ACCEPT),
            replay: fill(REPLAY),
            requeue: fill(REQUEUE),
            claim: fill(CLAIM),
            take_bucket: fill(TAKE_BUCKET),
            store_bucket: fill(STORE_BUCKET),
            lock_caps: fill(LOCK_CAPS),
            candidates: fill(CANDIDATES),
            recent_sends: fill(RECENT_SENDS),
            defer: fill(DEFER),
            record_sends: fill(RECORD_SENDS),
            prune_sends: fill(PRUNE_SENDS),
            claim_ids: fill(CLAIM_IDS),
            due_segments: fill(DUE_SEGMENTS),
            stage_batch: fill(STAGE_BATCH),
            stage_messages: fill(STAGE_MESSAGES),
            stage_report: fill(STAGE_REPORT),
            settle: fill(SETTLE),
            lock_receipts: fill(LOCK_RECEIPTS),
            lock_receipts_shared: fill(LOCK_RECEIPTS_SHARED),
            receipt_candidates: fill(RECEIPT_CANDIDATES),
            apply_receipt: fill(APPLY_RECEIPT),
            hold_receipt: fill(HOLD_RECEIPT),
            expire_receipts: fill(EXPIRE_RECEIPTS),
            held_receipts: fill(HELD_RECEIPTS),
            forget_receipt: fill(FORGET_RECEIPT),
            summary: fill(SUMMARY),
            batches: fill(BATCHES),
            pending: fill(PENDING),
            messages: fill(MESSAGES),
            lock_batch: fill(LOCK_BATCH),
            set_control: fill(SET_CONTROL),
            retry_failed: fill(RETRY_FAILED),
            prune: fill(PRUNE),
            create_template: fill(CREATE_TEMPLATE),
            replace_template: fill(REPLACE_TEMPLATE),
            template: fill(TEMPLATE),
            templates: fill(TEMPLATES),
            templates_after: fill(TEMPLATES_AFTER),
            delete_template: fill(DELETE_TEMPLATE),
            suppress: fill(SUPPRESS),
            unsuppress: fill(UNSUPPRESS),
            any_suppressed: fill(ANY_SUPPRESSED),
            suppressed: fill(SUPPRESSED),
            suppressions: fill(SUPPRESSIONS),
            suppressions_after: fill(SUPPRESSIONS_AFTER),
            remember_sends: fill(REMEMBER_SENDS),
            any_recently_sent: fill(ANY_RECENTLY_SENT),
            recently_sent: fill(RECENTLY_SENT),
            forget_sends: fill(FORGET_SENDS),
            expire_unacked: fill(EXPIRE_UNACKED),
            mark_unacked: fill(MARK_UNACKED),
            unacked: fill(UNACKED),
            unmark_unacked: fill(UNMARK_UNACKED),
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
