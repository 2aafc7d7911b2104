-- Per-minute delivery rollups, written by the tracker in the same
-- transaction as the outcomes they count. `transport` is the transport
-- that made the attempt (for a group, the member). Latency buckets are
-- cumulative (Prometheus style): le_N counts attempts of at most N ms.

CREATE TABLE metrics_minutely (
    minute          timestamptz NOT NULL,
    transport       text        NOT NULL,
    sent            bigint      NOT NULL DEFAULT 0,
    failed          bigint      NOT NULL DEFAULT 0,
    retried         bigint      NOT NULL DEFAULT 0,
    dead            bigint      NOT NULL DEFAULT 0,
    deferred        bigint      NOT NULL DEFAULT 0,
    latency_count   bigint      NOT NULL DEFAULT 0,
    latency_sum_ms  bigint      NOT NULL DEFAULT 0,
    latency_max_ms  bigint      NOT NULL DEFAULT 0,
    le_10           bigint      NOT NULL DEFAULT 0,
    le_50           bigint      NOT NULL DEFAULT 0,
    le_100          bigint      NOT NULL DEFAULT 0,
    le_250          bigint      NOT NULL DEFAULT 0,
    le_500          bigint      NOT NULL DEFAULT 0,
    le_1000         bigint      NOT NULL DEFAULT 0,
    le_2500         bigint      NOT NULL DEFAULT 0,
    le_5000         bigint      NOT NULL DEFAULT 0,
    le_10000        bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, transport)
);
