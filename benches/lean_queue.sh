#!/usr/bin/env bash
# Issue 13's speed figures (BENCHMARKS.md, "Lean queue: live and finished
# apart"): one run of one kind, with the WAL it wrote and what else ran.
#
#   lean_queue.sh drain    HERALD_BIN LABEL   herald bench --deliver-after, 100,000 in batches of 1,000
#   lean_queue.sh e2e      HERALD_BIN LABEL   herald bench, 100,000 in batches of 100, delivery running
#   lean_queue.sh sqlite   HERALD_BIN LABEL   the same on a temporary SQLite file
#   lean_queue.sh gw       -          LABEL   Graphile Worker's drain of 100,000 (../shared/peers)
#
# Appends one line per run to $OUT/runs.tsv and keeps each run's output in
# $OUT. PostgreSQL runs also record, over the run: pg_stat_wal's deltas
# (the whole cluster), and pg_waldump's records and bytes of the run's
# own database (a physical replication slot holds the WAL until it is
# read), by relation, so that other writers on the cluster are left out.
# Run it alternately for the two builds (A B A B): the machine drifts.
# ANALYZE_EVERY=2 analyzes the run's live table every 2 s (see below);
# CHECKPOINT=1 begins it with a checkpoint (see below).
set -euo pipefail
mode=$1 bin=$2 label=$3
PG=${PG:-postgres://postgres@127.0.0.1:5432}
DB=${DB:-bench_lean}
GW_DB=${GW_DB:-bench_lean_gw}
OUT=${OUT:-/tmp/lean}
WAL_DIR=${WAL_DIR:-/var/lib/postgresql/15/main/pg_wal}
N=${N:-100000}
peers=$(cd "$(dirname "$0")/../../shared/peers" 2>/dev/null && pwd || echo /work/shared/peers)
mkdir -p "$OUT"
tag="$(date -u +%H%M%S)-$mode-$label"
q() { psql "$PG/${2:-$DB}" -AtXqc "$1"; }

# Between runs: what the last run left (catalog rows of dropped schemas,
# Graphile's truncated table) is vacuumed, as autovacuum is off here.
q "VACUUM ANALYZE" "$DB"
q "VACUUM ANALYZE" "$GW_DB"
# CHECKPOINT=1: a checkpoint just before the run, so that every run
# starts the same way as to full-page images (the first change of each
# page after a checkpoint logs the whole page), which otherwise depend on
# where the server's own checkpoints fall.
[ -n "${CHECKPOINT:-}" ] && q "CHECKPOINT"

case $mode in
  drain) args=(--messages "$N" --batch-size 1000 --deliver-after --storage "$PG/$DB") ;;
  e2e) args=(--messages "$N" --batch-size 100 --storage "$PG/$DB") ;;
  sqlite) args=(--messages "$N" --batch-size 100) ;;
  gw) ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac

