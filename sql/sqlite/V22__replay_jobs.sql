-- Replay jobs: a bulk replay of the dead letters matching a filter (its
-- columns transport .. error_class, NULL for "any"), run in batches by
-- the node in `owner` and resumed by another when `updated_at` stops
-- advancing. Instants are epoch ms; ids are ULID text.
CREATE TABLE replay_jobs (
    id          TEXT    PRIMARY KEY NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    transport   TEXT,
    channel     TEXT,
    category    TEXT,
    error_class TEXT,
    total       INTEGER NOT NULL,
    replayed    INTEGER NOT NULL DEFAULT 0,
    owner       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER,
    error       TEXT
);
-- The jobs still to run or resume.
CREATE INDEX replay_jobs_running ON replay_jobs (id) WHERE state = 'running';
