#!/usr/bin/env bash
# Processor benchmark (bench/results/processor.md): apply rate vs bare Faust vs bare aiokafka on
# one pre-filled topic, ingress-2xx-to-Redis latency at a steady rate, Redis bytes per device.
# Knobs (full scale by default): BENCH_PROCESSOR_RECORDS (300000), BENCH_PROCESSOR_MEM_DEVICES
# (1000000), BENCH_PROCESSOR_RATES (offered postbacks/s per latency run, "10000,2000"),
# BENCH_PROCESSOR_RATE_SECONDS (30), BENCH_PROCESSOR_FAUST_CAP_S (40), BENCH_PROCESSOR_ONLY=memory (only the
# memory part, needs no Kafka; replaces only the memory paragraph of bench/results/processor.md).
# A/B while developing (print tables, write nothing): BENCH_PROCESSOR_ONLY=processor (worker apply rate and
# CPU per event) or =latency, against BENCH_PROCESSOR_BASELINE_TREE (a directory holding another
# commit: `git archive <commit> | tar -x -C DIR`), alternating BENCH_PROCESSOR_ROUNDS (1) times.
# The apply script alone, without Kafka: bench/processor/profile_apply.py --help.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=$PWD/.venv/bin/python
[ -x "$PY" ] || make setup
need() {  # need <command> <debian package>
  command -v "$1" >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { echo "bench/processor needs $1: apt-get install -y $2" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need redis-server redis-server
need wrk wrk  # the latency runs' background load (the probes come from bench.py)
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
# Kafka: reuse the running one (make up), else start it and stop it afterwards.
STARTED=$("$PY" -c "
import os
from services.devstack.infra import infra_running, start_kafka
up = infra_running(os.environ['KAFKA_BOOTSTRAP_SERVERS'], 'redis://127.0.0.1:1/0')['kafka']
start_kafka(os.environ['KAFKA_BOOTSTRAP_SERVERS'])
print('' if up else 'kafka')")
trap '[ -n "$STARTED" ] && "$PY" -c "from services.devstack.procs import stop_process; stop_process(\"kafka\")" || true' EXIT
"$PY" bench/processor/bench.py \
  --records "${BENCH_PROCESSOR_RECORDS:-300000}" \
  --mem-devices "${BENCH_PROCESSOR_MEM_DEVICES:-1000000}" \
  --rates "${BENCH_PROCESSOR_RATES:-10000,2000}" \
  --rate-seconds "${BENCH_PROCESSOR_RATE_SECONDS:-30}" \
  --faust-cap-s "${BENCH_PROCESSOR_FAUST_CAP_S:-40}" \
  --only "${BENCH_PROCESSOR_ONLY:-all}" \
  --rounds "${BENCH_PROCESSOR_ROUNDS:-1}" \
  --baseline-tree "${BENCH_PROCESSOR_BASELINE_TREE:-}"
