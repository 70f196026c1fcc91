"""In-process catalog cache: the hot path never waits on Redis. A background task polls the
catalog version key every `poll_s` and reloads the snapshot when it moved."""

from __future__ import annotations

import asyncio

import structlog

from services.common.catalog import CatalogSnapshot, CatalogStore

log = structlog.get_logger("ingress.catalog")


class CatalogCache:
    def __init__(self, store: CatalogStore, poll_s: float):
        self.store = store
        self.poll_s = poll_s
        self.snapshot: CatalogSnapshot | None = None
        self._task: asyncio.Task | None = None

    @property
    def loaded(self) -> bool:
        return self.snapshot is not None

    async def refresh(self) -> None:
        version = await self.store.version()
        if self.snapshot is None or version != self.snapshot.version:
            self.snapshot = await self.store.snapshot()
            log.info("catalog_loaded", version=self.snapshot.version, accounts=len(self.snapshot.accounts))

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving the last snapshot
                log.warning("catalog_refresh_failed", error=str(exc))
            await asyncio.sleep(self.poll_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
