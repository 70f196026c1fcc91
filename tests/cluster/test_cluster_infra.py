"""The local clusters of issue 12 (services/devstack/cluster*.py): a 3-node Kafka cluster replicates
the project's topics 3 ways and keeps every acks=all record across a leader crash; a 6-node Redis
Cluster routes hash tags to their master and promotes a replica when that master crashes.

The clusters are the session's local cluster (ports 19092-19097, 17000-17005,
tests/cluster/conftest.py), not the single-node broker and Redis.
"""

from __future__ import annotations

import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisClusterException

from cleanup import delete_topics
from services.common.settings import CommonSettings
from services.common.topics import TopicSpec, describe_topic_configs, ensure_topics, topic_plan
from services.devstack.cluster import (HOST, KAFKA_CLUSTER_PORTS, REDIS_CLUSTER_PORTS, kafka_cluster_bootstrap,
                                       kafka_node_name, kill_node, redis_node_name)
from services.devstack.cluster_kafka import kafka_brokers, kafka_partition_leader, start_kafka_cluster
from services.devstack.cluster_redis import redis_cluster_masters, redis_cluster_nodes, start_redis_cluster
from waiting import wait_for

BOOTSTRAP = kafka_cluster_bootstrap()
ALL_SLOTS = 16384


@pytest.fixture
def clusters(infra):
    """Both clusters of the session (tests/cluster/conftest.py) up and healthy: a node an earlier
    fault test killed is back, every partition in sync, every master with its replica."""
    start_redis_cluster()
    start_kafka_cluster()


@pytest.fixture
async def own_topics(unique):
    yield
    await delete_topics(BOOTSTRAP, unique)


def partitions_of(topic: str) -> dict[int, tuple[list[int], list[int]]]:
    """{partition: (replicas, in-sync replicas)} from the cluster's metadata."""
    metadata = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0}).list_topics(timeout=10)
    return {p.id: (list(p.replicas), list(p.isrs)) for p in metadata.topics[topic].partitions.values()}


def acks_all_producer() -> Producer:
    return Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                     "message.timeout.ms": 30_000, "log_level": 0})


def produce(producer: Producer, topic: str, values: list[str], acked: list, failed: list) -> None:
    """Queues `values`; their delivery reports land in `acked` ((partition, offset, value)) or `failed`."""
    def report(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value().decode()))
        else:
            failed.append((msg.value().decode(), str(err)))
    for value in values:
        producer.produce(topic, value=value.encode(), key=value.encode(), on_delivery=report)


async def read_back(topic: str, partitions: int, count: int, unique: str) -> list[tuple[int, int, str]]:
    """(partition, offset, value) of the first `count` records, read from the beginning."""
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"read-{unique}", "enable.auto.commit": False,
                         "log_level": 0})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records: list[tuple[int, int, str]] = []

    def more() -> bool:
        for msg in consumer.consume(num_messages=500, timeout=0.5):
            assert msg.error() is None, msg.error()
            records.append((msg.partition(), msg.offset(), msg.value().decode()))
        return len(records) >= count
    try:
        await wait_for(more, timeout=30, interval=0, message=f"{count} records on {topic}")
    finally:
        consumer.close()
    return sorted(records)


