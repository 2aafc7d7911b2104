-- Queue wait (available_at -> claimed) of each attempt, for the analytics
-- routes' average and maximum wait.
ALTER TABLE metrics_minutely ADD COLUMN wait_count bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_sum_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_max_ms bigint NOT NULL DEFAULT 0;
