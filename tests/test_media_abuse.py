"""A participant who abuses their own authenticated RTCP (NACK and REMB floods) gets bounded work out of the
server, and the room next door keeps decoding: real aiortc peers in a loopback-only namespace."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCDtlsTransport
from aiortc.rtp import RtcpPsfbPacket
from prometheus_client import CollectorRegistry

from media import feedback, rtcp
from media.config import MediaConfig
from media.sdp import read_description
from media.server import MediaServer
from tests.media_helpers import LOOPBACK, Client, require_loopback_namespace, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_tasks")]

# A small saved-up retransmission budget, so that the flood meets the budget and not only the history.
CONFIG = MediaConfig(announce_addresses=LOOPBACK, consent_timeout_s=15.0, connect_timeout_s=15.0,
                     rtx_burst_bytes=4096)


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    require_loopback_namespace()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def server(registry: CollectorRegistry) -> AsyncIterator[MediaServer]:
    srv = MediaServer(CONFIG, registry=registry)
    await srv.start()
    yield srv
    await srv.stop()


class Rooms:
    """The attacked room (alice publishes to mallory) and a calm room next door (carol and dave)."""

    def __init__(self) -> None:
        self.alice, self.mallory = Client("alice"), Client("mallory")
        self.carol, self.dave = Client("carol"), Client("dave")

    async def join(self, server: MediaServer) -> None:
        await self.alice.join(server, "attacked")
        await self.mallory.join(server, "attacked")
        await self.carol.join(server, "calm")
        await self.dave.join(server, "calm")
        await wait_for(lambda: self.mallory.got.frames >= 5 and self.dave.got.frames >= 5, "both rooms decoding")

    async def close(self) -> None:
        for c in (self.alice, self.mallory, self.carol, self.dave):
            await c.close()


def video_ssrcs(client: Client) -> tuple[int, int]:
    """(media SSRC, RTX SSRC) of the video the server sends this client, from the server's answer."""
    video = read_description(client.pc.remoteDescription.sdp).section("video")
    assert video is not None and video.media_ssrc is not None and video.rtx_ssrc is not None
    return video.media_ssrc, video.rtx_ssrc


def dtls(client: Client) -> RTCDtlsTransport:
    transport: RTCDtlsTransport = client.pc.getTransceivers()[0].receiver.transport
    return transport


def watch_video(client: Client) -> dict[str, Any]:
    """Count, as the client receives them, the server's video packets and its retransmissions (SRTP headers
    are in the clear), and remember the newest video sequence number."""
    media_ssrc, rtx_ssrc = video_ssrcs(client)
    seen: dict[str, Any] = {"newest": None, "rtx": 0, "count": 0}
    connection = dtls(client).transport._connection
    original = connection.data_received

    def counting(data: bytes, component: int) -> None:
        if len(data) >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
            seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!I", data, 8)[0]
            if ssrc == media_ssrc:
                seen["newest"] = seq
                seen["count"] += 1
            elif ssrc == rtx_ssrc:
                seen["rtx"] += 1
        original(data, component)

    connection.data_received = counting
    return seen


