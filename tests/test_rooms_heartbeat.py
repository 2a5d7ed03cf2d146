"""The heartbeat against its settings, on a ManualClock through the real WebSocket edge: a ping every
`heartbeat_interval_s`, a connection that answers every ping never shown reconnecting, and one that stops
answering shown reconnecting after 1.5 intervals of silence and closed at `heartbeat_timeout_s`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from session_server.auth import Role
from session_server.clock import ManualClock
from session_server.context import AppContext
from session_server.rooms.service import RoomService
from signaling import messages as m

from .conftest import LiveServer
from .rooms_support import CLIENT, PRACTITIONER, Peer, connect_peer, joined, room_server, write_booking
from .support import eventually

INTERVAL_S, TIMEOUT_S = 10.0, 30.0


@pytest.fixture
async def live(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[LiveServer, ManualClock]]:
    clock = ManualClock(float(int(time.time())))
    async with room_server(tmp_path, redis_url, clock=clock, heartbeat_interval_s=INTERVAL_S,
                           heartbeat_timeout_s=TIMEOUT_S) as server:
        yield server, clock


def _service(server: LiveServer) -> RoomService:
    ctx: AppContext = server.app.state.ctx
    assert isinstance(ctx.rooms, RoomService)
    return ctx.rooms


async def _heard_now(service: RoomService, clock: ManualClock, who: str) -> None:
    """Wait until the server has read the peer's answer at this instant (its pong is on its way)."""
    async def heard() -> bool:
        return any(c.participant_id == who and c.last_heard == clock.monotonic() for c in service.members())

    await eventually(heard, what=f"the answer of {who} heard")


async def _both_in(server: LiveServer, token: Callable[..., str]) -> tuple[Peer, Peer]:
    await write_booking(server_redis(server), "b1")
    client, _ = await joined(server, "b1", token("client", CLIENT))
    prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
    await client.expect("session.started")
    return client, prac


def server_redis(server: LiveServer) -> str:
    ctx: AppContext = server.app.state.ctx
    return ctx.redis_url


async def test_pings_come_every_interval_and_a_healthy_connection_is_never_shown_reconnecting(
        live: tuple[LiveServer, ManualClock], token: Callable[..., str]) -> None:
    server, clock = live
    service = _service(server)
    tick = service.timings.tick_s
    assert tick <= INTERVAL_S and (INTERVAL_S / tick).is_integer()
    client, prac = await _both_in(server, token)
    peers = {CLIENT: client, PRACTITIONER: prac}
    start = clock.monotonic()
    pings_at: dict[str, list[float]] = {CLIENT: [], PRACTITIONER: []}
    for _ in range(round(6 * INTERVAL_S / tick)):
        clock.advance(tick)
        await service.tick()
        elapsed = clock.monotonic() - start
        if round(elapsed / tick) % round(INTERVAL_S / tick) == 0:
            for pid, peer in peers.items():
                seen = len(pings_at[pid])
                await peer.expect("ping", after=_index_of_ping(peer, seen))
                pings_at[pid].append(elapsed)
                await _heard_now(service, clock, pid)
    # a chat message each way comes after anything the ticks published on the room's channel
    await client.send({"type": "chat.send", "text": "still fine"})
    await prac.expect("chat.message")
    await prac.send({"type": "chat.send", "text": "yes"})
    await client.expect("chat.message")
    expected = [INTERVAL_S * k for k in range(1, 7)]
    for pid, peer in peers.items():
        assert pings_at[pid] == expected
        assert len(peer.of_type("ping")) == len(expected)  # and no ping at any other instant
        assert not peer.of_type("participant.reconnecting")
        assert not [j for j in peer.of_type("participant.joined") if j.get("resumed")]


def _index_of_ping(peer: Peer, nth: int) -> int:
    """The position in what the peer received just after its `nth` ping (0: from the start)."""
    count = 0
    for i, msg in enumerate(peer.received):
        if msg.get("type") == "ping":
            count += 1
            if count == nth:
                return i + 1
    return 0


async def test_a_connection_that_stops_answering_is_reconnecting_after_one_and_a_half_intervals(
        live: tuple[LiveServer, ManualClock], token: Callable[..., str]) -> None:
    server, clock = live
    service = _service(server)
    tick = service.timings.tick_s
    client, prac = await _both_in(server, token)
    client.auto_pong = False
    silent_since = clock.monotonic()
    while clock.monotonic() - silent_since < 1.5 * INTERVAL_S:
        assert not prac.of_type("participant.reconnecting")
        clock.advance(tick)
        await service.tick()
    notice = await prac.expect("participant.reconnecting")
    assert notice["participant_id"] == CLIENT
    while clock.monotonic() - silent_since < TIMEOUT_S:
        clock.advance(tick)
        await service.tick()
    assert await client.closed() == m.CLOSE_HEARTBEAT_TIMEOUT
    left = await prac.expect("participant.left", lambda msg: msg["participant_id"] == CLIENT)
    assert left["reason"] == "timeout"


