-- A message's events are kept where the message is: under the same
-- `finished_on` as its finished_messages row, so that dropping a day's
-- partition of finished_messages and the same day's partition of
-- message_events expires both without a DELETE. Events of live messages
-- wait in `message_events_live` (finished_on 0001-01-01) and move with the
-- message when it finishes; a message's `queued` event is no longer
-- stored (it is its created_at). The events written before this version
-- stay in `message_events_legacy`, read beside the new table and deleted
-- with their messages; a message that finishes after the upgrade takes
-- its legacy events along. Renames and creates only: nothing is copied.
ALTER TABLE message_events RENAME TO message_events_legacy;
ALTER INDEX message_events_message RENAME TO message_events_legacy_message;
CREATE SEQUENCE message_events_seq;
-- New events sort after every legacy one.
SELECT setval('message_events_seq', coalesce((SELECT max(id) FROM message_events_legacy), 0) + 1, false);
CREATE TABLE message_events (
    id          bigint      NOT NULL DEFAULT nextval('message_events_seq'),
    message_id  uuid        NOT NULL,
    kind        text        NOT NULL,
    at          timestamptz NOT NULL,
    attempt     integer     NOT NULL,
    transport   text,
    started_at  timestamptz,
    duration_ms bigint,
    error       text,
    detail      jsonb,
    finished_on date        NOT NULL
) PARTITION BY RANGE (finished_on);
CREATE INDEX message_events_message ON message_events (message_id, id);
CREATE TABLE message_events_live PARTITION OF message_events
    FOR VALUES FROM (MINVALUE) TO ('0001-01-02');
CREATE TABLE message_events_kept PARTITION OF message_events
    FOR VALUES FROM ('9999-01-01') TO (MAXVALUE);
-- The day partitions made so far get their events' twins.
DO $$
DECLARE part record;
BEGIN
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'finished_messages'::regclass
          AND c.relname LIKE 'finished_messages_p%'
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF message_events %s',
                       replace(part.relname, 'finished_messages_p', 'message_events_p'), part.bound);
    END LOOP;
END $$;
