-- Alert incidents (one row per incident of a rule on a transport), kept as
-- history. At most one incident per rule and transport is active: the
-- partial unique index is what lets several nodes evaluate the same rules
-- and still open (and notify) one incident. Instants are epoch ms; ids are
-- ULID text. `notified` says whether this incident sends notices at all
-- (false when it began within the rule's cooldown of a notified one);
-- the notices sent are the messages `fired_message_id` and
-- `resolved_message_id`.
CREATE TABLE alerts (
    id                  TEXT    PRIMARY KEY NOT NULL,
    rule                TEXT    NOT NULL,
    kind                TEXT    NOT NULL,
    transport           TEXT    NOT NULL,
    state               TEXT    NOT NULL CHECK (state IN ('active', 'resolved')),
    threshold           REAL    NOT NULL,
    window_s            INTEGER,
    fired_value         REAL    NOT NULL,
    last_value          REAL    NOT NULL,
    fired_at            INTEGER NOT NULL,
    checked_at          INTEGER NOT NULL,
    resolved_at         INTEGER,
    notified            INTEGER NOT NULL,
    fired_message_id    TEXT,
    resolved_message_id TEXT
);
CREATE UNIQUE INDEX alerts_one_active ON alerts (rule, transport) WHERE state = 'active';
-- The cooldown check: the last notified incident of a rule on a transport.
CREATE INDEX alerts_rule_fired ON alerts (rule, transport, fired_at) WHERE notified = 1;
-- Listing by state, newest first.
CREATE INDEX alerts_state ON alerts (state, id);
-- Notices still to send (a node stopped between the change and the send).
CREATE INDEX alerts_awaiting_notice ON alerts (id)
    WHERE notified = 1 AND (fired_message_id IS NULL
                            OR (state = 'resolved' AND resolved_message_id IS NULL));
