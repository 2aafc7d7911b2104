#!/usr/bin/env bash
# Retention cost on PostgreSQL (BENCHMARKS.md, "Lean queue"): the time to
# expire one day of N finished messages (default 1,000,000) while
# delivery runs.
#
#   retention_day.sh HERALD_BIN [SCHEMA]
#
# Migrates a fresh schema of $DB with `herald migrate`, then files N sent
# messages, each with its `sent` event, under a day three days back, as
# the engine would have (one partition of `finished_messages` and one of
# `message_events` for the day; ids minted on that day), and VACUUM
# ANALYZEs them (autovacuum is off here). It then starts `herald serve`
# with `[retention] sent_days = 1` and its first upkeep tick 5 s after the
# start, runs a `herald bench` of $LOAD (200,000) messages against it meanwhile
# (delivery running), and prints what the server logged of the drop
# (`elapsed_ms`: from the first statement for the day to its partitions
# dropped) and the partitions left.
set -euo pipefail
bin=$1 schema=${2:-herald_retention_day}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
DB=${DB:-bench_lean}
N=${N:-1000000}
PORT=${PORT:-18091}
LOAD=${LOAD:-200000}
OUT=${OUT:-/tmp/lean}
mkdir -p "$OUT"
q() { psql "$PG/$DB" -AtXqc "$1"; }
q "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" 2>/dev/null
cat > "$OUT/$schema.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
max_body_bytes = 10485760

[storage]
url = "$PG/$DB?options=-csearch_path%3D$schema"

[engine]
purge_interval_s = 5

[retention]
sent_days = 1
TOML
cat "$(dirname "$0")/sink.toml" >> "$OUT/$schema.toml"
"$bin" --config "$OUT/$schema.toml" migrate > "$OUT/$schema.migrate.log" 2>&1
day=$(date -u -d '3 days ago' +%F)
next=$(date -u -d '2 days ago' +%F)
tag=$(date -u -d "$day" +%Y%m%d)
t0=$(date +%s.%N)
psql "$PG/$DB" -Xq -v ON_ERROR_STOP=1 <<SQL
SET search_path = $schema;
CREATE TABLE finished_messages_p$tag PARTITION OF finished_messages
    FOR VALUES FROM ('$day') TO ('$next');
CREATE TABLE message_events_p$tag PARTITION OF message_events
    FOR VALUES FROM ('$day') TO ('$next');
-- Ids as ULIDs minted during the day (48 bits of milliseconds, then 80
-- bits of noise), 200 bytes of text per email, as herald bench sends.
CREATE TEMP TABLE fill AS
SELECT uuid(lpad(to_hex((extract(epoch FROM at) * 1000)::int8), 12, '0')
            || substr(md5(i::text), 1, 20)) AS id, at
FROM (SELECT i, TIMESTAMPTZ '$day 00:00:00+00' + (i * interval '86 milliseconds') AS at
      FROM generate_series(1, $N) AS i) AS t;
INSERT INTO finished_messages (id, channel, transport, category, status, priority, payload,
    metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at, available_at,
    sent_at, last_error, updated_at, finished_on)
SELECT id, 'email', 'sink', NULL, 'sent', 0,
       json_build_object('to', json_build_array('user' || md5(id::text) || '@example.com'),
                         'subject', 'Bench', 'text', repeat('x', 200)),
       '{}'::json, md5(id::text) || md5(at::text), NULL, 1, 5, at, at, at, NULL, at, DATE '$day'
FROM fill;
INSERT INTO message_events (message_id, kind, at, attempt, transport, started_at, duration_ms,
                            finished_on)
SELECT id, 'sent', at, 1, 'sink', at, 1, DATE '$day' FROM fill;
SQL
q "VACUUM ANALYZE $schema.finished_messages_p$tag"
q "VACUUM ANALYZE $schema.message_events_p$tag"
t1=$(date +%s.%N)
size=$(q "SELECT pg_size_pretty(pg_total_relation_size('$schema.finished_messages_p$tag')
                              + pg_total_relation_size('$schema.message_events_p$tag'))")
echo "filled $N messages of $day ($size) in $(echo "$t1 - $t0" | bc) s"
"$bin" --config "$OUT/$schema.toml" serve > "$OUT/$schema.serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break; sleep 0.2; done
"$bin" bench --url "http://127.0.0.1:$PORT" --transport sink --messages "$LOAD" --batch-size 100 \
  --json > "$OUT/$schema.load.json"
kill -TERM "$server"; wait "$server" || true
grep -E "dropped a day|retention|upkeep" "$OUT/$schema.serve.log" | sed 's/\x1b\[[0-9;]*m//g' || true
echo "partitions of $day left: $(q "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = '$schema' AND c.relname LIKE '%_p$tag'")"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); e=r["end_to_end"]
print("load meanwhile:", round(e["messages_per_second"]), "msg/s end to end, verified:", r["verification"]["passed"])' "$OUT/$schema.load.json"
q "DROP SCHEMA $schema CASCADE" 2>/dev/null
