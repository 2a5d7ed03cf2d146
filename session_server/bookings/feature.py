"""The bookings feature: its routes, its service on the context, the suspension job, and the consumer that
moves a booking to in_session when its session starts."""

from __future__ import annotations

from starlette.routing import BaseRoute

from ..context import AppContext
from ..redis_client import blocking_client
from . import api
from .jobs import CompletionJob, SuspensionJob
from .service import BookingService
from .sessions import BLOCK_S, SessionStartedConsumer
from .store import BookingStore


class BookingsFeature:
    name = "bookings"

    def routes(self) -> list[BaseRoute]:
        return api.routes()

    async def start(self, ctx: AppContext) -> None:
        store = BookingStore(ctx.redis)
        ctx.bookings = BookingService(store, ctx.settings, ctx.clock)
        ctx.tasks.spawn("bookings.book", store.run_booking_batches)
        settings = ctx.settings
        suspension = SuspensionJob(store, settings.suspend_after_idle_days,
                                   interval_s=settings.suspension_check_interval_s, clock=ctx.clock)
        ctx.tasks.every("bookings.suspension", suspension.tick_s, suspension.step)
        service = ctx.bookings

        async def judge(booking_id: str, now: int) -> bool:
            # the outages feature sets the judge when it starts (after this one)
            return False if service.judge is None else await service.judge(booking_id, now)

        completion = CompletionJob(store, judge=judge, grace_s=settings.room_grace_after_s,
                                   no_show_s=settings.outage_no_show_s, clock=ctx.clock)
        ctx.tasks.every("bookings.completion", completion.tick_s, completion.step)
        sessions = SessionStartedConsumer(store)
        ctx.tasks.spawn("bookings.sessions", lambda: sessions.run(
            lambda: blocking_client(ctx.redis_url, settings, block_s=BLOCK_S), ctx.redis))

    async def stop(self, ctx: AppContext) -> None:
        return None  # the supervisor cancels the jobs and the consumer
