-- Herald queue core, SQLite. Instants are INTEGER milliseconds since the
-- Unix epoch; ids are ULID text (sorts like the ULID).

CREATE TABLE messages (
    id              TEXT    PRIMARY KEY NOT NULL,
    channel         TEXT    NOT NULL CHECK (channel IN ('email', 'sms', 'chat', 'push', 'webhook')),
    transport       TEXT    NOT NULL,
    category        TEXT,
    status          TEXT    NOT NULL CHECK (status IN ('queued', 'processing', 'sent', 'dead', 'cancelled')),
    priority        INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 9),
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    idempotency_key TEXT    UNIQUE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
    created_at      INTEGER NOT NULL,
    available_at    INTEGER NOT NULL,
    -- available_at moved earlier by priority * aging: the claim order.
    effective_at    INTEGER NOT NULL,
    lease_until     INTEGER,
    claim_token     TEXT,
    sent_at         INTEGER,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL
);

-- Claiming: the due messages of one transport in claim order.
CREATE INDEX messages_claim ON messages (transport, effective_at, id) WHERE status = 'queued';
-- Lease recovery.
CREATE INDEX messages_lease ON messages (lease_until) WHERE status = 'processing';
-- Listings by status / transport / fingerprint, newest first; depth counts.
CREATE INDEX messages_status ON messages (status, id);
CREATE INDEX messages_transport ON messages (transport, id);
CREATE INDEX messages_fingerprint ON messages (fingerprint, id);
-- Dead-letter purge by age.
CREATE INDEX messages_dead_since ON messages (updated_at) WHERE status = 'dead';

CREATE TABLE message_events (
    id          INTEGER PRIMARY KEY,
    message_id  TEXT    NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    transport   TEXT,
    duration_ms INTEGER,
    error       TEXT,
    detail      TEXT
);
CREATE INDEX message_events_message ON message_events (message_id, id);

CREATE TABLE transport_state (
    name       TEXT    PRIMARY KEY NOT NULL,
    paused     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
