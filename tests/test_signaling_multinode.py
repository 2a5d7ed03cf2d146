"""Two server processes on one Redis behave as one room server; a killed one takes its people along."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from .rooms_support import CLIENT, PRACTITIONER, ServerProcess, connect_peer, joined, write_booking

TIMEOUT_S = 3.0


@pytest.fixture
async def two_nodes(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    nodes = [ServerProcess(tmp_path, redis_url, name, heartbeat_interval_s="0.5",
                           heartbeat_timeout_s=str(TIMEOUT_S)) for name in ("node-a", "node-b")]
    try:
        for n in nodes:
            await n.start()
        yield nodes[0], nodes[1]
    finally:
        for n in nodes:
            await n.stop()


async def test_participants_on_two_processes_see_each_other_chat_and_signal(
        two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, token: Callable[..., str]) -> None:
    a, b = two_nodes
    await write_booking(redis_url)
    client, _ = await joined(a, "b1", token("client", CLIENT, name="Amina"))  # type: ignore[arg-type]
    prac, pj = await joined(b, "b1", token("practitioner", PRACTITIONER))  # type: ignore[arg-type]
    assert {p["id"] for p in pj["participants"]} == {CLIENT, PRACTITIONER}
    assert pj["room"]["state"] == "in_session"
    await client.expect("participant.joined")
    await client.expect("session.started")
    await client.send({"type": "chat.send", "text": "from node a"})
    await prac.expect("chat.message", lambda m: m["text"] == "from node a")
    await prac.send({"type": "chat.send", "text": "from node b"})
    await client.expect("chat.message", lambda m: m["text"] == "from node b")
    await prac.send({"type": "offer", "sdp": "v=0 b"})
    assert (await client.expect("offer"))["from"] == PRACTITIONER
    await client.send({"type": "answer", "sdp": "v=0 a"})
    assert (await prac.expect("answer"))["from"] == CLIENT
    assert [m["seq"] for m in client.of_type("chat.message")] == [2]  # its own comes as an ack
    await client.close()
    await prac.close()


async def test_a_killed_process_s_participant_is_reported_gone_within_the_heartbeat_timeout(
        two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, token: Callable[..., str]) -> None:
    a, b = two_nodes
    await write_booking(redis_url)
    _client, _ = await joined(a, "b1", token("client", CLIENT))  # type: ignore[arg-type]
    prac, _ = await joined(b, "b1", token("practitioner", PRACTITIONER))  # type: ignore[arg-type]
    await prac.expect("session.started")
    a.kill()
    killed_at = time.monotonic()
    left = await prac.expect("participant.left", lambda m: m["participant_id"] == CLIENT, timeout=TIMEOUT_S)
    assert left["reason"] == "node_lost"
    assert time.monotonic() - killed_at <= TIMEOUT_S
    await prac.send({"type": "ping"})
    await prac.expect("pong")
    back, bj = await joined(b, "b1", token("client", CLIENT))  # type: ignore[arg-type]
    assert {p["id"] for p in bj["participants"]} == {CLIENT, PRACTITIONER}
    await back.close()
    await prac.close()


async def test_the_per_user_connection_cap_counts_sockets_on_every_process(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    for room in ("r1", "r2"):
        await write_booking(redis_url, room)
    nodes = [ServerProcess(tmp_path, redis_url, name, ws_max_connections_per_user="1",
                           heartbeat_interval_s="0.5", heartbeat_timeout_s=str(TIMEOUT_S))
             for name in ("cap-a", "cap-b")]
    try:
        for n in nodes:
            await n.start()
        first, _ = await joined(nodes[0], "r1", token("client", CLIENT))  # type: ignore[arg-type]
        refused = await connect_peer(nodes[1], "r2", token("client", CLIENT))  # type: ignore[arg-type]
        assert (await refused.expect("error"))["code"] == "too_many_connections"
        assert await refused.closed() == 4429
        # a second socket for the same room is a replacement, not an extra connection
        again, _ = await joined(nodes[1], "r1", token("client", CLIENT))  # type: ignore[arg-type]
        assert await first.closed() == 4409
        await again.close()
        later, _ = await joined(nodes[1], "r2", token("client", CLIENT))  # type: ignore[arg-type]
        await later.close()
    finally:
        for n in nodes:
            await n.stop()


async def test_cancelling_over_http_closes_the_room_on_the_other_process(
        two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, token: Callable[..., str]) -> None:
    import httpx

    from .conftest import api_key_auth

    a, b = two_nodes
    await write_booking(redis_url)
    client, _ = await joined(b, "b1", token("client", CLIENT))  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=a.url) as http:
        r = await http.post("/v1/bookings/b1/cancel", json={"reason": "travel"}, headers=api_key_auth())
        assert r.status_code == 200, r.text
    closing = await client.expect("room.closing")
    assert closing["code"] == "booking_cancelled"
    assert await client.closed() == 4410


async def test_suspending_the_practitioner_on_one_process_closes_the_room_on_both(
        two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, token: Callable[..., str]) -> None:
    import httpx

    from .bookings_support import make_practitioner
    from .conftest import api_key_auth

    a, b = two_nodes
    async with httpx.AsyncClient(base_url=a.url) as http:
        await make_practitioner(http, PRACTITIONER)
        await write_booking(redis_url)
        client, _ = await joined(b, "b1", token("client", CLIENT))  # type: ignore[arg-type]
        prac, _ = await joined(a, "b1", token("practitioner", PRACTITIONER))  # type: ignore[arg-type]
        r = await http.post(f"/v1/practitioners/{PRACTITIONER}/status", headers=api_key_auth(),
                            json={"status": "suspended", "reason": "review"})
        assert r.status_code == 200, r.text
    for peer in (client, prac):
        assert (await peer.expect("room.closing"))["code"] == "practitioner_suspended"
        assert await peer.closed() == 4410
    again = await connect_peer(b, "b1", token("client", CLIENT))  # type: ignore[arg-type]
    refused = await again.expect("error")
    assert (refused["code"], refused["reason"]) == ("room_closed", "practitioner_suspended")


async def test_a_cancellation_the_other_process_missed_still_closes_its_room(
        two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, token: Callable[..., str]) -> None:
    """The booking is cancelled in Redis with no event (as if the event were lost): each process's presence
    tick re-reads the bookings of its rooms and closes them, saying why."""
    import redis.asyncio as aioredis

    from session_server.bookings.model import BOOKING_KEY

    a, b = two_nodes
    await write_booking(redis_url)
    client, _ = await joined(b, "b1", token("client", CLIENT))  # type: ignore[arg-type]
    prac, _ = await joined(a, "b1", token("practitioner", PRACTITIONER))  # type: ignore[arg-type]
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.hset(BOOKING_KEY.format("b1"), "status", "cancelled")  # type: ignore[misc]
    finally:
        await r.aclose()
    for peer in (client, prac):
        assert (await peer.expect("room.closing"))["code"] == "booking_cancelled"
        assert await peer.closed() == 4410
