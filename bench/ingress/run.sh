#!/usr/bin/env bash
# Ingress throughput (bench/results/ingress.md): wrk + postbacks.lua (varied valid postbacks
# for >= 10,000 devices) against nginx answering a bare 204 (the HTTP ceiling, same run), then
# against the ingress (its own HTTP server, confluent-kafka: the one production path) with each
# worker count, with Kafka on this box. Afterwards it counts the records on each run's own topic:
# every 2xx must be there.
#
# Knobs: BENCH_INGRESS_DURATION (s, default 15), BENCH_INGRESS_CONNECTIONS (64),
# BENCH_INGRESS_THREADS (wrk threads, 1), BENCH_INGRESS_DEVICES (10000),
# BENCH_INGRESS_WORKERS (INGRESS_WORKERS of each run, default "1 2": the default first).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
DURATION=${BENCH_INGRESS_DURATION:-15}
CONNS=${BENCH_INGRESS_CONNECTIONS:-64}
THREADS=${BENCH_INGRESS_THREADS:-1}
DEVICES=${BENCH_INGRESS_DEVICES:-10000}
WORKER_COUNTS=${BENCH_INGRESS_WORKERS:-"1 2"}
WARMUP=3
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6390/0}
RUN=$(date +%s)-$$
WORK=$(mktemp -d /tmp/bench-ingress.XXXXXX)
OUT=bench/results/ingress.md
mkdir -p bench/results

