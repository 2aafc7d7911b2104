-- Delivery feedback (what providers report after hand-over) and the
-- suppression list.
--
-- Who each message goes to, normalised (Payload::recipients), written at
-- enqueue and deleted with the message: the recipient filter's index.
CREATE TABLE message_recipients (
    address    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (address, message_id)
) WITHOUT ROWID;
CREATE INDEX message_recipients_message ON message_recipients (message_id);
-- The delivery state (NULL: unknown) and its detail, per recipient. Only
-- finished messages have one: a report that overtakes its own send's
-- outcome waits in feedback_unmatched until the message has finished.
ALTER TABLE finished_messages ADD COLUMN delivery TEXT;
ALTER TABLE finished_messages ADD COLUMN delivery_detail TEXT;
CREATE INDEX finished_messages_delivery ON finished_messages (delivery, id)
    WHERE delivery IS NOT NULL;

-- Who is not sent to. `scope` is '' for every transport, or the one
-- transport an entry holds for (`[suppression] scope = "transport"`).
CREATE TABLE suppressions (
    channel      TEXT    NOT NULL,
    address      TEXT    NOT NULL,
    scope        TEXT    NOT NULL DEFAULT '',
    reason       TEXT    NOT NULL,
    source_stamp TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    PRIMARY KEY (channel, address, scope)
) WITHOUT ROWID;

CREATE TABLE soft_bounces (
    channel  TEXT    NOT NULL,
    address  TEXT    NOT NULL,
    scope    TEXT    NOT NULL DEFAULT '',
    first_at INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (channel, address, scope)
) WITHOUT ROWID;

CREATE TABLE feedback_unmatched (
    id          INTEGER PRIMARY KEY,
    transport   TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    event       TEXT    NOT NULL
);
CREATE INDEX feedback_unmatched_received ON feedback_unmatched (received_at);

CREATE TABLE feedback_nonces (
    transport TEXT    NOT NULL,
    nonce     TEXT    NOT NULL,
    seen_at   INTEGER NOT NULL,
    PRIMARY KEY (transport, nonce)
) WITHOUT ROWID;
CREATE INDEX feedback_nonces_seen ON feedback_nonces (seen_at);
