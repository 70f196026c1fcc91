#!/usr/bin/env bash
# Query benchmark: /segments/count (2 included + 1 excluded event) and /segments/events (50 events)
# over HTTP against bulk-loaded synthetic devices, next to a PostgreSQL baseline in the same run.
# Starts its own Redis and PostgreSQL (temp dirs, own ports) and stops them afterwards.
#   BENCH_QUERY_SCALES="1000000 10000000" (default)   quick check: BENCH_QUERY_SCALES=100000
# Writes bench/results/query.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd)"
SCALES="${BENCH_QUERY_SCALES:-1000000 10000000}"
REDIS_PORT="${BENCH_QUERY_REDIS_PORT:-6471}"
PG_PORT="${BENCH_QUERY_PG_PORT:-5471}"
HTTP_PORT="${BENCH_QUERY_HTTP_PORT:-8471}"

need_apt() {
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
  else
    echo "missing $*: run as root or apt-get install $*" >&2; exit 1
  fi
}
command -v redis-server >/dev/null || need_apt redis-server
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt postgresql
PGBIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
[ -x .venv/bin/python ] || make setup

WORK="$(mktemp -d /tmp/pbseg-bench-query.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
AS_PG=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home "$WORK" postgres
  AS_PG=(runuser -u postgres --)
fi
cleanup() {
  set +e
  [ -f "$WORK/pg/postmaster.pid" ] && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "starting redis on :$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
  --logfile "$WORK/redis.log" --daemonize no &
PIDS+=($!)

echo "starting postgresql on :$PG_PORT"
mkdir -p "$WORK/pg" "$WORK/pgsock"
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK/pg" "$WORK/pgsock"
"${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U bench --auth=trust -E UTF8 >/dev/null
# Tuned the way a careful team would for a 24 GB machine (defaults are 128 MB buffers).
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pgsock/pg.log" -w start -o \
  "-p $PG_PORT -k $WORK/pgsock -c listen_addresses=127.0.0.1 -c shared_buffers=4GB -c work_mem=256MB \
   -c maintenance_work_mem=1GB -c effective_cache_size=16GB -c max_wal_size=8GB -c fsync=off \
   -c synchronous_commit=off -c full_page_writes=off -c random_page_cost=1.1" >/dev/null

for i in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
BENCH_PG_DSN="host=127.0.0.1 port=$PG_PORT user=bench dbname=postgres" \
BENCH_HTTP_PORT="$HTTP_PORT" BENCH_SCALES="$SCALES" \
  .venv/bin/python bench/query/bench.py
echo "wrote bench/results/query.md"
# The windowed-segment benchmark (reg within 30d, dep not within 7d, dep count >= 2) against
# DuckDB and pyroaring: its own Redis, writes bench/results/query_windows.md.
bash bench/query/windows_run.sh
