-- Failure analytics without scanning events: failed attempts per minute by
-- the attempting transport, error class and normalised error message;
-- and, per minute, messages sent after at least one failure and finished
-- messages by how many attempts they took.
CREATE TABLE failures_minutely (
    minute    timestamptz NOT NULL,
    transport text        NOT NULL,
    class     text        NOT NULL,
    error     text        NOT NULL,
    failures  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, transport, class, error)
);
ALTER TABLE metrics_minutely ADD COLUMN sent_after_retry bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN finished_1 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN finished_2 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN finished_3 bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN finished_4_plus bigint NOT NULL DEFAULT 0;
