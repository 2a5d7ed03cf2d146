"""Demo data for `session-server --demo`: an active practitioner with availability, a client, and a booking
that starts a few minutes after launch, with a room link for each side.

The links carry the access token in the URL fragment (`#token=...`), which browsers never send to the
server, so tokens stay out of every access log. Seeding is safe to repeat: each launch cancels the
previous demo booking (if still confirmed) and books a fresh one. A previous demo booking that was used
(both were in its room: it is in session, or has its verdict) cannot be cancelled and keeps its time, as
any session does; the launch then seeds the demo for a new pair (`demo-practitioner-2`, `demo-client-2`,
...), so that the new session can start within minutes all the same.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from starlette.routing import BaseRoute

from .auth import Role
from .bookings.model import BookingStatus
from .bookings.rules import DAY_S, RELEASING_STATES, PractitionerStatus, merge
from .bookings.store import at, iso
from .context import AppContext
from .errors import DomainError
from .events import Event

log = logging.getLogger(__name__)

PRACTITIONER_ID = "demo-practitioner"
CLIENT_ID = "demo-client"
LAST_BOOKING_KEY = "ss:demo:booking"
ROUND_KEY = "ss:demo:round"  # which demo pair the last launch seeded (0: the first)
STARTS_IN_S = 5 * 60
TOKEN_TTL_S = 4 * 3600


def demo_pair(round_: int) -> tuple[str, str]:
    """The practitioner's and the client's ids of a demo round."""
    if round_ == 0:
        return PRACTITIONER_ID, CLIENT_ID
    return f"{PRACTITIONER_ID}-{round_ + 1}", f"{CLIENT_ID}-{round_ + 1}"


async def _release_previous(ctx: AppContext, starts_at: int, t: int) -> int:
    """Cancel the previous demo booking if it can be; the round to seed: the same one, or the next one when
    that booking keeps the new session's time (it was used)."""
    raw = await ctx.redis.get(ROUND_KEY)
    round_ = int(raw) if raw else 0
    previous = await ctx.redis.get(LAST_BOOKING_KEY)
    if not previous:
        return round_
    previous_id = previous.decode() if isinstance(previous, bytes) else str(previous)
    store = ctx.bookings.store
    # already over or gone: then nothing holds the time any more
    with contextlib.suppress(DomainError):
        await store.transition(previous_id, BookingStatus.CANCELLED, "booking.cancelled",
                               {"by": "admin", "reason": "demo restarted"}, t,
                               extra={"cancel_reason": "demo restarted", "cancelled_by": "admin"})
    booking = await store.booking(previous_id)
    if booking is not None and booking.status not in RELEASING_STATES and booking.ends_at > starts_at:
        round_ += 1
        await ctx.redis.set(ROUND_KEY, round_)
    return round_


