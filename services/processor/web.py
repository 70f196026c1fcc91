"""/metrics (Prometheus), /healthz (the process runs) and /readyz (Redis answers and the
consumer has joined its group) of the processor worker."""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.processor.metrics import REGISTRY


def build_web_app(ready: Callable[[], Awaitable[tuple[bool, str]]]) -> web.Application:
    async def metrics_page(_request):
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request):
        return web.json_response({"status": "ok"})

    async def readyz(_request):
        ok, detail = await ready()
        return web.json_response({"status": "ready" if ok else "not_ready", "detail": detail}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
