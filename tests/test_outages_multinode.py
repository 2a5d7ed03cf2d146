"""Two server processes on one Redis, media through the SFU: the process that runs the room's media is killed
(SIGKILL) in the middle of a session. If the participants come back through the other process within the
threshold the verdict is `completed`; otherwise the surviving process notices the lost node through the node
heartbeats and the session is `interrupted`, the platform's fault. Exactly one verdict either way.

Real processes, real aiortc peers offering through the room's WebSocket, real Redis; run in a loopback-only
network namespace (`-m netns`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiortc import RTCSessionDescription

from session_server.bookings.model import load_booking

from .bookings_support import events
from .media_helpers import Client, require_loopback_namespace
from .rooms_support import CLIENT, PRACTITIONER, Peer, ServerProcess, joined, write_booking
from .support import eventually

pytestmark = [pytest.mark.netns]

HEARTBEAT_TIMEOUT_S = 3.0
NOTIFY_S, INTERRUPT_S, GIVEUP_S = 2.0, 10.0, 12.0
SESSION_S = 45


@pytest.fixture
async def two_nodes(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    require_loopback_namespace()
    nodes = [ServerProcess(tmp_path, redis_url, name, heartbeat_interval_s="0.5",
                           heartbeat_timeout_s=str(HEARTBEAT_TIMEOUT_S), media_mode="sfu",
                           media_announce_addresses="127.0.0.1", media_silence_timeout_s="1",
                           media_consent_timeout_s="2", outage_notify_s=str(NOTIFY_S),
                           outage_interrupt_s=str(INTERRUPT_S), outage_giveup_s=str(GIVEUP_S),
                           outage_check_interval_s="0.2", room_grace_after_s="1",
                           log_level="debug")  # the most an operator can ask for: still no addresses
             for name in ("node-a", "node-b")]
    try:
        for n in nodes:
            await n.start()
        yield nodes[0], nodes[1]
    finally:
        for n in nodes:
            await n.stop()


async def _media_through(node_peer: Peer, who: Client) -> None:
    """Offer `who`'s media through its room socket and take the server's answer."""
    offer_id = f"o-{who.name}-{time.monotonic_ns()}"
    await node_peer.send({"type": "offer", "id": offer_id, "sdp": await who.offer()})
    answer = await node_peer.expect("answer", lambda m: m.get("ref") == offer_id, timeout=15)
    await who.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))


async def _session(redis_url: str, booking_id: str) -> None:
    await write_booking(redis_url, booking_id, starts_in_s=0, length_s=SESSION_S)


async def _status(redis_url: str, booking_id: str) -> str:
    r = aioredis.Redis.from_url(redis_url)
    try:
        b = await load_booking(r, booking_id)
        return "" if b is None else b.status.value
    finally:
        await r.aclose()


async def _verdicts(redis_url: str, booking_id: str) -> list[dict[str, object]]:
    r = aioredis.Redis.from_url(redis_url)
    try:
        return [e.body for e in await events(r, "session.verdict") if e.body["booking_id"] == booking_id]
    finally:
        await r.aclose()


async def _both_flowing(client: Client, prac: Client) -> None:
    start = (client.got.frames, prac.got.frames)

    async def flowing() -> bool:
        return client.got.frames > start[0] + 10 and prac.got.frames > start[1] + 10

    await eventually(flowing, timeout=20, what="video flowing both ways through the SFU")


async def _meet_on_a(a: ServerProcess, b: ServerProcess, booking_id: str, token: Callable[..., str]
                     ) -> tuple[Peer, Peer, Client, Client]:
    """The client on process a (whose offer comes first, so a runs the media), the practitioner on b."""
    client_ws, _ = await joined(a, booking_id, token("client", CLIENT))  # type: ignore[arg-type]
    prac_ws, _ = await joined(b, booking_id, token("practitioner", PRACTITIONER))  # type: ignore[arg-type]
    client, prac = Client(CLIENT), Client(PRACTITIONER)
    await _media_through(client_ws, client)
    await _media_through(prac_ws, prac)
    await _both_flowing(client, prac)
    return client_ws, prac_ws, client, prac


async def test_back_through_the_other_process_within_the_threshold_the_session_is_completed(
        two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, token: Callable[..., str]) -> None:
    a, b = two_nodes
    await _session(redis_url, "b-back")
    peers: list[Client] = []
    try:
        _client_ws, prac_ws, client, prac = await _meet_on_a(a, b, "b-back", token)
        peers += [client, prac]
        a.kill()  # SIGKILL: the process running the room's media is gone without a word
        # the client's page reconnects to the surviving process; both offer their media again there
        left = await prac_ws.expect("participant.left", lambda m: m["participant_id"] == CLIENT, timeout=10)
        assert left["reason"] == "node_lost"
        client_ws2, _ = await joined(b, "b-back", token("client", CLIENT))  # type: ignore[arg-type]
        client2, prac2 = Client(CLIENT), Client(PRACTITIONER)
        peers += [client2, prac2]
        await _media_through(client_ws2, client2)
        await _media_through(prac_ws, prac2)
        await _both_flowing(client2, prac2)

        async def decided() -> bool:
            return await _status(redis_url, "b-back") not in ("confirmed", "in_session")

        # the room closes a second after the session's end: then the verdict is written
        await eventually(decided, timeout=SESSION_S + 20, interval=0.2, what="the session's verdict")
    finally:
        for p in peers:
            with contextlib.suppress(Exception):
                await p.close()
    assert await _status(redis_url, "b-back") == "completed"
    (verdict,) = await _verdicts(redis_url, "b-back")
    assert verdict["verdict"] == "completed" and verdict["attribution"] is None
    # media connected three times, through both processes, logging at debug: no line says who connected from
    # which address (aioice logs every connectivity check, both parties' addresses and ports, at info), and
    # no line holds what the sockets carried (uvicorn's WebSocket protocol logs every frame at debug)
    for node in (a, b):
        log = node.log.read_text(encoding="utf-8", errors="replace")
        assert "session_server" in log  # the log is on
        assert "CandidatePair" not in log and " aioice" not in log, log[-3000:]
        assert "TEXT '" not in log and "a=setup" not in log and '"type"' not in log, log[-3000:]


async def test_nobody_back_within_the_threshold_the_session_is_interrupted_by_the_platform_once(
        two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, token: Callable[..., str]) -> None:
    a, b = two_nodes
    await _session(redis_url, "b-gone")
    peers: list[Client] = []
    try:
        _client_ws, prac_ws, client, prac = await _meet_on_a(a, b, "b-gone", token)
        peers += [client, prac]
        a.kill()
        killed = time.monotonic()
        # the practitioner, on the surviving process, is told what is happening
        told = await prac_ws.expect("outage", lambda m: m["state"] == "ongoing", timeout=10)
        assert told["side"] == "platform"
        ended = await prac_ws.expect("outage", lambda m: m["state"] == "ended", timeout=GIVEUP_S + 10)
        assert (ended["verdict"], ended["side"]) == ("interrupted", "platform")
        assert time.monotonic() - killed < SESSION_S  # decided at the give-up, not at the session's end
    finally:
        for p in peers:
            with contextlib.suppress(Exception):
                await p.close()
    assert await _status(redis_url, "b-gone") == "interrupted"
    verdicts = await _verdicts(redis_url, "b-gone")
    assert len(verdicts) == 1
    assert (verdicts[0]["verdict"], verdicts[0]["attribution"], verdicts[0]["trigger"]) == (
        "interrupted", "platform", "gave_up")
