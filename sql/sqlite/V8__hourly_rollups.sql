-- Hourly rollups beside the minute rows, so that analytics over a long
-- window read one row per hour and key instead of sixty. Compaction seals
-- each finished hour (sums its minute rows into one hourly row per key)
-- and later deletes the minute rows of sealed hours once they are older
-- than analytics.compact_after_hours. `minute` is the hour's start here
-- (epoch milliseconds). The hourly tables mirror the minute tables column
-- for column: a column added to one must be added to the other.
CREATE TABLE metrics_hourly AS SELECT * FROM metrics_minutely WHERE 0;
CREATE UNIQUE INDEX metrics_hourly_key ON metrics_hourly (minute, transport, channel, category);
CREATE TABLE failures_hourly AS SELECT * FROM failures_minutely WHERE 0;
CREATE UNIQUE INDEX failures_hourly_key
    ON failures_hourly (minute, transport, channel, category, class, error);

-- How far the hourly rows reach: every hour before sealed_until is
-- sealed; minute rows are complete from minutes_from on. Both start at
-- the epoch, so the first compaction seals all history already kept
-- (including minute rows merged into hour rows by earlier versions).
CREATE TABLE rollup_seal (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    sealed_until INTEGER NOT NULL,
    minutes_from INTEGER NOT NULL
);
INSERT INTO rollup_seal VALUES (1, 0, 0);
