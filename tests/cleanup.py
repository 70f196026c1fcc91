"""Removing what a test made on the shared Kafka broker and Redis server: its keys and its topics.

The fixtures in tests/conftest.py call these on teardown, which runs whether the test passed or
failed; a test that needs a clean prefix between examples calls `delete_prefix` itself. Leaked
keys and topics are not harmless: every later SCAN and metadata request pays for them.
"""

from __future__ import annotations

import re

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownTopicOrPartitionError

SCAN_COUNT = 2000
UNLINK_CHUNK = 1000


def _glob_escaped(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


async def delete_prefix(redis, key_prefix: str) -> int:
    """Unlinks every key of `key_prefix` and of the prefixes a test derives from it by appending
    (`<prefix>a`), and returns how many: `{<prefix>...}...` (partition, catalog and rejected hash
    tags, services/common/keys.py) and `<prefix>...` alike. The prefix must be unique to the test
    (`t` + 10 random hex digits here), so that nothing else starts with it. One SCAN pass, UNLINK
    in chunks; never FLUSHDB on the shared server. Not atomic: run it when nothing writes there."""
    # One pass for both spellings; the starts are checked here, as the pattern also matches keys
    # that merely contain the prefix further in (e.g. in an install id).
    starts = (("{" + key_prefix).encode(), key_prefix.encode())
    deleted, chunk = 0, []
    async for key in redis.scan_iter(match=f"*{_glob_escaped(key_prefix)}*", count=SCAN_COUNT):
        if not (key if isinstance(key, bytes) else key.encode()).startswith(starts):
            continue
        chunk.append(key)
        if len(chunk) >= UNLINK_CHUNK:
            deleted += await redis.unlink(*chunk)
            chunk = []
    if chunk:
        deleted += await redis.unlink(*chunk)
    return deleted


async def delete_topics(bootstrap: str, marker: str) -> list[str]:
    """Deletes every topic whose name contains `marker` (a test's unique id: its own topics, those
    the services create from its settings, Faust's internal ones) and returns their names.
    A topic already gone is not an error; any other refusal raises RuntimeError."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if marker in t)
        if names:
            response = await admin.delete_topics(names)
            refused = [(topic, code) for topic, code in response.topic_error_codes
                       if code not in (0, UnknownTopicOrPartitionError.errno)]
            if refused:
                raise RuntimeError(f"Kafka at {bootstrap} refused to delete topics (topic, error code): {refused}")
        return names
    finally:
        await admin.close()
