-- Delivery feedback (what providers report after hand-over) and the
-- suppression list.
--
-- `recipients`: who a message goes to, normalised (Payload::recipients),
-- written at enqueue and carried along as the message moves: the
-- recipient filter's column, indexed by GIN where history piles up. The
-- live table keeps it unindexed: it holds the queue only, and an index
-- there would be written by every claim.
ALTER TABLE messages ADD COLUMN recipients text[];
ALTER TABLE finished_messages ADD COLUMN recipients text[];
-- The delivery state (NULL: unknown) and its detail, per recipient. Only
-- finished messages have one: a report that overtakes its own send's
-- outcome waits in feedback_unmatched until the message has finished.
ALTER TABLE finished_messages ADD COLUMN delivery text;
ALTER TABLE finished_messages ADD COLUMN delivery_detail jsonb;
-- Declared ON ONLY, as V16's are: Herald builds them on the partitions
-- already there (`partition_indexes`).
CREATE INDEX finished_messages_recipients ON ONLY finished_messages USING gin (recipients);
CREATE INDEX finished_messages_delivery ON ONLY finished_messages (delivery, id)
    WHERE delivery IS NOT NULL;

-- Who is not sent to. `scope` is '' for every transport, or the one
-- transport an entry holds for (`[suppression] scope = "transport"`).
CREATE TABLE suppressions (
    channel      text        NOT NULL,
    address      text        NOT NULL,
    scope        text        NOT NULL DEFAULT '',
    reason       text        NOT NULL,
    source_stamp uuid,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    PRIMARY KEY (channel, address, scope)
);

-- Soft bounces counted per address within `soft_bounce_window_s`, until
-- `soft_bounce_limit` of them suppress it.
CREATE TABLE soft_bounces (
    channel  text        NOT NULL,
    address  text        NOT NULL,
    scope    text        NOT NULL DEFAULT '',
    first_at timestamptz NOT NULL,
    count    integer     NOT NULL,
    PRIMARY KEY (channel, address, scope)
);

-- Reports whose message was not found (yet): matched again until
-- `[feedback] unmatched_keep_s` has passed.
CREATE TABLE feedback_unmatched (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transport   text        NOT NULL,
    received_at timestamptz NOT NULL,
    event       jsonb       NOT NULL
);
CREATE INDEX feedback_unmatched_received ON feedback_unmatched (received_at);

-- Values a provider signs once (Mailgun's token, a Standard Webhooks id
-- with its timestamp): seen again within the tolerance, a replay.
CREATE TABLE feedback_nonces (
    transport text        NOT NULL,
    nonce     text        NOT NULL,
    seen_at   timestamptz NOT NULL,
    PRIMARY KEY (transport, nonce)
);
CREATE INDEX feedback_nonces_seen ON feedback_nonces (seen_at);
