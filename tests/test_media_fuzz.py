"""Property-based fuzzing of what the SFU reads from participants itself: offers (media/sdp.py), RTCP
(media/rtcp.py, media/feedback.py) and the RTP it rewrites (media/rewrite.py and the forwarding path of
media/server.py, fed through real SRTP sessions).

The corpus is real: offers that aiortc and Chromium wrote (tests/corpus/sdp/) and RTCP packets that aiortc's
own serialiser builds. Hypothesis mutates them (and also tries plain random input). No exception may escape a
parser except `MediaError`, whose code is in the catalogue. The budget is fixed and the runs are
deterministic (derandomized, no example database), so the suite stays quick and repeatable.
"""

from __future__ import annotations

import struct
from functools import cache
from pathlib import Path
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection, rtp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media import errors, fastpath, feedback, rtcp
from media.config import MediaConfig
from media.errors import MediaError
from media.rewrite import SendHistory, SeqTsRewriter, build_rtx, strip_extension, unwrap_rtx
from media.sdp import check_offer, map_candidates, read_description
from media.server import MediaServer, _Participant, _Peer, _Room
from media.stats import InboundStats

FUZZ = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CORPUS = Path(__file__).parent / "corpus" / "sdp"
# The forwarding-path targets build SRTP sessions per example: a smaller share of the budget.
FUZZ_SRTP = settings(FUZZ, max_examples=100)
OFFERS = [p.read_bytes().decode("ascii").replace("\r\n", "\n").replace("\n", "\r\n")
          for p in sorted(CORPUS.glob("*.sdp"))]

# -- offers ---------------------------------------------------------------------------------------------

extreme_numbers = st.sampled_from(
    ["0", "-1", "-0", "1", "127", "128", "255", "256", "65535", "65536", str(2**31), str(2**32 - 1), str(2**32),
     str(2**64), "1e3", "0x10", " 9", "9 ", "", "٣", "²"]
)
odd_text = st.one_of(
    extreme_numbers,
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="ascii"), max_size=30),
    st.sampled_from(["sha-256", "SHA-256", "md5", "AB:CD", "actpass", "holdconn", "rtx/90000", "VP8/90000/2",
                     "opus/48000/2/3", "apt=", "FID", "BUNDLE", "\x00", "\x07", " ", "/", ":", "=", ";"]),
)


@st.composite
def mutated_offer(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(OFFERS)).split("\r\n")
    for _ in range(draw(st.integers(1, 6))):
        lines = lines or [""]
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["value", "token", "delete", "duplicate", "insert", "truncate", "char"]))
        line = lines[i] if lines else ""
        if op == "value" and ":" in line:
            lines[i] = line.split(":", 1)[0] + ":" + draw(odd_text)
        elif op == "token" and " " in line:
            words = line.split(" ")
            words[draw(st.integers(0, len(words) - 1))] = draw(odd_text)
            lines[i] = " ".join(words)
        elif op == "delete" and lines:
            del lines[i]
        elif op == "duplicate" and lines:
            lines.insert(i, line)
        elif op == "insert":
            prefix = draw(st.sampled_from(["a=", "m=", "c=", "a=ssrc:", "a=rtpmap:", "a=extmap:", "a=fmtp:", ""]))
            lines.insert(i, prefix + draw(odd_text))
        elif op == "truncate":
            lines[i] = line[: draw(st.integers(0, len(line)))]
        elif op == "char" and line:
            at = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:at] + draw(st.characters()) + line[at + 1 :]
    return "\r\n".join(lines)


def vet(text: str) -> None:
    try:
        desc = check_offer(text, max_bytes=65536, max_sections=8)
    except MediaError as exc:
        assert exc.code in errors.CODES, exc.code
        return
    # What passes the vetting is what the forwarder relies on: 32-bit SSRCs, 7-bit payload types.
    for section in desc.sections:
        for ssrc in [*section.ssrcs, *(section.fid or ())]:
            assert 0 <= ssrc <= 0xFFFFFFFF
        for pt, codec in section.codecs.items():
            assert 0 <= pt <= 127 and codec.clock_rate > 0
            assert isinstance(codec.key, str)


@FUZZ
@given(mutated_offer())
def test_a_mutated_real_offer_is_read_or_refused_with_a_typed_error(text: str) -> None:
    vet(text)
    try:
        read_description(text)
    except MediaError as exc:
        assert exc.code in errors.CODES
    map_candidates(text, (("127.0.0.1", "203.0.113.7"),))


