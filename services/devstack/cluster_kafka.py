"""The local 3-node Kafka cluster (KRaft, every node broker and controller) for fault tests; ports
and the crash helper in cluster.py."""

from __future__ import annotations

import base64
import subprocess
import uuid
from typing import Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.devstack.cluster import (HOST, KAFKA_CLUSTER_PORTS, kafka_cluster_bootstrap, kafka_node_name, stop_nodes,
                                       wait_nodes)
from services.devstack.infra import KAFKA_DEPLOY, _java, fetch_kafka_jars
from services.devstack.procs import RUN_DIR, StartupError, port_open, start_process


def _kafka_config(node_id: int, ports: Sequence[int], data) -> str:
    port = ports[node_id - 1]
    voters = ",".join(f"{i}@{HOST}:{p + 1}" for i, p in enumerate(ports, 1))
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{port + 1}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data}",
        "num.partitions=8",
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "offsets.topic.replication.factor=3",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=3",
        "transaction.state.log.min.isr=2",
        "group.initial.rebalance.delay.ms=0",
        # Auto-created topics get the replication above; kept as on the single node.
        "auto.create.topics.enable=true",
        "log.retention.ms=-1",
        # A killed broker is fenced, and its partitions led elsewhere, after 3 s instead of 9 s.
        "broker.session.timeout.ms=3000",
        "broker.heartbeat.interval.ms=500",
        "",
    ])


def _cluster_id(data_dirs) -> str:
    """The id the formatted nodes share (a node formatted later must get the same), else a new one."""
    for data in data_dirs:
        meta = data / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.partition("=")[2].strip()
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _kafka_admin(ports: Sequence[int]) -> AdminClient:
    # log_level 0: a dead node's refused connections are expected here, not worth a line each.
    return AdminClient({"bootstrap.servers": kafka_cluster_bootstrap(ports), "log_level": 0})


def kafka_brokers(ports: Sequence[int] = KAFKA_CLUSTER_PORTS) -> set[int]:
    """The node ids of the brokers in the cluster's metadata (live, unfenced); empty when none answers."""
    try:
        return set(_kafka_admin(ports).list_topics(timeout=3).brokers)
    except KafkaException:
        return set()


def _kafka_healthy(ports: Sequence[int]) -> bool:
    """Every broker in the metadata, and every replica of every partition in sync (a restarted
    node has caught up, so any one node may be lost again)."""
    if not all(port_open(HOST, port) for port in ports):
        return False
    try:
        metadata = _kafka_admin(ports).list_topics(timeout=3)
    except KafkaException:
        return False
    return len(metadata.brokers) == len(ports) and all(
        sorted(p.isrs) == sorted(p.replicas) for topic in metadata.topics.values() for p in topic.partitions.values())


def kafka_partition_leader(topic: str, partition: int, ports: Sequence[int] = KAFKA_CLUSTER_PORTS) -> int:
    """The node id (so kafka_node_name(id) is the process) leading the partition; -1 while none does."""
    metadata = _kafka_admin(ports).list_topics(timeout=5)  # all topics: asking for one could auto-create it
    return metadata.topics[topic].partitions[partition].leader


def start_kafka_cluster(ports: Sequence[int] = KAFKA_CLUSTER_PORTS, log=print, heap: str = "512m",
                        timeout: float = 120.0) -> None:
    """Start the nodes whose port does not answer (formatting a new data dir with the cluster's
    id), then wait until every port answers, the metadata lists every broker and no partition is
    under-replicated. Raises StartupError with the log tail of the node that failed."""
    names = [kafka_node_name(i) for i in range(1, len(ports) + 1)]
    data_dirs = [RUN_DIR / "data" / name for name in names]
    down = [i for i, port in enumerate(ports, 1) if not port_open(HOST, port)]
    if down:
        libs, java = fetch_kafka_jars(log), _java()
        classpath = f"{libs}/*"
        cluster_id = _cluster_id(data_dirs)
        for node_id in down:
            name, data = names[node_id - 1], data_dirs[node_id - 1]
            config = RUN_DIR / f"{name}.properties"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(_kafka_config(node_id, ports, data))
            if not (data / "meta.properties").exists():
                data.mkdir(parents=True, exist_ok=True)
                # A static quorum (controller.quorum.voters): format takes no --initial-controllers.
                # `--cluster-id=<id>`: an id may start with '-', which as a separate argument reads as an option.
                fmt = subprocess.run([java, "-cp", classpath, "kafka.tools.StorageTool", "format",
                                      f"--cluster-id={cluster_id}", "-c", str(config)], capture_output=True, text=True)
                if fmt.returncode != 0:
                    raise StartupError(name, "StorageTool format failed:\n" + fmt.stdout[-1500:] + fmt.stderr[-1500:])
            log(f"starting {name} on {HOST}:{ports[node_id - 1]} ...")
            start_process(name, [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC",
                                 f"-Dlog4j2.configurationFile={KAFKA_DEPLOY / 'log4j2.properties'}",
                                 "-cp", classpath, "kafka.Kafka", str(config)])
    wait_nodes("kafka-cluster", names, lambda: _kafka_healthy(ports), timeout,
               f"every node answering, {len(ports)} brokers in the metadata and every partition fully in sync")


def stop_kafka_cluster(ports: Sequence[int] = KAFKA_CLUSTER_PORTS) -> list[str]:
    """Stop every node at once (SIGTERM, a clean shutdown); returns the names that ran."""
    return stop_nodes([kafka_node_name(i) for i in range(1, len(ports) + 1)])
