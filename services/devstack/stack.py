"""`pbseg stack up|down|status`: the whole local system in the background (make up/down/status)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
from pathlib import Path

from services.common.settings import StackSettings
from services.common.topics import ensure_topics, topic_plan
from services.devstack.cluster import KAFKA_CLUSTER_PORTS, REDIS_CLUSTER_PORTS, kafka_node_name, redis_node_name
from services.devstack.cluster_kafka import start_kafka_cluster, stop_kafka_cluster
from services.devstack.cluster_redis import start_redis_cluster, stop_redis_cluster
from services.devstack.infra import Endpoint, start_kafka, start_redis
from services.devstack.procs import StartupError, is_running, pid_of, start_process, stop_process, wait_until

BIN = Path(sys.executable).parent
SERVICES = ("ingress", "processor", "query")
INFRA = ("kafka", "redis")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except Exception:  # noqa: BLE001 - not ready yet
        return False


def service_argv(name: str, settings: StackSettings) -> list[str]:
    if name == "ingress":
        ep = Endpoint.parse(settings.ingress_bind, 8080)
        # HTTP server, workers and limits come from IngressSettings (services/ingress/__main__.py).
        return [str(BIN / "python"), "-m", "services.ingress", "--bind", f"{ep.host}:{ep.port}"]
    if name == "query":
        ep = Endpoint.parse(settings.query_bind, 8081)
        return [str(BIN / "uvicorn"), "services.query.bootstrap:create_app", "--factory", "--host", ep.host,
                "--port", str(ep.port), "--no-access-log", "--log-level", "warning"]
    if name == "processor":
        return [str(BIN / "python"), "-m", "services.processor", "-l", "warn"]
    raise ValueError(name)


def readiness_url(name: str, settings: StackSettings, env: dict[str, str] | None = None) -> str | None:
    if name == "processor":  # its /readyz answers 200 once Redis answers and its consumer joined the group
        return f"http://127.0.0.1:{(env or os.environ).get('PROCESSOR_WEB_PORT', '6066')}/readyz"
    if name == "ingress":
        ep = Endpoint.parse(settings.ingress_bind, 8080)
        return f"http://{ep.host}:{ep.port}/readyz"
    if name == "query":
        ep = Endpoint.parse(settings.query_bind, 8081)
        return f"http://{ep.host}:{ep.port}/readyz"
    return None


def start_service(name: str, settings: StackSettings, env: dict[str, str] | None = None, log_name: str | None = None) -> None:
    log_name = log_name or name
    # supervised: a crash is restarted and logged (services/devstack/supervise.py)
    start_process(log_name, [str(BIN / "python"), "-m", "services.devstack.supervise", "--",
                             *service_argv(name, settings)], env=env or dict(os.environ))
    url = readiness_url(name, settings, env)
    if url:
        wait_until(log_name, lambda: http_ok(url), timeout=60)
    else:
        time.sleep(1.0)
        wait_until(log_name, lambda: is_running(log_name), timeout=5)


def start_infra(settings: StackSettings) -> None:
    """Redis and Kafka of the topology the settings name (PBSEG_TOPOLOGY)."""
    if settings.topology == "cluster":
        print("starting the Redis Cluster (3 masters, 3 replicas) ...", flush=True)
        start_redis_cluster()
        print("starting the Kafka cluster (3 KRaft nodes) ...", flush=True)
        start_kafka_cluster()
        return
    print("starting redis ...", flush=True)
    start_redis(settings.redis_url)
    print("starting kafka ...", flush=True)
    start_kafka(settings.kafka_bootstrap_servers)


def infra_names() -> list[str]:
    """Every infrastructure process of either topology."""
    return [*INFRA, *(kafka_node_name(i + 1) for i in range(len(KAFKA_CLUSTER_PORTS))),
            *(redis_node_name(port) for port in REDIS_CLUSTER_PORTS)]


def up() -> int:
    settings = StackSettings()
    started = time.monotonic()
    try:
        start_infra(settings)
        print("creating topics ...", flush=True)
        try:
            asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, topic_plan(settings)))
        except TimeoutError as exc:
            raise StartupError("kafka", str(exc)) from exc
        for name in SERVICES:
            print(f"starting {name} ...", flush=True)
            start_service(name, settings)
    except StartupError as exc:
        print(f"\nFAILED: {exc.component} did not start.\n{exc}", file=sys.stderr)
        return 1
    ing = Endpoint.parse(settings.ingress_bind, 8080)
    qry = Endpoint.parse(settings.query_bind, 8081)
    print(f"\nup in {time.monotonic() - started:.1f}s")
    print(f"  ingress   http://{ing.host}:{ing.port}/api/postback/?id=<install id>&status=<event>_<account>")
    print(f"  query     http://{qry.host}:{qry.port}/docs")
    print(f"  segments  http://{qry.host}:{qry.port}/ui/   (sign in with an API key from `pbseg accounts create`)")
    print(f"  topology  {settings.topology}")
    print(f"  kafka     {settings.kafka_bootstrap_servers}")
    print(f"  redis     {settings.redis_url}")
    print("  logs      .run/logs/")
    return 0


def down() -> int:
    for name in (*reversed(SERVICES), *INFRA):
        if stop_process(name, timeout=20):
            print(f"stopped {name}")
    for name in (*stop_kafka_cluster(), *stop_redis_cluster()):  # each cluster's nodes at once
        print(f"stopped {name}")
    return 0


def status() -> int:
    for name in (*infra_names(), *SERVICES):
        pid = pid_of(name)
        if pid is None and name not in (*INFRA, *SERVICES):
            continue  # the other topology's nodes
        print(f"{name:10s} {'running pid ' + str(pid) if pid else 'stopped'}")
    return 0
