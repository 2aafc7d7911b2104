-- Finer rollup histograms: 1-2-5 steps from 1 ms (latency le_1 ...
-- le_10000; wait, processing and total *_le_1 ... *_le_3600000), so that
-- the quantiles of a fast transport no longer all fall in the first
-- bucket (10 ms) and read as its maximum. Existing rows keep their
-- meaning: a new bucket between two old bounds gets its share of the old
-- bucket's count in proportion to its width, which is what the quantile
-- estimate assumed inside the old bucket anyway; the old bounds that are
-- not 1-2-5 steps (250, 2500, 15000, 60000, 300000, 900000) go. The
-- hourly table mirrors the minute table column for column.

ALTER TABLE metrics_minutely ADD COLUMN le_1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN le_2 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN le_5 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN le_20 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN le_200 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN le_2000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_2 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_5 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_20 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_200 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_2000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_10000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_20000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_50000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_100000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_200000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_500000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_1000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN wait_le_2000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_2 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_5 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_20 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_200 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_2000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_10000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_20000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_50000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_100000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_200000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_500000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_1000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN processing_le_2000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_2 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_5 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_20 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_200 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_2000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_10000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_20000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_50000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_100000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_200000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_500000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_1000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN total_le_2000000 INTEGER NOT NULL DEFAULT 0;
UPDATE metrics_minutely SET
    le_1 = le_10 * 1 / 10,
    le_2 = le_10 * 2 / 10,
    le_5 = le_10 * 5 / 10,
    le_20 = le_10 + (le_50 - le_10) * 10 / 40,
    le_200 = le_100 + (le_250 - le_100) * 100 / 150,
    le_2000 = le_1000 + (le_2500 - le_1000) * 1000 / 1500,
    wait_le_1 = wait_le_10 * 1 / 10,
    wait_le_2 = wait_le_10 * 2 / 10,
    wait_le_5 = wait_le_10 * 5 / 10,
    wait_le_20 = wait_le_10 + (wait_le_50 - wait_le_10) * 10 / 40,
    wait_le_200 = wait_le_100 + (wait_le_250 - wait_le_100) * 100 / 150,
    wait_le_2000 = wait_le_1000 + (wait_le_5000 - wait_le_1000) * 1000 / 4000,
    wait_le_10000 = wait_le_5000 + (wait_le_15000 - wait_le_5000) * 5000 / 10000,
    wait_le_20000 = wait_le_15000 + (wait_le_60000 - wait_le_15000) * 5000 / 45000,
    wait_le_50000 = wait_le_15000 + (wait_le_60000 - wait_le_15000) * 35000 / 45000,
    wait_le_100000 = wait_le_60000 + (wait_le_300000 - wait_le_60000) * 40000 / 240000,
    wait_le_200000 = wait_le_60000 + (wait_le_300000 - wait_le_60000) * 140000 / 240000,
    wait_le_500000 = wait_le_300000 + (wait_le_900000 - wait_le_300000) * 200000 / 600000,
    wait_le_1000000 = wait_le_900000 + (wait_le_3600000 - wait_le_900000) * 100000 / 2700000,
    wait_le_2000000 = wait_le_900000 + (wait_le_3600000 - wait_le_900000) * 1100000 / 2700000,
    processing_le_1 = processing_le_10 * 1 / 10,
    processing_le_2 = processing_le_10 * 2 / 10,
    processing_le_5 = processing_le_10 * 5 / 10,
    processing_le_20 = processing_le_10 + (processing_le_50 - processing_le_10) * 10 / 40,
    processing_le_200 = processing_le_100 + (processing_le_250 - processing_le_100) * 100 / 150,
    processing_le_2000 = processing_le_1000 + (processing_le_5000 - processing_le_1000) * 1000 / 4000,
    processing_le_10000 = processing_le_5000 + (processing_le_15000 - processing_le_5000) * 5000 / 10000,
    processing_le_20000 = processing_le_15000 + (processing_le_60000 - processing_le_15000) * 5000 / 45000,
    processing_le_50000 = processing_le_15000 + (processing_le_60000 - processing_le_15000) * 35000 / 45000,
    processing_le_100000 = processing_le_60000 + (processing_le_300000 - processing_le_60000) * 40000 / 240000,
    processing_le_200000 = processing_le_60000 + (processing_le_300000 - processing_le_60000) * 140000 / 240000,
    processing_le_500000 = processing_le_300000 + (processing_le_900000 - processing_le_300000) * 200000 / 600000,
    processing_le_1000000 = processing_le_900000 + (processing_le_3600000 - processing_le_900000) * 100000 / 2700000,
    processing_le_2000000 = processing_le_900000 + (processing_le_3600000 - processing_le_900000) * 1100000 / 2700000,
    total_le_1 = total_le_10 * 1 / 10,
    total_le_2 = total_le_10 * 2 / 10,
    total_le_5 = total_le_10 * 5 / 10,
    total_le_20 = total_le_10 + (total_le_50 - total_le_10) * 10 / 40,
    total_le_200 = total_le_100 + (total_le_250 - total_le_100) * 100 / 150,
    total_le_2000 = total_le_1000 + (total_le_5000 - total_le_1000) * 1000 / 4000,
    total_le_10000 = total_le_5000 + (total_le_15000 - total_le_5000) * 5000 / 10000,
    total_le_20000 = total_le_15000 + (total_le_60000 - total_le_15000) * 5000 / 45000,
    total_le_50000 = total_le_15000 + (total_le_60000 - total_le_15000) * 35000 / 45000,
    total_le_100000 = total_le_60000 + (total_le_300000 - total_le_60000) * 40000 / 240000,
    total_le_200000 = total_le_60000 + (total_le_300000 - total_le_60000) * 140000 / 240000,
    total_le_500000 = total_le_300000 + (total_le_900000 - total_le_300000) * 200000 / 600000,
    total_le_1000000 = total_le_900000 + (total_le_3600000 - total_le_900000) * 100000 / 2700000,
    total_le_2000000 = total_le_900000 + (total_le_3600000 - total_le_900000) * 1100000 / 2700000
