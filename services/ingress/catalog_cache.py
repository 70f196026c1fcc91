"""In-process catalog cache: the hot path never waits on Redis.

A background task polls the catalog version key every `poll_s` (default 0.25 s) and reloads
the whole snapshot when it moved, so a catalog change is visible within `poll_s` plus one
reload. If Redis fails, the last snapshot keeps serving and the failure is logged.

`recheck()` refreshes at once (one refresh at a time, shared by concurrent callers): the app
calls it before rejecting a postback for a catalog reason (unknown account or event,
inactive event, key), so a postback sent right after its account or event was created is
accepted instead of racing the poll. Accepted postbacks never wait on Redis.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import structlog

from services.common.background import cancel_and_wait
from services.common.catalog import CatalogSnapshot, CatalogStore

log = structlog.get_logger("ingress.catalog")


class CatalogCache:
    def __init__(self, store: CatalogStore, poll_s: float, on_loaded: Callable[[CatalogSnapshot], None] | None = None):
        self.store = store
        self.poll_s = poll_s
        self.snapshot: CatalogSnapshot | None = None
        self._on_loaded = on_loaded or (lambda snapshot: None)
        self._task: asyncio.Task | None = None
        self._failing = False
        self._recheck: asyncio.Future | None = None

    @property
    def loaded(self) -> bool:
        return self.snapshot is not None

    @property
    def version(self) -> int | None:
        return None if self.snapshot is None else self.snapshot.version

    async def refresh(self) -> None:
        """Reload when the version key moved. Raises on Redis errors (callers decide)."""
        version = await self.store.version()
        if self.snapshot is None or version != self.snapshot.version:
            self.snapshot = await self.store.snapshot()
            self._on_loaded(self.snapshot)
            log.info("catalog_loaded", version=self.snapshot.version, accounts=len(self.snapshot.accounts))

    async def recheck(self) -> CatalogSnapshot | None:
        """Refresh now and return the snapshot then current; a Redis failure keeps the old
        one (the poll loop logs failures)."""
        task = self._recheck
        if task is None:
            task = self._recheck = asyncio.ensure_future(self._recheck_once())
        await asyncio.shield(task)
        return self.snapshot

    async def _recheck_once(self) -> None:
        try:
            await self.refresh()
        except Exception:  # noqa: BLE001 - keep serving the last snapshot
            pass
        finally:
            self._recheck = None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
                if self._failing:
                    log.info("catalog_refresh_recovered")
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - keep serving the last snapshot
                if not self._failing:
                    log.warning("catalog_refresh_failed", error=str(exc))
                self._failing = True
            await asyncio.sleep(self.poll_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
