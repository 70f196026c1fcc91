#!/usr/bin/env bash
# Cluster benchmark (bench/results/cluster.md): the processor on one Redis vs the local Redis
# Cluster (3 masters + 3 replicas), same pre-filled topic, same run. Knobs: BENCH_CLUSTER_RECORDS
# (200000), BENCH_CLUSTER_ROUNDS (2). Starts the single-node Kafka and the Redis Cluster unless
# they run, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=$PWD/.venv/bin/python
[ -x "$PY" ] || make setup
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
STARTED=$("$PY" -c "
import os
from services.devstack.infra import infra_running, start_kafka
from services.devstack.cluster_redis import start_redis_cluster
from services.devstack.procs import port_open
kafka_up = infra_running(os.environ['KAFKA_BOOTSTRAP_SERVERS'], 'redis://127.0.0.1:1/0')['kafka']
redis_up = port_open('127.0.0.1', 17000)
start_kafka(os.environ['KAFKA_BOOTSTRAP_SERVERS'])
start_redis_cluster(log=lambda *a: None)
print(' '.join(n for n, up in (('kafka', kafka_up), ('rediscluster', redis_up)) if not up))")
cleanup() {
  for what in $STARTED; do
    case $what in
      kafka) "$PY" -c "from services.devstack.procs import stop_process; stop_process('kafka')" ;;
      rediscluster) "$PY" -c "from services.devstack.cluster_redis import stop_redis_cluster; stop_redis_cluster()" ;;
    esac
  done
}
trap cleanup EXIT
"$PY" bench/cluster/bench.py --records "${BENCH_CLUSTER_RECORDS:-200000}" --rounds "${BENCH_CLUSTER_ROUNDS:-2}"
