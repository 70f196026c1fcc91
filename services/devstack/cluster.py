"""Local clusters for fault tests (issue 12): three KRaft Kafka nodes and a six-node Redis Cluster,
from the same jars and redis-server as the single-node stack (services/devstack/infra.py), on
ports of their own so that both can run at once.

Ports, all on 127.0.0.1 (every function takes `ports` to override them):

  Kafka  kafka-c1, kafka-c2, kafka-c3   brokers 19092, 19094, 19096; controllers one above (19093, 19095, 19097)
  Redis  redis-c17000 .. redis-c17005   clients 17000-17005; cluster bus 10000 above (27000-27005)

Every Kafka node is broker and controller (node.id 1..3, a static quorum of 3 voters), so losing
any one keeps a controller quorum and, with replication 3 and min.insync.replicas 2, acks=all
writes. Redis runs 3 masters with one replica each: a lost master's replica takes over after
cluster-node-timeout (2 s).

Starting is idempotent: a node whose port answers is left alone, so calling start again after
`kill_node` brings back just the killed node, with its data. Data lives in RUN_DIR/data/kafka-c<n>
and RUN_DIR/data/redis-c<port>; logs and pid files where procs.py keeps them.

This module: the ports and process names, the settings strings that point a service at the
clusters (`cluster_env`), the crash helper `kill_node`, and `stop_nodes` / `wait_nodes`. Starting,
stopping and inspecting each cluster: cluster_kafka.py (start_kafka_cluster, stop_kafka_cluster,
kafka_partition_leader, kafka_brokers) and cluster_redis.py (start_redis_cluster,
stop_redis_cluster, redis_cluster_masters, redis_cluster_nodes).
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from services.devstack.procs import PID_DIR, StartupError, log_path, pid_of, stop_process, tail

HOST = "127.0.0.1"
KAFKA_CLUSTER_PORTS = (19092, 19094, 19096)
REDIS_CLUSTER_PORTS = (17000, 17001, 17002, 17003, 17004, 17005)


def kafka_node_name(node_id: int) -> str:
    return f"kafka-c{node_id}"


def redis_node_name(port: int) -> str:
    return f"redis-c{port}"


def kafka_cluster_bootstrap(ports: Sequence[int] = KAFKA_CLUSTER_PORTS) -> str:
    """KAFKA_BOOTSTRAP_SERVERS for the cluster: "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"."""
    return ",".join(f"{HOST}:{port}" for port in ports)


def redis_cluster_url(ports: Sequence[int] = REDIS_CLUSTER_PORTS[:3]) -> str:
    """REDIS_URL for the cluster: "redis+cluster://127.0.0.1:17000,127.0.0.1:17001,127.0.0.1:17002"
    (startup nodes; the client learns the rest from CLUSTER SLOTS)."""
    return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in ports)


def cluster_env(kafka_ports: Sequence[int] = KAFKA_CLUSTER_PORTS,
                redis_ports: Sequence[int] = REDIS_CLUSTER_PORTS) -> dict[str, str]:
    """The settings (environment) that point a service at both clusters."""
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka_cluster_bootstrap(kafka_ports),
            "REDIS_URL": redis_cluster_url(redis_ports[:3])}


def kill_node(name: str, timeout: float = 10.0) -> int:
    """SIGKILL the node `name` (by its pid file, with its process group): a crash, with no chance
    to flush or hand over. Returns once the process is gone, its pid file removed, so that
    start_*_cluster starts it again. Raises ProcessLookupError when it does not run."""
    pid = pid_of(name)
    if pid is None:
        raise ProcessLookupError(f"{name} is not running (no live pid file in {PID_DIR})")
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while not _exited(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} (pid {pid}) still exists {timeout:.0f}s after SIGKILL")
        time.sleep(0.05)
    (PID_DIR / f"{name}.pid").unlink(missing_ok=True)
    return pid


def stop_nodes(names: Sequence[str], timeout: float = 20.0) -> list[str]:
    """Stop the nodes `names` all at once (SIGTERM, SIGKILL after `timeout`); returns those that
    ran. At once, because a Kafka node stopped last, alone, would wait out the timeout for a
    controller quorum that had already left."""
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        ran = list(pool.map(lambda name: stop_process(name, timeout=timeout), names))
    return [name for name, was_running in zip(names, ran) if was_running]


def _exited(pid: int) -> bool:
    try:  # our child: reap it, or it stays a zombie that os.kill(pid, 0) still finds
        if os.waitpid(pid, os.WNOHANG)[0]:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_nodes(component: str, names: Sequence[str], ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `ready` until true. Raises StartupError with the log tail of a node of `names` that
    died meanwhile, or (naming `component` and `what` was awaited) of every node after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        for name in names:
            path = PID_DIR / f"{name}.pid"
            if path.exists() and ((pid := pid_of(name)) is None or _exited(pid)):
                path.unlink(missing_ok=True)
                raise StartupError(name, f"exited during start-up. Last lines of {log_path(name)}:\n{tail(name)}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log_path(name)}\n{tail(name, 10)}" for name in names)
            raise StartupError(component, f"not ready after {timeout:.0f}s: {what}.\n{tails}")
        time.sleep(0.2)
