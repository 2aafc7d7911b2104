-- Failure analytics without scanning events: failed attempts per minute by
-- the attempting transport, error class and normalised error message;
-- and, per minute, messages sent after at least one failure and finished
-- messages by how many attempts they took.
CREATE TABLE failures_minutely (
    minute    INTEGER     NOT NULL,
    transport TEXT        NOT NULL,
    class     TEXT        NOT NULL,
    error     TEXT        NOT NULL,
    failures  INTEGER      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, transport, class, error)
);
ALTER TABLE metrics_minutely ADD COLUMN sent_after_retry INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN finished_1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN finished_2 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN finished_3 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN finished_4_plus INTEGER NOT NULL DEFAULT 0;
