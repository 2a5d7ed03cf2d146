"""Offers that can never connect, or that carry values out of range, are refused with their own code at the
SFU's offer entry point, before any peer connection exists; real browser and aiortc offers still pass."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from media import errors
from media.config import MediaConfig
from media.errors import MediaError
from media.sdp import check_offer
from media.server import MediaServer
from tests.media_helpers import LOOPBACK

CORPUS = Path(__file__).parent / "corpus" / "sdp"


def corpus(name: str) -> str:
    return (CORPUS / name).read_text(encoding="ascii", errors="strict").replace("\r\n", "\n").replace("\n", "\r\n")


AIORTC = corpus("aiortc-offer.sdp")
CHROMIUM = corpus("chromium-offer.sdp")


def sub(pattern: str, repl: str, count: int = 0) -> Callable[[str], str]:
    def mutate(sdp: str) -> str:
        lines = sdp.replace("\r\n", "\n")
        return re.sub(pattern, repl, lines, count=count, flags=re.MULTILINE).replace("\n", "\r\n")

    return mutate


def first_video_ssrc(value: str) -> Callable[[str], str]:
    def mutate(sdp: str) -> str:
        head, video = sdp.split("m=video", 1)
        ssrc = re.search(r"a=ssrc:(\d+)", video)
        assert ssrc is not None
        return head + "m=video" + video.replace(ssrc.group(1), value)

    return mutate


# (name, mutation of a real offer, the code it is refused with)
CASES: list[tuple[str, Callable[[str], str], str]] = [
    ("fingerprint of md5 only", sub(r"^a=fingerprint:\S+ .*$", "a=fingerprint:md5 " + ":".join(["AB"] * 16)),
     errors.INVALID_FINGERPRINT),
    ("fingerprint of an unknown hash only", sub(r"^a=fingerprint:sha-\d+ ", "a=fingerprint:sha-999 "),
     errors.INVALID_FINGERPRINT),
    ("fingerprint value not hex", sub(r"^(a=fingerprint:sha-256 )..", r"\1ZZ"), errors.INVALID_FINGERPRINT),
    ("fingerprint value too short", sub(r"^(a=fingerprint:sha-256 ).*$", r"\1AB:CD"), errors.INVALID_FINGERPRINT),
    ("fingerprint with three words", sub(r"^(a=fingerprint:sha-256 .*)$", r"\1 extra"), errors.INVALID_FINGERPRINT),
    ("ufrag with a space", sub(r"^a=ice-ufrag:(.*)$", r"a=ice-ufrag:ab \1"), errors.INVALID_ICE_CREDENTIALS),
    ("ufrag with a control character", sub(r"^a=ice-ufrag:(.*)$", "a=ice-ufrag:ab\x07\\1"),
     errors.INVALID_ICE_CREDENTIALS),
    ("pwd with a quote", sub(r"^a=ice-pwd:(.*)$", r'a=ice-pwd:"\1'), errors.INVALID_ICE_CREDENTIALS),
    ("ufrag too short", sub(r"^a=ice-ufrag:.*$", "a=ice-ufrag:ab"), errors.INVALID_ICE_CREDENTIALS),
    ("video SSRC of 2^32", first_video_ssrc(str(2**32)), errors.INVALID_SSRC),
    ("negative SSRC", first_video_ssrc("-5"), errors.INVALID_SSRC),
    ("RTX on the media SSRC", sub(r"^a=ssrc-group:FID (\d+) \d+$", r"a=ssrc-group:FID \1 \1"), errors.INVALID_SSRC),
    ("one SSRC in audio and video", lambda sdp: _same_ssrc_twice(sdp), errors.INVALID_SSRC),
    ("payload type 128 on the m-line", sub(r"^(m=video \d+ \S+) ", r"\1 128 "), errors.INVALID_PAYLOAD_TYPE),
    ("payload type 200 in rtpmap", sub(r"^a=rtpmap:(\d+) VP8/90000$", "a=rtpmap:200 VP8/90000"),
     errors.INVALID_PAYLOAD_TYPE),
    ("negative payload type in fmtp", sub(r"^a=fmtp:(\d+) apt=", "a=fmtp:-1 apt="), errors.INVALID_PAYLOAD_TYPE),
    ("payload type colliding with RTCP", lambda sdp: _renumber_vp8(sdp, 72), errors.INVALID_PAYLOAD_TYPE),
    ("one payload type, two codecs", sub(r"^a=rtpmap:(\d+) opus/48000/2$", "a=rtpmap:98 opus/48000/2"),
     errors.INVALID_PAYLOAD_TYPE),
    ("RTX repairing nothing", sub(r"apt=\d+", "apt=127", count=1), errors.INVALID_PAYLOAD_TYPE),
    ("clock rate 0", sub(r"VP8/90000", "VP8/0"), errors.INVALID_CLOCK_RATE),
    ("clock rate of 2^40", sub(r"^a=rtpmap:(\d+) rtx/90000$", r"a=rtpmap:\1 rtx/1099511627776", count=1),
     errors.INVALID_CLOCK_RATE),
    ("extmap id 0", sub(r"^a=extmap:1 ", "a=extmap:0 "), errors.INVALID_EXTMAP),
    ("extmap id 15 without allow-mixed",
     lambda sdp: sub(r"^a=extmap-allow-mixed\n", "")(sub(r"^a=extmap:3 ", "a=extmap:15 ")(sdp)), errors.INVALID_EXTMAP),
    ("extmap id 256 with allow-mixed", sub(r"^a=extmap:3 ", "a=extmap:256 "), errors.INVALID_EXTMAP),
    ("extmap id not a number", sub(r"^a=extmap:3 ", "a=extmap:three "), errors.INVALID_EXTMAP),
    ("one extmap id, two extensions", sub(r"^a=extmap:3 ", "a=extmap:1 "), errors.INVALID_EXTMAP),
    ("DTLS setup holdconn", sub(r"^a=setup:actpass$", "a=setup:holdconn"), errors.INVALID_DTLS_SETUP),
    ("plain RTP without DTLS", sub(r"UDP/TLS/RTP/SAVPF", "RTP/AVP"), errors.UNSUPPORTED_TRANSPORT),
    ("no rtcp-mux", sub(r"^a=rtcp-mux\n", ""), errors.RTCP_MUX_REQUIRED),
    ("mid too long for its header extension", sub(r"^a=mid:0$", "a=mid:" + "m" * 17),
     errors.SDP_MALFORMED),
    ("opus channels not a number", sub(r"opus/48000/2", "opus/48000/x"), errors.SDP_MALFORMED),
    ("VP8 and H.264 at a clock rate they never have", sub(r"(VP8|H264)/90000", r"\1/1000"),
     errors.NO_SUPPORTED_CODEC),
]


def _same_ssrc_twice(sdp: str) -> str:
    audio_ssrc = re.search(r"m=audio[\s\S]*?a=ssrc:(\d+)", sdp)
    video_ssrc = re.search(r"m=video[\s\S]*?a=ssrc-group:FID (\d+)", sdp)
    assert audio_ssrc is not None and video_ssrc is not None
    return sdp.replace(audio_ssrc.group(1), video_ssrc.group(1))


def _renumber_vp8(sdp: str, pt: int) -> str:
    vp8 = re.search(r"a=rtpmap:(\d+) VP8/90000", sdp)
    assert vp8 is not None
    old = vp8.group(1)
    sdp = re.sub(rf"(m=video \d+ \S+(?: \d+)*?) {old}\b", rf"\1 {pt}", sdp)
    return re.sub(rf"a=(rtpmap|rtcp-fb|fmtp):{old}\b", rf"a=\1:{pt}", sdp).replace(f"apt={old}", f"apt={pt}")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def server(registry: CollectorRegistry) -> AsyncIterator[MediaServer]:
    srv = MediaServer(MediaConfig(announce_addresses=LOOPBACK), registry=registry)
    await srv.start()
    yield srv
    await srv.stop()


def test_real_offers_pass_the_vetting() -> None:
    for name in ("aiortc-offer.sdp", "aiortc-recvonly-offer.sdp", "chromium-offer.sdp"):
        desc = check_offer(corpus(name), max_bytes=65536, max_sections=8)
        assert {s.kind for s in desc.sections} == {"audio", "video"}, name


@pytest.mark.parametrize(("name", "mutate", "code"), CASES, ids=[c[0] for c in CASES])
async def test_an_offer_that_can_never_connect_is_refused_with_its_code_and_opens_nothing(
    server: MediaServer, registry: CollectorRegistry, name: str, mutate: Callable[[str], str], code: str
) -> None:
    assert code in errors.CODES
    for base in (AIORTC, CHROMIUM):
        offer = mutate(base)
        if offer == base:
            continue  # the mutation names something only the other offer has
        with pytest.raises(MediaError) as info:
            await server.handle_offer("room", "mallory", offer)
        assert info.value.code == code, f"{name}: {info.value}"
        assert server.rooms() == {}
        assert server.peer_connections() == []
        assert registry.get_sample_value("media_peer_connections") == 0


def test_every_case_changes_at_least_one_real_offer() -> None:
    unchanged = [name for name, mutate, _ in CASES if mutate(AIORTC) == AIORTC and mutate(CHROMIUM) == CHROMIUM]
    assert unchanged == []
