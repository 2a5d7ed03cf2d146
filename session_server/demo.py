"""Demo data for `session-server --demo`: an active practitioner with availability, a client, and a booking
that starts a few minutes after launch, with a room link for each side.

The links carry the access token in the URL fragment (`#token=...`), which browsers never send to the
server, so tokens stay out of every access log. Seeding is safe to repeat: each launch cancels the
previous demo booking (if still confirmed) and books a fresh one.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from starlette.routing import BaseRoute

from .auth import Role
from .bookings.model import BookingStatus
from .bookings.rules import DAY_S, PractitionerStatus, merge
from .bookings.store import at, iso
from .context import AppContext
from .errors import DomainError
from .events import Event

log = logging.getLogger(__name__)

PRACTITIONER_ID = "demo-practitioner"
CLIENT_ID = "demo-client"
LAST_BOOKING_KEY = "ss:demo:booking"
STARTS_IN_S = 5 * 60
TOKEN_TTL_S = 4 * 3600


async def seed_demo(ctx: AppContext, *, now: int | None = None, echo: bool = True) -> dict[str, Any]:
    svc = ctx.bookings
    store = svc.store
    t = int(ctx.clock.now()) if now is None else now
    starts_at = (t + STARTS_IN_S + 59) // 60 * 60
    if await store.practitioner(PRACTITIONER_ID) is None:
        await svc.create_practitioner(pid=PRACTITIONER_ID, display_name="Dr. Demo", specialty="psychologist",
                                      session_minutes=50, price_minor=300000, currency=ctx.settings.currency,
                                      timezone=ctx.settings.default_timezone, now=t)
    p = await store.require_practitioner(PRACTITIONER_ID)
    if p.status is not PractitionerStatus.ACTIVE:
        p = await svc.set_status(PRACTITIONER_ID, PractitionerStatus.ACTIVE, reason="demo", by="demo", now=t)
    # One window starting at the demo booking (so it is on the grid), and daily hours for a week.
    windows = merge([(starts_at, starts_at + 4 * 3600),
                     *((starts_at + d * DAY_S, starts_at + d * DAY_S + 6 * 3600) for d in range(1, 8))])
    # (published as windows, not from weekly hours: the spec on record is empty, so a change of zone
    # expands nothing and drops these windows, as it would for a practitioner with no weekly hours)
    spec: dict[str, list[Any]] = {"weekly": [], "exceptions": []}
    await store.publish_availability(PRACTITIONER_ID, spec, windows, Event(
        "availability.published", {"practitioner_id": PRACTITIONER_ID, "timezone": p.timezone,
                                    "windows": len(windows), "first_start": iso(windows[0][0]),
                                    "last_end": iso(windows[-1][1])},
        time=at(t)), t)
    previous = await ctx.redis.get(LAST_BOOKING_KEY)
    if previous:
        # already over or gone: then nothing holds the time any more
        previous_id = previous.decode() if isinstance(previous, bytes) else str(previous)
        with contextlib.suppress(DomainError):
            await store.transition(previous_id, BookingStatus.CANCELLED, "booking.cancelled",
                                   {"by": "admin", "reason": "demo restarted"}, t,
                                   extra={"cancel_reason": "demo restarted", "cancelled_by": "admin"})
    booking = await svc.book(client_id=CLIENT_ID, practitioner_id=PRACTITIONER_ID, starts_at=starts_at,
                             code=None, expected_total=None, now=t, lead_time_s=0)
    await ctx.redis.set(LAST_BOOKING_KEY, booking.id)
    ttl = min(TOKEN_TTL_S, ctx.settings.token_max_ttl_s)
    links = {}
    for role, sub, name in ((Role.PRACTITIONER, PRACTITIONER_ID, "Dr. Demo"),
                            (Role.CLIENT, CLIENT_ID, "Demo client")):
        token, _ = ctx.tokens.mint(sub=sub, name=name, role=role, ttl_s=ttl)
        links[role.value] = f"{ctx.settings.base_url}/room/{booking.id}#token={token}"
    if echo:
        print(f"Demo booking {booking.id} starts at {at(starts_at).isoformat()} "
              f"(in about {(starts_at - t) // 60} minutes).", flush=True)
        print(f"  practitioner: {links['practitioner']}", flush=True)
        print(f"  client:       {links['client']}", flush=True)
    log.info("demo data seeded (booking %s)", booking.id)
    return {"booking_id": booking.id, "starts_at": starts_at, "links": links}


class DemoFeature:
    """Seeds the demo last, once every other feature has started: booking, links, a shared worksheet."""

    name = "demo"

    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self, ctx: AppContext) -> None:
        from .documents.demo import seed_demo_document

        seeded = await seed_demo(ctx)
        await seed_demo_document(ctx, PRACTITIONER_ID, seeded["booking_id"])

    async def stop(self, ctx: AppContext) -> None:
        return None
