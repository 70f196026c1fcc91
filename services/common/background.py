"""Background tasks of a service (pollers, feeds): one way to stop them."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel `task` and wait until it has ended. Never raises: neither the cancellation nor
    a failure the task had already died of reaches the caller (stop paths must finish)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
