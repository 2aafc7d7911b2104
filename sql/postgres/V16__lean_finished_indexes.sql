-- Two of finished_messages' indexes give way to leaner ones, which every
-- finishing message writes less WAL for (BENCHMARKS.md, "Lean queue"):
--   * by status, only the rows that are not sent (dead and cancelled, the
--     few that status listings, the dead-letter routes and retention look
--     for by status); sent ones are found through the primary key;
--   * by fingerprint, a hash index: a fingerprint names what was sent and
--     to whom, so its matches are few and are sorted after the look.
-- Created ON ONLY the partitioned table, so nothing here builds or locks
-- a partition: partitions attached from now on get both with their
-- creation, and Herald builds them on the partitions already there
-- CONCURRENTLY, attaches them, and drops the indexes they replace once the
-- new ones are valid (see `finished_indexes` in the PostgreSQL backend).
-- Until then the old indexes serve every read.
CREATE INDEX finished_messages_unsent ON ONLY finished_messages (status, id)
    WHERE status <> 'sent';
CREATE INDEX finished_messages_fingerprint_hash ON ONLY finished_messages
    USING hash (fingerprint);