WHERE le_10000 > 0 OR wait_le_3600000 > 0 OR processing_le_3600000 > 0 OR total_le_3600000 > 0;
ALTER TABLE metrics_minutely DROP COLUMN le_250;
ALTER TABLE metrics_minutely DROP COLUMN le_2500;
ALTER TABLE metrics_minutely DROP COLUMN wait_le_250;
ALTER TABLE metrics_minutely DROP COLUMN wait_le_15000;
ALTER TABLE metrics_minutely DROP COLUMN wait_le_60000;
ALTER TABLE metrics_minutely DROP COLUMN wait_le_300000;
ALTER TABLE metrics_minutely DROP COLUMN wait_le_900000;
ALTER TABLE metrics_minutely DROP COLUMN processing_le_250;
ALTER TABLE metrics_minutely DROP COLUMN processing_le_15000;
ALTER TABLE metrics_minutely DROP COLUMN processing_le_60000;
ALTER TABLE metrics_minutely DROP COLUMN processing_le_300000;
ALTER TABLE metrics_minutely DROP COLUMN processing_le_900000;
ALTER TABLE metrics_minutely DROP COLUMN total_le_250;
ALTER TABLE metrics_minutely DROP COLUMN total_le_15000;
ALTER TABLE metrics_minutely DROP COLUMN total_le_60000;
ALTER TABLE metrics_minutely DROP COLUMN total_le_300000;
ALTER TABLE metrics_minutely DROP COLUMN total_le_900000;

