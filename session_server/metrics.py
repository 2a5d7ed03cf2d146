"""Prometheus metrics: one registry per app (no process-global state), HTTP middleware, /metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    http_requests: Counter
    http_latency: Histogram
    redis_up: Gauge
    ws_connections: Gauge

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
        )


def _route_template(scope: Scope) -> str:
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"


class MetricsMiddleware:
    """Counts requests by route template (never the raw path: ids would explode the label set)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

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
            route = _route_template(scope)
            self.metrics.http_requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.http_latency.labels(route).observe(time.perf_counter() - start)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.ctx.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
