-- Every running node proves it is alive with a heartbeat. A transport
-- lease or a claim held by a node whose heartbeat has stopped is taken
-- over within a few heartbeats, not after `lease_ms`; a claim names its
-- node (`claimed_by`) so that its claims can be found. A node that is
-- presumed dead has its row deleted by whichever node takes over; a node
-- that was only slow writes its row again with its next heartbeat.
CREATE TABLE nodes (
    id           text        PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    version      text        NOT NULL,
    address      text
);
-- Nullable without a default: a catalog change, no rewrite of the queue.
ALTER TABLE messages ADD COLUMN claimed_by text;
