"""Waiting on a condition instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable


async def wait_for(predicate: Callable[[], Any | Awaitable[Any]], timeout: float, interval: float = 0.05,
                   message: str = "condition") -> Any:
    """Poll `predicate` (sync or async) until it returns a truthy value, and return that value.
    Raises AssertionError naming `message` (and the last value seen) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message} (last value: {last!r})")
        await asyncio.sleep(interval)
