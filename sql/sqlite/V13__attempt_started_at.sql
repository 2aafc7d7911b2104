-- One event per attempt: a claim writes no `claimed` row any more; the
-- attempt's start (its claim time, epoch ms) rides on the event that ends
-- it (`sent`, `attempt_failed`, `deferred`, `lease_expired`). Rows written
-- before this have none, and their `claimed` rows stay readable.
ALTER TABLE message_events ADD COLUMN started_at INTEGER;
