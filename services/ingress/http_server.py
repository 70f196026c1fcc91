"""The ingress's HTTP server: uvloop, one `HttpConnection` per client (http_connection.py),
the app called on the loop's thread.

Per process: start the app (Kafka, catalog; a failure exits 1 naming what is missing), listen,
sweep the connections' read timeouts every `tick` seconds (which also refreshes the coarse
clock and the `date` header the connections use), and on SIGTERM/SIGINT stop gracefully:
stop accepting, let every connection finish the requests it has read (at most
`shutdown_timeout_s`), then stop the app, which flushes the producer.

More than one worker (`INGRESS_WORKERS`): each is its own process with its own loop, app and
producer, all listening on the same port (SO_REUSEPORT; the kernel spreads connections).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import socket
import sys

import structlog

from services.ingress.bootstrap import bootstrap
from services.ingress.http_connection import ConnectionLimits, HttpConnection, http_date
from services.ingress.settings import IngressSettings

log = structlog.get_logger("ingress.http")


_TOO_MANY_BODY = b'{"error":"too_many_connections","message":"the server is at its connection limit; retry shortly"}'
_TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
             b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(_TOO_MANY_BODY) + _TOO_MANY_BODY)


class _ConnectionLimitReached(asyncio.Protocol):
    """Beyond `max_connections`: one 503 and close (the client retries later)."""

    def connection_made(self, transport) -> None:
        transport.write(_TOO_MANY)
        transport.close()


class HttpServer:
    """Serves one app on one event loop; `connections` is every open connection."""

    def __init__(self, app, limits: ConnectionLimits, max_connections: int = 10_000, tick: float | None = None,
                 shutdown_timeout_s: float = 10.0):
        self.app = app
        self.limits = limits
        self.max_connections = max_connections
        self.tick = tick or max(0.05, min(1.0, limits.header_timeout_s / 4, limits.body_timeout_s / 4,
                                          limits.keepalive_timeout_s / 4))
        self.shutdown_timeout_s = shutdown_timeout_s
        self.connections: set[HttpConnection] = set()
        # Requests run as bare coroutines (no asyncio.Task) when the producer allows it
        # (http_connection.HttpConnection._step).
        self.drive_without_task = bool(getattr(app.producer, "runs_without_task", False))
        app.metrics.open_connections = lambda: len(self.connections)
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.now = 0.0
        self.date_line = http_date()
        self._server: asyncio.AbstractServer | None = None
        self._sweep_task: asyncio.Task | None = None

    def _protocol(self) -> asyncio.Protocol:
        if len(self.connections) >= self.max_connections:
            return _ConnectionLimitReached()
        return HttpConnection(self)

    async def listen(self, host: str, port: int, reuse_port: bool = False, sock: socket.socket | None = None) -> int:
        """Start accepting; returns the port (useful with port 0)."""
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time()
        if sock is not None:
            self._server = await self.loop.create_server(self._protocol, sock=sock, backlog=2048)
        else:
            self._server = await self.loop.create_server(self._protocol, host, port, backlog=2048, reuse_port=reuse_port)
        self._sweep_task = asyncio.create_task(self._sweep())
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        loop, tick = self.loop, self.tick
        while True:
            await asyncio.sleep(tick)
            self.now = now = loop.time()
            self.date_line = http_date()
            for conn in list(self.connections):
                conn.check_timeouts(now)

    async def close(self) -> None:
        """Stop accepting, finish the requests already read (bounded), close every connection."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = self.loop.time() + self.shutdown_timeout_s
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweep_task is not None:
            self._sweep_task.cancel()
        if self._server is not None:
            await self._server.wait_closed()


def limits_from(settings: IngressSettings) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes, max_body_bytes=settings.max_body_bytes,
        header_timeout_s=settings.header_read_timeout_s, body_timeout_s=settings.body_read_timeout_s,
        keepalive_timeout_s=settings.keepalive_timeout_s, max_pipelined=settings.max_pipelined)


async def serve_app(settings: IngressSettings, host: str, port: int, reuse_port: bool) -> int:
    """One worker: start the app, serve until SIGTERM/SIGINT, stop. Returns the exit code."""
    app = bootstrap(settings)
    try:
        await app.startup()
    except Exception as exc:  # noqa: BLE001 - say what is missing, then exit
        log.error("ingress_startup_failed", error=str(exc))
        return 1
    server = HttpServer(app, limits_from(settings), settings.max_connections)
    try:
        bound = await server.listen(host, port, reuse_port=reuse_port)
    except OSError as exc:
        log.error("ingress_bind_failed", bind=f"{host}:{port}", error=str(exc))
        await app.shutdown()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("ingress_listening", bind=f"{host}:{bound}")
    await stop.wait()
    log.info("ingress_stopping", connections=len(server.connections))
    await server.close()
    await app.shutdown()
    return 0


def _worker(settings: IngressSettings, host: str, port: int, reuse_port: bool) -> None:
    import uvloop

    sys.exit(uvloop.run(serve_app(settings, host, port, reuse_port)))


def serve(settings: IngressSettings, host: str, port: int) -> int:
    """Run `settings.workers` workers; one runs in this process itself."""
    if settings.workers == 1:
        import uvloop

        return uvloop.run(serve_app(settings, host, port, reuse_port=False))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(settings, host, port, True), name=f"ingress-worker-{i}")
             for i in range(settings.workers)]
    for proc in procs:
        proc.start()

    def forward(_signum, _frame):  # each worker stops gracefully on its own SIGTERM
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    return max((proc.exitcode or 0) for proc in procs)
