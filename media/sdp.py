"""Pure reading and vetting of session descriptions: no I/O, no aiortc.

`check_offer` runs before aiortc sees an offer, so hostile input is refused with a typed error instead of
reaching a parser that was not written for it. `read_description` also reads aiortc's answer, which tells the
forwarder the payload types and SSRCs negotiated for each direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from media import errors
from media.errors import MediaError

# Codecs the SFU forwards without ever decoding them. RTX is the retransmission format of RFC 4588.
FORWARDABLE = frozenset({"vp8", "h264", "opus"})
KINDS = ("audio", "video")


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
            current = Section(kind=parts[0], mid=str(len(sections)), port=int(parts[1]))
            sections.append(current)
            continue
        if kind != "a":
            continue
        name, _, arg = value.partition(":")
        try:
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
                enc_parts = enc.split("/")
                pt = int(pt_text)
                if not 0 <= pt <= 127 or len(enc_parts) < 2:
                    raise ValueError(arg)
                current.codecs[pt] = Codec(pt, enc_parts[0].lower(), int(enc_parts[1]))
            elif name == "fmtp":
                pt_text, _, params = arg.partition(" ")
                pt = int(pt_text)
                codec = current.codecs.get(pt)
                if codec is not None:
                    current.codecs[pt] = Codec(codec.payload_type, codec.name, codec.clock_rate, params)
                    if codec.name == "rtx":
                        for p in params.split(";"):
                            key, _, val = p.strip().partition("=")
                            if key == "apt":
                                current.rtx_apt[pt] = int(val)
            elif name == "ssrc":
                ssrc = int(arg.split()[0])
                if ssrc not in current.ssrcs:
                    current.ssrcs.append(ssrc)
            elif name == "ssrc-group" and arg.startswith("FID"):
                ids = [int(x) for x in arg.split()[1:]]
                if len(ids) == 2:
                    current.fid = (ids[0], ids[1])
        except ValueError as exc:
            raise MediaError(errors.SDP_MALFORMED, f"bad attribute {name}") from exc
    return Description(
        sections=sections,
        bundle=bundle,
        ice_ufrag=session_ufrag or media_ufrag,
        ice_pwd=session_pwd or media_pwd,
        fingerprint=session_fp or media_fp,
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
    if not (4 <= len(desc.ice_ufrag) <= 256 and 22 <= len(desc.ice_pwd) <= 256):
        raise MediaError(errors.MISSING_ICE_CREDENTIALS, "ice-ufrag or ice-pwd of an invalid length (RFC 8839)")
    if not desc.fingerprint or len(desc.fingerprint.split()) != 2:
        raise MediaError(errors.MISSING_FINGERPRINT, "a DTLS fingerprint is required")
    if len(desc.sections) > 1 and not set(s.mid for s in desc.sections if s.port != 0) <= set(desc.bundle):
        raise MediaError(errors.BUNDLE_REQUIRED, "all media must share one transport (BUNDLE)")
    for section in media:
        if not any(c.name in FORWARDABLE for c in section.codecs.values()):
            raise MediaError(errors.NO_SUPPORTED_CODEC, f"{section.kind} offers none of {sorted(FORWARDABLE)}")
    kinds = [s.kind for s in media]
    if len(kinds) != len(set(kinds)):
        raise MediaError(errors.TOO_MANY_MEDIA, "at most one audio and one video section")
    return desc


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
