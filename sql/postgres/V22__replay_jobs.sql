-- Replay jobs: a bulk replay of the dead letters matching a filter (its
-- columns transport .. error_class, NULL for "any"), run in batches by
-- the node in `owner` and resumed by another when `updated_at` stops
-- advancing. Ids are ULIDs stored as uuid.
CREATE TABLE replay_jobs (
    id          uuid        PRIMARY KEY,
    state       text        NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    transport   text,
    channel     text,
    category    text,
    error_class text,
    total       bigint      NOT NULL,
    replayed    bigint      NOT NULL DEFAULT 0,
    owner       text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    finished_at timestamptz,
    error       text
);
-- The jobs still to run or resume.
CREATE INDEX replay_jobs_running ON replay_jobs (id) WHERE state = 'running';