async def _live_through(service: RoomService, clock: ManualClock, seconds: float, *peers: Peer) -> None:
    """Advance the clock tick by tick, every peer speaking at each instant (alive all along)."""
    end = clock.now() + seconds
    while clock.now() < end:
        clock.advance(min(service.timings.tick_s, end - clock.now()))
        for n, peer in enumerate(peers):
            if peer.close_code is None:
                ref = f"t{clock.now()}-{n}"
                await peer.send({"type": "ping", "id": ref})
                await peer.expect("pong", lambda msg, ref=ref: msg.get("ref") == ref)  # type: ignore[misc]
        await service.tick()


def _mint(server: LiveServer, role: str, sub: str, ttl_s: int) -> str:
    """A token of the server's authority at the server's (manual) time."""
    ctx: AppContext = server.app.state.ctx
    tok, _ = ctx.tokens.mint(sub=sub, name=sub, role=Role(role), ttl_s=ttl_s)
    return tok


async def test_the_server_renews_the_token_of_a_connection_its_booking_still_admits(
        live: tuple[LiveServer, ManualClock], redis_url: str) -> None:
    """A link's token shorter than the session does not cut the participant off: before it runs out the
    server sends a new one, which the connection goes on under and the page rejoins with."""
    server, clock = live
    service = _service(server)
    await write_booking(redis_url, "b1")
    client, _ = await joined(server, "b1", _mint(server, "client", CLIENT, 600))
    prac, _ = await joined(server, "b1", _mint(server, "practitioner", PRACTITIONER, 600))
    joined_at = int(clock.now())

    await _live_through(service, clock, 1200, client, prac)  # twice the tokens' life
    assert client.close_code is None and prac.close_code is None
    assert not client.of_type("error") and not prac.of_type("error")
    renewed = prac.of_type("token.refreshed")
    assert renewed and renewed[0]["ref"] == "" and renewed[0]["expires_at"] > joined_at + 600
    # the renewed token is a real one of the same identity: the practitioner can rejoin with it
    await prac.close()
    back, _ = await joined(server, "b1", renewed[-1]["token"])
    await client.expect("participant.joined", lambda msg: msg["participant"]["id"] == PRACTITIONER)
    await back.close()
    await client.close()


async def test_a_token_refreshed_in_time_keeps_the_connection_and_one_not_refreshed_ends_it(
        live: tuple[LiveServer, ManualClock], redis_url: str) -> None:
    """Without the server's renewal (a deployment's own token flow), the page's token.refresh is the way."""
    server, clock = live
    service = _service(server)
    service.renew_token = None
    await write_booking(redis_url, "b1")
    client, _ = await joined(server, "b1", _mint(server, "client", CLIENT, 120))
    prac, _ = await joined(server, "b1", _mint(server, "practitioner", PRACTITIONER, 120))
    joined_at = clock.now()

    await _live_through(service, clock, 60, client, prac)
    await client.send({"type": "token.refresh", "id": "r1", "token": _mint(server, "client", PRACTITIONER, 3600)})
    refused = await client.expect("error", lambda msg: msg.get("ref") == "r1")
    assert refused["code"] == "token_mismatch"
    await client.send({"type": "token.refresh", "id": "r2", "token": "not-a-token"})
    assert (await client.expect("error", lambda msg: msg.get("ref") == "r2"))["code"] == "token_malformed"
    fresh = _mint(server, "client", CLIENT, 3600)
    await client.send({"type": "token.refresh", "id": "r3", "token": fresh})
    refreshed = await client.expect("token.refreshed")
    assert refreshed["ref"] == "r3" and refreshed["expires_at"] == int(clock.now()) + 3600

    await _live_through(service, clock, joined_at + 120 - clock.now(), client, prac)
    expired = await prac.expect("error")
    assert expired["code"] == "token_expired"
    assert await prac.closed() == m.CLOSE_UNAUTHENTICATED
    await client.send({"type": "ping", "id": "alive"})
    await client.expect("pong", lambda msg: msg.get("ref") == "alive")
    assert client.close_code is None
    # the practitioner comes back with a new token
    back, _ = await joined(server, "b1", _mint(server, "practitioner", PRACTITIONER, 3600))
    await client.expect("participant.joined", lambda msg: msg["participant"]["id"] == PRACTITIONER
                        and msg.get("resumed") is True)
    await back.close()
    await client.close()


async def test_the_end_of_the_window_closes_the_room_for_everyone_in_it(
        live: tuple[LiveServer, ManualClock], token: Callable[..., str]) -> None:
    server, clock = live
    service = _service(server)
    client, prac = await _both_in(server, token)
    closes_at = max(c.window.closes_at for c in service.members())
    clock.advance(closes_at - clock.now())
    await service.tick()
    for peer in (client, prac):
        assert (await peer.expect("room.closing"))["code"] == "session_over"
        assert await peer.closed() == 4410
    # a link minted by the platform's clock for later than this server's clock now reads
    again = await connect_peer(server, "b1", token("client", CLIENT, ttl_s=4 * 3600))
    refused = await again.expect("error")
    # over, or ended if the completion job has written the session's verdict meanwhile
    assert refused["code"] == "room_closed" and refused.get("reason") in ("session_over", "session_ended"), refused
