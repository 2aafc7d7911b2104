-- What the console's message search filters finished messages by beyond
-- the indexes they have: the category, read newest first (by id within
-- it), and the creation time (`since` / `until`). Partial by category, so
-- uncategorised messages cost nothing. The live table holds the backlog
-- only and is scanned. Idempotency keys have their index since V14.
-- V21, not V20: V20 is another change's, written at the same time.
CREATE INDEX finished_messages_category ON finished_messages (category, id)
    WHERE category IS NOT NULL;
CREATE INDEX finished_messages_created ON finished_messages (created_at);
