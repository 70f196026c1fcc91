"""Event ids: time-ordered, unique across ingress processes (48-bit ms + 80 random bits):
12 hex digits of the ms time, then 20 hex digits of randomness.

The random bits are drawn from the OS 4,096 ids at a time, not with a system call per id
(`os.urandom` per id was ~5% of the ingress loop thread's samples under load,
docs/decisions/0003-ingress-hot-path-tuning.md)."""

from __future__ import annotations

import os

_BATCH = 4096


class EventIds:
    """Not thread-safe: one per event loop (each ingress process has one)."""

    __slots__ = ("_pool", "_next")

    def __init__(self):
        self._pool = ""
        self._next = 0

    def new(self, now_ms: int) -> str:
        i = self._next
        if i == 0:
            self._pool = os.urandom(10 * _BATCH).hex()
        self._next = (i + 20) % (20 * _BATCH)
        return f"{now_ms:012x}{self._pool[i:i + 20]}"