@FUZZ
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
                 st.text(max_size=200).map(lambda t: "v=0\r\n" + t)))
def test_random_text_as_an_offer_is_refused_with_a_typed_error(text: str) -> None:
    vet(text)


# -- RTCP -------------------------------------------------------------------------------------------------


def _aiortc_rtcp() -> list[bytes]:
    report = rtp.RtcpReceiverInfo(ssrc=0x11223344, fraction_lost=12, packets_lost=-3, highest_sequence=70000,
                                  jitter=90, lsr=0xABCDEF01, dlsr=655)
    sender = rtp.RtcpSenderInfo(ntp_timestamp=0x0123456789ABCDEF, rtp_timestamp=90000, packet_count=10,
                                octet_count=12000)
    packets: list[Any] = [
        rtp.RtcpSrPacket(ssrc=1, sender_info=sender, reports=[report]),
        rtp.RtcpRrPacket(ssrc=2, reports=[report, report]),
        rtp.RtcpSdesPacket(chunks=[rtp.RtcpSourceInfo(ssrc=3, items=[(1, b"cname")])]),
        rtp.RtcpByePacket(sources=[4, 5]),
        rtp.RtcpPsfbPacket(fmt=rtcp.FMT_PLI, ssrc=6, media_ssrc=7),
        rtp.RtcpPsfbPacket(fmt=rtcp.FMT_APP, ssrc=8, media_ssrc=0, fci=rtp.pack_remb_fci(1_500_000, [7, 7, 9])),
        rtp.RtcpRtpfbPacket(fmt=rtcp.FMT_NACK, ssrc=10, media_ssrc=7, lost=[0, 1, 2, 3, 20, 700, 65535]),
    ]
    singles = [bytes(p) for p in packets]
    return [*singles, b"".join(singles), singles[1] + singles[-1] * 3,
            rtcp.build_remb(1, 10**12, (7,) * 255), rtcp.build_nack(1, 7, list(range(0, 2000, 3)))]


RTCP_SEEDS = _aiortc_rtcp()


@st.composite
def mutated_bytes(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "splice", "word"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(max_size=16))
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            data[at:] = other[draw(st.integers(0, len(other))) :]
        elif op == "word" and len(data) >= at + 2:
            struct.pack_into("!H", data, at, draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF])))
    return bytes(data)


rtcp_inputs = st.one_of(mutated_bytes(RTCP_SEEDS), st.binary(max_size=300))


@FUZZ
@given(rtcp_inputs)
def test_rtcp_is_parsed_into_values_in_range_or_ignored(data: bytes) -> None:
    for packet in rtcp.parse(data):
        assert 0 <= packet.ssrc <= 0xFFFFFFFF
        if isinstance(packet, rtcp.Nack):
            assert len(packet.lost) <= 17 * rtcp.MAX_NACK_ITEMS
            assert all(0 <= s <= 0xFFFF for s in packet.lost)
        if isinstance(packet, rtcp.Remb):
            assert len(packet.ssrcs) <= 255
    d = feedback.digest(rtcp.parse(data))
    if d.remb is not None:
        assert feedback.REMB_MIN_BPS <= d.remb.bitrate <= feedback.REMB_MAX_BPS
        assert len(set(d.remb.ssrcs)) == len(d.remb.ssrcs)
        rtcp.build_remb(1, d.remb.bitrate, d.remb.ssrcs)
    history = SendHistory(64)
    for seq in range(100, 164):
        history.store(seq, bytes(12) + b"x" * (seq % 50), 96, seq)
    retransmitter = feedback.Retransmitter(64, 0.5, 4096)
    for lost in d.nacks.values():
        plan = retransmitter.plan(lost, now=1.0, rtt_s=None, newest=163, sent=64, forwarded_octets=10_000,
                                  history=history)
        assert len(plan.resend) + len(plan.pass_on) + plan.unknown + plan.repeated + plan.over_budget == len(lost)
        if plan.pass_on:
            rtcp.build_nack(1, 7, plan.pass_on)


@FUZZ
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=600))
def test_a_nack_built_for_any_numbers_names_exactly_those(lost: list[int]) -> None:
    packet = rtcp.build_nack(1, 7, lost)
    items = (len(packet) - 12) // 4
    parsed = rtcp.parse(packet)
    assert len(parsed) == 1 and isinstance(parsed[0], rtcp.Nack)
    if items <= rtcp.MAX_NACK_ITEMS:
        assert set(parsed[0].lost) == set(lost)
    else:
        assert set(parsed[0].lost) < set(lost)


# -- RTP rewriting ----------------------------------------------------------------------------------------


