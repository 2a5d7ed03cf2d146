"""The SFU between real aiortc peers, inside a loopback-only network namespace."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiortc.rtcrtpreceiver
import pytest
from prometheus_client import CollectorRegistry

from media import fastpath
from media.config import MediaConfig
from media.events import MediaEvent, MediaState, MediaStateChanged, QualityReport
from media.server import MediaServer
from tests.media_helpers import LOOPBACK, Client, require_loopback_namespace, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_tasks")]


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    require_loopback_namespace()


@pytest.fixture
def decoder_threads() -> Iterator[list[threading.Thread]]:
    """Every thread that ever asked aiortc for a decoder (observation only; decoding still happens)."""
    seen: list[threading.Thread] = []
    original = aiortc.rtcrtpreceiver.get_decoder  # type: ignore[attr-defined]

    def recording(codec: Any) -> Any:
        seen.append(threading.current_thread())
        return original(codec)

    aiortc.rtcrtpreceiver.get_decoder = recording  # type: ignore[attr-defined]
    try:
        yield seen
    finally:
        aiortc.rtcrtpreceiver.get_decoder = original  # type: ignore[attr-defined]


@pytest.fixture
def events() -> list[MediaEvent]:
    return []


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def server(events: list[MediaEvent], registry: CollectorRegistry) -> AsyncIterator[MediaServer]:
    config = MediaConfig(announce_addresses=LOOPBACK, consent_timeout_s=3.0, quality_interval_s=0.5)
    srv = MediaServer(config, registry=registry, on_event=events.append)
    await srv.start()
    yield srv
    await srv.stop()


def states(events: list[MediaEvent], participant: str) -> list[MediaState]:
    return [e.state for e in events if isinstance(e, MediaStateChanged) and e.participant_id == participant]


async def test_two_participants_see_and_hear_each_other_and_the_server_decodes_nothing(
    server: MediaServer, decoder_threads: list[threading.Thread], registry: CollectorRegistry
) -> None:
    alice = Client("alice", width=320, height=240)
    bob = Client("bob", width=160, height=120)
    try:
        await alice.join(server, "room-1")
        await bob.join(server, "room-1")
        await wait_for(lambda: alice.got.frames >= 10 and bob.got.frames >= 10, "video both ways")
        await wait_for(
            lambda: alice.got.loud_audio_frames >= 10 and bob.got.loud_audio_frames >= 10, "the tone both ways"
        )
        # Each side decodes the *other* participant's camera, at the size it was sent.
        assert (alice.got.width, alice.got.height) == (160, 120)
        assert (bob.got.width, bob.got.height) == (320, 240)

        server_threads = [t for pc in server.peer_connections() for t in fastpath.decoder_threads(pc)]
        assert server_threads, "the server's receivers exist (so the check below means something)"
        assert not [t for t in decoder_threads if any(t is s for s in server_threads)]
        assert len(decoder_threads) >= 4  # the two clients did decode, so the observation works

        forwarded = registry.get_sample_value("media_forwarded_packets_total", {"kind": "video"})
        assert forwarded is not None and forwarded > 0
        assert registry.get_sample_value("media_forwarded_packets_total", {"kind": "audio"})
    finally:
        await alice.close()
        await bob.close()


async def test_two_first_offers_that_negotiate_at_once_share_one_room(server: MediaServer) -> None:
    # Both pages open the room at the same moment: the second offer arrives while the first is still
    # negotiating, before the room exists. Both must land in the same room and see each other.
    alice = Client("alice")
    bob = Client("bob")
    try:
        await asyncio.gather(alice.join(server, "together"), bob.join(server, "together"))
        assert sorted(server.rooms()["together"]) == ["alice", "bob"]
        await wait_for(lambda: alice.got.frames >= 5 and bob.got.frames >= 5, "video both ways")
    finally:
        await alice.close()
        await bob.close()


async def test_browsers_that_offer_only_h264_see_each_other_through_the_server(server: MediaServer) -> None:
    # Some browsers (older Safari, some hardware paths) offer H.264 alone: the server forwards it as it
    # forwards VP8, without decoding.
    from aiortc.rtcrtpsender import RTCRtpSender

    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
    assert h264
    alice = Client("alice")
    bob = Client("bob")
    for client in (alice, bob):
        for transceiver in client.pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.setCodecPreferences(h264)
    try:
        await alice.join(server, "h264")
        await bob.join(server, "h264")
        assert "VP8" not in alice.pc.remoteDescription.sdp
        assert "H264" in alice.pc.remoteDescription.sdp
        await wait_for(lambda: alice.got.frames >= 5 and bob.got.frames >= 5, "H.264 video both ways")
        assert (bob.got.width, bob.got.height) == (320, 240)
    finally:
        await alice.close()
        await bob.close()


async def test_late_joiner_decodes_because_a_keyframe_request_reached_the_publisher(
    server: MediaServer, registry: CollectorRegistry
) -> None:
    alice = Client("alice")
    bob = Client("bob")
    keyframe_requests: list[str] = []
    try:
        await alice.join(server, "late")
        # aiortc's VP8 encoder makes a keyframe only at start and on request (gop 3000 frames), so a late
        # subscriber can decode only if the server asked the publisher for one.
        sender = next(s for s in alice.pc.getSenders() if s.kind == "video")
        original = sender._send_keyframe

        def observed() -> None:
            keyframe_requests.append("pli")
            original()

        sender._send_keyframe = observed  # type: ignore[method-assign]
        camera = alice.video_sender_track
        assert camera is not None
        # Bob arrives 10 s of camera time (300 frames at 30 fps) after alice started publishing.
        await wait_for(lambda: camera.n >= 300, "alice publishing for 10 s before bob arrives", within=30)
        assert (registry.get_sample_value("media_received_packets_total") or 0) > 0
        assert keyframe_requests == []
        await bob.join(server, "late")
        await wait_for(lambda: bob.got.frames >= 5, "bob decoding alice's video")
        assert keyframe_requests, "the publisher was asked for a keyframe"
        assert (registry.get_sample_value("media_plis_total") or 0) >= 1
    finally:
        await alice.close()
        await bob.close()


async def test_state_and_quality_reports_reach_the_room(server: MediaServer, events: list[MediaEvent]) -> None:
    alice = Client("alice")
    bob = Client("bob")
    try:
        await alice.join(server, "q")
        await bob.join(server, "q")
        await wait_for(lambda: bob.got.frames >= 5, "media flowing")
        assert states(events, "alice")[:2] == [MediaState.CONNECTING, MediaState.CONNECTED]

        def good_report() -> bool:
            report = server.quality("q", "alice")
            return (
                report is not None
                and report.up.receiving
                and report.down.bitrate_bps > 0
                and report.up.rtt_ms is not None
            )

        await wait_for(good_report, "a quality report for alice with RTT and media both ways")
        report = server.quality("q", "alice")
        assert isinstance(report, QualityReport)
        # The verdict itself is the pure classifier's (tests/test_media_rules.py); here: it is a live one.
        assert report.quality != "lost"
        assert report.up.bitrate_bps > 0
        assert any(isinstance(e, QualityReport) and e.participant_id == "bob" for e in events)
    finally:
        await alice.close()
        await bob.close()


async def test_audio_only_stops_video_to_that_participant_and_resuming_brings_a_keyframe(
    server: MediaServer,
) -> None:
    alice = Client("alice")
    bob = Client("bob")
    try:
        await alice.join(server, "ao")
        await bob.join(server, "ao")
        await wait_for(lambda: bob.got.frames >= 5, "bob receiving video")
        server.set_audio_only("ao", "bob", True)
        before = server.forwarded_to("ao", "bob")
        await wait_for(
            lambda: server.forwarded_to("ao", "bob")["audio"] > before["audio"] + 50,
            "audio still forwarded to bob",
        )
        assert server.forwarded_to("ao", "bob")["video"] == before["video"]
        to_alice = server.forwarded_to("ao", "alice")["video"]
        await wait_for(lambda: server.forwarded_to("ao", "alice")["video"] > to_alice, "alice still gets video")
        frames = bob.got.frames
        server.set_audio_only("ao", "bob", False)
        await wait_for(lambda: bob.got.frames > frames + 5, "video back for bob, decodable at once")
    finally:
        await alice.close()
        await bob.close()


async def test_packets_lost_on_the_way_to_a_subscriber_are_resent_as_rtx_from_the_history(
    server: MediaServer, registry: CollectorRegistry
) -> None:
    alice = Client("alice")
    bob = Client("bob")
    try:
        await alice.join(server, "lossy")
        await bob.join(server, "lossy")
        await wait_for(lambda: bob.got.frames >= 5, "bob decoding")
        drop_every_nth_video_packet(bob, 20)
        frames = bob.got.frames
        await wait_for(
            lambda: (registry.get_sample_value("media_nacks_total", {"outcome": "rtx"}) or 0) >= 5,
            "NACKs from bob answered with RTX",
        )
        await wait_for(lambda: bob.got.frames > frames + 30, "bob still decoding through the loss")
    finally:
        await alice.close()
        await bob.close()


def drop_every_nth_video_packet(client: Client, n: int) -> None:
    """Lose some of the server's video packets before the client's aiortc sees them (SRTP headers are clear)."""
    connection = client.pc.getTransceivers()[0].receiver.transport.transport._connection
    original = connection.data_received
    video_pts = {
        c.payloadType for t in client.pc.getTransceivers() if t.kind == "video" for c in t._codecs if c.name == "VP8"
    }
    count = [0]

    def lossy(data: bytes, component: int) -> None:
        if 127 < data[0] < 192 and (data[1] & 0x7F) in video_pts:
            count[0] += 1
            if count[0] % n == 0:
                return
        original(data, component)

    connection.data_received = lossy  # type: ignore[method-assign]
