#!/usr/bin/env bash
# Store size after N sent messages on PostgreSQL, and after retention
# (BENCHMARKS.md, "Lean queue: live and finished apart").
#
#   lean_store.sh HERALD_BIN SCHEMA [retention]
#
# Runs `herald serve` on schema SCHEMA of database $DB (created here), sends
# N messages through `herald bench --url ... --deliver-after` in batches of
# 1,000, stops the server and prints pg_total_relation_size of each table.
# With `retention`, it then starts the server again with `[retention]
# sent_days = 1` under libfaketime two days ahead (the shortest retention
# is a day, and the maintenance loop expires by the server's clock), its
# first upkeep tick 5 s after the start (`engine.purge_interval_s`), and
# with LOAD=1 a `herald bench` of 200,000 against it meanwhile (delivery
# running); it samples retention's statements in pg_stat_activity every
# 10 ms, waits until no message finished before the start is left, and
# prints the sizes again, then after a VACUUM.
set -euo pipefail
bin=$1 schema=$2 retention=${3:-}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
DB=${DB:-bench_lean}
N=${N:-100000}
PORT=${PORT:-18090}
OUT=${OUT:-/tmp/lean}
mkdir -p "$OUT"
q() { psql "$PG/$DB" -AtXqc "$1"; }
q "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
config() {
  cat <<EOF
[server]
listen = "127.0.0.1:$PORT"
max_body_bytes = 10485760

[storage]
url = "$PG/$DB?options=-csearch_path%3D$schema"

[engine]
purge_interval_s = 1
EOF
  cat "$(dirname "$0")/sink.toml"
  [ -n "${1:-}" ] && printf '\n[retention]\nsent_days = 1\n'
  return 0
}
serve() { # config file, log, [prefix command...]
  local conf=$1 log=$2; shift 2
  "$@" "$bin" serve --config "$conf" > "$log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "server did not start; see $log" >&2; exit 1
}
# faketime runs the server as its child: stop that child, then faketime.
stop() { pkill -TERM -P "$server" || true; kill -TERM "$server" 2>/dev/null || true; wait "$server" || true; }
sizes() { # label
  q "SELECT '$1', c.relname, pg_total_relation_size(c.oid)
       + coalesce((SELECT sum(pg_total_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t
                   WHERE t.relid <> c.oid), 0)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = '$schema' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
     ORDER BY 3 DESC" | tee -a "$OUT/store-$schema.tsv"
  q "SELECT '$1', '  partition ' || c.relname, pg_total_relation_size(c.oid)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = '$schema' AND c.relkind = 'r' AND c.relispartition
       AND pg_total_relation_size(c.oid) > 16384 ORDER BY 2" | tee -a "$OUT/store-$schema.tsv"
}

config > "$OUT/$schema.toml"
serve "$OUT/$schema.toml" "$OUT/$schema.serve.log"
"$bin" bench --url "http://127.0.0.1:$PORT" --transport sink --messages "$N" --batch-size 1000 \
  --deliver-after --json > "$OUT/$schema.bench.json"
stop
sizes "after $N sent"
if [ -n "$retention" ]; then
  config retention > "$OUT/$schema.retention.toml"
  # The first upkeep tick comes one interval after the start: the load
  # (LOAD=1) is running by then.
  sed -i 's/^purge_interval_s = 1$/purge_interval_s = 5/' "$OUT/$schema.retention.toml"
  # Retention's statements as PostgreSQL runs them, sampled every 10 ms.
  ( while :; do
      q "SELECT to_char(clock_timestamp(), 'HH24:MI:SS.MS'), state, left(regexp_replace(query, '\s+', ' ', 'g'), 90)
         FROM pg_stat_activity WHERE datname = '$DB' AND pid <> pg_backend_pid()
           AND query ~* 'detach partition|drop table|finished_on = DATE' AND state <> 'idle'" || true
      sleep 0.01
    done ) > "$OUT/$schema.retention.activity" &
  poller=$!
  t0=$(date +%s.%N)
  serve "$OUT/$schema.retention.toml" "$OUT/$schema.retention.log" faketime -f +2d
  if [ "${LOAD:-}" = 1 ]; then
    "$bin" bench --url "http://127.0.0.1:$PORT" --transport sink --messages 200000 --batch-size 100 \
      --json > "$OUT/$schema.retention.load.json" &
    load=$!
  fi
  until [ "$(q "SELECT count(*) FROM $schema.finished_messages WHERE finished_on < DATE '9999-01-01' AND updated_at < now()")" = 0 ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  echo "retention: $(echo "$t1 - $t0" | bc) s from the server's start to no finished message of before the start" | tee -a "$OUT/store-$schema.tsv"
  [ -n "${load:-}" ] && wait "$load"
  stop
  kill "$poller" || true
  sizes "after retention"
  q "VACUUM"
  sizes "after retention and VACUUM"
fi
