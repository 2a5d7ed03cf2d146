"""A session from booking to completion on the app's clock, through the real edges only: the server, built with
a ManualClock years away from the machine's time, books over HTTP, keeps the room shut until its window
opens, lets both parties in over the WebSocket, puts the booking in session, closes the room when the window
ends, and completes the booking then: the session's verdict is written when its room closes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from session_server.auth import Role
from session_server.clock import ManualClock
from session_server.context import AppContext
from signaling import messages as m

from .bookings_support import events, every_day, iso, make_practitioner
from .conftest import LiveServer
from .rooms_support import connect_peer, joined, room_server
from .support import eventually

T0 = int(datetime(2031, 3, 3, 7, 0, tzinfo=UTC).timestamp())  # a Monday, far from the machine's own time
OPEN_BEFORE_S, GRACE_AFTER_S = 600, 300


@pytest.fixture
async def live(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[LiveServer, ManualClock]]:
    clock = ManualClock(T0)
    async with room_server(tmp_path, redis_url, clock=clock, room_open_before_s=OPEN_BEFORE_S,
                           room_grace_after_s=GRACE_AFTER_S) as server:
        yield server, clock


def _token(server: LiveServer, role: Role, sub: str) -> str:
    """A token minted by the server's authority at the server's time (a day-old one would have expired)."""
    ctx: AppContext = server.app.state.ctx
    tok, _ = ctx.tokens.mint(sub=sub, name=sub, role=role, ttl_s=3600)
    return tok


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


async def test_a_booking_s_room_and_completion_follow_the_server_clock(
        live: tuple[LiveServer, ManualClock], redis_client: aioredis.Redis) -> None:
    server, clock = live
    async with httpx.AsyncClient(base_url=server.url) as http:
        await make_practitioner(http, "p1", weekly=every_day())

        def headers(role: Role, sub: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {_token(server, role, sub)}"}

        r = await http.get("/v1/practitioners/p1/slots", headers=headers(Role.CLIENT, "c1"),
                           params={"from": iso(T0), "to": iso(T0 + 2 * 86400)})
        assert r.status_code == 200, r.text
        slot = r.json()["slots"][0]
        r = await http.post("/v1/bookings", headers=headers(Role.CLIENT, "c1"),
                            json={"practitioner_id": "p1", "starts_at": slot["starts_at"]})
        assert r.status_code == 201, r.text
        booking: dict[str, Any] = r.json()
        starts_at, ends_at = _epoch(booking["starts_at"]), _epoch(booking["ends_at"])
        assert T0 < starts_at < T0 + 86400

        async def status() -> str:
            r = await http.get(f"/v1/bookings/{booking['id']}", headers=headers(Role.ADMIN, "a"))
            assert r.status_code == 200, r.text
            found: str = r.json()["status"]
            return found

        # A second before the window opens, the room is not open yet and says when it opens.
        clock.set(starts_at - OPEN_BEFORE_S - 1)
        early = await connect_peer(server, booking["id"], _token(server, Role.CLIENT, "c1"))
        refusal = await early.expect("error")
        assert refusal["code"] == "room_not_open"
        assert refusal["retry_after_s"] == 1  # when to come back, by the server's clock
        assert await early.closed() == m.CLOSE_NOT_OPEN_YET

        # At the opening instant both parties get in, and the booking is in session.
        clock.set(starts_at - OPEN_BEFORE_S)
        client, _ = await joined(server, booking["id"], _token(server, Role.CLIENT, "c1"))
        practitioner, _ = await joined(server, booking["id"], _token(server, Role.PRACTITIONER, "p1"))
        await client.expect("participant.joined", lambda msg: msg["participant"]["id"] == "p1")

        async def in_session() -> bool:
            return await status() == "in_session"

        await eventually(in_session, what="the booking in session once both parties joined")

        # The window ends: both are told the room is closing, and it closes.
        clock.set(ends_at + GRACE_AFTER_S)
        for peer in (client, practitioner):
            await peer.expect("room.closing")
            assert await peer.closed() == m.CLOSE_ROOM_CLOSED
        late = await connect_peer(server, booking["id"], _token(server, Role.CLIENT, "c1"))
        assert (await late.expect("error"))["code"] == "room_closed"

        # The verdict follows the same clock: when the room closes, the session is judged (both were there
        # with nothing lost) and the booking completed, at that instant.
        done_at = ends_at + GRACE_AFTER_S

        async def completed() -> bool:
            return await status() == "completed"

        await eventually(completed, what="the booking completed when its room closed")
        done = await events(redis_client, "booking.completed")
        assert [(e.body["booking_id"], e.time.timestamp()) for e in done] == [(booking["id"], done_at)]
