"""The app factory and its one lifespan, which owns Redis, every feature's services and every task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import redis.exceptions
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from files.keyring import KeyRing

from . import core_api, home
from .auth import Role, TokenAuthority
from .clock import Clock, SystemClock
from .context import AppContext
from .embedded_redis import EmbeddedRedis
from .features import Feature
from .http import EXCEPTION_HANDLERS, ControlCharacterGuard
from .metrics import Metrics, MetricsListener, MetricsMiddleware
from .redis_client import command_client, redacted
from .redis_outage import RedisOutage
from .settings import Settings
from .tasks import TaskSupervisor

log = logging.getLogger(__name__)

STARTUP_REDIS_WAIT_S = 5.0
REDIS_PROBE_INTERVAL_S = 1.0  # how soon an outage's start and end are noticed when nothing else meets them
EXIT_REDIS_LOST = 70  # EX_SOFTWARE: the embedded Redis could not be restarted


class StartupError(RuntimeError):
    """The server cannot start; the message says why and what to do."""


def exit_loudly(message: str) -> None:
    """End the process at once, non-zero, saying why: a server whose data store is gone for good serves
    nothing, and its supervisor (systemd, the container runtime) can only start it again if it exits."""
    log.critical("%s; the server exits", message)
    print(f"session server: {message}; exiting", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(EXIT_REDIS_LOST)


def default_features(settings: Settings) -> list[Feature]:
    """Every feature of the product, in start order."""
    from .bookings.feature import BookingsFeature
    from .documents import DocumentsFeature
    from .ledger.feature import LedgerFeature
    from .notifications.feature import NotificationsFeature
    from .outages.feature import OutagesFeature
    from .reschedule.feature import RescheduleFeature
    from .rooms.feature import RoomsFeature
    from .support.feature import SupportFeature

    features: list[Feature] = [BookingsFeature(), NotificationsFeature(), RoomsFeature(), DocumentsFeature(),
                               OutagesFeature(), RescheduleFeature(), LedgerFeature(), SupportFeature()]
    if settings.demo:
        from .demo import DemoFeature

        features.append(DemoFeature())
    return features


async def _wait_for_redis(ctx_redis: object, url: str) -> None:
    client = ctx_redis
    deadline = asyncio.get_running_loop().time() + STARTUP_REDIS_WAIT_S
    while True:
        try:
            await client.ping()  # type: ignore[attr-defined]
            return
        except (redis.exceptions.RedisError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise StartupError(f"Redis at {redacted(url)} is not reachable ({type(exc).__name__}: {exc}); "
                                   "check REDIS_URL or unset it to use the embedded Redis") from None
            await asyncio.sleep(0.1)


def _check_bindable(host: str, port: int, variable: str) -> None:
    """Say at once, in one line, that a port is taken (in the lifespan it would be a traceback)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartupError(f"cannot listen on {host}:{port} ({reason}); check {variable}") from None


def create_app(settings: Settings, features: Sequence[Feature] | None = None, *,
               clock: Clock | None = None, on_redis_lost: Callable[[str], None] = exit_loudly) -> Starlette:
    """The app; `clock` is the time every service, job and edge reads (the machine's by default);
    `on_redis_lost` is called when the embedded Redis cannot be restarted (by default the process exits)."""
    app_clock: Clock = clock if clock is not None else SystemClock()
    chosen = list(features) if features is not None else default_features(settings)
    metrics = Metrics.create()
    if not settings.api_keys:
        raise StartupError("no API key is configured: set SESSION_SERVER_API_KEYS")
    if not settings.master_keys:
        raise StartupError("no master key is configured: set SESSION_SERVER_MASTER_KEYS")
    if settings.metrics_port:
        _check_bindable(settings.metrics_host, settings.metrics_port, "SESSION_SERVER_METRICS_PORT")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if settings.metrics_port is not None:
                listener = MetricsListener(metrics.registry, settings.metrics_host, settings.metrics_port)
                try:
                    app.state.metrics_address = listener.start()
                except OSError as exc:
                    raise StartupError(f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
                                       f"({exc.strerror or exc}); check SESSION_SERVER_METRICS_PORT") from None
                stack.push_async_callback(listener.stop)
            if settings.redis_url is None:
                embedded = EmbeddedRedis(settings.data_dir / "redis")
                url = await embedded.start()
                stack.push_async_callback(embedded.stop)
            else:
                url = settings.redis_url
            client = command_client(url, settings)
            stack.push_async_callback(client.aclose)
            await _wait_for_redis(client, url)
            metrics.redis_up.set(1)
            outage = RedisOutage(monotonic=app_clock.monotonic, up=metrics.redis_up, outages=metrics.redis_outages)
            app.state.redis_outage = outage
            tasks = TaskSupervisor(report=outage.report)
            stack.push_async_callback(tasks.stop)
            tasks.every("redis-probe", REDIS_PROBE_INTERVAL_S,
                        lambda: outage.probe(client.ping, REDIS_PROBE_INTERVAL_S))
            if settings.redis_url is None:
                watched = embedded

                async def supervise_embedded() -> None:
                    await watched.supervise(restarted=metrics.embedded_redis_restarts.inc, give_up=on_redis_lost,
                                            hung_after_s=settings.embedded_redis_hang_s)

                tasks.spawn("embedded-redis", supervise_embedded)
            ctx = AppContext(settings=settings, redis=client, redis_url=url,
                             tokens=TokenAuthority(settings.api_keys, max_ttl_s=settings.token_max_ttl_s,
                                                   clock=app_clock.now, role_max_ttl_s={
                                                       Role.SUPPORT: settings.support_token_max_ttl_s}),
                             metrics=metrics, tasks=tasks,
                             keyring=KeyRing(settings.master_keys, settings.active_master_key_id),
                             clock=app_clock)
            app.state.ctx = ctx
            for feature in chosen:
                await feature.start(ctx)
                stack.push_async_callback(feature.stop, ctx)
            log.info("session server ready at %s", settings.base_url)
            yield
            log.info("session server draining")

    routes: list[BaseRoute] = [*core_api.routes(), *home.routes()]
    for feature in chosen:
        routes.extend(feature.routes())
    return Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics), Middleware(ControlCharacterGuard)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
