"""A booking's end closes its room for everyone connected: cancelled over HTTP by a party or an admin, or
its practitioner suspended, every socket in the room is told why (`room.closing` with a code) and closed
4410; nobody can come back in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from session_server.bookings.model import BOOKING_KEY, BookingStatus

from .bookings_support import make_practitioner
from .conftest import LiveServer, api_key_auth
from .rooms_support import CLIENT, PRACTITIONER, connect_peer, joined, room_server, write_booking
from .support import eventually


@pytest.fixture
async def server(tmp_path: Path, redis_url: str) -> AsyncIterator[LiveServer]:
    async with room_server(tmp_path, redis_url) as live:
        yield live


async def test_a_party_cancelling_closes_the_room_for_the_other_party_already_in_it(
        server: LiveServer, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, "b1")
    client, _ = await joined(server, "b1", token("client", CLIENT))
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post("/v1/bookings/b1/cancel", json={"reason": "travel"},
                            headers={"Authorization": f"Bearer {token('practitioner', PRACTITIONER)}"})
        assert r.status_code == 200, r.text
    closing = await client.expect("room.closing")
    assert closing["code"] == "booking_cancelled"
    assert await client.closed() == 4410
    again = await connect_peer(server, "b1", token("client", CLIENT))
    refused = await again.expect("error")
    assert (refused["code"], refused["reason"]) == ("room_closed", "booking_cancelled")
    assert await again.closed() == 4410


async def test_a_live_session_is_not_cancelled_and_its_room_stays_open(
        server: LiveServer, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, "b1")
    client, _ = await joined(server, "b1", token("client", CLIENT))
    prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
    await client.expect("session.started")
    async with httpx.AsyncClient(base_url=server.url) as http:

        async def in_session() -> bool:
            r = await http.get("/v1/bookings/b1", headers=api_key_auth())
            return bool(r.json()["status"] == "in_session")

        await eventually(in_session, what="the booking in session")
        r = await http.post("/v1/bookings/b1/cancel", json={"reason": "duplicate"}, headers=api_key_auth())
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "illegal_transition"
    await client.send({"type": "chat.send", "text": "still here"})
    await client.expect("chat.ack")
    await prac.expect("chat.message")
    assert not client.of_type("room.closing") and not prac.of_type("room.closing")


async def test_suspending_the_practitioner_closes_the_room(
        server: LiveServer, redis_url: str, token: Callable[..., str]) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        await make_practitioner(http, PRACTITIONER)
        await write_booking(redis_url, "b1")
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        r = await http.post(f"/v1/practitioners/{PRACTITIONER}/status", headers=api_key_auth(),
                            json={"status": "suspended", "reason": "review"})
        assert r.status_code == 200, r.text
    for peer in (client, prac):
        assert (await peer.expect("room.closing"))["code"] == "practitioner_suspended"
        assert await peer.closed() == 4410
    for role, sub in (("client", CLIENT), ("practitioner", PRACTITIONER)):
        again = await connect_peer(server, "b1", token(role, sub))
        refused = await again.expect("error")
        assert (refused["code"], refused["reason"]) == ("room_closed", "practitioner_suspended")
        assert await again.closed() == 4410


@pytest.mark.parametrize("status, reason", [
    (BookingStatus.CANCELLED, "booking_cancelled"),
    (BookingStatus.RESCHEDULED, "booking_rescheduled"),
    (BookingStatus.COMPLETED, "session_ended"),
    (BookingStatus.CLIENT_NO_SHOW, "session_ended"),
])
async def test_a_refused_join_says_why_the_room_is_closed(
        server: LiveServer, redis_url: str, token: Callable[..., str], status: BookingStatus, reason: str) -> None:
    await write_booking(redis_url, "b1", status=status)
    peer = await connect_peer(server, "b1", token("client", CLIENT))
    refused = await peer.expect("error")
    assert (refused["code"], refused["reason"]) == ("room_closed", reason)
    assert await peer.closed() == 4410
    assert peer.ws.protocol.close_rcvd is not None and peer.ws.protocol.close_rcvd.reason == reason


async def test_a_join_after_the_window_is_refused_as_over_and_one_before_it_as_not_open_yet(
        server: LiveServer, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, "past", starts_in_s=-3 * 3600, length_s=3600)
    late = await connect_peer(server, "past", token("client", CLIENT))
    refused = await late.expect("error")
    assert (refused["code"], refused["reason"]) == ("room_closed", "session_over")
    assert await late.closed() == 4410
    await write_booking(redis_url, "later", starts_in_s=3 * 3600)
    early = await connect_peer(server, "later", token("client", CLIENT))
    refused = await early.expect("error")
    assert refused["code"] == "room_not_open" and refused["retry_after_s"] > 0
    assert await early.closed() == 4425


@pytest.mark.parametrize("change, reason", [
    ("booking cancelled", "booking_cancelled"),
    ("practitioner suspended", "practitioner_suspended"),
    ("booking rescheduled", "booking_rescheduled"),
])
async def test_a_change_whose_event_was_missed_closes_the_room_at_the_next_tick(
        server: LiveServer, redis_url: str, token: Callable[..., str], change: str, reason: str) -> None:
    """The state changes in Redis with no event for the rooms to follow (as if this process missed it):
    the presence tick's re-check of the booking and of its practitioner closes the room all the same."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        await make_practitioner(http, PRACTITIONER)
    await write_booking(redis_url, "b1")
    client, _ = await joined(server, "b1", token("client", CLIENT))
    prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
    r = aioredis.Redis.from_url(redis_url)
    try:
        if change == "practitioner suspended":
            await r.hset(f"ss:practitioner:{PRACTITIONER}", "status", "suspended")  # type: ignore[misc]
        else:
            status = "cancelled" if change == "booking cancelled" else "rescheduled"
            await r.hset(BOOKING_KEY.format("b1"), "status", status)  # type: ignore[misc]
    finally:
        await r.aclose()
    for peer in (client, prac):
        assert (await peer.expect("room.closing"))["code"] == reason
        assert await peer.closed() == 4410
