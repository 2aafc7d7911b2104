-- Hourly rollups beside the minute rows, so that analytics over a long
-- window read one row per hour and key instead of sixty. Compaction seals
-- each finished hour (sums its minute rows into one hourly row per key)
-- and later deletes the minute rows of sealed hours once they are older
-- than analytics.compact_after_hours. `minute` is the hour's start here.
-- The hourly tables mirror the minute tables column for column: a column
-- added to one must be added to the other.
CREATE TABLE metrics_hourly (LIKE metrics_minutely INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE TABLE failures_hourly (LIKE failures_minutely INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);

-- How far the hourly rows reach: every hour before sealed_until is
-- sealed; minute rows are complete from minutes_from on. Both start at
-- the epoch, so the first compaction seals all history already kept
-- (including minute rows merged into hour rows by earlier versions).
CREATE TABLE rollup_seal (
    id           smallint    PRIMARY KEY CHECK (id = 1),
    sealed_until timestamptz NOT NULL,
    minutes_from timestamptz NOT NULL
);
INSERT INTO rollup_seal VALUES (1, TIMESTAMPTZ '1970-01-01 00:00:00+00', TIMESTAMPTZ '1970-01-01 00:00:00+00');
