"""The local 6-node Redis Cluster (3 masters, one replica each) for fault tests; ports and the
crash helper in cluster.py."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Sequence

import redis

from services.common.keys import REDIS_ENCODING_ARGS
from services.devstack.cluster import HOST, REDIS_CLUSTER_PORTS, redis_node_name, stop_nodes, wait_nodes
from services.devstack.infra import redis_server_binary
from services.devstack.procs import RUN_DIR, StartupError, port_open, start_process


@dataclass(frozen=True)
class RedisNode:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})

    @classmethod
    def parse(cls, line: str) -> "RedisNode":
        node_id, address, flags, master, _ping, _pong, _epoch, _link, *slots = line.split()
        ranges = []
        for item in slots:
            if not item.startswith("["):  # "[slot->-id]": a slot being migrated
                start, _, end = item.partition("-")
                ranges.append((int(start), int(end or start)))
        return cls(node_id, int(address.split("@")[0].rpartition(":")[2]), frozenset(flags.split(",")),
                   None if master == "-" else master, tuple(ranges))


def _redis(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)


def redis_cluster_nodes(port: int) -> list[RedisNode]:
    """The cluster as the node on `port` sees it (CLUSTER NODES)."""
    with _redis(port) as client:
        return [RedisNode.parse(line) for line in client.execute_command("CLUSTER", "NODES").splitlines() if line]


def redis_cluster_masters(ports: Sequence[int] = REDIS_CLUSTER_PORTS) -> list[tuple[int, tuple[tuple[int, int], ...]]]:
    """(port, slot ranges) of every master serving slots, as the first node that answers sees it,
    in slot order."""
    for port in ports:
        try:
            nodes = redis_cluster_nodes(port)
        except redis.RedisError:
            continue
        masters = [n for n in nodes if n.is_master and n.slots and not n.failing]
        return sorted(((n.port, n.slots) for n in masters), key=lambda master: master[1][0])
    raise redis.ConnectionError(f"no Redis Cluster node answers on {list(ports)}")


def _redis_cluster_healthy(ports: Sequence[int]) -> bool:
    """Every node says cluster_state:ok and sees len(ports)/2 masters with one replica each, none
    failing, and every replica's link to its master is up."""
    try:
        for port in ports:
            with _redis(port) as client:
                if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                    return False
            nodes = redis_cluster_nodes(port)
            masters = [n for n in nodes if n.is_master and n.slots]
            replicas = [n for n in nodes if "slave" in n.flags]
            if (any(n.failing for n in nodes) or len(nodes) != len(ports) or len(masters) != len(ports) // 2
                    or sorted(r.master_id for r in replicas) != sorted(m.node_id for m in masters)):
                return False
        for replica in replicas:
            with _redis(replica.port) as client:
                if client.info("replication").get("master_link_status") != "up":
                    return False
    except redis.RedisError:
        return False
    return True


def start_redis_cluster(ports: Sequence[int] = REDIS_CLUSTER_PORTS, log=print, timeout: float = 60.0) -> None:
    """Start the nodes whose port does not answer; form the cluster (redis-cli --cluster create,
    replicas 1) when no node belongs to one yet; wait until it is healthy (every node ok, half
    the nodes masters with one replica each). `ports`: an even number, at least 6."""
    names = [redis_node_name(port) for port in ports]
    binary = None
    for port, name in zip(ports, names):
        if port_open(HOST, port):
            continue
        binary = binary or redis_server_binary()
        data = RUN_DIR / "data" / name
        data.mkdir(parents=True, exist_ok=True)
        log(f"starting {name} on {HOST}:{port} ...")
        start_process(name, [
            binary, "--bind", HOST, "--port", str(port), "--dir", str(data),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--protected-mode", "no",
            *REDIS_ENCODING_ARGS])

    def answering() -> bool:
        try:
            for port in ports:
                with _redis(port) as client:
                    client.ping()
            return True
        except redis.RedisError:
            return False
    wait_nodes("redis-cluster", names, answering, timeout, "every Redis Cluster node answering")
    alone = [port for port in ports if len(redis_cluster_nodes(port)) == 1]
    if len(alone) == len(ports):
        log(f"forming the Redis Cluster on {HOST}:{ports[0]}..{ports[-1]} ...")
        # --cluster-yes answers its "Can I set the above configuration?" prompt.
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"  # Debian's redis-tools, with redis-server
        created = subprocess.run([cli, "--cluster", "create", *(f"{HOST}:{p}" for p in ports),
                                  "--cluster-replicas", "1", "--cluster-yes"],
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
        if created.returncode != 0:
            raise StartupError("redis-cluster", "redis-cli --cluster create failed:\n" + created.stdout[-2000:]
                               + created.stderr[-1000:])
    elif alone:
        raise StartupError("redis-cluster", f"nodes {alone} know no cluster while the others form one (a lost "
                           f"nodes.conf?). Form it anew: stop_redis_cluster() and delete {RUN_DIR / 'data'}/redis-c*.")
    wait_nodes("redis-cluster", names, lambda: _redis_cluster_healthy(ports), timeout,
               f"the Redis Cluster ok with {len(ports) // 2} masters and one replica each")


def stop_redis_cluster(ports: Sequence[int] = REDIS_CLUSTER_PORTS) -> list[str]:
    """Stop every node at once (SIGTERM: the AOF is flushed); returns the names that ran."""
    return stop_nodes([redis_node_name(port) for port in ports])
