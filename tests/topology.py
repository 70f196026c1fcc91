"""The infrastructure a test session runs on: `Infra`, and the local cluster topology
(PBSEG_TOPOLOGY=cluster, and always for tests/cluster)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Infra:
    kafka: str
    redis_url: str
    origin: str


def local_cluster():
    """PBSEG_TOPOLOGY=cluster: the project's local cluster (3 KRaft brokers, a Redis Cluster of 3
    masters and 3 replicas, services/devstack/cluster.py); stopped afterwards only if this session
    started it."""
    from services.devstack.cluster import kafka_cluster_bootstrap, redis_cluster_url
    from services.devstack.cluster_kafka import start_kafka_cluster, stop_kafka_cluster
    from services.devstack.cluster_redis import start_redis_cluster, stop_redis_cluster
    from services.devstack.infra import infra_running

    kafka, redis_url = kafka_cluster_bootstrap(), redis_cluster_url()
    before = infra_running(kafka, redis_url.replace("redis+cluster://", "redis://"))
    start_redis_cluster()
    start_kafka_cluster()
    yield Infra(kafka, redis_url, "local cluster")
    if not before["kafka"]:
        stop_kafka_cluster()
    if not before["redis"]:
        stop_redis_cluster()
