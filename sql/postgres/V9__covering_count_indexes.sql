-- Queue depth (analytics, /metrics, alerts) and the dead-letter summary
-- count live and dead messages by transport, priority, channel and
-- category. With those columns carried in the partial indexes that
-- queued, processing and dead messages have anyway, the counts are
-- index-only scans of those rows instead of visits to their (wide) heap
-- rows, at no extra index entry per write. Claim order is unchanged: the
-- carried columns are not keys.
DROP INDEX messages_claim;
CREATE INDEX messages_claim ON messages (transport, effective_at, id)
    INCLUDE (priority, channel, category, available_at) WHERE status = 'queued';
DROP INDEX messages_lease;
CREATE INDEX messages_lease ON messages (lease_until)
    INCLUDE (transport, priority, channel, category) WHERE status = 'processing';
DROP INDEX messages_dead_since;
CREATE INDEX messages_dead_since ON messages (updated_at)
    INCLUDE (transport, channel, category) WHERE status = 'dead';
