"""Hostile offers, peers that never connect, reconnection and leaks: the SFU between real aiortc peers."""

from __future__ import annotations

import asyncio
import gc
import os
import re
from collections.abc import AsyncIterator

import pytest

from media import errors
from media.config import MediaConfig
from media.errors import MediaError
from media.events import MediaEvent, MediaState, MediaStateChanged
from media.server import MediaServer
from tests.media_helpers import LOOPBACK, Client, cut_media, require_loopback_namespace, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_tasks")]


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    require_loopback_namespace()


@pytest.fixture
def events() -> list[MediaEvent]:
    return []


@pytest.fixture
def timeouts() -> tuple[float, float]:
    """The server's ICE/DTLS and consent timeouts. Generous by default: the clients share this process and
    its two cores with the server, and a loaded machine must not make a healthy participant look dead.
    Tests about the timeouts themselves shorten them. (consent, connect), in seconds."""
    return 15.0, 15.0


@pytest.fixture
async def server(events: list[MediaEvent], timeouts: tuple[float, float]) -> AsyncIterator[MediaServer]:
    consent, connect = timeouts
    config = MediaConfig(
        announce_addresses=LOOPBACK, quality_interval_s=0.5, consent_timeout_s=consent, connect_timeout_s=connect
    )
    srv = MediaServer(config, on_event=events.append)
    await srv.start()
    yield srv
    await srv.stop()


def states(events: list[MediaEvent], participant: str) -> list[MediaState]:
    return [e.state for e in events if isinstance(e, MediaStateChanged) and e.participant_id == participant]


def hostile_offers(good: str) -> dict[str, str]:
    lines = good.split("\r\n")
    head = [line for line in lines if not line.startswith("m=")][:4]
    video_at = next(i for i, line in enumerate(lines) if line.startswith("m=video"))
    video = lines[video_at:]

    def without(prefix: str) -> str:
        return "\r\n".join(line for line in lines if not line.startswith(prefix))

    def replace(old: str, new: str) -> str:
        return good.replace(old, new)

    offers = {
        "empty": "",
        "not sdp": "hello world",
        "binary": "v=0\r\n\x00\x01\x02\xff",
        "json": '{"type": "offer", "sdp": "v=0"}',
        "only version": "v=0\r\n",
        "huge": "v=0\r\n" + "a=x-junk:" + "A" * 200_000 + "\r\n",
        "1000 m-lines": "\r\n".join(head + video * 1000),
        "no ice credentials": without("a=ice-"),
        "no fingerprint": without("a=fingerprint"),
        "unknown codecs only": replace("VP8/90000", "X-SECRET/90000").replace("opus/48000", "x-codec/8000"),
        "bad m-line": re.sub(r"m=video \d+", "m=video nine", good),
        "bad rtpmap": re.sub(r"a=rtpmap:\d+ VP8/90000", "a=rtpmap:9999 VP8/90000", good),
        "bad ssrc": good.replace("a=ssrc:", "a=ssrc:abc", 1),
        "no media": "\r\n".join(head),
        "two video sections": "\r\n".join(lines + video).replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 1"),
        "not bundled": without("a=group:BUNDLE"),
        "garbage lines": good.replace("a=mid:0", "this is not a line"),
        "fingerprint without hash": replace("a=fingerprint:sha-256 ", "a=fingerprint:"),
        "bad fmtp": re.sub(r"apt=\d+", "apt=xx", good),
        "bad ssrc-group": replace("a=ssrc-group:FID ", "a=ssrc-group:FID x"),
        "rtpmap without clock": replace("VP8/90000", "VP8"),
        "negative port": re.sub(r"m=audio \d+", "m=audio -9", good),
        "bad ice lengths": replace("a=ice-pwd:", "a=ice-pwd:x").replace("a=ice-ufrag:", "a=ice-ufrag:" + "u" * 600),
    }
    return offers


