"""HTTP API of the query service (FastAPI): wires routers, errors, health and metrics.

The Segments page (services/query/ui_routes.py) is mounted by `build_api` too; the API
routes know nothing about it.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.common.catalog import CatalogStore
from services.common.clock import Clock, SystemClock
from services.query import device_routes, event_routes, saved_segment_routes, segment_routes, trigger_routes
from services.common.trigger_registry import TriggerRegistry
from services.query.saved_segments import SavedSegments
from services.query.cursor_secret import CursorSecret
from services.query.devices import DeviceLookup
from services.query.errors import install_error_handlers
from services.query.metrics import HttpMetrics
from services.query.overview_cache import OverviewCounts
from services.query.rejected import RejectedLog
from services.query.segments import SegmentIndex
from services.query.settings import QuerySettings
from services.query.ui_routes import ui_router

DESCRIPTION = """Custom events (PushExpress v2 shape), segment analytics and device selection.

Authenticate with `Authorization: Bearer <api key>` (`pbseg accounts create`). Every error is
JSON `{"error": "<machine code>", "message": "..."}`; 503 `unavailable` with `Retry-After`
when Redis does not answer (retry). Limits: 64 codes per include/exclude list,
5,000 devices per page, event list offset at most 10,000, 10,000 custom events per account."""


def build_api(settings: QuerySettings, catalog: CatalogStore, segments: SegmentIndex, devices: DeviceLookup,
              rejected: RejectedLog, registry: CollectorRegistry | None = None, clock: Clock | None = None,
              lifespan=None) -> FastAPI:
    registry = registry or CollectorRegistry()
    api = FastAPI(title="postback segments query API", version="2.0.0", description=DESCRIPTION, lifespan=lifespan)
    api.state.settings = settings
    api.state.catalog = catalog
    api.state.saved_segments = SavedSegments(catalog.redis, settings.key_prefix, catalog.ids)
    api.state.triggers = TriggerRegistry(catalog.redis, settings.key_prefix, catalog.ids)
    api.state.segments = segments
    api.state.devices = devices
    api.state.rejected = rejected
    api.state.registry = registry
    api.state.clock = clock or SystemClock()
    configured = settings.cursor_secret.get_secret_value().encode() if settings.cursor_secret else None
    api.state.cursor_secret = CursorSecret(catalog.redis, settings.key_prefix, configured)
    api.state.overview = OverviewCounts(segments.device_counts, api.state.clock, settings.overview_fresh_ms,
                                        settings.overview_stale_ms)
    install_error_handlers(api)
    api.add_middleware(HttpMetrics, registry=registry)

    @api.get("/healthz", tags=["operations"])
    async def healthz():
        """The process is alive."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["operations"])
    async def readyz():
        """Ready when Redis answers; reports whether the rejected-postbacks feed is running."""
        try:
            await catalog.redis.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"error": "not_ready", "message": f"Redis does not answer: {exc}"}, status_code=503)
        feed = getattr(api.state, "rejected_feed", None)
        return {"ready": True, "rejected_feed": bool(feed and feed.running)}

    @api.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    api.include_router(event_routes.router)
    api.include_router(segment_routes.router)
    api.include_router(saved_segment_routes.router)  # after it: /segments/events etc. first
    api.include_router(device_routes.router)
    api.include_router(trigger_routes.router)
    api.include_router(ui_router)  # the Segments page at /ui (static files, services/query/ui/)
    return api
