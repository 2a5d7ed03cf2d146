"""A booking's end closes its room for everyone connected: cancelled over HTTP by a party or an admin, or
its practitioner suspended, every socket in the room is told why (`room.closing` with a code) and closed
4410; nobody can come back in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

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
    assert (await again.expect("error"))["code"] == "room_closed"
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
        assert (await again.expect("error"))["code"] == "room_closed"
        assert await again.closed() == 4410
