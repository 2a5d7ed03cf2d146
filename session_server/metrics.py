"""Prometheus metrics: one registry per app (no process-global state), HTTP middleware, /metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    http_requests: Counter
    http_latency: Histogram
    redis_up: Gauge
    ws_connections: Gauge
    embedded_redis_restarts: Counter
    redis_outages: Counter

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
    """Counts requests by route template (never the raw path: ids would explode the label set)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # (route, method, status) -> the counter's and the histogram's children: as many entries as the
        # registry itself holds, looked up here without the registry's validation and lock
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            children[1].observe(time.perf_counter() - start)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.ctx.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
