-- Every running node proves it is alive with a heartbeat (times in epoch
-- ms). On SQLite only one process may hold the file, so a process that
-- starts takes over every claim and transport lease at once; the table
-- and `claimed_by` keep both backends' meaning the same.
CREATE TABLE nodes (
    id           TEXT    PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    version      TEXT    NOT NULL,
    address      TEXT
);
ALTER TABLE messages ADD COLUMN claimed_by TEXT;
