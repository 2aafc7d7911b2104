-- Deliverability in the rollups: provider reports counted per minute of
-- receipt (epoch milliseconds), under the transport whose webhook received them and the
-- reported message's channel and category. The hourly table mirrors the
-- minute table column for column.
ALTER TABLE metrics_minutely ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN bounced_hard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN bounced_soft INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN complained INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN opened INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN clicked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_minutely ADD COLUMN unsubscribed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN bounced_hard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN bounced_soft INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN complained INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN opened INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN clicked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_hourly ADD COLUMN unsubscribed INTEGER NOT NULL DEFAULT 0;

-- Bounces by type, normalised reason (as failures_minutely's error) and
-- recipient domain ('' when the report names no email recipient): the
-- deliverability route's top reasons and domains. Sealed, compacted and
-- purged with the other rollups.
CREATE TABLE bounces_minutely (
    minute      INTEGER     NOT NULL,
    transport   TEXT        NOT NULL,
    channel     TEXT        NOT NULL,
    category    TEXT        NOT NULL,
    bounce_type TEXT        NOT NULL,
    reason      TEXT        NOT NULL,
    domain      TEXT        NOT NULL,
    bounces     INTEGER     NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, transport, channel, category, bounce_type, reason, domain)
);
CREATE TABLE bounces_hourly AS SELECT * FROM bounces_minutely WHERE 0;
CREATE UNIQUE INDEX bounces_hourly_key
    ON bounces_hourly (minute, transport, channel, category, bounce_type, reason, domain);

-- When an incident of a rule with `action = "pause"` paused its
-- transport (epoch milliseconds); NULL for incidents that did not.
ALTER TABLE alerts ADD COLUMN paused_at INTEGER;
