"""The support feature: the board's routes, its service on the context, its loops, and its observer of
the rooms (problem reports become tickets; an agent entering a room is audited)."""

from __future__ import annotations

import logging

from starlette.routing import BaseRoute

from ..bookings.model import Booking
from ..context import AppContext
from ..redis_client import blocking_client
from ..rooms.observer import BaseRoomObserver, ParticipantJoined, ParticipantLeft, ProblemReported
from . import api
from .board import READ_BLOCK_MS, Board
from .service import SupportMetrics, SupportService

log = logging.getLogger(__name__)

CLOCK_TICK_S = 5.0
STAFF_ROLES = ("support", "admin")


class SupportObserver(BaseRoomObserver):
    def __init__(self, service: SupportService) -> None:
        self.service = service

    async def problem_reported(self, report: ProblemReported) -> None:
        await self.service.report(booking_id=report.booking.id, practitioner_id=report.booking.practitioner_id,
                                  reporter_id=report.participant_id, reporter_role=report.role,
                                  kind=report.kind)

    async def participant_joined(self, joined: ParticipantJoined) -> None:
        if joined.role in STAFF_ROLES and not joined.resumed:
            await self.service.audit(who=joined.participant_id, role=joined.role, action="room.entered",
                                     booking_id=joined.booking.id)

    async def participant_left(self, left: ParticipantLeft) -> None:
        if left.role not in STAFF_ROLES:
            await self.service.abandon_unanswered(left.room_id, left.participant_id)


class SupportFeature:
    name = "support"

    def routes(self) -> list[BaseRoute]:
        return api.routes()

    async def start(self, ctx: AppContext) -> None:
        s = ctx.settings
        svc = SupportService(ctx.redis, ctx.clock, SupportMetrics.create(ctx.metrics.registry),
                             answer_within_s=s.support_answer_within_s)
        bookings = getattr(ctx, "bookings", None)

        async def load_bookings(start: int, end: int) -> list[Booking]:
            if bookings is None:
                return []
            return [b for b, _ in await bookings.bookings(start=start, end=end, limit=5000)]

        async def load_booking(booking_id: str) -> Booking | None:
            found = None if bookings is None else await bookings.booking(booking_id)
            return None if found is None else found[0]

        board = Board(svc, ctx.clock, load_bookings=load_bookings, load_booking=load_booking,
                      open_before_s=s.room_open_before_s,
                      grace_after_s=s.room_grace_after_s, queue_size=s.ws_send_queue,
                      idle_logout_s=s.support_idle_logout_s)
        rooms = getattr(ctx, "rooms", None)
        if rooms is not None:
            svc.tell = rooms.tell
            rooms.observe(SupportObserver(svc))
        reschedule = getattr(ctx, "reschedule", None)  # the free reschedule, when that feature runs
        if reschedule is not None:
            async def offer(booking_id: str, by: str, role: str, ticket_id: str, attribution: str) -> None:
                await reschedule.offer_by(booking_id, sub=by, role=role, attribution=attribution,
                                          problem_id=ticket_id)

            svc.offer_reschedule = offer
        ctx.support, ctx.support_board = svc, board
        await board.load()

        async def follow() -> None:
            client = blocking_client(ctx.redis_url, s, block_s=READ_BLOCK_MS / 1000)
            try:
                await board.follow(client)
            finally:
                await client.aclose()

        async def push() -> None:
            board.flush()

        ctx.tasks.spawn("support-board", follow)
        ctx.tasks.every("support-push", s.support_push_interval_s, push)
        ctx.tasks.every("support-clock", CLOCK_TICK_S, board.tick)

    async def stop(self, ctx: AppContext) -> None:
        return None
