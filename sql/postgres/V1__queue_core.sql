-- Herald queue core, PostgreSQL. Ids are ULIDs stored as uuid (16 bytes,
-- same order as the ULID text).

CREATE TABLE messages (
    id              uuid        PRIMARY KEY,
    channel         text        NOT NULL CHECK (channel IN ('email', 'sms', 'chat', 'push', 'webhook')),
    transport       text        NOT NULL,
    category        text,
    status          text        NOT NULL CHECK (status IN ('queued', 'processing', 'sent', 'dead', 'cancelled')),
    priority        smallint    NOT NULL CHECK (priority BETWEEN 0 AND 9),
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    fingerprint     text        NOT NULL,
    idempotency_key text        UNIQUE,
    attempts        integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL CHECK (max_attempts >= 1),
    created_at      timestamptz NOT NULL,
    available_at    timestamptz NOT NULL,
    -- available_at moved earlier by priority * aging: the claim order.
    effective_at    timestamptz NOT NULL,
    lease_until     timestamptz,
    claim_token     uuid,
    sent_at         timestamptz,
    last_error      text,
    updated_at      timestamptz NOT NULL
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
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    kind        text        NOT NULL,
    at          timestamptz NOT NULL,
    attempt     integer     NOT NULL,
    transport   text,
    duration_ms bigint,
    error       text,
    detail      jsonb
);
CREATE INDEX message_events_message ON message_events (message_id, id);

CREATE TABLE transport_state (
    name       text        PRIMARY KEY,
    paused     boolean     NOT NULL,
    updated_at timestamptz NOT NULL
);

-- A queue table churns: rows are inserted, updated a few times and left
-- behind. Vacuum and analyze it far more often than the defaults so dead
-- tuples do not pile up and the claim query keeps its ordered index scan.
ALTER TABLE messages SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE message_events SET (autovacuum_analyze_scale_factor = 0.05);
