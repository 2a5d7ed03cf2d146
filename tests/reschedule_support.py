"""Helpers for the reschedule tests: a server on a ManualClock, a booking whose session was interrupted,
and the verdict written the way the session's verdict is written (the booking's move to `interrupted`
and its `session.verdict` event in one transaction)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from starlette.applications import Starlette

from session_server.app import create_app
from session_server.auth import Role
from session_server.bookings.model import BOOKING_KEY
from session_server.clock import ManualClock
from session_server.context import AppContext
from session_server.events import Event, add_to

from .bookings_support import events, every_day, iso, make_practitioner
from .conftest import auth, make_settings, running
from .support import eventually

# A Monday morning years away from the machine's own time: anything that read the machine's clock instead
# of the app's would be seen at once.
T0 = int(datetime(2031, 3, 3, 7, 0, tzinfo=UTC).timestamp())
PID, CID = "p1", "c1"


class Server:
    def __init__(self, clock: ManualClock, http: httpx.AsyncClient, app: Starlette) -> None:
        self.clock = clock
        self.http = http
        self.app = app

    @property
    def ctx(self) -> AppContext:
        ctx: AppContext = self.app.state.ctx
        return ctx

    @property
    def redis(self) -> aioredis.Redis:
        return self.ctx.redis

    def headers(self, role: Role | str, sub: str) -> dict[str, str]:
        tok, _ = self.ctx.tokens.mint(sub=sub, name=sub, role=Role(role), ttl_s=self.ctx.tokens.max_ttl_for(Role(role)))
        return auth(tok)

    def token(self, role: Role | str, sub: str) -> str:
        tok, _ = self.ctx.tokens.mint(sub=sub, name=sub, role=Role(role), ttl_s=self.ctx.tokens.max_ttl_for(Role(role)))
        return tok

    @property
    def client(self) -> dict[str, str]:
        return self.headers(Role.CLIENT, CID)

    @property
    def practitioner(self) -> dict[str, str]:
        return self.headers(Role.PRACTITIONER, PID)

    @property
    def admin(self) -> dict[str, str]:
        return self.headers(Role.ADMIN, "a1")

    async def booking(self, booking_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/v1/bookings/{booking_id}", headers=self.admin)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def slots(self, days: float = 2, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        now = self.clock.now()
        r = await self.http.get(f"/v1/practitioners/{PID}/slots", headers=headers or self.client,
                                params={"from": iso(now), "to": iso(now + days * 86400)})
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()["slots"]
        return found

    async def book(self, starts_at: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        r = await self.http.post("/v1/bookings", headers=headers or self.client,
                                 json={"practitioner_id": PID, "starts_at": starts_at})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    async def offer(self, booking_id: str) -> dict[str, Any] | None:
        r = await self.http.get(f"/v1/bookings/{booking_id}/reschedule-offer", headers=self.client)
        return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]

    async def offer_slots(self, booking_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/v1/bookings/{booking_id}/reschedule-offer/slots", headers=self.client)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def notifications(self, role: Role, sub: str) -> list[dict[str, Any]]:
        r = await self.http.get("/v1/notifications", headers=self.headers(role, sub))
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()["notifications"]
        return found

    async def wait_notified(self, kind: str, role: Role, sub: str) -> dict[str, Any]:
        async def told() -> dict[str, Any] | None:
            return next((n for n in await self.notifications(role, sub) if n["kind"] == kind), None)

        return await eventually(told, what=f"a {kind} notification for {sub}")


async def write_verdict(redis: aioredis.Redis, booking: dict[str, Any], *, verdict: str = "interrupted",
                        attribution: str = "client_connection", at: float, net_minutes: int = 5) -> Event:
    """The verdict as the session's verdict is written: the booking's new status and `session.verdict` in
    one transaction."""
    event = Event("session.verdict", {
        "booking_id": booking["id"], "practitioner_id": booking["practitioner_id"],
        "client_id": booking["client_id"], "verdict": verdict, "attribution": attribution,
        "net_minutes": net_minutes, "scheduled_minutes": 50, "decided_at": iso(at)},
        time=datetime.fromtimestamp(at, UTC))
    async with redis.pipeline(transaction=True) as pipe:
        status = {"interrupted": "interrupted", "completed": "completed"}.get(verdict, "interrupted")
        pipe.hset(BOOKING_KEY.format(booking["id"]), mapping={"status": status, "status_changed_at": str(int(at))})
        add_to(pipe, event)
        await pipe.execute()
    return event


@asynccontextmanager
async def reschedule_server(tmp_path: Path, redis_url: str, **overrides: Any) -> AsyncIterator[Server]:
    clock = ManualClock(T0)
    app = create_app(make_settings(tmp_path, redis_url, **overrides), clock=clock)
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield Server(clock, http, app)


async def seed_practitioner(s: Server, **kwargs: Any) -> None:
    await make_practitioner(s.http, PID, weekly=kwargs.pop("weekly", every_day("08:00", "18:00")), **kwargs)


async def interrupted_booking(s: Server, *, attribution: str = "client_connection") -> dict[str, Any]:
    """A booking of the first free slot whose session then broke down: the offer exists when this returns."""
    slot = (await s.slots())[0]
    booking = await s.book(slot["starts_at"])
    start = datetime.fromisoformat(booking["starts_at"]).timestamp()
    s.clock.set(start + 10 * 60)  # ten minutes into the session, the media died for good
    await write_verdict(s.redis, booking, attribution=attribution, at=s.clock.now())
    await eventually(lambda: s.offer(booking["id"]), what="the reschedule offer")
    return booking


async def event_count(redis: aioredis.Redis, type_: str) -> int:
    return len(await events(redis, type_))