@pytest.mark.parametrize("configured", [True, False], ids=["set", "fitted"])
async def test_project_topics_get_three_in_sync_replicas_and_acks_all_round_trips(clusters, unique, own_topics,
                                                                                   configured):
    """topic_plan / ensure_topics on the cluster: replication 3 and min.insync.replicas 2, as set
    or (unset) fitted to 3 brokers; every partition has 3 distinct replicas, all in sync; records
    produced with acks=all are all acknowledged and read back."""
    assert kafka_brokers() == {1, 2, 3}
    # Every topic the plan names gets the test's own name (so it is deleted at the end).
    values = {field.alias: f"{name.removeprefix('topic_')}-{unique}"
              for name, field in CommonSettings.model_fields.items() if name.startswith("topic_")}
    values |= {"KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP, "PBSEG_POSTBACKS_PARTITIONS": 3}
    if configured:
        values |= {"PBSEG_REPLICATION_FACTOR": 3, "PBSEG_MIN_INSYNC_REPLICAS": 2}
    settings = CommonSettings.model_validate(values)
    await ensure_topics(settings.kafka_bootstrap_servers, topic_plan(settings))

    for topic, spec in topic_plan(settings).items():
        layout = partitions_of(topic)
        assert sorted(layout) == list(range(spec.partitions)), topic
        for partition, (replicas, isr) in layout.items():
            assert sorted(replicas) == [1, 2, 3], (topic, partition, replicas)
            assert sorted(isr) == [1, 2, 3], (topic, partition, isr)
        assert (await describe_topic_configs(BOOTSTRAP, topic))["min.insync.replicas"] == "2"

    topic, sent = settings.topic_postbacks, [f"{unique}-{i}" for i in range(60)]
    acked, failed = [], []
    producer = acks_all_producer()
    produce(producer, topic, sent, acked, failed)
    assert producer.flush(30) == 0
    assert failed == [] and sorted(v for _, _, v in acked) == sorted(sent)
    assert len({p for p, _, _ in acked}) > 1  # keyed: spread over the partitions
    assert await read_back(topic, 3, len(sent), unique) == sorted(acked)


def leader_other_than(topic: str, old: int) -> int | None:
    try:
        now = kafka_partition_leader(topic, 0)
    except KafkaException:  # metadata asked of the dead node
        return None
    return now if now not in (-1, old) else None


async def test_a_killed_partition_leader_loses_no_acknowledged_record(clusters, unique, own_topics):
    """SIGKILL the leader of partition 0 with records in flight: another in-sync replica takes
    over, acks=all writes are accepted again with 2 of 3 replicas, and every acknowledged record
    (before, during and after the crash) is read back once; the restarted broker rejoins the ISR."""
    topic = f"failover-{unique}"
    await ensure_topics(BOOTSTRAP, {topic: TopicSpec(1, {"retention.ms": "-1"}, replication_factor=3,
                                                     min_insync_replicas=2)})
    acked, failed = [], []
    producer = acks_all_producer()
    produce(producer, topic, [f"before-{i}" for i in range(200)], acked, failed)
    assert producer.flush(30) == 0 and len(acked) == 200

    leader = kafka_partition_leader(topic, 0)
    assert leader in (1, 2, 3)
    print(f"killing {kafka_node_name(leader)}, the leader of {topic}-0")
    produce(producer, topic, [f"during-{i}" for i in range(200)], acked, failed)
    kill_node(kafka_node_name(leader))
    try:
        new_leader = await wait_for(lambda: leader_other_than(topic, leader), timeout=30, interval=0.2,
                                    message=f"a leader of {topic}-0 other than node {leader}")
        replicas, isr = partitions_of(topic)[0]
        assert leader not in isr and len(isr) == 2 and new_leader in isr, (replicas, isr)

        produce(producer, topic, [f"after-{i}" for i in range(200)], acked, failed)
        assert producer.flush(40) == 0
        assert failed == []
        values = [v for _, _, v in acked]
        assert sorted(values) == sorted([f"{phase}-{i}" for phase in ("before", "during", "after") for i in range(200)])
        # Read while the old leader is still down: the records are on the surviving replicas.
        records = await read_back(topic, 1, len(acked), unique)
        assert records == sorted(acked)  # each once (idempotent producer), at the offset it was acknowledged at
    finally:
        start_kafka_cluster()  # brings back only the killed node; waits until every partition is in sync again
    assert sorted(partitions_of(topic)[0][1]) == [1, 2, 3]


async def test_redis_cluster_routes_hash_tags_and_promotes_a_replica_when_a_master_dies(clusters, unique):
    """3 masters covering every slot, one replica each; keys of one hash tag share a slot on the
    master that owns it. SIGKILL that master: its replica is promoted, keeps what was replicated,
    and takes writes; the restarted node rejoins as a replica of the promoted one."""
    masters = redis_cluster_masters()
    assert len(masters) == 3
    assert sum(end - start + 1 for _, ranges in masters for start, end in ranges) == ALL_SLOTS
    nodes = redis_cluster_nodes(REDIS_CLUSTER_PORTS[0])
    replica_of = {n.master_id: n for n in nodes if "slave" in n.flags}
    assert sorted(replica_of) == sorted(n.node_id for n in nodes if n.is_master)

    def owner(slot: int) -> int | None:
        """The port of the healthy master serving `slot`; None while none does (a failover)."""
        return next((port for port, ranges in redis_cluster_masters() if any(a <= slot <= b for a, b in ranges)),
                    None)

    client = RedisCluster(startup_nodes=[ClusterNode(HOST, port) for port in REDIS_CLUSTER_PORTS[:3]],
                          decode_responses=True, socket_timeout=2)
    keys = {p: (f"{{{unique}:p:{p}}}:state", f"{{{unique}:p:{p}}}:meta") for p in range(8)}
    try:
        for p, (state, meta) in keys.items():
            await client.mset({state: f"s{p}", meta: f"m{p}"})  # one slot: a multi-key command is allowed
            assert key_slot(state.encode()) == key_slot(meta.encode())
            home = owner(key_slot(state.encode()))
            with redis.Redis(host=HOST, port=home, decode_responses=True) as direct:
                assert direct.get(state) == f"s{p}"
            other = next(port for port, _ in masters if port != home)
            with redis.Redis(host=HOST, port=other, decode_responses=True) as direct:
                with pytest.raises(MovedError) as moved:
                    direct.get(state)
                assert (moved.value.slot_id, moved.value.port) == (key_slot(state.encode()), home)
        assert len({owner(key_slot(k[0].encode())) for k in keys.values()}) > 1  # the tags spread over masters
        assert key_slot(keys[0][0].encode()) != key_slot(keys[1][0].encode())
        with pytest.raises(RedisClusterException, match="same key slot"):  # two tags: refused, not split
            await client.mset({keys[0][0]: "x", keys[1][0]: "y"})

        state0, meta0 = keys[0]
        victim = owner(key_slot(state0.encode()))
        victim_id = next(n.node_id for n in nodes if n.port == victim)
        heir = replica_of[victim_id]
        with redis.Redis(host=HOST, port=heir.port, decode_responses=True) as replica:
            replica.execute_command("READONLY")
            await wait_for(lambda: replica.get(state0) == "s0", timeout=10, message="the write on the replica")

        print(f"killing {redis_node_name(victim)}, the master of {state0!r}; its replica is {heir.port}")
        kill_node(redis_node_name(victim))
        await wait_for(lambda: owner(key_slot(state0.encode())) == heir.port, timeout=20, interval=0.2,
                       message=f"replica {heir.port} promoted for the slots of {victim}")
        assert len(redis_cluster_masters()) == 3
        assert await client.get(state0) == "s0"  # replicated before the crash: kept
        await client.set(meta0, "after-failover")
        assert await client.get(meta0) == "after-failover"

        start_redis_cluster()  # brings back only the killed node; waits for 3 masters + 3 replicas
        rejoined = next(n for n in redis_cluster_nodes(heir.port) if n.port == victim)
        assert "slave" in rejoined.flags and rejoined.master_id == heir.node_id
        assert await client.get(meta0) == "after-failover"
    finally:
        await client.delete(*(k for pair in keys.values() for k in pair))
        await client.aclose()
