"""The ingress ASGI app: GET/POST /api/postback/ -> one record on the postbacks topic."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaProducer

from services.common.clock import Clock
from services.common.ids import new_event_id
from services.common.models import PostbackRecord
from services.ingress.catalog_cache import CatalogCache
from services.ingress.parsing import RejectedPostback, parse_postback
from services.ingress.settings import IngressSettings

_JSON = [(b"content-type", b"application/json")]


async def _send(send, status: int, body: dict, headers=()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON + list(headers)})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


class IngressApp:
    def __init__(self, settings: IngressSettings, producer: AIOKafkaProducer, catalog: CatalogCache, clock: Clock):
        self.settings = settings
        self.producer = producer
        self.catalog = catalog
        self.clock = clock

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        path = scope["path"]
        if path in ("/api/postback/", "/api/postback"):
            return await self._postback(scope, send)
        if path == "/healthz":
            return await _send(send, 200, {"status": "ok"})
        if path == "/readyz":
            ready = self.catalog.loaded
            return await _send(send, 200 if ready else 503, {"ready": ready})
        return await _send(send, 404, {"error": "not_found", "message": "use GET /api/postback/?id=...&status=<code>_<account>"})

    async def _postback(self, scope, send):
        snapshot = self.catalog.snapshot
        if snapshot is None:
            return await _send(send, 503, {"error": "not_ready", "message": "catalog not loaded yet; retry"}, [(b"retry-after", b"1")])
        now = self.clock.now_ms()
        parsed = parse_postback(scope.get("query_string", b"").decode("latin-1"), snapshot)
        if isinstance(parsed, RejectedPostback):
            return await _send(send, parsed.status, {"error": parsed.error, "message": parsed.message})
        record = PostbackRecord(
            event_id=new_event_id(now), account_id=parsed.account_id, install_id=parsed.install_id,
            event=parsed.event, occurred_at=now, received_at=now,
        )
        key = f"{parsed.account_id}:{parsed.install_id}".encode()
        try:
            fut = await self.producer.send(self.settings.topic_postbacks, record.model_dump_json(by_alias=True).encode(), key=key)
            await asyncio.wait_for(fut, self.settings.produce_timeout_s)
        except Exception:  # noqa: BLE001 - any Kafka failure means "not safely stored"
            return await _send(send, 503, {"error": "kafka_unavailable", "message": "could not store the postback; retry later"}, [(b"retry-after", b"1")])
        return await _send(send, 200, {"status": "accepted", "event_id": record.event_id})

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.producer.start()
                await self.catalog.refresh()
                self.catalog.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.catalog.stop()
                await self.producer.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
