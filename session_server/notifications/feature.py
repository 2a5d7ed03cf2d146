"""The notifications feature: its routes, its service on the context, its consumer and push listener."""

from __future__ import annotations

import redis.asyncio as aioredis
from starlette.routing import BaseRoute

from ..context import AppContext
from ..redis_client import blocking_client
from ..rooms.presence import RoomPresence
from . import api
from .service import BLOCK_MS, NotificationService


class NotificationsFeature:
    name = "notifications"

    def routes(self) -> list[BaseRoute]:
        return api.routes()

    async def start(self, ctx: AppContext) -> None:
        def blocking() -> aioredis.Redis:
            return blocking_client(ctx.redis_url, ctx.settings, block_s=BLOCK_MS / 1000)

        svc = NotificationService(ctx.redis, blocking, ctx.bookings, RoomPresence(ctx.redis), ctx.clock,
                                  send_queue=ctx.settings.ws_send_queue,
                                  max_per_user=ctx.settings.ws_max_connections_per_user)
        ctx.notifications = svc
        await svc.ensure_group()
        ctx.tasks.spawn("notifications.consumer", svc.consume)
        ctx.tasks.spawn("notifications.push", svc.listen)

    async def stop(self, ctx: AppContext) -> None:
        ctx.notifications.stop()
