"""The outages feature: the timeline's consumer, the rooms' observer, the watch, and the judge the
completion job asks. It starts after bookings and rooms (it follows both)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from ..context import AppContext
from ..redis_client import blocking_client
from .consumer import BLOCK_S, TimelineConsumer
from .service import OutageService
from .store import OutageStore


class OutagesFeature:
    name = "outages"

    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self, ctx: AppContext) -> None:
        rooms = getattr(ctx, "rooms", None)  # absent when the app runs without rooms
        service = OutageService(OutageStore(ctx.redis), ctx.bookings, ctx.settings, ctx.clock, rooms=rooms)
        if rooms is not None:
            rooms.observe(service)
        ctx.bookings.judge = service.judge
        consumer = TimelineConsumer(service)
        settings = ctx.settings
        ctx.tasks.spawn("outages.timeline", lambda: consumer.run(
            lambda: blocking_client(ctx.redis_url, settings, block_s=BLOCK_S), ctx.redis))
        ctx.tasks.every("outages.watch", settings.outage_check_interval_s, service.tick)
        ctx.outages = service

    async def stop(self, ctx: AppContext) -> None:
        return None  # the supervisor cancels the consumer and the watch