ALTER TABLE metrics_hourly ADD COLUMN le_1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN le_2 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN le_5 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN le_20 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN le_200 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN le_2000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_2 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_5 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_20 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_200 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_2000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_10000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_20000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_50000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_100000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_200000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_500000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_1000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN wait_le_2000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_2 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_5 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_20 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_200 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_2000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_10000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_20000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_50000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_100000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_200000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_500000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_1000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN processing_le_2000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_2 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_5 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_20 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_200 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_2000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_10000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_20000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_50000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_100000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_200000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_500000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_1000000 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN total_le_2000000 INTEGER NOT NULL DEFAULT 0;
UPDATE metrics_hourly SET
    le_1 = le_10 * 1 / 10,
    le_2 = le_10 * 2 / 10,
    le_5 = le_10 * 5 / 10,
    le_20 = le_10 + (le_50 - le_10) * 10 / 40,
    le_200 = le_100 + (le_250 - le_100) * 100 / 150,
    le_2000 = le_1000 + (le_2500 - le_1000) * 1000 / 1500,
    wait_le_1 = wait_le_10 * 1 / 10,
    wait_le_2 = wait_le_10 * 2 / 10,
    wait_le_5 = wait_le_10 * 5 / 10,
    wait_le_20 = wait_le_10 + (wait_le_50 - wait_le_10) * 10 / 40,
    wait_le_200 = wait_le_100 + (wait_le_250 - wait_le_100) * 100 / 150,
    wait_le_2000 = wait_le_1000 + (wait_le_5000 - wait_le_1000) * 1000 / 4000,
    wait_le_10000 = wait_le_5000 + (wait_le_15000 - wait_le_5000) * 5000 / 10000,
    wait_le_20000 = wait_le_15000 + (wait_le_60000 - wait_le_15000) * 5000 / 45000,
    wait_le_50000 = wait_le_15000 + (wait_le_60000 - wait_le_15000) * 35000 / 45000,
    wait_le_100000 = wait_le_60000 + (wait_le_300000 - wait_le_60000) * 40000 / 240000,
    wait_le_200000 = wait_le_60000 + (wait_le_300000 - wait_le_60000) * 140000 / 240000,
    wait_le_500000 = wait_le_300000 + (wait_le_900000 - wait_le_300000) * 200000 / 600000,
    wait_le_1000000 = wait_le_900000 + (wait_le_3600000 - wait_le_900000) * 100000 / 2700000,
    wait_le_2000000 = wait_le_900000 + (wait_le_3600000 - wait_le_900000) * 1100000 / 2700000,
    processing_le_1 = processing_le_10 * 1 / 10,
    processing_le_2 = processing_le_10 * 2 / 10,
    processing_le_5 = processing_le_10 * 5 / 10,
    processing_le_20 = processing_le_10 + (processing_le_50 - processing_le_10) * 10 / 40,
    processing_le_200 = processing_le_100 + (processing_le_250 - processing_le_100) * 100 / 150,
    processing_le_2000 = processing_le_1000 + (processing_le_5000 - processing_le_1000) * 1000 / 4000,
    processing_le_10000 = processing_le_5000 + (processing_le_15000 - processing_le_5000) * 5000 / 10000,
    processing_le_20000 = processing_le_15000 + (processing_le_60000 - processing_le_15000) * 5000 / 45000,
    processing_le_50000 = processing_le_15000 + (processing_le_60000 - processing_le_15000) * 35000 / 45000,
    processing_le_100000 = processing_le_60000 + (processing_le_300000 - processing_le_60000) * 40000 / 240000,
    processing_le_200000 = processing_le_60000 + (processing_le_300000 - processing_le_60000) * 140000 / 240000,
    processing_le_500000 = processing_le_300000 + (processing_le_900000 - processing_le_300000) * 200000 / 600000,
    processing_le_1000000 = processing_le_900000 + (processing_le_3600000 - processing_le_900000) * 100000 / 2700000,
    processing_le_2000000 = processing_le_900000 + (processing_le_3600000 - processing_le_900000) * 1100000 / 2700000,
    total_le_1 = total_le_10 * 1 / 10,
    total_le_2 = total_le_10 * 2 / 10,
    total_le_5 = total_le_10 * 5 / 10,
    total_le_20 = total_le_10 + (total_le_50 - total_le_10) * 10 / 40,
    total_le_200 = total_le_100 + (total_le_250 - total_le_100) * 100 / 150,
    total_le_2000 = total_le_1000 + (total_le_5000 - total_le_1000) * 1000 / 4000,
    total_le_10000 = total_le_5000 + (total_le_15000 - total_le_5000) * 5000 / 10000,
    total_le_20000 = total_le_15000 + (total_le_60000 - total_le_15000) * 5000 / 45000,
    total_le_50000 = total_le_15000 + (total_le_60000 - total_le_15000) * 35000 / 45000,
    total_le_100000 = total_le_60000 + (total_le_300000 - total_le_60000) * 40000 / 240000,
    total_le_200000 = total_le_60000 + (total_le_300000 - total_le_60000) * 140000 / 240000,
    total_le_500000 = total_le_300000 + (total_le_900000 - total_le_300000) * 200000 / 600000,
    total_le_1000000 = total_le_900000 + (total_le_3600000 - total_le_900000) * 100000 / 2700000,
    total_le_2000000 = total_le_900000 + (total_le_3600000 - total_le_900000) * 1100000 / 2700000
WHERE le_10000 > 0 OR wait_le_3600000 > 0 OR processing_le_3600000 > 0 OR total_le_3600000 > 0;
ALTER TABLE metrics_hourly DROP COLUMN le_250;
ALTER TABLE metrics_hourly DROP COLUMN le_2500;
ALTER TABLE metrics_hourly DROP COLUMN wait_le_250;
ALTER TABLE metrics_hourly DROP COLUMN wait_le_15000;
ALTER TABLE metrics_hourly DROP COLUMN wait_le_60000;
ALTER TABLE metrics_hourly DROP COLUMN wait_le_300000;
ALTER TABLE metrics_hourly DROP COLUMN wait_le_900000;
ALTER TABLE metrics_hourly DROP COLUMN processing_le_250;
ALTER TABLE metrics_hourly DROP COLUMN processing_le_15000;
ALTER TABLE metrics_hourly DROP COLUMN processing_le_60000;
ALTER TABLE metrics_hourly DROP COLUMN processing_le_300000;
ALTER TABLE metrics_hourly DROP COLUMN processing_le_900000;
ALTER TABLE metrics_hourly DROP COLUMN total_le_250;
ALTER TABLE metrics_hourly DROP COLUMN total_le_15000;
ALTER TABLE metrics_hourly DROP COLUMN total_le_60000;
ALTER TABLE metrics_hourly DROP COLUMN total_le_300000;
ALTER TABLE metrics_hourly DROP COLUMN total_le_900000;
