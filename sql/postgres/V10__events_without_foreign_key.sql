-- The event's foreign key checked each `queued`, `claimed` and outcome
-- event with a lookup of its message through a plan each connection
-- caches: planned while `messages` is small, that plan is a sequential
-- scan, and it stays one as the table grows until something invalidates
-- it (an ANALYZE), so every event cost a scan of the whole queue. Events
-- are only ever written by the statements that write or move their
-- message, so the key guarded nothing those statements do not already;
-- the purge of dead letters deletes their events itself.
ALTER TABLE message_events DROP CONSTRAINT IF EXISTS message_events_message_id_fkey;
