-- Deliverability in the rollups: provider reports counted per minute of
-- receipt, under the transport whose webhook received them and the
-- reported message's channel and category. The hourly table mirrors the
-- minute table column for column.
ALTER TABLE metrics_minutely ADD COLUMN delivered bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN bounced_hard bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN bounced_soft bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN complained bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN opened bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN clicked bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN unsubscribed bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN delivered bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN bounced_hard bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN bounced_soft bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN complained bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN opened bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN clicked bigint NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN unsubscribed bigint NOT NULL DEFAULT 0;

-- Bounces by type, normalised reason (as failures_minutely's error) and
-- recipient domain ('' when the report names no email recipient): the
-- deliverability route's top reasons and domains. Sealed, compacted and
-- purged with the other rollups.
CREATE TABLE bounces_minutely (
    minute      timestamptz NOT NULL,
    transport   text        NOT NULL,
    channel     text        NOT NULL,
    category    text        NOT NULL,
    bounce_type text        NOT NULL,
    reason      text        NOT NULL,
    domain      text        NOT NULL,
    bounces     bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, transport, channel, category, bounce_type, reason, domain)
);
CREATE TABLE bounces_hourly (LIKE bounces_minutely INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);

-- When an incident of a rule with `action = "pause"` paused its
-- transport; NULL for incidents that did not.
ALTER TABLE alerts ADD COLUMN paused_at timestamptz;