async def test_hostile_offers_get_typed_errors_while_the_room_next_door_keeps_decoding(
    server: MediaServer,
) -> None:
    alice = Client("alice")
    bob = Client("bob")
    probe = Client("mallory")
    try:
        await alice.join(server, "calm")
        await bob.join(server, "calm")
        await wait_for(lambda: bob.got.frames >= 5, "the calm room decoding")
        good = await probe.offer()
        offers = hostile_offers(good)
        assert len(offers) >= 20
        outcome: dict[str, str] = {}
        for name, offer in offers.items():
            try:
                await server.handle_offer(f"hostile-{name}", "mallory", offer)
            except MediaError as exc:
                outcome[name] = exc.code
            else:
                outcome[name] = "accepted"
        assert "accepted" not in outcome.values(), [k for k, v in outcome.items() if v == "accepted"]
        assert set(outcome.values()) <= errors.CODES, outcome
        assert outcome["1000 m-lines"] == errors.TOO_MANY_MEDIA
        assert outcome["unknown codecs only"] == errors.NO_SUPPORTED_CODEC
        assert outcome["huge"] == errors.SDP_TOO_LARGE
        assert [r for r in server.rooms() if r.startswith("hostile")] == []
        assert len(server.peer_connections()) == 2  # only the calm room's
        frames = bob.got.frames
        await wait_for(lambda: bob.got.frames > frames + 10, "the calm room still decoding afterwards")
    finally:
        for c in (alice, bob, probe):
            await c.close()


@pytest.mark.parametrize("timeouts", [(15.0, 2.0)], ids=["connect-2s"])
async def test_a_peer_that_never_completes_ice_is_failed_and_released(
    server: MediaServer, events: list[MediaEvent]
) -> None:
    ghost = Client("ghost")
    offer = await ghost.offer()
    await ghost.close()  # the browser vanished after sending its offer
    await server.handle_offer("r", "ghost", offer)
    await wait_for(lambda: MediaState.FAILED in states(events, "ghost"), "the ghost declared failed")
    assert server.peer_connections() == []


async def test_a_third_participant_is_refused_and_changes_nothing(server: MediaServer) -> None:
    clients = [Client("a"), Client("b"), Client("c")]
    try:
        await clients[0].join(server, "pair")
        await clients[1].join(server, "pair")
        with pytest.raises(MediaError) as info:
            await clients[2].join(server, "pair")
        assert info.value.code == errors.ROOM_FULL
        assert sorted(server.rooms()["pair"]) == ["a", "b"]
    finally:
        for c in clients:
            await c.close()


@pytest.mark.parametrize("timeouts", [(2.0, 15.0)], ids=["consent-2s"])
async def test_a_cut_participant_rebuilds_its_connection_and_both_decode_again(
    server: MediaServer, events: list[MediaEvent]
) -> None:
    alice = Client("alice")
    bob = Client("bob")
    new_alice: Client | None = None
    try:
        await alice.join(server, "rc")
        await bob.join(server, "rc")
        await wait_for(lambda: bob.got.frames >= 5 and alice.got.frames >= 5, "media both ways")
        cut_media(alice.pc)
        await wait_for(lambda: server.state("rc", "alice") is MediaState.RECONNECTING, "alice seen as reconnecting")
        assert "alice" in server.rooms()["rc"]
        frames_at_bob = bob.got.frames
        # The client builds a new peer connection over the same WebSocket.
        new_alice = Client("alice")
        await new_alice.join(server, "rc")
        await wait_for(lambda: new_alice is not None and new_alice.got.frames >= 5, "new alice decoding bob")
        await wait_for(lambda: bob.got.frames > frames_at_bob + 5, "bob decoding the new alice")
        seen = states(events, "alice")
        assert seen[:2] == [MediaState.CONNECTING, MediaState.CONNECTED]
        assert seen[-2:] == [MediaState.RECONNECTING, MediaState.CONNECTED]
        assert MediaState.CLOSED not in seen
        assert MediaState.RECONNECTING not in states(events, "bob")
    finally:
        for c in (alice, bob, new_alice):
            if c is not None:
                await c.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peer_connections() -> int:
    from aiortc import RTCPeerConnection

    return sum(1 for o in gc.get_objects() if isinstance(o, RTCPeerConnection))


def _sfu_peers() -> int:
    from media import server as media_server

    return sum(1 for o in gc.get_objects() if isinstance(o, media_server._Peer))


