-- Per-minute delivery rollups, written by the tracker in the same
-- transaction as the outcomes they count (minute: epoch milliseconds at
-- the start of the minute). `transport` is the transport
-- that made the attempt (for a group, the member). Latency buckets are
-- cumulative (Prometheus style): le_N counts attempts of at most N ms.

CREATE TABLE metrics_minutely (
    minute          INTEGER     NOT NULL,
    transport       TEXT        NOT NULL,
    sent            INTEGER     NOT NULL DEFAULT 0,
    failed          INTEGER     NOT NULL DEFAULT 0,
    retried         INTEGER     NOT NULL DEFAULT 0,
    dead            INTEGER     NOT NULL DEFAULT 0,
    deferred        INTEGER     NOT NULL DEFAULT 0,
    latency_count   INTEGER     NOT NULL DEFAULT 0,
    latency_sum_ms  INTEGER     NOT NULL DEFAULT 0,
    latency_max_ms  INTEGER     NOT NULL DEFAULT 0,
    le_10           INTEGER     NOT NULL DEFAULT 0,
    le_50           INTEGER     NOT NULL DEFAULT 0,
    le_100          INTEGER     NOT NULL DEFAULT 0,
    le_250          INTEGER     NOT NULL DEFAULT 0,
    le_500          INTEGER     NOT NULL DEFAULT 0,
    le_1000         INTEGER     NOT NULL DEFAULT 0,
    le_2500         INTEGER     NOT NULL DEFAULT 0,
    le_5000         INTEGER     NOT NULL DEFAULT 0,
    le_10000        INTEGER     NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, transport)
);