async def seed_demo(ctx: AppContext, *, now: int | None = None, echo: bool = True) -> dict[str, Any]:
    svc = ctx.bookings
    store = svc.store
    t = int(ctx.clock.now()) if now is None else now
    cut = ctx.settings.demo_cut_after_s
    # to show an outage, the session's time has begun already (outages count within the booked time only)
    starts_at = t // 60 * 60 if cut else (t + STARTS_IN_S + 59) // 60 * 60
    practitioner_id, client_id = demo_pair(await _release_previous(ctx, starts_at, t))
    if await store.practitioner(practitioner_id) is None:
        await svc.create_practitioner(pid=practitioner_id, display_name="Dr. Demo", specialty="psychologist",
                                      session_minutes=50, price_minor=300000, currency=ctx.settings.currency,
                                      timezone=ctx.settings.default_timezone, now=t)
    p = await store.require_practitioner(practitioner_id)
    if p.status is not PractitionerStatus.ACTIVE:
        p = await svc.set_status(practitioner_id, PractitionerStatus.ACTIVE, reason="demo", by="demo", now=t)
    # One window starting at the demo booking (so it is on the grid), and daily hours for a week.
    windows = merge([(starts_at, starts_at + 4 * 3600),
                     *((starts_at + d * DAY_S, starts_at + d * DAY_S + 6 * 3600) for d in range(1, 8))])
    # (published as windows, not from weekly hours: the spec on record is empty, so a change of zone
    # expands nothing and drops these windows, as it would for a practitioner with no weekly hours)
    spec: dict[str, list[Any]] = {"weekly": [], "exceptions": []}
    await store.publish_availability(practitioner_id, spec, windows, Event(
        "availability.published", {"practitioner_id": practitioner_id, "timezone": p.timezone,
                                    "windows": len(windows), "first_start": iso(windows[0][0]),
                                    "last_end": iso(windows[-1][1])},
        time=at(t)), t)
    # (a session that has begun is booked as at its first instant: no slot can be booked in the past)
    booking = await svc.book(client_id=client_id, practitioner_id=practitioner_id, starts_at=starts_at,
                             code=None, expected_total=None, now=min(t, starts_at), lead_time_s=0)
    await ctx.redis.set(LAST_BOOKING_KEY, booking.id)
    ttl = min(TOKEN_TTL_S, ctx.settings.token_max_ttl_s)
    links, statement = {}, ""
    for role, sub, name in ((Role.PRACTITIONER, practitioner_id, "Dr. Demo"),
                            (Role.CLIENT, client_id, "Demo client")):
        token, _ = ctx.tokens.mint(sub=sub, name=name, role=role, ttl_s=ttl)
        # the client's page of an outage demo cuts its own camera and microphone (static/room/outage.js)
        query = f"?demo_cut={cut}" if cut and role is Role.CLIENT else ""
        links[role.value] = f"{ctx.settings.base_url}/room/{booking.id}{query}#token={token}"
        if role is Role.PRACTITIONER:
            statement = f"{ctx.settings.base_url}/statement#token={token}"
    # a support agent's board, for as long as one shift at most (support tokens live no longer)
    agent, _ = ctx.tokens.mint(sub="demo-agent", name="Demo agent", role=Role.SUPPORT,
                               ttl_s=min(ttl, ctx.tokens.max_ttl_for(Role.SUPPORT)))
    support = f"{ctx.settings.base_url}/support#token={agent}"
    # the administration's page (complaints to decide, the platform's money, payout dates)
    admin, _ = ctx.tokens.mint(sub="demo-admin", name="Demo admin", role=Role.ADMIN,
                               ttl_s=min(ttl, ctx.tokens.max_ttl_for(Role.ADMIN)))
    administration = f"{ctx.settings.base_url}/admin#token={admin}"
    if echo:
        print(f"Demo booking {booking.id} starts at {at(starts_at).isoformat()} "
              f"(in about {max(0, starts_at - t) // 60} minutes).", flush=True)
        if cut:
            print(f"  the client's camera and microphone will be cut {cut} s after the client's media connects.",
                  flush=True)
        print(f"  practitioner: {links['practitioner']}", flush=True)
        print(f"  client:       {links['client']}", flush=True)
        print(f"  the practitioner's statement (earnings and payouts): {statement}", flush=True)
        print(f"  the support board (live sessions, never their content): {support}", flush=True)
        print(f"  the administration (complaints, the platform's money, payouts, refunds): {administration}",
              flush=True)
    log.info("demo data seeded (booking %s)", booking.id)
    return {"booking_id": booking.id, "starts_at": starts_at, "links": links, "statement": statement,
            "support": support, "admin": administration,
            "practitioner_id": practitioner_id, "client_id": client_id}


class DemoFeature:
    """Seeds the demo last, once every other feature has started: booking, links, a shared worksheet."""

    name = "demo"

    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self, ctx: AppContext) -> None:
        from .documents.demo import seed_demo_document

        seeded = await seed_demo(ctx)
        await seed_demo_document(ctx, seeded["practitioner_id"], seeded["booking_id"])

    async def stop(self, ctx: AppContext) -> None:
        return None
