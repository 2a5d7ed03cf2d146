"""The SFU's pure decisions, without any I/O: rewriting, RTCP, keyframe limiting, quality, routing, SDP."""

from __future__ import annotations

import struct

import pytest

from media import errors, rtcp
from media.errors import MediaError
from media.keyframe import KeyframeGate
from media.quality import DirectionStats, PoorStreak, Quality, classify, worst
from media.rewrite import (
    SendHistory,
    SeqTsRewriter,
    build_rtx,
    patch_header,
    seq_newer,
    strip_extension,
    unwrap_rtx,
)
from media.routing import PeerView, plan
from media.sdp import check_offer, map_candidates, read_description
from media.stats import InboundStats, interval_loss


def rtp(seq: int, ts: int, ssrc: int, pt: int = 96, marker: bool = False, ext: bytes = b"") -> bytes:
    first = 0x80 | (0x10 if ext else 0)
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    if ext:
        header += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    return header + b"payload"


# -- rewriting --------------------------------------------------------------------------------------------


def test_sequence_and_timestamp_continue_across_a_publisher_reconnection() -> None:
    r = SeqTsRewriter(90000, seq_start=100, ts_start=1000)
    assert r.map(0xA, 5000, 777, now=0.0) == (100, 1000)
    assert r.map(0xA, 5001, 777 + 3000, now=0.033) == (101, 4000)
    # The publisher comes back with a new SSRC and unrelated numbers one second later.
    seq, ts = r.map(0xB, 9, 123456, now=1.033)
    assert seq == 102
    assert ts == 4000 + 90000
    assert r.map(0xB, 10, 123456 + 3000, now=1.066) == (103, 4000 + 93000)


def test_sequence_numbers_wrap_and_reordered_packets_keep_their_place() -> None:
    r = SeqTsRewriter(90000, seq_start=65534)
    assert r.map(1, 10, 0, 0.0)[0] == 65534
    assert r.map(1, 12, 0, 0.0)[0] == 0
    assert r.map(1, 11, 0, 0.0)[0] == 65535  # late packet, older number
    assert r.last_seq == 0
    assert r.unmap_seq(65535) == 11
    assert seq_newer(0, 65535) and not seq_newer(65535, 0)


def test_restart_makes_a_paused_stream_continue_without_a_gap() -> None:
    r = SeqTsRewriter(90000, seq_start=10)
    r.map(1, 100, 0, 0.0)
    r.restart()
    assert r.map(1, 900, 50_000, 2.0)[0] == 11


def test_patch_header_rewrites_in_place_and_keeps_the_marker() -> None:
    buf = bytearray(rtp(1, 2, 3, pt=100, marker=True))
    patch_header(buf, 96, 7, 8, 9)
    assert struct.unpack_from("!BBHII", buf) == (0x80, 0x80 | 96, 7, 8, 9)
    assert buf[12:] == b"payload"


def test_header_extension_is_stripped_because_ids_are_per_peer_connection() -> None:
    packet = rtp(1, 2, 3, ext=b"\x10\x30\x00\x00")
    stripped = strip_extension(packet)
    assert not stripped[0] & 0x10
    assert stripped == rtp(1, 2, 3)
    assert strip_extension(rtp(1, 2, 3)) == rtp(1, 2, 3)


def test_rtx_wraps_the_original_sequence_number_and_unwraps_back() -> None:
    original = rtp(4242, 90, 0xAAAA, pt=96)
    wrapped = build_rtx(original, rtx_pt=97, rtx_seq=5, rtx_ssrc=0xBBBB)
    assert struct.unpack_from("!BBHII", wrapped) == (0x80, 97, 5, 90, 0xBBBB)
    assert wrapped[12:14] == struct.pack("!H", 4242)
    assert unwrap_rtx(wrapped, media_pt=96, media_ssrc=0xAAAA) == bytearray(original)


def test_rtx_with_a_header_extension_unwraps_the_sequence_number_after_it() -> None:
    ext = b"\x10\x30\x00\x00"
    wrapped = rtp(5, 90, 0xBBBB, pt=97, ext=ext)[:-7] + struct.pack("!H", 4242) + b"payload"
    out = unwrap_rtx(wrapped, media_pt=96, media_ssrc=0xAAAA)
    assert out is not None
    assert struct.unpack_from("!HII", out, 2) == (4242, 90, 0xAAAA)
    assert out.endswith(b"payload")


