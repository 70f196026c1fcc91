from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from services.common.settings import CommonSettings


class QuerySettings(CommonSettings):
    # Base of the postback URLs shown to users on the Segments page.
    postback_base_url: str = Field("http://127.0.0.1:8080", alias="QUERY_POSTBACK_BASE_URL")
    # Rejected postbacks kept per account: the newest N, and for D days after the last one.
    rejected_keep: int = Field(1000, alias="QUERY_REJECTED_KEEP", ge=1, le=100_000)
    rejected_ttl_days: float = Field(7, alias="QUERY_REJECTED_TTL_DAYS", gt=0)
    # Off: the service does not consume the rejected topic (e.g. tests of the HTTP API alone).
    rejected_feed: bool = Field(True, alias="QUERY_REJECTED_FEED")
    # Segments overview device counts: read from the processor's per-code counters on every
    # request by default (0, ~1 ms for 50 events x 8 partitions); > 0 serves them from a
    # per-process cache up to this old, refreshed in the background until QUERY_OVERVIEW_STALE_MS.
    overview_fresh_ms: int = Field(0, alias="QUERY_OVERVIEW_FRESH_MS", ge=0, le=600_000)
    overview_stale_ms: int = Field(10_000, alias="QUERY_OVERVIEW_STALE_MS", ge=0, le=3_600_000)
    # HMAC key of device-page cursors. Unset: one random secret per deployment, created in Redis
    # by the first query process (services/query/cursor_secret.py).
    cursor_secret: SecretStr | None = Field(None, alias="QUERY_CURSOR_SECRET")
    # Longest wait for Redis to accept a connection or answer a command, then the request gets
    # 503 (no retry: the caller retries). The slowest command, one partition's segment script,
    # takes milliseconds; a frozen Redis thus answers 503 within about this long.
    redis_timeout_s: float = Field(1.0, alias="QUERY_REDIS_TIMEOUT_S", ge=0.05, le=30)

    @field_validator("cursor_secret")
    @classmethod
    def _secret_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("QUERY_CURSOR_SECRET must have at least 16 characters (or leave it unset)")
        return value