need() {  # need <command> <debian package>
  command -v "$1" >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { echo "bench/ingress needs $1: apt-get install -y $2" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need wrk wrk
need nginx nginx
[ -x "$PY" ] || make setup

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true; done
  [ -n "${STARTED_INFRA:-}" ] && "$PY" -c "from services.devstack.procs import stop_process as s; [s(n) for n in '$STARTED_INFRA'.split()]" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Kafka and Redis: reuse running ones (make up), else start them and stop them afterwards.
STARTED_INFRA=$("$PY" - <<'PY'
import os
from services.devstack.infra import infra_running, start_kafka, start_redis
before = infra_running(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["REDIS_URL"])
start_redis(os.environ["REDIS_URL"])
start_kafka(os.environ["KAFKA_BOOTSTRAP_SERVERS"], log=lambda *a: None)
print(" ".join(n for n, up in before.items() if not up))
PY
)

wait_http() {  # wait_http <url> <seconds>
  for _ in $(seq 1 $(( $2 * 5 ))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.2
  done
  return 1
}

run_wrk() {  # run_wrk <base url> <seconds> <output file>; wrk's user+system CPU seconds -> <output file>.cpu
  local TIMEFORMAT='%U %S'
  { time ACCOUNT=$ACCOUNT CODES=$CODES DEVICES=$DEVICES wrk -t"$THREADS" -c"$CONNS" -d"$2"s --latency --timeout 5s \
    -s bench/ingress/postbacks.lua "$1" > "$3" 2>&1 ; } 2> "$3.cpu"
}
wrk_cpu_us() {  # wrk_cpu_us <output file> <requests>: wrk's CPU µs per request
  "$PY" -c "import sys; u, s = map(float, open(sys.argv[1]).read().split()[-2:]); print(round((u + s) * 1e6 / max(1, int(sys.argv[2]))))" "$1.cpu" "$2"
}

ROWS=()
NGINX_RPS=0
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
FAILED=0
TARGET_LINES=()

# ---- nginx: the HTTP ceiling
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
sed -e "s#RUNDIR#$WORK/nginx#g" -e "s#PORT#$NGINX_PORT#g" -e "s#WORKERS#1#g" bench/ingress/nginx.conf.tmpl > "$WORK/nginx/nginx.conf"
setsid nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx/out.log" 2>&1 &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.1; done
ACCOUNT=1 CODES=first_open
echo "--- nginx (bare 204), ${DURATION}s"
run_wrk "http://127.0.0.1:$NGINX_PORT" "$DURATION" "$WORK/nginx.wrk"
read -r n_req n_non n_err n_rps n_p50 n_p99 < <("$PY" bench/ingress/helper.py wrk "$WORK/nginx.wrk")
NGINX_RPS=$n_rps
kill -TERM -- "-$NGINX_PID" 2>/dev/null || true
echo "nginx: $n_rps req/s p50 ${n_p50} ms p99 ${n_p99} ms"

# ---- the ingress, per worker count
run_no=0
for workers in $WORKER_COUNTS; do
  run_no=$((run_no + 1))
  tag="$run_no-w$workers"
  prefix="bench-$RUN-$tag"
  topic="bench-postbacks-$RUN-$tag"; rejected="bench-rejected-$RUN-$tag"
  eval "$("$PY" bench/ingress/helper.py setup "$REDIS_URL" "$prefix" "$KAFKA_BOOTSTRAP_SERVERS" "$topic" "$rejected")"
  port=$(free_port)
  echo "--- ingress $tag (account $ACCOUNT), ${WARMUP}s warm-up + ${DURATION}s"
  PBSEG_KEY_PREFIX=$prefix PBSEG_TOPIC_POSTBACKS=$topic PBSEG_TOPIC_REJECTED=$rejected \
    INGRESS_WORKERS=$workers INGRESS_BIND=127.0.0.1:$port PBSEG_LOG_LEVEL=warning \
    setsid "$PY" -m services.ingress > "$WORK/$tag.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  if ! wait_http "http://127.0.0.1:$port/readyz" 60; then echo "ingress $tag did not become ready:"; tail -20 "$WORK/$tag.log"; exit 1; fi
  run_wrk "http://127.0.0.1:$port" "$WARMUP" "$WORK/$tag.warm"
  cpu_before=$("$PY" bench/ingress/helper.py cpu "$pid")
  run_wrk "http://127.0.0.1:$port" "$DURATION" "$WORK/$tag.wrk"
  cpu_after=$("$PY" bench/ingress/helper.py cpu "$pid")
  read -r w_req w_non _ _ _ _ < <("$PY" bench/ingress/helper.py wrk "$WORK/$tag.warm")
  read -r req non err rps p50 p99 < <("$PY" bench/ingress/helper.py wrk "$WORK/$tag.wrk")
  server_accepted=$("$PY" bench/ingress/helper.py accepted "http://127.0.0.1:$port")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  on_topic=$("$PY" bench/ingress/helper.py count "$KAFKA_BOOTSTRAP_SERVERS" "$topic")
  "$PY" bench/ingress/helper.py cleanup "$REDIS_URL" "$prefix" "$KAFKA_BOOTSTRAP_SERVERS" "$topic" "$rejected" || true
  ok2xx=$(( w_req - w_non + req - non ))
  accepted_rps=$(( (req - non) / DURATION ))
  verdict=OK; [ "$on_topic" -ge "$ok2xx" ] || { verdict="MISSING $(( ok2xx - on_topic ))"; FAILED=1; }
  met=$("$PY" -c "print('met' if $accepted_rps >= 20000 and $p99 <= 25 else 'NOT met')")
  TARGET_LINES+=("- $workers worker(s): $accepted_rps accepted/s, p99 $p99 ms: target **$met**")
  ratio=$("$PY" -c "print(f'{$accepted_rps / $NGINX_RPS:.1%}')")
  cpu_us=$("$PY" -c "print(round(($cpu_after - $cpu_before) * 1e6 / max(1, $req)))")
  wrk_us=$(wrk_cpu_us "$WORK/$tag.wrk" "$req")
  echo "$tag: ${accepted_rps} accepted/s p50 ${p50} ms p99 ${p99} ms ingress CPU ${cpu_us} us/request wrk CPU ${wrk_us} us/request non-2xx $non errors $err; 2xx $ok2xx on topic $on_topic ($verdict)"
  ROWS+=("| $workers | $accepted_rps | $p50 | $p99 | $cpu_us | $wrk_us | $non | $err | $ratio | $ok2xx | $server_accepted | $on_topic | $verdict |")
done

{
  echo "## Ingress"
  echo
  echo "\`bench/ingress/run.sh\`, $(date -u +%Y-%m-%dT%H:%MZ): wrk $THREADS thread(s), $CONNS connections, ${DURATION}s per run"
  echo "(after a ${WARMUP}s warm-up), \`postbacks.lua\`: varied valid postbacks (custom events, reg, install,"
  echo "dep with amount/currency/tid, a quarter with \`ts\`) for $DEVICES devices. Kafka $KAFKA_BOOTSTRAP_SERVERS and"
  echo "Redis on this box; each run has its own topic. The ingress: its own HTTP server (uvloop + httptools),"
  echo "confluent-kafka with acks=all and the idempotent producer."
  echo
  echo "Ceiling: nginx (1 worker) answering a bare 204: **$NGINX_RPS req/s**, p50 $n_p50 ms, p99 $n_p99 ms."
  echo
  echo "| workers | accepted/s | p50 ms | p99 ms | ingress CPU µs/request | wrk CPU µs/request | non-2xx | socket errors | of nginx | 2xx (incl. warm-up) | server counted | records on topic | every 2xx on topic |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Target: >= 20,000 accepted/s with p99 <= 25 ms on 2 cores (wrk, Kafka and the ingress share them)."
  echo "Load average when this run started: $LOAD_BEFORE, when it ended: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine lowers every figure)."
  echo "wrk itself (same box): $(wrk_cpu_us "$WORK/nginx.wrk" "$n_req") µs CPU per request against nginx; per ingress run in the table."
  echo
  printf '%s\n' "${TARGET_LINES[@]}"
  echo
  echo "\"ingress CPU\" is the user+system CPU of the ingress's processes (all threads) during the run divided by"
  echo "the requests wrk completed; \"every 2xx on topic\" compares wrk's 2xx count (warm-up included) with the"
  echo "records on that run's topic after the ingress stopped (the topic may hold a few more: replies still in"
  echo "flight when wrk stopped). \"server counted\" is one scrape of /metrics: with several workers it is one"
  echo "worker's share."
} > "$OUT"
echo "wrote $OUT"
[ "$FAILED" = 0 ] || { echo "bench/ingress: some 2xx answers are missing from the topic" >&2; exit 1; }
