"""Prometheus metrics of the query service: a small ASGI middleware (no per-request task, so
it adds microseconds, not milliseconds, to the hot path)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram


class HttpMetrics:
    def __init__(self, app, registry: CollectorRegistry):
        self.app = app
        self.requests = Counter("query_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=registry)
        self.latency = Histogram("query_http_request_seconds", "HTTP request latency (until the response starts)",
                                 ["route"], registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                self.latency.labels(path).observe(time.perf_counter() - started)
                self.requests.labels(scope["method"], path, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, send_wrapper)
