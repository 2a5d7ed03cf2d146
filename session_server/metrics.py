"""Prometheus metrics: one registry per app (no process-global state), HTTP middleware, /metrics.

The metrics are never open on the public port: they have a listener of their own
(`SESSION_SERVER_METRICS_HOST`/`_PORT`, loopback by default) and, on the public port, answer only a
bearer credential (`SESSION_SERVER_METRICS_TOKEN`). The middleware also writes the access log, by route
template: a raw path holds booking, document and user ids, a query string may hold a discount code.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import NotFound, Unauthenticated

access_log = logging.getLogger("session_server.access")


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    http_requests: Counter
    http_latency: Histogram
    redis_up: Gauge
    ws_connections: Gauge
    embedded_redis_restarts: Counter
    redis_outages: Counter
    # Chat and documents: counts and sizes by outcome, never content, names or ids.
    chat_messages: Counter
    document_uploads: Counter
    document_downloads: Counter
    document_bytes: Counter

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry()
        return cls(
            registry=r,
            http_requests=Counter("session_http_requests", "HTTP requests by route, method and status",
                                  ["route", "method", "status"], registry=r),
            http_latency=Histogram("session_http_request_seconds", "HTTP request latency by route",
                                   ["route"], registry=r,
                                   buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)),
            redis_up=Gauge("session_redis_up", "1 when the last Redis check answered", registry=r),
            ws_connections=Gauge("session_ws_connections", "open WebSocket connections", ["kind"], registry=r),
            embedded_redis_restarts=Counter("session_embedded_redis_restarts",
                                            "times the embedded redis-server child was started again after dying",
                                            registry=r),
            redis_outages=Counter("session_redis_outages", "Redis outages seen (each counted once, when it starts)",
                                  registry=r),
            chat_messages=Counter("session_chat_messages",
                                  "chat messages sent by participants: stored, or refused by error code",
                                  ["outcome"], registry=r),
            document_uploads=Counter("session_document_uploads",
                                     "document uploads: stored, or refused by error code", ["outcome"], registry=r),
            document_downloads=Counter("session_document_downloads",
                                       "document downloads: served, or refused by error code", ["outcome"],
                                       registry=r),
            document_bytes=Counter("session_document_bytes",
                                   "plaintext bytes of documents stored (uploaded) and sent (downloaded)",
                                   ["direction"], registry=r),
        )


def _route_template(scope: Scope) -> str:
    """The template of the route that fully matched, as the router left it in the scope.

    The router records the route it dispatched to (a full match, or else the first partial one: a path
    whose method differs, answered 405). Only a full match names a template, as matching again would.
    """
    route = scope.get("route")
    if route is None:
        return "unmatched"
    methods = getattr(route, "methods", None)
    if methods and scope["method"] not in methods:
        return "unmatched"  # a partial match
    return str(getattr(route, "path", "other"))


class MetricsMiddleware:
    """Counts and logs requests by route template (never the raw path: ids would explode the label set,
    and the log would keep who met whom)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # (route, method, status) -> the counter's and the histogram's children: as many entries as the
        # registry itself holds, looked up here without the registry's validation and lock
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            key = (_route_template(scope), scope["method"], status)
            children = self._children.get(key)
            if children is None:
                children = (self.metrics.http_requests.labels(key[0], key[1], str(status)),
                            self.metrics.http_latency.labels(key[0]))
                self._children[key] = children
            children[0].inc()
            elapsed = time.perf_counter() - start
            children[1].observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s %d %.1fms", key[1], key[0], status, elapsed * 1000)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        outcome = "refused"

        async def send_wrapper(message: Message) -> None:
            nonlocal outcome
            if message["type"] == "websocket.accept":
                outcome = "accepted"
                access_log.info("WebSocket %s accepted", _route_template(scope))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            access_log.info("WebSocket %s %s after %.1fs", _route_template(scope),
                            "closed" if outcome == "accepted" else "refused", time.perf_counter() - start)


def quiet_server_request_lines() -> None:
    """uvicorn writes its own line for every WebSocket handshake, with the raw path (`"WebSocket
    /v1/rooms/<booking id>/ws" [accepted]`) on its error logger; the access log above says the same by
    route template. Called once by `session-server serve`, which turns uvicorn's access log off."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropRequestLines) for f in logger.filters):
        logger.addFilter(_DropRequestLines())


class _DropRequestLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith('%s - "WebSocket %s"'))


async def metrics_endpoint(request: Request) -> Response:
    """/metrics on the public port: only with the metrics credential, and as if absent when none is set."""
    ctx = request.app.state.ctx
    expected: str = ctx.settings.metrics_token
    if not expected:
        raise NotFound("no such route here: metrics are served on their own port (SESSION_SERVER_METRICS_PORT)")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthenticated("the metrics credential is missing or wrong")
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


class MetricsListener:
    """`registry` at http://host:port/metrics: prometheus_client's own server, on a thread of its own so
    that a scrape never waits for the event loop. Started and stopped by the app's lifespan."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry, self._host, self._port = registry, host, port
        self._httpd: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Listen; returns the address (the port chosen by the kernel when 0 was asked)."""
        self._httpd, self._thread = start_http_server(self._port, addr=self._host, registry=self._registry)
        address = self._httpd.server_address
        return str(address[0]), int(address[1])

    async def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return

        def close() -> None:
            httpd.shutdown()  # waits for the serving loop's next poll
            httpd.server_close()

        await asyncio.to_thread(close)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
