"""Pure reading and vetting of session descriptions: no I/O, no aiortc.

`check_offer` runs before aiortc sees an offer, so hostile input is refused with a typed error instead of
reaching a parser that was not written for it. `read_description` also reads aiortc's answer, which tells the
forwarder the payload types and SSRCs negotiated for each direction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from media import errors
from media.errors import MediaError

# Codecs the SFU forwards without ever decoding them, at the clock rates their RTP formats fix (RFC 7741,
# 6184, 7587). RTX is the retransmission format of RFC 4588.
FORWARDABLE = frozenset({"vp8", "h264", "opus"})
CLOCK_RATES = {"vp8": 90000, "h264": 90000, "opus": 48000}
KINDS = ("audio", "video")

# DTLS fingerprints aiortc can verify (RFC 8122 names), with their digest sizes in bytes; the others are
# hash functions a fingerprint may name, which the server cannot check (RFC 8122 section 5).
SUPPORTED_HASHES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
KNOWN_HASHES = {"md2": 16, "md5": 16, "sha-1": 20, "sha-224": 28, **SUPPORTED_HASHES}
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*")
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")  # RFC 8839 ice-char
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+")  # RFC 4566 token, what a mid is (RFC 5888)
MAX_MID_LENGTH = 16  # what fits the RTP mid header extension in its one-byte form (RFC 8843)
MAX_CLOCK_RATE = 1_000_000
MAX_SSRC = 0xFFFFFFFF
# With rtcp-mux, RTP payload types 64-95 put the marker bit and payload type where RTCP has its packet
# types 192-223: the two could not be told apart on the shared port (RFC 5761 section 4).
RTCP_CONFLICT = range(64, 96)
RTP_PROFILES = frozenset({"UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP"})
DTLS_SETUP = frozenset({"actpass", "active", "passive"})


@dataclass(frozen=True, slots=True)
class Codec:
    payload_type: int
    name: str  # lower case: "vp8", "h264", "opus", "rtx", ...
    clock_rate: int
    fmtp: str = ""

    @property
    def key(self) -> str:
        """Two codecs with the same key are interchangeable on the wire (same packetization)."""
        if self.name == "h264":
            params = dict(p.split("=", 1) for p in self.fmtp.replace(" ", "").split(";") if "=" in p)
            # Same packetization mode and profile_idc: the level may differ (a decoder handles lower levels).
            return f"h264/{params.get('packetization-mode', '0')}/{params.get('profile-level-id', '')[:2].lower()}"
        return f"{self.name}/{self.clock_rate}"


@dataclass(slots=True)
class Section:
    kind: str
    mid: str
    direction: str = "sendrecv"
    port: int = 9
    codecs: dict[int, Codec] = field(default_factory=dict)
    rtx_apt: dict[int, int] = field(default_factory=dict)  # rtx payload type -> media payload type
    ssrcs: list[int] = field(default_factory=list)
    fid: tuple[int, int] | None = None  # (media ssrc, rtx ssrc)
    # What only the vetting of an offer looks at.
    proto: str = ""
    formats: list[str] = field(default_factory=list)  # the m-line's payload types, as written
    payload_types: list[int] = field(default_factory=list)  # named by fmtp and rtcp-fb (and apt values)
    extmaps: list[tuple[str, str]] = field(default_factory=list)  # (id as written, URI)
    rtcp_mux: bool = False
    conflicts: list[str] = field(default_factory=list)  # a payload type mapped twice, to different codecs

    @property
    def media_ssrc(self) -> int | None:
        if self.fid is not None:
            return self.fid[0]
        return self.ssrcs[0] if self.ssrcs else None

    @property
    def rtx_ssrc(self) -> int | None:
        return self.fid[1] if self.fid is not None else None

    def rtx_for(self, payload_type: int) -> int | None:
        for rtx, apt in self.rtx_apt.items():
            if apt == payload_type:
                return rtx
        return None


@dataclass(slots=True)
class Description:
    sections: list[Section]
    bundle: list[str]
    ice_ufrag: str | None
    ice_pwd: str | None
    fingerprint: str | None
    fingerprints: list[str] = field(default_factory=list)  # every a=fingerprint value, session and media
    ice_credentials: list[str] = field(default_factory=list)  # every ice-ufrag and ice-pwd value
    setups: list[str] = field(default_factory=list)
    extmap_allow_mixed: bool = False

    def section(self, kind: str) -> Section | None:
        for s in self.sections:
            if s.kind == kind and s.port != 0:
                return s
        return None


def read_description(text: str) -> Description:
    """Read the parts of a session description the SFU needs; raise MediaError on malformed text."""
    sections: list[Section] = []
    bundle: list[str] = []
    session_ufrag = session_pwd = session_fp = None
    media_ufrag = media_pwd = media_fp = None
    current: Section | None = None
    fingerprints: list[str] = []
    credentials: list[str] = []
    setups: list[str] = []
    allow_mixed = False
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "v=0":
        raise MediaError(errors.SDP_MALFORMED, "a description starts with v=0")
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise MediaError(errors.SDP_MALFORMED, f"not a description line: {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].isdigit() or int(parts[1]) > 65535:
                raise MediaError(errors.SDP_MALFORMED, f"bad m-line: {line[:60]!r}")
            current = Section(kind=parts[0], mid=str(len(sections)), port=int(parts[1]), proto=parts[2],
                              formats=parts[3:])
            sections.append(current)
            continue
        if kind != "a":
            continue
        name, _, arg = value.partition(":")
        try:
            if name in ("ice-ufrag", "ice-pwd"):
                credentials.append(arg)
            elif name == "fingerprint":
                fingerprints.append(arg)
            elif name == "setup":
                setups.append(arg.strip())
            elif name == "extmap-allow-mixed":
                allow_mixed = True
            if name == "group" and arg.startswith("BUNDLE"):
                bundle = arg.split()[1:]
            elif name == "ice-ufrag":
                if current is None:
                    session_ufrag = arg
                else:
                    media_ufrag = media_ufrag or arg
            elif name == "ice-pwd":
                if current is None:
                    session_pwd = arg
                else:
                    media_pwd = media_pwd or arg
            elif name == "fingerprint":
                if current is None:
                    session_fp = arg
                else:
                    media_fp = media_fp or arg
            elif current is None:
                continue
            elif name == "mid":
                current.mid = arg.strip()
            elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                current.direction = name
            elif name == "rtpmap":
                pt_text, _, enc = arg.partition(" ")
                enc_parts = enc.strip().split("/")
                pt = int(pt_text)
                if not 0 <= pt <= 127:
                    raise MediaError(errors.INVALID_PAYLOAD_TYPE, f"payload type {pt} is outside 0-127")
                if len(enc_parts) < 2 or len(enc_parts) > 3 or not enc_parts[0]:
                    raise ValueError(arg)
                clock = int(enc_parts[1])
                if len(enc_parts) == 3 and not 1 <= int(enc_parts[2]) <= 255:
                    raise ValueError(arg)
                mapped = Codec(pt, enc_parts[0].lower(), clock)
                known = current.codecs.get(pt)
                if known is not None and (known.name, known.clock_rate) != (mapped.name, mapped.clock_rate):
                    current.conflicts.append(f"payload type {pt} is mapped twice")
                current.codecs[pt] = mapped
            elif name == "rtcp-mux":
                current.rtcp_mux = True
            elif name == "extmap":
                ext_id, _, uri = arg.partition(" ")
                current.extmaps.append((ext_id.split("/", 1)[0], uri.strip().split(" ", 1)[0]))
            elif name == "rtcp-fb":
                pt_text = arg.split(" ", 1)[0]
                if pt_text != "*":
                    current.payload_types.append(int(pt_text))
            elif name == "fmtp":
                pt_text, _, params = arg.partition(" ")
                pt = int(pt_text)
                current.payload_types.append(pt)
                codec = current.codecs.get(pt)
                if codec is not None:
                    current.codecs[pt] = Codec(codec.payload_type, codec.name, codec.clock_rate, params)
                    if codec.name == "rtx":
                        for p in params.split(";"):
                            key, _, val = p.strip().partition("=")
                            if key == "apt":
                                current.rtx_apt[pt] = int(val)
                                current.payload_types.append(int(val))
            elif name == "ssrc":
                ssrc = int(arg.split()[0])
                if ssrc not in current.ssrcs:
                    current.ssrcs.append(ssrc)
            elif name == "ssrc-group" and arg.startswith("FID"):
                ids = [int(x) for x in arg.split()[1:]]
                if len(ids) == 2:
                    current.fid = (ids[0], ids[1])
        except (ValueError, IndexError) as exc:  # a number that is not one, or a value missing its parts
            raise MediaError(errors.SDP_MALFORMED, f"bad attribute {name}") from exc
    return Description(
        sections=sections,
        bundle=bundle,
        ice_ufrag=session_ufrag or media_ufrag,
        ice_pwd=session_pwd or media_pwd,
        fingerprint=session_fp or media_fp,
        fingerprints=fingerprints,
        ice_credentials=credentials,
        setups=setups,
        extmap_allow_mixed=allow_mixed,
    )


def check_offer(text: str, *, max_bytes: int, max_sections: int) -> Description:
    """Vet an offer from a participant before aiortc parses it."""
    if not isinstance(text, str):
        raise MediaError(errors.SDP_MALFORMED, "an offer is text")
    if "\x00" in text:
        raise MediaError(errors.SDP_MALFORMED, "NUL byte")
    if text.count("\nm=") + text.startswith("m=") > max_sections:
        raise MediaError(errors.TOO_MANY_MEDIA, f"more than {max_sections} media sections")
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise MediaError(errors.SDP_TOO_LARGE, f"more than {max_bytes} bytes")
    desc = read_description(text)
    if len(desc.sections) > max_sections:
        raise MediaError(errors.TOO_MANY_MEDIA, f"more than {max_sections} media sections")
    media = [s for s in desc.sections if s.kind in KINDS and s.port != 0]
    if not media:
        raise MediaError(errors.NO_MEDIA, "no audio or video section")
    if not desc.ice_ufrag or not desc.ice_pwd:
        raise MediaError(errors.MISSING_ICE_CREDENTIALS, "ice-ufrag and ice-pwd are required")
    _vet_ice(desc)
    if not desc.fingerprint:
        raise MediaError(errors.MISSING_FINGERPRINT, "a DTLS fingerprint is required")
    _vet_dtls(desc)
    for section in media:
        if len(section.mid) > MAX_MID_LENGTH or not _TOKEN.fullmatch(section.mid):
            raise MediaError(errors.SDP_MALFORMED, f"a mid is a token of at most {MAX_MID_LENGTH} characters")
    if len(desc.sections) > 1 and not set(s.mid for s in desc.sections if s.port != 0) <= set(desc.bundle):
        raise MediaError(errors.BUNDLE_REQUIRED, "all media must share one transport (BUNDLE)")
    for section in media:
        _vet_section(section, desc.extmap_allow_mixed)
        if not any(_forwardable(c) for c in section.codecs.values()):
            raise MediaError(errors.NO_SUPPORTED_CODEC, f"{section.kind} offers none of {sorted(FORWARDABLE)}")
    kinds = [s.kind for s in media]
    if len(kinds) != len(set(kinds)):
        raise MediaError(errors.TOO_MANY_MEDIA, "at most one audio and one video section")
    _vet_bundle(media)
    return desc


def _forwardable(codec: Codec) -> bool:
    return CLOCK_RATES.get(codec.name) == codec.clock_rate


def _vet_ice(desc: Description) -> None:
    ufrags = [desc.ice_ufrag or ""]
    pwds = [desc.ice_pwd or ""]
    for value in [*ufrags, *pwds, *desc.ice_credentials]:
        if not _ICE_CHARS.fullmatch(value):
            raise MediaError(errors.INVALID_ICE_CREDENTIALS, "ice-ufrag and ice-pwd are made of ice-chars (RFC 8839)")
    if not (4 <= len(ufrags[0]) <= 256 and 22 <= len(pwds[0]) <= 256):
        raise MediaError(errors.INVALID_ICE_CREDENTIALS, "ice-ufrag or ice-pwd of an invalid length (RFC 8839)")


def _vet_dtls(desc: Description) -> None:
    usable = 0
    for value in desc.fingerprints:
        parts = value.split()
        if len(parts) != 2:
            raise MediaError(errors.INVALID_FINGERPRINT, "a fingerprint is a hash function and a value")
        algorithm, digest = parts[0].lower(), parts[1]
        size = KNOWN_HASHES.get(algorithm)
        if size is None:
            continue  # a hash function nobody knows: ignored, as RFC 8122 lets an answerer do
        if not _FINGERPRINT.fullmatch(digest) or (len(digest) + 1) // 3 != size:
            raise MediaError(errors.INVALID_FINGERPRINT, f"a {algorithm} fingerprint is {size} hex bytes")
        usable += algorithm in SUPPORTED_HASHES
    if not usable:
        raise MediaError(errors.INVALID_FINGERPRINT, f"no fingerprint of {', '.join(SUPPORTED_HASHES)}")
    for setup in desc.setups:
        if setup not in DTLS_SETUP:
            raise MediaError(errors.INVALID_DTLS_SETUP, "setup is actpass, active or passive")


def _vet_section(section: Section, allow_mixed: bool) -> None:
    kind = section.kind
    if section.proto not in RTP_PROFILES:
        raise MediaError(errors.UNSUPPORTED_TRANSPORT, f"{kind} over {section.proto[:40]!r}: only UDP/TLS/RTP/SAVPF")
    if not section.rtcp_mux:
        raise MediaError(errors.RTCP_MUX_REQUIRED, f"{kind}: RTP and RTCP must share the port (rtcp-mux)")
    for fmt in section.formats:
        if not fmt.isdigit() or not 0 <= int(fmt) <= 127:
            raise MediaError(errors.INVALID_PAYLOAD_TYPE, f"{kind}: payload type {fmt[:12]!r} is outside 0-127")
    for pt in [*section.codecs, *section.payload_types]:
        if not 0 <= pt <= 127:
            raise MediaError(errors.INVALID_PAYLOAD_TYPE, f"{kind}: payload type {pt} is outside 0-127")
        if pt in RTCP_CONFLICT:
            raise MediaError(errors.INVALID_PAYLOAD_TYPE, f"{kind}: payload type {pt} collides with RTCP (RFC 5761)")
    if section.conflicts:
        raise MediaError(errors.INVALID_PAYLOAD_TYPE, f"{kind}: {section.conflicts[0]}")
    for pt, apt in section.rtx_apt.items():
        if apt not in section.codecs or apt == pt:
            raise MediaError(errors.INVALID_PAYLOAD_TYPE, f"{kind}: RTX {pt} repairs {apt}, which is not offered")
    for codec in section.codecs.values():
        if not 1 <= codec.clock_rate <= MAX_CLOCK_RATE:
            raise MediaError(errors.INVALID_CLOCK_RATE, f"{kind}: clock rate {codec.clock_rate} is out of range")
    for ssrc in [*section.ssrcs, *(section.fid or ())]:
        if not 0 <= ssrc <= MAX_SSRC:
            raise MediaError(errors.INVALID_SSRC, f"{kind}: SSRC {ssrc} is outside 32 bits")
    if section.fid is not None and section.fid[0] == section.fid[1]:
        raise MediaError(errors.INVALID_SSRC, f"{kind}: media and RTX need two SSRCs")
    top = 255 if allow_mixed else 14
    uris: dict[int, str] = {}
    for ext_id, uri in section.extmaps:
        if not ext_id.isdigit() or not 1 <= int(ext_id) <= top or not uri:
            raise MediaError(errors.INVALID_EXTMAP, f"{kind}: extmap id {ext_id[:12]!r} is outside 1-{top} (RFC 8285)")
        if uris.setdefault(int(ext_id), uri) != uri:
            raise MediaError(errors.INVALID_EXTMAP, f"{kind}: extmap id {ext_id} names two extensions")


def _vet_bundle(media: list[Section]) -> None:
    """Bundled sections share one transport: an SSRC, a payload type or an extension id means one thing."""
    ssrc_owner: dict[int, str] = {}
    codec_of: dict[int, tuple[str, int]] = {}
    uri_of: dict[str, str] = {}
    for section in media:
        for ssrc in {*section.ssrcs, *(section.fid or ())}:
            if ssrc_owner.setdefault(ssrc, section.mid) != section.mid:
                raise MediaError(errors.INVALID_SSRC, f"SSRC {ssrc} is in two media sections")
        for pt, codec in section.codecs.items():
            if codec_of.setdefault(pt, (codec.name, codec.clock_rate)) != (codec.name, codec.clock_rate):
                raise MediaError(errors.INVALID_PAYLOAD_TYPE, f"payload type {pt} names two codecs")
        for ext_id, uri in section.extmaps:
            if uri_of.setdefault(ext_id, uri) != uri:
                raise MediaError(errors.INVALID_EXTMAP, f"extmap id {ext_id} names two extensions")


def map_candidates(text: str, nat_map: tuple[tuple[str, str], ...]) -> str:
    """Replace bound addresses by announced ones in an answer's candidates and connection lines."""
    if not nat_map:
        return text
    mapping = dict(nat_map)
    lines = text.split("\r\n")
    for i, line in enumerate(lines):
        if line.startswith("a=candidate:"):
            parts = line.split(" ")
            if len(parts) > 5 and parts[4] in mapping:
                parts[4] = mapping[parts[4]]
                lines[i] = " ".join(parts)
        elif line.startswith("c=IN IP4 "):
            address = line[len("c=IN IP4 ") :]
            if address in mapping:
                lines[i] = "c=IN IP4 " + mapping[address]
    return "\r\n".join(lines)
