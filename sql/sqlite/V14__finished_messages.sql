-- Live and finished messages are kept apart. `messages` keeps only what
-- claims and outcomes work on (queued, scheduled and processing); a
-- message that ends (sent, dead, cancelled) moves, in the transaction
-- that ends it, to `finished_messages`. Finished messages already stored
-- are moved over by the running engine in bounded batches.
CREATE TABLE finished_messages (
    id              TEXT    PRIMARY KEY NOT NULL,
    channel         TEXT    NOT NULL,
    transport       TEXT    NOT NULL,
    category        TEXT,
    status          TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    -- NULL once retention has dropped it (`payload_after_sent_s`).
    payload         TEXT,
    metadata        TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    idempotency_key TEXT,
    attempts        INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    available_at    INTEGER NOT NULL,
    sent_at         INTEGER,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX finished_messages_status ON finished_messages (status, id);
CREATE INDEX finished_messages_transport ON finished_messages (transport, id);
CREATE INDEX finished_messages_fingerprint ON finished_messages (fingerprint, id);
CREATE UNIQUE INDEX finished_messages_idempotency ON finished_messages (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