@pytest.mark.slow
async def test_join_leave_cycles_return_peer_connections_tasks_and_fds_to_baseline(
    server: MediaServer,
) -> None:
    cycles = int(os.environ.get("MEDIA_LEAK_CYCLES", "300"))

    async def cycle(i: int) -> None:
        a, b = Client("a"), Client("b")
        try:
            await a.join(server, f"leak-{i}")
            await b.join(server, f"leak-{i}")
            await wait_for(
                lambda: (
                    server.state(f"leak-{i}", "a") is MediaState.CONNECTED
                    and server.state(f"leak-{i}", "b") is MediaState.CONNECTED
                ),
                lambda: (
                    f"both connected in cycle {i}: server sees {server.state(f'leak-{i}', 'a')}, "
                    f"{server.state(f'leak-{i}', 'b')}; clients {a.pc.connectionState}, {b.pc.connectionState}; "
                    f"server pcs {[pc.connectionState for pc in server.peer_connections()]}"
                ),
            )
            if i % 25 == 0:
                await wait_for(lambda: b.got.frames > 0, "media flowing")
        finally:
            await a.close()
            await b.close()
            await server.remove_participant(f"leak-{i}", "a")
            await server.remove_participant(f"leak-{i}", "b")

    # Warm up first: caches, executor threads and the allocator's arenas grow to their working size.
    warmup = 30
    for i in range(warmup):
        await cycle(i)

    def settled() -> tuple[int, int, int, int]:
        gc.collect()
        return _peer_connections(), _sfu_peers(), len(asyncio.all_tasks()), _fds()

    async def resident_after_release() -> float:
        # The server hands freed memory back to the OS after rooms close (next housekeeping tick): what is
        # still resident then is what the sessions kept.
        gc.collect()
        releases = server.counters.memory_releases
        server.release_memory_soon()  # what the collection above freed counts too
        await wait_for(lambda: server.counters.memory_releases > releases, "the server releasing freed memory")
        return _rss_mib()

    await asyncio.sleep(0)  # let closing callbacks run before the baseline
    base = settled()
    base_rss = await resident_after_release()
    for i in range(warmup, warmup + cycles):
        await cycle(i)
    assert server.rooms() == {}
    assert server.peer_connections() == []

    def back_to_base() -> bool:
        return all(now <= then for now, then in zip(settled(), base, strict=True))

    await wait_for(back_to_base, lambda: f"baseline {base}, now {settled()}", within=30)
    print(f"leak cycles={cycles} baseline={base} after={settled()}", end=" ")
    growth = await resident_after_release() - base_rss
    print(f"rss_growth_mib={growth:.1f}")
    assert growth < 30, f"RSS grew {growth:.1f} MiB over {cycles} cycles"


async def test_a_participant_whose_camera_and_mic_stop_is_reported_media_stopped_then_connected() -> None:
    events: list[MediaEvent] = []
    config = MediaConfig(announce_addresses=LOOPBACK, media_silence_timeout_s=1.0, consent_timeout_s=30.0)
    server = MediaServer(config, on_event=events.append)
    await server.start()
    alice = Client("alice")
    bob = Client("bob")
    try:
        await alice.join(server, "quiet")
        await bob.join(server, "quiet")
        await wait_for(lambda: bob.got.frames >= 5, "media flowing")
        tracks = {s: s.track for s in alice.pc.getSenders()}
        for sender in tracks:
            sender.replaceTrack(None)  # RTCP and consent continue, RTP stops
        await wait_for(lambda: server.state("quiet", "alice") is MediaState.MEDIA_STOPPED, "alice media_stopped")
        for sender, track in tracks.items():
            sender.replaceTrack(track)
        await wait_for(lambda: server.state("quiet", "alice") is MediaState.CONNECTED, "alice connected again")
        assert states(events, "alice")[-2:] == [MediaState.MEDIA_STOPPED, MediaState.CONNECTED]
        assert MediaState.RECONNECTING not in states(events, "alice")
    finally:
        await alice.close()
        await bob.close()
        await server.stop()
