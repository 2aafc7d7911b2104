-- Alert incidents (one row per incident of a rule on a transport), kept as
-- history. At most one incident per rule and transport is active: the
-- partial unique index is what lets several nodes evaluate the same rules
-- and still open (and notify) one incident. Ids are ULIDs stored as
-- uuid. `notified` says whether this incident sends notices at all
-- (false when it began within the rule's cooldown of a notified one);
-- the notices sent are the messages `fired_message_id` and
-- `resolved_message_id`.
CREATE TABLE alerts (
    id                  uuid        PRIMARY KEY,
    rule                text        NOT NULL,
    kind                text        NOT NULL,
    transport           text        NOT NULL,
    state               text        NOT NULL CHECK (state IN ('active', 'resolved')),
    threshold           float8      NOT NULL,
    window_s            integer,
    fired_value         float8      NOT NULL,
    last_value          float8      NOT NULL,
    fired_at            timestamptz NOT NULL,
    checked_at          timestamptz NOT NULL,
    resolved_at         timestamptz,
    notified            boolean     NOT NULL,
    fired_message_id    uuid,
    resolved_message_id uuid
);
CREATE UNIQUE INDEX alerts_one_active ON alerts (rule, transport) WHERE state = 'active';
-- The cooldown check: the last notified incident of a rule on a transport.
CREATE INDEX alerts_rule_fired ON alerts (rule, transport, fired_at) WHERE notified;
-- Listing by state, newest first.
CREATE INDEX alerts_state ON alerts (state, id);
-- Notices still to send (a node stopped between the change and the send).
CREATE INDEX alerts_awaiting_notice ON alerts (id)
    WHERE notified AND (fired_message_id IS NULL
                        OR (state = 'resolved' AND resolved_message_id IS NULL));
