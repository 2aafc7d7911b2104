-- Queue depth (analytics, /metrics, alerts) and the dead-letter summary
-- count live and dead messages by transport, priority, channel and
-- category. With those columns in the partial indexes that queued,
-- processing and dead messages have anyway, the counts read only those
-- indexes (covering indexes: `status` too, which the partial index
-- implies but SQLite still reads) instead of the messages' wide rows. The
-- added columns trail a unique `id` or are only read, so claim order and
-- the lease and purge scans are unchanged.
DROP INDEX messages_claim;
CREATE INDEX messages_claim ON messages (transport, effective_at, id, priority, channel, category, available_at, status)
    WHERE status = 'queued';
DROP INDEX messages_lease;
CREATE INDEX messages_lease ON messages (lease_until, transport, priority, channel, category, status)
    WHERE status = 'processing';
DROP INDEX messages_dead_since;
CREATE INDEX messages_dead_since ON messages (updated_at, transport, channel, category, status)
    WHERE status = 'dead';