def test_rtx_padding_probe_has_no_original_packet() -> None:
    assert unwrap_rtx(rtp(1, 2, 3)[:12], 96, 1) is None


def test_send_history_answers_only_for_the_exact_sequence_number() -> None:
    h = SendHistory(4)
    p1 = rtp(1, 0, 0)
    h.store(1, p1, 96, 3000)
    assert h.get(1) == (p1, 96, 3000)
    h.store(5, rtp(5, 0, 0), 96, 6000)
    assert h.get(1) is None
    assert h.get(9) is None


# -- RTCP -------------------------------------------------------------------------------------------------


def test_rtcp_round_trips_what_the_forwarder_acts_on() -> None:
    block = rtcp.ReportBlock(0xA, 12, 3, 70000, 40, 0x12345678, 655)
    compound = (
        rtcp.build_sr(rtcp.SenderReport(1, 2**40, 90000, 10, 1000, (block,)))
        + rtcp.build_rr(2, (block,))
        + rtcp.build_pli(3, 0xB)
        + rtcp.build_nack(4, 0xC, [10, 11, 13, 40])
        + rtcp.build_remb(5, 1_500_000, (0xD,))
    )
    parsed = rtcp.parse(compound)
    assert parsed[0] == rtcp.SenderReport(1, 2**40, 90000, 10, 1000, (block,))
    assert parsed[1] == rtcp.ReceiverReport(2, (block,))
    assert parsed[2] == rtcp.KeyframeRequest(3, 0xB)
    assert isinstance(parsed[3], rtcp.Nack) and sorted(parsed[3].lost) == [10, 11, 13, 40]
    assert isinstance(parsed[4], rtcp.Remb) and parsed[4].ssrcs == (0xD,)
    assert abs(parsed[4].bitrate - 1_500_000) / 1_500_000 < 0.001


