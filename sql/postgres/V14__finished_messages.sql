-- Live and finished messages are kept apart. `messages` keeps only what
-- claims and outcomes work on (queued, scheduled and processing); a
-- message that ends (sent, dead, cancelled) moves, in the statement that
-- ends it, to `finished_messages`, partitioned by the UTC day it finished
-- (`finished_on`), so that retention expires a day by dropping its
-- partition. Day partitions are created ahead by Herald (see
-- `partitions` in the PostgreSQL backend); messages whose retention
-- differs from the default live in `finished_messages_kept`
-- (`finished_on` = 9999-01-01) and are deleted in bounded batches.
-- Nothing here rewrites or scans `messages`: finished messages already
-- stored are moved over by the running engine in bounded batches.
CREATE TABLE finished_messages (
    id              uuid        NOT NULL,
    channel         text        NOT NULL,
    transport       text        NOT NULL,
    category        text,
    status          text        NOT NULL,
    priority        smallint    NOT NULL,
    -- NULL once retention has dropped it (`payload_after_sent_s`).
    payload         json,
    metadata        json        NOT NULL,
    fingerprint     text        NOT NULL,
    idempotency_key text,
    attempts        integer     NOT NULL,
    max_attempts    integer     NOT NULL,
    created_at      timestamptz NOT NULL,
    available_at    timestamptz NOT NULL,
    sent_at         timestamptz,
    last_error      text,
    updated_at      timestamptz NOT NULL,
    finished_on     date        NOT NULL,
    PRIMARY KEY (id, finished_on)
) PARTITION BY RANGE (finished_on);
CREATE INDEX finished_messages_status ON finished_messages (status, id);
CREATE INDEX finished_messages_transport ON finished_messages (transport, id);
CREATE INDEX finished_messages_fingerprint ON finished_messages (fingerprint, id);
CREATE INDEX finished_messages_idempotency ON finished_messages (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE finished_messages_kept PARTITION OF finished_messages
    FOR VALUES FROM ('9999-01-01') TO (MAXVALUE);

-- Every idempotency key in use, live or finished. The key row stays put
-- while its message moves between the tables, so that an enqueue racing
-- the move still meets the key (its conflict check sees committed rows).
-- A key whose message retention deleted is taken over by the next
-- enqueue that brings it.
CREATE TABLE idempotency_keys (
    key        text        PRIMARY KEY,
    message_id uuid        NOT NULL,
    created_at timestamptz NOT NULL
);
