"""Per-account rate limit: a token bucket per account, pure (time is passed in).

Off when `rate_per_s` is 0 (the default). The limit holds per ingress process: with N
processes behind one port an account may reach N x the rate (documented in
docs/architecture.md); a shared limit would cost a Redis round trip per postback.
"""

from __future__ import annotations

import math


class AccountRateLimit:
    """`admit(account_id, now_ms)` -> 0 when admitted, else the seconds to wait (>= 1).

    Each account may send `burst` postbacks at once and `rate_per_s` per second after that.
    Not thread-safe; one instance per event loop. Memory: one small entry per account seen.
    """

    def __init__(self, rate_per_s: float, burst: int | None = None):
        self.rate_per_ms = rate_per_s / 1000.0
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate_per_s)))
        self._buckets: dict[int, list[float]] = {}  # account -> [tokens, last_ms]

    @property
    def enabled(self) -> bool:
        return self.rate_per_ms > 0

    def admit(self, account_id: int, now_ms: int) -> int:
        if self.rate_per_ms <= 0:
            return 0
        bucket = self._buckets.get(account_id)
        if bucket is None:
            bucket = self._buckets[account_id] = [self.burst, float(now_ms)]
        else:
            elapsed = max(0.0, now_ms - bucket[1])
            bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate_per_ms)
            bucket[1] = float(now_ms)
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket[0]) / self.rate_per_ms / 1000.0))
