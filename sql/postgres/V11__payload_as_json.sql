-- Payload and metadata are stored and read back whole; nothing queries
-- inside them. As jsonb, each was parsed into a tree, its keys sorted and
-- hashed on every insert, and serialised back to text on every claim and
-- read: a sixth of PostgreSQL's time on a batch enqueue. As json, the text
-- is only checked on insert and copied on read. Herald writes both from
-- its own serialiser, so whitespace and key order are already canonical.
-- The change rewrites the table once, under an exclusive lock: on a large
-- existing queue, run `herald migrate` in a quiet window.
ALTER TABLE messages
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN metadata TYPE json USING metadata::json;
