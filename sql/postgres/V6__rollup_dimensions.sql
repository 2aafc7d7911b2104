-- Rollups gain the message's channel and category as dimensions (empty
-- for a transport's own figures, such as breaker-open time, and for
-- messages without a category), histograms of queue wait, processing
-- (claimed -> handed to the transport) and end-to-end time (buckets:
-- at most N ms, cumulative), the time attempts were held by the rate
-- limiter, the time the breaker was open, and cancellations. Existing rows keep empty
-- channel and category.

ALTER TABLE metrics_minutely ADD COLUMN channel text NOT NULL DEFAULT '';
ALTER TABLE metrics_minutely ADD COLUMN category text NOT NULL DEFAULT '';
ALTER TABLE metrics_minutely DROP CONSTRAINT metrics_minutely_pkey;
ALTER TABLE metrics_minutely ADD PRIMARY KEY (minute, transport, channel, category);
ALTER TABLE metrics_minutely ADD COLUMN wait_le_10 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_50 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_100 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_250 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_500 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_1000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_5000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_15000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_60000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_300000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_900000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_3600000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_count bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_sum_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_max_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_10 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_50 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_100 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_250 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_500 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_1000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_5000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_15000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_60000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_300000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_900000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_3600000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN limited_sum_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_count bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_sum_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_max_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_10 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_50 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_100 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_250 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_500 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_1000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_5000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_15000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_60000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_300000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_900000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_3600000 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN breaker_open_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN cancelled bigint NOT NULL DEFAULT 0;

ALTER TABLE failures_minutely ADD COLUMN channel text NOT NULL DEFAULT '';
ALTER TABLE failures_minutely ADD COLUMN category text NOT NULL DEFAULT '';
ALTER TABLE failures_minutely DROP CONSTRAINT failures_minutely_pkey;
ALTER TABLE failures_minutely ADD PRIMARY KEY (minute, transport, channel, category, class, error);
