"""The Redis version check of every service's start-up (services/common/redis_conn.py)."""

import pytest

from services.common.redis_conn import MIN_REDIS_VERSION, check_redis, version_tuple


class _Server:
    def __init__(self, version: str):
        self.version = version

    async def ping(self):
        return True

    async def info(self, section):
        assert section == "server"
        return {"redis_version": self.version}


@pytest.mark.parametrize("text, expected", [("7.0.15", (7, 0, 15)), ("6.2.14", (6, 2, 14)), ("7.2", (7, 2)),
                                            ("255.255.255", (255, 255, 255)), ("8.0.0-rc1", (8, 0, 0))])
def test_version_tuple(text, expected):
    assert version_tuple(text) == expected


async def test_redis_7_or_newer_passes():
    for version in ("7.0.0", "7.0.15", "7.4.2", "8.0.1"):
        await check_redis(_Server(version), "redis://x")


async def test_an_older_redis_is_refused_with_what_to_do():
    with pytest.raises(SystemExit) as err:
        await check_redis(_Server("6.2.14"), "redis://old:6379/0")
    message = str(err.value)
    assert "6.2.14" in message and "redis://old:6379/0" in message and "REDIS_URL" in message
    assert ".".join(map(str, MIN_REDIS_VERSION)) in message
