"""The reschedule feature: its routes and page, its service on the context, the consumer that offers a free
reschedule for each interrupted session's verdict, and the job that reminds and expires offers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from ..context import AppContext
from ..http import documented
from ..redis_client import blocking_client
from . import api
from .consumer import BLOCK_S, VerdictConsumer
from .jobs import OfferClockJob
from .service import RescheduleService
from .store import RescheduleStore


class RescheduleFeature:
    name = "reschedule"

    def __init__(self) -> None:
        self._page = (api.STATIC_DIR / "reschedule.html").read_text(encoding="utf-8")

    def routes(self) -> list[BaseRoute]:
        return [*api.routes(), Route("/reschedule/{bid}", self._reschedule_page, methods=["GET"])]

    @documented("The reschedule page of an interrupted session (the token travels in the URL fragment)",
                auth=(), responses={200: "text/html"}, tags=("reschedule",))
    async def _reschedule_page(self, request: Request) -> Response:
        return HTMLResponse(self._page, headers=api.PAGE_HEADERS)

    async def start(self, ctx: AppContext) -> None:
        settings = ctx.settings
        service = RescheduleService(RescheduleStore(ctx.redis), ctx.bookings, settings, ctx.clock)
        ctx.reschedule = service
        verdicts = VerdictConsumer(service)
        ctx.tasks.spawn("reschedule.offers", lambda: verdicts.run(
            lambda: blocking_client(ctx.redis_url, settings, block_s=BLOCK_S), ctx.redis))
        job = OfferClockJob(service, ctx.clock, interval_s=settings.reschedule_check_interval_s)
        ctx.tasks.every("reschedule.expiry", job.tick_s, job.step)

    async def stop(self, ctx: AppContext) -> None:
        return None  # the supervisor cancels the consumer and the job
