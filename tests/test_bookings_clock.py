"""A booking lives on the app's clock: the server, built with a ManualClock at a chosen instant, books,
refuses a late cancellation and completes the session when that clock says so, all seen through the HTTP
edge and the events stream, never by calling the server's insides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from session_server.app import create_app
from session_server.auth import Role
from session_server.bookings.jobs import COMPLETION_GRACE_S
from session_server.clock import ManualClock
from session_server.context import AppContext
from session_server.events import EVENTS_STREAM, Event

from .bookings_support import events, every_day, iso, make_practitioner
from .conftest import auth, make_settings, running
from .support import eventually

# A Monday morning years away from the machine's own time: anything that read the machine's clock
# instead of the app's would be seen at once (no slot, a refusal as too far ahead, an event's time).
T0 = int(datetime(2031, 3, 3, 7, 0, tzinfo=UTC).timestamp())


class Server:
    def __init__(self, clock: ManualClock, http: httpx.AsyncClient, ctx: AppContext) -> None:
        self.clock = clock
        self.http = http
        self.ctx = ctx

    def headers(self, role: Role, sub: str) -> dict[str, str]:
        """A token minted by the server's own authority, at the server's time."""
        tok, _ = self.ctx.tokens.mint(sub=sub, name=sub, role=role, ttl_s=self.ctx.settings.token_max_ttl_s)
        return auth(tok)

    async def status(self, booking_id: str) -> str:
        r = await self.http.get(f"/v1/bookings/{booking_id}", headers=self.headers(Role.ADMIN, "a"))
        assert r.status_code == 200, r.text
        status: str = r.json()["status"]
        return status


@pytest.fixture
async def server(tmp_path: Path, redis_url: str) -> AsyncIterator[Server]:
    clock = ManualClock(T0)
    app = create_app(make_settings(tmp_path, redis_url), clock=clock)
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield Server(clock, http, app.state.ctx)


async def _slots(s: Server, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await s.http.get("/v1/practitioners/p1/slots", headers=headers,
                         params={"from": iso(s.clock.now()), "to": iso(s.clock.now() + 2 * 86400)})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["slots"]
    return found


async def _book(s: Server, headers: dict[str, str], slot: dict[str, Any]) -> dict[str, Any]:
    r = await s.http.post("/v1/bookings", headers=headers,
                          json={"practitioner_id": "p1", "starts_at": slot["starts_at"]})
    assert r.status_code == 201, r.text
    booking: dict[str, Any] = r.json()
    return booking


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


async def test_a_booking_made_at_a_chosen_instant_is_completed_when_the_clock_passes_its_end_and_grace(
        server: Server, redis_client: aioredis.Redis) -> None:
    s = server
    await make_practitioner(s.http, "p1", weekly=every_day())
    client = s.headers(Role.CLIENT, "c1")
    slots = await _slots(s, client)
    assert slots, "the practitioner has no slot at the server's time"
    first = slots[0]
    assert T0 + s.ctx.settings.booking_lead_time_s <= _epoch(first["starts_at"]) < T0 + 86400
    booking = await _book(s, client, first)
    assert booking["created_at"] == iso(T0)
    created = await events(redis_client, "booking.created")
    assert [(e.body["booking_id"], e.time.timestamp()) for e in created] == [(booking["id"], T0)]

    # The session starts: the rooms write `session.started` when both parties are in; the bookings'
    # consumer follows it.
    starts_at, ends_at = _epoch(booking["starts_at"]), _epoch(booking["ends_at"])
    s.clock.set(starts_at + 30)
    await redis_client.xadd(EVENTS_STREAM, Event(
        "session.started", {"booking_id": booking["id"], "practitioner_id": "p1", "client_id": "c1",
                            "at": (starts_at + 30) * 1000},
        time=datetime.fromtimestamp(starts_at + 30, UTC)).fields())
    # what the session's verdict is judged on (docs/outages.md): both in the room, their media connected
    for pid, role in (("c1", "client"), ("p1", "practitioner")):
        at = datetime.fromtimestamp(starts_at + 30, UTC)
        await redis_client.xadd(EVENTS_STREAM, Event("room.joined", {
            "booking_id": booking["id"], "participant_id": pid, "role": role, "at": (starts_at + 30) * 1000,
            "practitioner_id": "p1", "client_id": "c1"}, time=at).fields())
        await redis_client.xadd(EVENTS_STREAM, Event("media.state_changed", {
            "booking_id": booking["id"], "participant_id": pid, "state": "connected", "reason": None,
            "node_id": "n1", "at": (starts_at + 30) * 1000}, time=at).fields())

    async def in_session() -> bool:
        return await s.status(booking["id"]) == "in_session"

    await eventually(in_session, what="the booking in session")

    # The completion job runs on the server's clock: once it passes the end and the grace, the session's
    # verdict (both met, media connected) completes the booking, with the event the payouts follow, stamped
    # with that instant.
    done_at = ends_at + COMPLETION_GRACE_S
    s.clock.set(done_at)

    async def completed() -> list[Event]:
        if await s.status(booking["id"]) != "completed":
            return []
        return await events(redis_client, "booking.completed")

    done = await eventually(completed, what="the booking completed, with its event")
    assert [(e.body["booking_id"], e.body["from"], e.body["to"], e.body["automatic"], e.time.timestamp())
            for e in done] == [(booking["id"], "in_session", "completed", True, done_at)]


async def test_a_party_may_cancel_until_the_session_starts_by_the_server_clock(server: Server) -> None:
    s = server
    await make_practitioner(s.http, "p1", weekly=every_day())
    client = s.headers(Role.CLIENT, "c1")
    first, second = (await _slots(s, client))[:2]
    early, late = await _book(s, client, first), await _book(s, client, second)

    s.clock.set(_epoch(early["starts_at"]) - 1)
    r = await s.http.post(f"/v1/bookings/{early['id']}/cancel", headers=client, json={"reason": "ill"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"

    s.clock.set(_epoch(late["starts_at"]))
    r = await s.http.post(f"/v1/bookings/{late['id']}/cancel", headers=client, json={"reason": "ill"})
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "too_late_to_cancel"
    assert await s.status(late["id"]) == "confirmed"
