#!/usr/bin/env bash
# Windowed-query benchmark: "reg within 30d, dep not within 7d, dep count >= 2" over 90 days of
# history, answered by the query service over HTTP (POST /segments/count with conditions), by DuckDB
# (in-process, 2 threads, GROUP BY device HAVING) and by pyroaring (the same per-hour/day bitmaps
# in-process: the floor), p50/p99, with Redis memory before/after the windowed keys.
# Starts its own Redis (temp dir, port 6472, no persistence) and query service (port 8472), stops both.
#   BENCH_WINDOWS_DEVICES=10000000 (default)   quick check: BENCH_WINDOWS_DEVICES=200000
#   BENCH_WINDOWS_SEED, BENCH_WINDOWS_REQUESTS (2000), BENCH_WINDOWS_DUCKDB_RUNS (20), BENCH_WINDOWS_ROARING_RUNS (500)
#   BENCH_WINDOWS_REDIS_ARGS="--set-max-intset-entries 8192"   extra redis-server settings (e.g. set encodings)
# Writes bench/results/query_windows.md (and prints it).
set -euo pipefail
cd "$(dirname "$0")/../.."
REDIS_PORT="${BENCH_WINDOWS_REDIS_PORT:-6472}"
HTTP_PORT="${BENCH_WINDOWS_HTTP_PORT:-8472}"

need_apt() {
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
  else
    echo "missing $*: run as root or apt-get install $*" >&2; exit 1
  fi
}
command -v redis-server >/dev/null || need_apt redis-server
[ -x .venv/bin/python ] || make setup
.venv/bin/python -c 'import duckdb, pyroaring, numpy' 2>/dev/null || .venv/bin/pip install -q -e '.[dev]'

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$REDIS_PORT" "$HTTP_PORT"; do
  if port_busy "$port"; then echo "port $port is in use: set BENCH_WINDOWS_REDIS_PORT / BENCH_WINDOWS_HTTP_PORT" >&2; exit 1; fi
done

WORK="$(mktemp -d /tmp/pbseg-bench-windows.XXXXXX)"
REDIS_PID=""
cleanup() {
  set +e
  [ -n "$REDIS_PID" ] && { kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; }
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "starting redis on :$REDIS_PORT"
# The encodings `make up` runs Redis with (keys.REDIS_ENCODING_ARGS); no persistence: a bench server.
ENCODINGS="$(.venv/bin/python -c 'from services.common.keys import REDIS_ENCODING_ARGS as a; print(" ".join(a))')"
# shellcheck disable=SC2086
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
  $ENCODINGS ${BENCH_WINDOWS_REDIS_ARGS:-} \
  --logfile "$WORK/redis.log" --daemonize no &
REDIS_PID=$!
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

CMD="bash bench/query/windows_run.sh"
[ -n "${BENCH_WINDOWS_REDIS_ARGS:-}" ] && CMD="BENCH_WINDOWS_REDIS_ARGS=\"$BENCH_WINDOWS_REDIS_ARGS\" $CMD"
[ -n "${BENCH_WINDOWS_DEVICES:-}" ] && CMD="BENCH_WINDOWS_DEVICES=$BENCH_WINDOWS_DEVICES $CMD"
BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" BENCH_HTTP_PORT="$HTTP_PORT" BENCH_WINDOWS_COMMAND="$CMD" \
BENCH_WINDOWS_REDIS_CONFIG="--save \"\" --appendonly no $ENCODINGS ${BENCH_WINDOWS_REDIS_ARGS:-}" \
  .venv/bin/python bench/query/windows_bench.py
