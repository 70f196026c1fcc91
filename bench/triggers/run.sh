#!/usr/bin/env bash
# Triggers benchmark (bench/results/triggers.md, issue 14): Redis bytes per pending fire against the
# raw entry bytes; a burst of fires due in the same second end to end (processor subprocess, shared
# Kafka) against a bare aiokafka producer; steady fire lateness next to other postback load.
# Knobs (full scale by default): BENCH_TRIGGERS_PENDING (1000000 pending fires), BENCH_TRIGGERS_SPREADS
# (seconds the cause events are spread over, one memory run each, "86400,3600"), BENCH_TRIGGERS_BURST
# (100000 fires), BENCH_TRIGGERS_STEADY_S (60), BENCH_TRIGGERS_STEADY_RATE (1000 fires/s),
# BENCH_TRIGGERS_STEADY_LOAD (5000 other postbacks/s), BENCH_TRIGGERS_ONLY (e.g. "memory" or
# "burst,steady": prints the tables, writes nothing). Processor settings (PROCESSOR_TICK_INTERVAL_MS,
# PROCESSOR_FETCH_MAX_WAIT_MS, PROCESSOR_OUTBOX_INTERVAL_MS, ...) pass through from the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=$PWD/.venv/bin/python
[ -x "$PY" ] || make setup
need() {  # need <command> <debian package>
  command -v "$1" >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { echo "bench/triggers needs $1: apt-get install -y $2" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need redis-server redis-server
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
# Kafka: reuse the running one (make up), else start it and stop it afterwards.
STARTED=$("$PY" -c "
import os
from services.devstack.infra import infra_running, start_kafka
up = infra_running(os.environ['KAFKA_BOOTSTRAP_SERVERS'], 'redis://127.0.0.1:1/0')['kafka']
start_kafka(os.environ['KAFKA_BOOTSTRAP_SERVERS'])
print('' if up else 'kafka')")
trap '[ -n "$STARTED" ] && "$PY" -c "from services.devstack.procs import stop_process; stop_process(\"kafka\")" || true' EXIT
"$PY" bench/triggers/bench.py \
  --pending "${BENCH_TRIGGERS_PENDING:-1000000}" \
  --spreads "${BENCH_TRIGGERS_SPREADS:-86400,3600}" \
  --burst "${BENCH_TRIGGERS_BURST:-100000}" \
  --steady-s "${BENCH_TRIGGERS_STEADY_S:-60}" \
  --steady-rate "${BENCH_TRIGGERS_STEADY_RATE:-1000}" \
  --steady-load "${BENCH_TRIGGERS_STEADY_LOAD:-5000}" \
  --only "${BENCH_TRIGGERS_ONLY:-memory,burst,steady}"
