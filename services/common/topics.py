"""Creates the topics the system needs (idempotent)."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.common.settings import CommonSettings


def topic_plan(settings: CommonSettings) -> dict[str, int]:
    return {
        settings.topic_postbacks: settings.postbacks_partitions,
        settings.topic_rejected: 4,
        settings.topic_device_events: settings.postbacks_partitions,
    }


async def ensure_topics(bootstrap: str, topics: dict[str, int], timeout_s: float = 60.0) -> None:
    """Create each topic with the given partition count unless it exists. Retries while the
    broker finishes starting; raises TimeoutError naming the broker when it never answers."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [NewTopic(name, n, 1) for name, n in topics.items() if name not in existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            existing = set(await admin.list_topics())
            if all(name in existing for name in topics):
                return
        except Exception as exc:  # noqa: BLE001 - broker still starting; retry until deadline
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise TimeoutError(f"could not create topics {sorted(topics)} on Kafka at {bootstrap}: {last}")
