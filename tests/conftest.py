"""Fixtures shared by every tier.

Infrastructure comes from, in order: KAFKA_BOOTSTRAP_SERVERS / REDIS_URL when set; else
testcontainers when a Docker engine answers; else the local stack the project starts itself
(real Kafka from its Maven jars, Debian's redis-server). Every test gets its own key prefix,
topics and consumer group, so tests cannot leak into each other, and what it made there is
deleted on teardown, whether it passed or failed (tests/cleanup.py).

Randomized tests take their seed from the `seed` fixture: PBSEG_TEST_SEED when set, else a fixed
default; it is printed, so a failure's captured output says how to replay it. Hypothesis runs
derandomized (the same examples every run) and prints a failure's reproduction blob.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest
import redis.asyncio as aioredis
from hypothesis import settings as hypothesis_settings

from cleanup import delete_prefix, delete_topics  # tests/ is on sys.path (rootdir conftest)
from topology import Infra, local_cluster

SEED_ENV = "PBSEG_TEST_SEED"
DEFAULT_SEED = 20_261_201

# With PBSEG_TEST_SEED set, Hypothesis explores from that seed instead (see pytest_configure).
# No example database: what runs depends on the seed alone, not on earlier runs' failures.
hypothesis_settings.register_profile("pbseg", derandomize=not os.environ.get(SEED_ENV), database=None,
                                     print_blob=True)
hypothesis_settings.load_profile("pbseg")


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.hookimpl(tryfirst=True)  # before Hypothesis' own pytest_configure reads --hypothesis-seed
def pytest_configure(config):
    config.addinivalue_line("markers", f"seed(n): the test's default random seed ({SEED_ENV} overrides it)")
    if os.environ.get(SEED_ENV) and config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = os.environ[SEED_ENV]


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}cluster{os.sep}" in path:
            item.add_marker(pytest.mark.cluster)
        elif f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def infra():
    kafka, redis_url = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("REDIS_URL")
    if kafka and redis_url:
        yield Infra(kafka, redis_url, "environment")
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as k, RedisContainer("redis:7") as r:
            yield Infra(k.get_bootstrap_server(), f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0", "testcontainers")
        return
    if os.environ.get("PBSEG_TOPOLOGY") == "cluster":
        yield from local_cluster()
        return
    from services.devstack.infra import infra_running, start_kafka, start_redis
    from services.devstack.procs import stop_process

    kafka = kafka or "127.0.0.1:9092"
    redis_url = redis_url or "redis://127.0.0.1:6390/0"
    before = infra_running(kafka, redis_url)
    start_redis(redis_url)
    start_kafka(kafka)
    yield Infra(kafka, redis_url, "local stack")
    # Stop only what this session started; a developer's `make up` stays up.
    if not before["kafka"]:
        stop_process("kafka")
    if not before["redis"]:
        stop_process("redis")


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def seed(request) -> int:
    """A randomized test's seed: PBSEG_TEST_SEED when set, else its fixed default (its
    `@pytest.mark.seed(n)`, else DEFAULT_SEED). Printed into the output shown on failure."""
    mark = request.node.get_closest_marker("seed")
    value = int(os.environ.get(SEED_ENV) or (mark.args[0] if mark else DEFAULT_SEED))
    print(f"seed={value} (replay: {SEED_ENV}={value})")
    return value


@pytest.fixture
async def key_prefix(request, unique):
    """The test's own Redis key prefix. When the test has real infrastructure (the `infra`
    fixture, directly or through another fixture), every key under the prefix (or a prefix the
    test made by extending it) is deleted on teardown, whatever the outcome; without it (unit
    tests) nothing connects anywhere."""
    prefix = f"t{unique}"
    # Resolved now, not at teardown: the fixture is certain to be live then.
    infra = request.getfixturevalue("infra") if "infra" in request.fixturenames else None
    yield prefix
    if infra is not None:
        from services.common.redis_conn import async_redis

        client = async_redis(infra.redis_url)
        try:
            await delete_prefix(client, prefix)
        finally:
            await client.aclose()


@pytest.fixture
async def redis_client(infra):
    from services.common.redis_conn import async_redis

    client = async_redis(infra.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def delete_own_topics(infra, unique):
    """On teardown, whatever the outcome, deletes every topic whose name has the test's unique
    id: those of topic_factory and service_env, and those the services made from them."""
    yield
    await delete_topics(infra.kafka, unique)


@pytest.fixture
def topic_factory(infra, unique, delete_own_topics):
    """Creates fresh topics for a test: topic_factory(name, partitions, configs=None) -> real topic
    name. Retention is infinite unless `configs` says otherwise, as topic_plan creates postbacks.v1
    (a processor refuses a postbacks topic that forgets records). Deleted on teardown."""
    from services.common.topics import TopicSpec, ensure_topics

    async def make(name: str, partitions: int = 4, configs: dict[str, str] | None = None) -> str:
        topic = f"{name}-{unique}"
        await ensure_topics(infra.kafka, {topic: TopicSpec(partitions, {"retention.ms": "-1", **(configs or {})})})
        return topic

    return make


@pytest.fixture
def service_env(infra, unique, key_prefix, delete_own_topics) -> dict[str, str]:
    """Environment for services under test: own topics, key prefix and consumer group (topics
    and keys are deleted on teardown)."""
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka,
        "REDIS_URL": infra.redis_url,
        "PBSEG_KEY_PREFIX": key_prefix,
        "PBSEG_TOPIC_POSTBACKS": f"postbacks-{unique}",
        "PBSEG_TOPIC_REJECTED": f"rejected-{unique}",
        "PBSEG_TOPIC_DEVICE_EVENTS": f"device-events-{unique}",
        "PBSEG_TOPIC_TASK_TRIGGERS": f"task-triggers-{unique}",
        "PBSEG_POSTBACKS_PARTITIONS": "4",
        "PROCESSOR_GROUP": f"processor-{unique}",
        "PBSEG_LOG_LEVEL": "info",
    })
    return env
