"""Event ids: time-ordered, unique across ingress processes (48-bit ms + 80 random bits)."""

from __future__ import annotations

import os


def new_event_id(now_ms: int) -> str:
    return f"{now_ms:012x}{os.urandom(10).hex()}"
