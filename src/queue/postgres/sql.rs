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
"];

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
                             request_hash, report)
    VALUES ($1, $2, $3, $4::integer, $5::bigint, $6::bigint, $7, $8, $9)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING seq
), inserted AS (
    INSERT INTO {s}.messages (id, provider, state, priority, available_at, to_addr, ref, subject, body,
                              created_at, updated_at)
    SELECT (batch.seq << 32) | m.idx, m.provider, 'pending', $4, $5, m.to_addr, m.ref, m.subject, m.body,
           $6, $6
    FROM batch, UNNEST($10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
         AS m(idx, provider, to_addr, ref, subject, body)
)
SELECT seq FROM batch";

const REPLAY: &str = "SELECT id, request_hash, report FROM {s}.batches WHERE idempotency_key = $1";

/// Expired leases back to the queue. `SKIP LOCKED`: a row being settled right now is
/// left to its settlement, and concurrent claimers never queue up behind each other.
/// (`= ANY(ARRAY(…))` here and in [`CLAIM`] keeps the plan an index lookup by id
/// whatever the row estimates of a generic plan.)
const REQUEUE: &str = "
UPDATE {s}.messages m SET state = {requeued}, lease = NULL, lease_until = NULL, updated_at = $1
WHERE m.id = ANY(ARRAY(
    SELECT id FROM {s}.messages
    WHERE lease_until <= $1 AND state = 'sending'
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
    RETURNING m.id, m.priority, m.available_at, m.to_addr, m.ref, m.subject, m.body, m.attempts
)
SELECT c.id, c.priority, c.available_at, c.to_addr, c.ref, c.subject, c.body, c.attempts, b.id, b.channel
FROM claimed c
CROSS JOIN LATERAL (SELECT id, channel FROM {s}.batches WHERE seq = c.id >> 32 LIMIT 1) b";

const SETTLE: &str = "
UPDATE {s}.messages m SET
    state = CASE s.kind WHEN 'sent' THEN 'sent' WHEN 'failed' THEN 'failed' ELSE {requeued} END,
    attempts = m.attempts + CASE s.kind WHEN 'release' THEN 0 ELSE 1 END,
    available_at = COALESCE(s.at, m.available_at),
    last_error = CASE s.kind WHEN 'sent' THEN NULL ELSE COALESCE(s.error, m.last_error) END,
    provider_message_id = CASE s.kind WHEN 'sent' THEN s.provider_message_id ELSE m.provider_message_id END,
    sent_at = CASE s.kind WHEN 'sent' THEN $7 ELSE m.sent_at END,
    lease = NULL, lease_until = NULL, updated_at = $7
FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[])
     AS s(id, token, kind, at, error, provider_message_id)
WHERE m.id = s.id AND m.lease = s.token AND m.state = 'sending'";

const SUMMARY: &str = "
SELECT b.channel, b.source, b.control, b.priority, b.created_at, b.send_at, c.state, c.n
FROM {s}.batches b
LEFT JOIN LATERAL (
    SELECT state, COUNT(*) AS n FROM {s}.messages
    WHERE id >= b.seq << 32 AND id < (b.seq + 1) << 32
    GROUP BY state
) c ON true
WHERE b.id = $1";

const MESSAGES: &str = "
SELECT m.id, m.to_addr, m.ref, m.state, m.provider, m.attempts, m.last_error, m.provider_message_id,
       m.created_at, m.updated_at, m.sent_at
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
            AND (m.state IN ('pending', 'sending', 'paused') OR m.updated_at >= $1))
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

/// The SQL of every statement, with the schema filled in.
pub(super) struct Sql {
    pub(super) accept: String,
    pub(super) replay: String,
    pub(super) requeue: String,
    pub(super) claim: String,
    pub(super) settle: String,
    pub(super) summary: String,
    pub(super) messages: String,
    pub(super) lock_batch: String,
    pub(super) set_control: String,
    pub(super) retry_failed: String,
    pub(super) prune: String,
}

impl Sql {
    pub(super) fn new(schema: &str) -> Sql {
        let quoted = quote_ident(schema);
        let fill = |sql: &str| {
            sql.replace("{requeued}", REQUEUED_STATE)
                .replace("{s}", &quoted)
        };
        Sql {
            accept: fill(ACCEPT),
            replay: fill(REPLAY),
            requeue: fill(REQUEUE),
            claim: fill(CLAIM),
            settle: fill(SETTLE),
            summary: fill(SUMMARY),
            messages: fill(MESSAGES),
            lock_batch: fill(LOCK_BATCH),
            set_control: fill(SET_CONTROL),
            retry_failed: fill(RETRY_FAILED),
            prune: fill(PRUNE),
        }
    }
}

/// `name` as an SQL identifier, case preserved.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
