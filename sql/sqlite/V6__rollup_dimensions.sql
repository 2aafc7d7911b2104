-- Rollups gain the message's channel and category as dimensions (empty
-- for a transport's own figures, such as breaker-open time, and for
-- messages without a category), histograms of queue wait, processing
-- (claimed -> handed to the transport) and end-to-end time (buckets:
-- at most N ms, cumulative), the time attempts were held by the rate
-- limiter, the time the breaker was open, and cancellations. Existing rows keep empty
-- channel and category.
-- SQLite cannot change a primary key in place: the tables are rebuilt.

CREATE TABLE metrics_minutely_v6 (
    minute                 INTEGER NOT NULL,
    transport              TEXT    NOT NULL,
    channel                TEXT    NOT NULL DEFAULT '',
    category               TEXT    NOT NULL DEFAULT '',
    sent                   INTEGER NOT NULL DEFAULT 0,
    failed                 INTEGER NOT NULL DEFAULT 0,
    retried                INTEGER NOT NULL DEFAULT 0,
    dead                   INTEGER NOT NULL DEFAULT 0,
    deferred               INTEGER NOT NULL DEFAULT 0,
    latency_count          INTEGER NOT NULL DEFAULT 0,
    latency_sum_ms         INTEGER NOT NULL DEFAULT 0,
    latency_max_ms         INTEGER NOT NULL DEFAULT 0,
    le_10                  INTEGER NOT NULL DEFAULT 0,
    le_50                  INTEGER NOT NULL DEFAULT 0,
    le_100                 INTEGER NOT NULL DEFAULT 0,
    le_250                 INTEGER NOT NULL DEFAULT 0,
    le_500                 INTEGER NOT NULL DEFAULT 0,
    le_1000                INTEGER NOT NULL DEFAULT 0,
    le_2500                INTEGER NOT NULL DEFAULT 0,
    le_5000                INTEGER NOT NULL DEFAULT 0,
    le_10000               INTEGER NOT NULL DEFAULT 0,
    wait_count             INTEGER NOT NULL DEFAULT 0,
    wait_sum_ms            INTEGER NOT NULL DEFAULT 0,
    wait_max_ms            INTEGER NOT NULL DEFAULT 0,
    sent_after_retry       INTEGER NOT NULL DEFAULT 0,
    finished_1             INTEGER NOT NULL DEFAULT 0,
    finished_2             INTEGER NOT NULL DEFAULT 0,
    finished_3             INTEGER NOT NULL DEFAULT 0,
    finished_4_plus        INTEGER NOT NULL DEFAULT 0,
    wait_le_10             INTEGER NOT NULL DEFAULT 0,
    wait_le_50             INTEGER NOT NULL DEFAULT 0,
    wait_le_100            INTEGER NOT NULL DEFAULT 0,
    wait_le_250            INTEGER NOT NULL DEFAULT 0,
    wait_le_500            INTEGER NOT NULL DEFAULT 0,
    wait_le_1000           INTEGER NOT NULL DEFAULT 0,
    wait_le_5000           INTEGER NOT NULL DEFAULT 0,
    wait_le_15000          INTEGER NOT NULL DEFAULT 0,
    wait_le_60000          INTEGER NOT NULL DEFAULT 0,
    wait_le_300000         INTEGER NOT NULL DEFAULT 0,
    wait_le_900000         INTEGER NOT NULL DEFAULT 0,
    wait_le_3600000        INTEGER NOT NULL DEFAULT 0,
    processing_count       INTEGER NOT NULL DEFAULT 0,
    processing_sum_ms      INTEGER NOT NULL DEFAULT 0,
    processing_max_ms      INTEGER NOT NULL DEFAULT 0,
    processing_le_10       INTEGER NOT NULL DEFAULT 0,
    processing_le_50       INTEGER NOT NULL DEFAULT 0,
    processing_le_100      INTEGER NOT NULL DEFAULT 0,
    processing_le_250      INTEGER NOT NULL DEFAULT 0,
    processing_le_500      INTEGER NOT NULL DEFAULT 0,
    processing_le_1000     INTEGER NOT NULL DEFAULT 0,
    processing_le_5000     INTEGER NOT NULL DEFAULT 0,
    processing_le_15000    INTEGER NOT NULL DEFAULT 0,
    processing_le_60000    INTEGER NOT NULL DEFAULT 0,
    processing_le_300000   INTEGER NOT NULL DEFAULT 0,
    processing_le_900000   INTEGER NOT NULL DEFAULT 0,
    processing_le_3600000  INTEGER NOT NULL DEFAULT 0,
    limited_sum_ms         INTEGER NOT NULL DEFAULT 0,
    total_count            INTEGER NOT NULL DEFAULT 0,
    total_sum_ms           INTEGER NOT NULL DEFAULT 0,
    total_max_ms           INTEGER NOT NULL DEFAULT 0,
    total_le_10            INTEGER NOT NULL DEFAULT 0,
    total_le_50            INTEGER NOT NULL DEFAULT 0,
    total_le_100           INTEGER NOT NULL DEFAULT 0,
    total_le_250           INTEGER NOT NULL DEFAULT 0,
    total_le_500           INTEGER NOT NULL DEFAULT 0,
    total_le_1000          INTEGER NOT NULL DEFAULT 0,
    total_le_5000          INTEGER NOT NULL DEFAULT 0,
    total_le_15000         INTEGER NOT NULL DEFAULT 0,
    total_le_60000         INTEGER NOT NULL DEFAULT 0,
    total_le_300000        INTEGER NOT NULL DEFAULT 0,
    total_le_900000        INTEGER NOT NULL DEFAULT 0,
    total_le_3600000       INTEGER NOT NULL DEFAULT 0,
    breaker_open_ms        INTEGER NOT NULL DEFAULT 0,
    cancelled              INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, transport, channel, category)
);
INSERT INTO metrics_minutely_v6 (minute, transport, sent, failed, retried, dead, deferred, latency_count, latency_sum_ms, latency_max_ms, le_10, le_50, le_100, le_250, le_500, le_1000, le_2500, le_5000, le_10000, wait_count, wait_sum_ms, wait_max_ms, sent_after_retry, finished_1, finished_2, finished_3, finished_4_plus)
SELECT minute, transport, sent, failed, retried, dead, deferred, latency_count, latency_sum_ms, latency_max_ms, le_10, le_50, le_100, le_250, le_500, le_1000, le_2500, le_5000, le_10000, wait_count, wait_sum_ms, wait_max_ms, sent_after_retry, finished_1, finished_2, finished_3, finished_4_plus FROM metrics_minutely;
DROP TABLE metrics_minutely;
ALTER TABLE metrics_minutely_v6 RENAME TO metrics_minutely;

CREATE TABLE failures_minutely_v6 (
    minute    INTEGER NOT NULL,
    transport TEXT    NOT NULL,
    channel   TEXT    NOT NULL DEFAULT '',
    category  TEXT    NOT NULL DEFAULT '',
    class     TEXT    NOT NULL,
    error     TEXT    NOT NULL,
    failures  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, transport, channel, category, class, error)
);
INSERT INTO failures_minutely_v6 (minute, transport, class, error, failures)
SELECT minute, transport, class, error, failures FROM failures_minutely;
DROP TABLE failures_minutely;
ALTER TABLE failures_minutely_v6 RENAME TO failures_minutely;