def nack_listing_everything(media_ssrc: int, around: int, back: int) -> bytes:
    """About 1,200 bytes of NACK: 290 items of 17 numbers each: first numbers from well before the history,
    then from `back` numbers before the newest sent (numbers that were sent, within the part of a NACK the
    server reads) to well past it."""
    first = struct.pack("!HH", (around - 5000) & 0xFFFF, 0xFFFF)
    items = first + b"".join(struct.pack("!HH", (around - back + 17 * i) & 0xFFFF, 0xFFFF) for i in range(289))
    body = struct.pack("!II", 0x5EED, media_ssrc) + items
    return struct.pack("!BBH", 0x80 | rtcp.FMT_NACK, rtcp.RTPFB, len(body) // 4) + body


async def test_a_nack_flood_gets_retransmissions_bounded_by_the_budget_and_the_room_next_door_decodes(
    server: MediaServer, registry: CollectorRegistry
) -> None:
    rooms = Rooms()
    try:
        await rooms.join(server)
        seen = watch_video(rooms.mallory)
        await wait_for(lambda: seen["newest"] is not None, "mallory receiving video")
        media_ssrc, _ = video_ssrcs(rooms.mallory)
        before = server.retransmitted_to("attacked", "mallory")
        counters = server.counters
        received_before = counters.nacks_received
        dave_before = rooms.dave.got.frames

        for _ in range(60):
            # numbers the server did send: how many depends on the encoder's rate on this machine
            back = max(17, min(600, seen["count"] - 17))
            await dtls(rooms.mallory)._send_rtp(nack_listing_everything(media_ssrc, seen["newest"], back))
            await asyncio.sleep(0.01)  # a flood paced over 0.6 s, so that it meets the forwarded media

        # Each NACK is read up to its first 32 items (544 numbers): the server has acted on all 60 when the
        # numbers add up.
        read_per_packet = 17 * rtcp.MAX_NACK_ITEMS
        await wait_for(lambda: counters.nacks_received - received_before >= 60 * read_per_packet,
                       lambda: f"60 NACKs read, {counters.nacks_received - received_before} numbers so far")
        after = server.retransmitted_to("attacked", "mallory")
        rtx_bytes = after["rtx_bytes"] - before["rtx_bytes"]
        rtx_packets = after["rtx_packets"] - before["rtx_packets"]
        media_bytes = after["media_bytes"] - before["media_bytes"]
        bound = CONFIG.rtx_burst_bytes + CONFIG.rtx_budget_share * media_bytes
        print(f"nack flood: {rtx_packets} retransmissions, {rtx_bytes} B for {media_bytes} B of media, "
              f"bound {bound:.0f} B", end=" ")
        assert 0 < rtx_bytes <= bound
        # Each number of the history window is answered at most once per round trip, the rest never.
        assert rtx_packets <= CONFIG.nack_history_size
        await wait_for(lambda: seen["rtx"] >= rtx_packets * 0.9, "the retransmissions reaching mallory")
        assert seen["rtx"] <= rtx_packets

        def ignored(outcome: str) -> float:
            return registry.get_sample_value("media_nacks_total", {"outcome": outcome}) or 0

        assert ignored("unknown") > 0
        assert ignored("over_budget") > 0
        await wait_for(lambda: rooms.dave.got.frames > dave_before + 30, "the calm room still decoding")
    finally:
        await rooms.close()


def remb_naming_one_ssrc_255_times(media_ssrc: int, bitrate: int) -> bytes:
    return rtcp.build_remb(0x5EED, bitrate, (media_ssrc,) * 255)


async def test_a_remb_flood_is_collapsed_clamped_and_spaced_and_the_room_next_door_decodes(
    server: MediaServer, registry: CollectorRegistry
) -> None:
    rooms = Rooms()
    try:
        await rooms.join(server)
        media_ssrc, _ = video_ssrcs(rooms.mallory)
        alice_sender = next(s for s in rooms.alice.pc.getSenders() if s.track is not None and s.track.kind == "video")
        rembs_at_alice: list[int] = []
        handle = alice_sender._handle_rtcp_packet

        async def counting(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == rtcp.FMT_APP:
                rembs_at_alice.append(rtcp.parse(bytes(packet))[0].bitrate)  # type: ignore[union-attr]
            await handle(packet)

        alice_sender._handle_rtcp_packet = counting  # type: ignore[method-assign]
        counters = server.counters
        start_counts = (counters.rembs_forwarded + counters.rembs_held, counters.rtcp_rate_limited,
                        counters.rtcp_duplicates)
        dave_before = rooms.dave.got.frames
        started = time.monotonic()
        sent = 0
        for burst in range(4):  # 400 REMBs in four bursts, absurd bitrates both ways
            for _ in range(100):
                bitrate = 0 if sent % 2 else 10**15
                await dtls(rooms.mallory)._send_rtp(remb_naming_one_ssrc_255_times(media_ssrc, bitrate))
                sent += 1
            if burst < 3:
                await asyncio.sleep(0.1)  # pacing of the flood, not a wait for anything

        def handled() -> int:
            return (counters.rembs_forwarded + counters.rembs_held - start_counts[0]
                    + counters.rtcp_rate_limited - start_counts[1])

        await wait_for(lambda: handled() >= sent, lambda: f"{sent} REMBs handled, {handled()} so far")
        elapsed = time.monotonic() - started
        assert counters.rtcp_rate_limited > start_counts[1]  # the flood went over the participant's RTCP rate
        processed = sent - (counters.rtcp_rate_limited - start_counts[1])
        assert counters.rtcp_duplicates - start_counts[2] >= 254 * processed
        assert registry.get_sample_value("media_rembs_total", {"outcome": "clamped"}) >= processed
        # At most one REMB per interval reached the publisher, each within the range a video stream can mean.
        most = math.ceil(elapsed / CONFIG.remb_min_interval_s) + 1
        print(f"remb flood: {sent} sent, {processed} read, {len(rembs_at_alice)} reached the publisher "
              f"(at most {most})", end=" ")
        assert 0 < len(rembs_at_alice) <= most
        assert all(feedback.REMB_MIN_BPS <= b <= feedback.REMB_MAX_BPS for b in rembs_at_alice)
        await wait_for(lambda: rooms.dave.got.frames > dave_before + 30, "the calm room still decoding")
    finally:
        await rooms.close()