pg=1; [ "$mode" = sqlite ] && pg=0
db=$DB; [ "$mode" = gw ] && db=$GW_DB
if [ $pg = 1 ]; then
  dboid=$(q "SELECT oid FROM pg_database WHERE datname = '$db'")
  q "SELECT pg_create_physical_replication_slot('bench_lean_wal', true)" >/dev/null
  read -r lsn0 bytes0 recs0 fpi0 < <(q "SELECT pg_current_wal_lsn(), wal_bytes, wal_records, wal_fpi FROM pg_stat_wal" | tr '|' ' ')
  xact0=$(q "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
  # The run's relations, by file node, sampled while it runs: the bench
  # drops its schema at the end.
  ( while :; do
      psql "$PG/$db" -AtXqc "SELECT c.relfilenode, n.nspname || '.' || c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname LIKE 'herald_bench_%' OR n.nspname = 'graphile_worker'" 2>/dev/null || true
      sleep 1
    done ) > "$OUT/$tag.rels.raw" &
  sampler=$!
fi
# ANALYZE_EVERY=s: ANALYZE the run's live table that often, as
# autovacuum's auto-analyze would on a server (it is off here). The bench
# analyzes once, after its warm-up, when the live table is empty.
if [ -n "${ANALYZE_EVERY:-}" ] && [ $pg = 1 ]; then
  ( while sleep "$ANALYZE_EVERY"; do
      for s in $(q "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'herald\_bench\_%'" "$db"); do
        q "ANALYZE $s.messages" "$db" 2>/dev/null || true
      done
    done ) &
  analyzer=$!
fi
load0=$(cut -d' ' -f1-3 /proc/loadavg)
( sleep 5; ps -eo pcpu,comm --sort=-pcpu | head -8 | tail -7 | tr -s ' ' | paste -sd';' ) > "$OUT/$tag.ps" &
t0=$(date +%s.%N)
if [ "$mode" = gw ]; then
  DATABASE_URL="$PG/$GW_DB" "$peers"/graphile-worker/run.sh "$N" > "$OUT/$tag.json"
else
  "$bin" bench "${args[@]}" --json > "$OUT/$tag.json" 2> "$OUT/$tag.err"
fi
t1=$(date +%s.%N)
load1=$(cut -d' ' -f1-3 /proc/loadavg)
wait_ps=$(cat "$OUT/$tag.ps" 2>/dev/null || true)

[ -n "${analyzer:-}" ] && kill "$analyzer" 2>/dev/null
wal="-"
if [ $pg = 1 ]; then
  kill "$sampler" 2>/dev/null || true
  read -r lsn1 bytes1 recs1 fpi1 < <(q "SELECT pg_current_wal_lsn(), wal_bytes, wal_records, wal_fpi FROM pg_stat_wal" | tr '|' ' ')
  xact1=$(q "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
  sort -u "$OUT/$tag.rels.raw" | tr '|' ' ' > "$OUT/$tag.rels"
  # Records of the run's database, by the relation of their first block
  # (a partition's or index's name as sampled), and all records by kind.
  /usr/lib/postgresql/15/bin/pg_waldump -p "$WAL_DIR" -s "$lsn0" -e "$lsn1" 2>/dev/null |
    awk -v db="$dboid" -v rels="$OUT/$tag.rels" '
      BEGIN { while ((getline l < rels) > 0) { split(l, a, " "); name[a[1]] = a[2] } }
      {
        rm = $2; match($0, /rec\/tot\): *[0-9]+\/ *[0-9]+/); s = substr($0, RSTART, RLENGTH)
        sub(/.*\/ */, "", s); len = s + 0
        allr++; allb += len
        if (match($0, /rel 1663\/[0-9]+\/[0-9]+/)) {
          split(substr($0, RSTART + 9, RLENGTH - 9), p, "/")
          if (p[1] == db) {
            key = (p[2] in name) ? name[p[2]] : "rel " p[2]
            sub(/^[^.]*\./, "", key)
            dbr++; dbb += len; r[key]++; b[key] += len; k[rm]++; kb[rm] += len
          }
        } else { nr[rm]++; nb[rm] += len }
      }
      END {
        printf "all %d %d\ndb %d %d\n", allr, allb, dbr, dbb
        for (x in r) printf "rel %s %d %d\n", x, r[x], b[x]
        for (x in k) printf "kind %s %d %d\n", x, k[x], kb[x]
        for (x in nr) printf "norel %s %d %d\n", x, nr[x], nb[x]
      }' > "$OUT/$tag.wal"
  # By record type, the whole cluster (other writers included).
  /usr/lib/postgresql/15/bin/pg_waldump -p "$WAL_DIR" -s "$lsn0" -e "$lsn1" --stats=record \
    > "$OUT/$tag.walstats" 2>/dev/null || true
  echo "$lsn0 $lsn1" >> "$OUT/$tag.walstats"
  q "SELECT pg_drop_replication_slot('bench_lean_wal')" >/dev/null
  wal="$((bytes1 - bytes0)) $((recs1 - recs0)) $((fpi1 - fpi0)) $(awk '$1=="db"{print $2, $3}' "$OUT/$tag.wal") $((xact1 - xact0))"
fi

if [ "$mode" = gw ]; then
  fig=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["process_jobs_per_s"]), round(r["enqueue_jobs_per_s"]), r["rowsLeftAfterDrain"] == 0 and r["failed"] == 0)' "$OUT/$tag.json")
else
  fig=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); e=r["end_to_end"]
print(round(e["drain_messages_per_second"] or 0), round(e["messages_per_second"]), round(r["enqueue"]["messages_per_second"]), e["sent_while_enqueuing"], r["load"]["warmup"], r["verification"]["passed"])' "$OUT/$tag.json")
fi
# label mode seconds | figures | pg_stat_wal bytes records fpi; the database's records bytes; its commits | load before, after | top processes 5 s in
label="$label${ANALYZE_EVERY:+ analyze/${ANALYZE_EVERY}s}"
printf '%s\t%s\t%s\t%.1f\t%s\t%s\t%s -> %s\t%s\n' "$tag" "$label" "$mode" "$(echo "$t1 - $t0" | bc)" "$fig" "$wal" "$load0" "$load1" "$wait_ps" >> "$OUT/runs.tsv"
tail -n1 "$OUT/runs.tsv"