def test_fir_names_its_media_ssrc_inside_the_fci() -> None:
    body = struct.pack("!II", 7, 0) + struct.pack("!IBxxx", 0xE, 1)
    fir = struct.pack("!BBH", 0x80 | rtcp.FMT_FIR, rtcp.PSFB, len(body) // 4) + body
    assert rtcp.parse(fir) == [rtcp.KeyframeRequest(7, 0xE, fir=True)]


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\x80\xc9\xff\xff", b"\x40" * 40, bytes(range(256))])
def test_malformed_rtcp_is_ignored_not_raised(junk: bytes) -> None:
    rtcp.parse(junk)


def test_rtcp_and_rtp_are_told_apart_on_a_muxed_port() -> None:
    assert rtcp.is_rtcp(rtcp.build_pli(1, 2))
    assert not rtcp.is_rtcp(rtp(1, 2, 3, pt=96, marker=True))


# -- keyframes --------------------------------------------------------------------------------------------


def test_keyframe_requests_are_rate_limited_but_never_lost() -> None:
    gate = KeyframeGate(min_interval_s=1.0)
    assert gate.request(10.0)
    assert not gate.request(10.2)  # a second subscriber's PLI inside the interval
    assert not gate.request(10.4)
    assert gate.pending
    assert not gate.due(10.9)
    assert gate.due(11.0)  # exactly one postponed request
    assert not gate.due(12.5)
    assert gate.request(12.5)


# -- quality ----------------------------------------------------------------------------------------------


def stats(rtt: float | None = 40, loss: float = 0.0, jitter: float = 5, receiving: bool = True) -> DirectionStats:
    return DirectionStats(rtt, loss, jitter, 500_000, receiving)


@pytest.mark.parametrize(
    ("s", "verdict"),
    [
        (stats(), Quality.EXCELLENT),
        (stats(rtt=None), Quality.EXCELLENT),
        (stats(rtt=250), Quality.GOOD),
        (stats(loss=0.03), Quality.GOOD),
        (stats(jitter=45), Quality.GOOD),
        (stats(rtt=400), Quality.POOR),
        (stats(loss=0.10), Quality.POOR),
        (stats(receiving=False), Quality.LOST),
    ],
)
def test_quality_classification(s: DirectionStats, verdict: Quality) -> None:
    assert classify(s) == verdict


def test_the_worse_direction_decides_and_persistent_poor_suggests_audio_only() -> None:
    assert worst(Quality.EXCELLENT, Quality.POOR) == Quality.POOR
    streak = PoorStreak(3)
    assert [streak.observe(q) for q in (Quality.POOR, Quality.POOR, Quality.GOOD, Quality.POOR)] == [
        False,
        False,
        False,
        False,
    ]
    assert [streak.observe(Quality.POOR) for _ in range(2)] == [False, True]


def test_receive_statistics_count_loss_and_ignore_a_steady_stream_for_jitter() -> None:
    s = InboundStats(48000)
    for i in range(100):
        if i % 10 != 5:
            s.update(65500 + i, i * 960, 100.0 + i * 0.02, 100)
    snap = s.snapshot()
    assert snap.expected == 100
    assert snap.received == 90
    assert interval_loss(None, snap) == pytest.approx(0.1)
    assert snap.jitter_s < 1e-6


def test_receive_statistics_measure_jitter() -> None:
    s = InboundStats(48000)
    for i in range(200):
        s.update(i, i * 960, 100.0 + i * 0.02 + (0.01 if i % 2 else 0.0), 100)
    assert 0.005 < s.snapshot().jitter_s < 0.011


# -- routing ----------------------------------------------------------------------------------------------


def test_each_participant_receives_the_others_media_except_video_in_audio_only() -> None:
    both = frozenset({"audio", "video"})
    peers = {
        "client": PeerView(receives=both, publishes=both, audio_only=True),
        "practitioner": PeerView(receives=both, publishes=frozenset({"audio"})),
    }
    assert plan(peers) == {
        ("client", "audio"): ("practitioner",),
        ("client", "video"): ("practitioner",),
        ("practitioner", "audio"): ("client",),
    }


def test_a_participant_who_holds_their_video_sends_it_to_nobody_and_still_receives_and_sends_audio() -> None:
    both = frozenset({"audio", "video"})
    peers = {
        "client": PeerView(receives=both, publishes=both, audio_only=True, video_held=True),
        "practitioner": PeerView(receives=both, publishes=both),
    }
    assert plan(peers) == {
        ("client", "audio"): ("practitioner",),
        ("client", "video"): (),
        ("practitioner", "audio"): ("client",),
        ("practitioner", "video"): (),
    }


def test_nobody_receives_their_own_media_and_a_kind_not_offered_is_not_sent() -> None:
    peers = {"a": PeerView(receives=frozenset({"audio"}), publishes=frozenset({"audio", "video"}))}
    assert plan(peers) == {("a", "audio"): (), ("a", "video"): ()}
    peers["b"] = PeerView(receives=frozenset({"audio"}), publishes=frozenset())
    assert plan(peers)[("a", "video")] == ()


# -- SDP --------------------------------------------------------------------------------------------------

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=ssrc:11 cname:x",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102",
        "a=mid:1",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:102 H264/90000",
        "a=fmtp:102 packetization-mode=1;profile-level-id=42e01f",
        "a=ssrc-group:FID 21 22",
        "a=ssrc:21 cname:x",
        "a=ssrc:22 cname:x",
        "",
    ]
)


def test_an_offer_is_read_for_codecs_rtx_and_ssrcs() -> None:
    desc = check_offer(OFFER, max_bytes=65536, max_sections=8)
    video = desc.section("video")
    assert video is not None
    assert video.codecs[96].key == "vp8/90000"
    assert video.codecs[102].key == "h264/1/42"
    assert video.rtx_for(96) == 97
    assert (video.media_ssrc, video.rtx_ssrc) == (21, 22)
    assert read_description(OFFER).section("audio") is not None


def test_every_offer_refusal_has_a_stable_code() -> None:
    assert {errors.SDP_MALFORMED, errors.TOO_MANY_MEDIA, errors.NO_SUPPORTED_CODEC} <= errors.CODES
    with pytest.raises(MediaError) as info:
        check_offer("hello", max_bytes=100, max_sections=8)
    assert info.value.code == errors.SDP_MALFORMED


def test_behind_a_one_to_one_nat_the_answer_announces_the_public_address() -> None:
    answer = "\r\n".join(
        [
            "v=0",
            "c=IN IP4 10.0.0.5",
            "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host",
            "a=candidate:2 1 udp 2130706431 10.0.0.6 40001 typ host",
            "",
        ]
    )
    mapped = map_candidates(answer, (("10.0.0.5", "203.0.113.7"),))
    assert "a=candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host" in mapped
    assert "10.0.0.6 40001" in mapped
    assert "c=IN IP4 203.0.113.7" in mapped
    assert map_candidates(answer, ()) == answer
