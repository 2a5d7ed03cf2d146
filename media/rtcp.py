"""Pure RTCP reading and writing for the forwarder (RFC 3550, 4585, 5104, REMB draft).

Only what an SFU acts on is decoded: sender and receiver reports, PLI, FIR, NACK and REMB. Everything
else in a compound packet is skipped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SR = 200
RR = 201
SDES = 202
BYE = 203
RTPFB = 205
PSFB = 206
FMT_NACK = 1
FMT_PLI = 1
FMT_FIR = 4
FMT_APP = 15
# A NACK is read up to this many FCI items (each names up to 17 numbers, so 544 in all, more than the
# 512-packet send history holds): a longer one would cost parsing time in proportion to what it claims, for
# numbers no history could answer. libwebrtc asks for a keyframe rather than NACK that much.
MAX_NACK_ITEMS = 32
# The numbers after a NACK item's PID that each byte of its bitmask names, precomputed: the per-bit loop
# was most of the cost of reading a hostile NACK.
_BLP_LOW = tuple(tuple(b + 1 for b in range(8) if byte >> b & 1) for byte in range(256))
_BLP_HIGH = tuple(tuple(b + 9 for b in range(8) if byte >> b & 1) for byte in range(256))


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # out of 256
    packets_lost: int
    highest_seq: int
    jitter: int  # in timestamp units
    lsr: int
    dlsr: int  # 1/65536 s


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp: int
    rtp_ts: int
    packets: int
    octets: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyframeRequest:
    """PLI, or FIR (which names the media ssrc inside its FCI)."""

    ssrc: int
    media_ssrc: int
    fir: bool = False


@dataclass(frozen=True, slots=True)
class Nack:
    ssrc: int
    media_ssrc: int
    lost: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Remb:
    ssrc: int
    bitrate: int
    ssrcs: tuple[int, ...] = field(default=())


Rtcp = SenderReport | ReceiverReport | KeyframeRequest | Nack | Remb

_BLOCK = struct.Struct("!IB3sIIII")


def _blocks(data: bytes, offset: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    out = []
    for _ in range(count):
        if offset + 24 > end:
            break
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        packets_lost = int.from_bytes(lost, "big", signed=True)
        out.append(ReportBlock(ssrc, fraction, packets_lost, highest, jitter, lsr, dlsr))
        offset += 24
    return tuple(out)


def parse(data: bytes) -> list[Rtcp]:
    """Decode a compound RTCP packet; malformed trailing parts are ignored, never raised."""
    out: list[Rtcp] = []
    pos = 0
    n = len(data)
    while pos + 4 <= n:
        first, pt, length = struct.unpack_from("!BBH", data, pos)
        end = pos + 4 * (length + 1)
        if first >> 6 != 2 or end > n:
            break
        count = first & 0x1F
        body = pos + 4
        if pt == SR and body + 24 <= end:
            ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", data, body)
            out.append(SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(data, body + 24, count, end)))
        elif pt == RR and body + 4 <= end:
            ssrc = struct.unpack_from("!I", data, body)[0]
            out.append(ReceiverReport(ssrc, _blocks(data, body + 4, count, end)))
        elif pt in (RTPFB, PSFB) and body + 8 <= end:
            ssrc, media_ssrc = struct.unpack_from("!II", data, body)
            fci = body + 8
            if pt == RTPFB and count == FMT_NACK:
                lost: list[int] = []
                for i in range(fci, min(end - 3, fci + 4 * MAX_NACK_ITEMS), 4):
                    pid, low, high = data[i] << 8 | data[i + 1], data[i + 3], data[i + 2]
                    lost.append(pid)
                    lost.extend([(pid + o) & 0xFFFF for o in _BLP_LOW[low]])
                    lost.extend([(pid + o) & 0xFFFF for o in _BLP_HIGH[high]])
                out.append(Nack(ssrc, media_ssrc, tuple(lost)))
            elif pt == PSFB and count == FMT_PLI:
                out.append(KeyframeRequest(ssrc, media_ssrc))
            elif pt == PSFB and count == FMT_FIR:
                for i in range(fci, end - 7, 8):
                    out.append(KeyframeRequest(ssrc, struct.unpack_from("!I", data, i)[0], fir=True))
            elif pt == PSFB and count == FMT_APP and end - fci >= 8 and data[fci : fci + 4] == b"REMB":
                num, b1, b2, b3 = struct.unpack_from("!BBBB", data, fci + 4)
                exponent = b1 >> 2
                mantissa = ((b1 & 3) << 16) | (b2 << 8) | b3
                # One unpack for all of them: a REMB may list 255, read one by one they were its whole cost.
                ssrcs = struct.unpack_from(f"!{min(num, (end - fci - 8) // 4)}I", data, fci + 8)
                out.append(Remb(ssrc, mantissa << exponent, ssrcs))
        pos = end
    return out


def _header(pt: int, count: int, body_len: int) -> bytes:
    return struct.pack("!BBH", 0x80 | count, pt, (body_len + 4) // 4 - 1)


def _block_bytes(b: ReportBlock) -> bytes:
    lost = max(-0x800000, min(0x7FFFFF, b.packets_lost)).to_bytes(3, "big", signed=True)
    return _BLOCK.pack(b.ssrc, b.fraction_lost, lost, b.highest_seq, b.jitter, b.lsr, b.dlsr)


def build_rr(ssrc: int, reports: tuple[ReportBlock, ...]) -> bytes:
    body = struct.pack("!I", ssrc) + b"".join(_block_bytes(r) for r in reports)
    return _header(RR, len(reports), len(body)) + body


def build_sr(sr: SenderReport) -> bytes:
    body = struct.pack("!IQIII", sr.ssrc, sr.ntp, sr.rtp_ts, sr.packets & 0xFFFFFFFF, sr.octets & 0xFFFFFFFF)
    body += b"".join(_block_bytes(r) for r in sr.reports)
    return _header(SR, len(sr.reports), len(body)) + body


def build_pli(ssrc: int, media_ssrc: int) -> bytes:
    return _header(PSFB, FMT_PLI, 8) + struct.pack("!II", ssrc, media_ssrc)


def build_nack(ssrc: int, media_ssrc: int, lost: list[int] | tuple[int, ...]) -> bytes:
    """One item per run of up to 17 numbers, in the order they follow the first one (wrapping at 65536)."""
    fci = bytearray()
    if lost:
        first = lost[0]
        pid = -1
        blp = 0
        # Sorted once and walked once: a NACK passed on for hundreds of numbers must not cost their square.
        for seq in sorted(set(lost), key=lambda s: (s - first) & 0xFFFF):
            if pid >= 0:
                gap = (seq - pid - 1) & 0xFFFF
                if gap < 16:
                    blp |= 1 << gap
                    continue
                fci += struct.pack("!HH", pid, blp)
            pid, blp = seq, 0
        fci += struct.pack("!HH", pid, blp)
    body = struct.pack("!II", ssrc, media_ssrc) + bytes(fci)
    return _header(RTPFB, FMT_NACK, len(body)) + body


def build_remb(ssrc: int, bitrate: int, ssrcs: tuple[int, ...]) -> bytes:
    exponent = 0
    mantissa = max(0, bitrate)
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exponent += 1
    fci = b"REMB" + struct.pack(
        "!BBBB", len(ssrcs), (exponent << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF, mantissa & 0xFF
    )
    fci += b"".join(struct.pack("!I", s) for s in ssrcs)
    body = struct.pack("!II", ssrc, 0) + fci
    return _header(PSFB, FMT_APP, len(body)) + body


def is_rtcp(packet: bytes) -> bool:
    """RTCP and RTP share the port (rtcp-mux); RTCP packet types 192-223 sit where RTP has M+PT."""
    return len(packet) >= 2 and 192 <= packet[1] <= 223