@st.composite
def rtp_packets(draw: st.DrawFn, payload_types: list[int] | None = None) -> bytes:
    first = 0x80 | draw(st.integers(0, 0x3F))  # version 2; padding, extension and CSRC count at random
    pt = draw(st.sampled_from(payload_types)) if payload_types else draw(st.integers(0, 127))
    second = (0x80 if draw(st.booleans()) else 0) | pt
    header = struct.pack("!BBHII", first, second, draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 2**32 - 1)),
                         draw(st.integers(0, 2**32 - 1)))
    body = draw(st.binary(max_size=60))
    if first & 0x10 and draw(st.booleans()):
        body = struct.pack("!HH", 0xBEDE, draw(st.integers(0, 0xFFFF))) + body
    return header + body


@FUZZ
@given(rtp_packets(), st.integers(0, 127), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1))
def test_rtp_rewriting_never_raises_on_hostile_headers(packet: bytes, pt: int, seq: int, ssrc: int) -> None:
    stripped = strip_extension(packet)
    assert len(stripped) >= 12
    unwrapped = unwrap_rtx(packet, pt, ssrc)
    if unwrapped is not None:
        assert len(unwrapped) >= 12
    rtx = build_rtx(bytearray(packet), pt, seq, ssrc)
    assert len(rtx) >= 12
    rewriter = SeqTsRewriter(90000, seq, ssrc)
    _, _, pseq, ts, pssrc = struct.unpack_from("!BBHII", packet)
    out_seq, out_ts = rewriter.map(pssrc, pseq, ts, 1.0)
    assert 0 <= out_seq <= 0xFFFF and 0 <= out_ts <= 0xFFFFFFFF
    InboundStats(90000).update(pseq, ts, 1.0, len(packet))


# -- the forwarding path, through real SRTP ---------------------------------------------------------------

KEY = bytes(range(30))


@cache
def harness() -> tuple[_Peer, _Peer, list[bytes]]:
    """A publisher's and a subscriber's server-side peers, configured from a real offer, as after DTLS."""
    server = MediaServer(MediaConfig())
    room = _Room("fuzz")
    desc = read_description(OFFERS[0])
    sent: list[bytes] = []
    peers = []
    for who in ("pub", "sub"):
        participant = _Participant(room, who)
        peer = _Peer(server, participant, RTCPeerConnection())
        peer.configure(desc, desc, 64, 0.5)
        outbound = pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        peer.tx = outbound
        peer.tx_codec = fastpath.Srtp(outbound)
        peer.send = sent.append
        peers.append(peer)
    pub, sub = peers
    for kind, inn in pub.ins.items():
        inn.targets = [sub.outs[kind]]
        sub.outs[kind].source = inn
    return pub, sub, sent


def fresh_receiver(peer: _Peer) -> pylibsrtp.Session:
    """New sessions each example: libsrtp's replay check would otherwise refuse most random numbers."""
    inbound = pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
    peer.rx = inbound
    peer.rx_codec = fastpath.Srtp(inbound)
    return pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))


def negotiated_pts() -> list[int]:
    pub, _, _ = harness()
    return sorted(pub.pt_table)


@FUZZ_SRTP
@given(st.lists(st.one_of(rtp_packets(negotiated_pts()), rtp_packets()), min_size=1, max_size=8))
def test_hostile_rtp_from_a_participant_is_forwarded_or_dropped_never_raised(packets: list[bytes]) -> None:
    pub, _, sent = harness()
    sender = fresh_receiver(pub)
    sent.clear()
    for packet in packets:
        try:
            datagram = sender.protect(packet)
        except pylibsrtp.Error:
            continue  # libsrtp refuses to protect it: no participant could send it either
        pub.on_datagram(datagram)
    for datagram in sent:
        assert len(datagram) >= 12


@FUZZ_SRTP
@given(st.lists(rtcp_inputs.filter(lambda b: len(b) >= 8), min_size=1, max_size=4))
def test_hostile_rtcp_from_a_participant_is_acted_on_or_dropped_never_raised(packets: list[bytes]) -> None:
    _, sub, _ = harness()
    sender = fresh_receiver(sub)
    for packet in packets:
        data = bytearray(packet)
        data[0] = 0x80 | (data[0] & 0x3F)
        data[1] = 200 + data[1] % 7  # an RTCP packet type, as a participant's RTCP would begin
        try:
            datagram = sender.protect_rtcp(bytes(data))
        except pylibsrtp.Error:
            continue
        sub.on_datagram(datagram)
