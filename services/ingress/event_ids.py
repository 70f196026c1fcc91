"""Event ids minted by the ingress, in the format of services/common/ids.py (12 hex digits of
the ms time, then 80 random bits as 20 hex digits), without a system call per id: random bits
are drawn from the OS 4,096 ids at a time (`os.urandom` per id was ~5% of the loop thread's
samples under load, docs/architecture.md "Ingress")."""

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
