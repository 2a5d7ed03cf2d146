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
                for i in range(fci, end - 3, 4):
                    pid, blp = struct.unpack_from("!HH", data, i)
                    lost.append(pid)
                    lost.extend((pid + b + 1) & 0xFFFF for b in range(16) if blp >> b & 1)
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
                ssrcs = tuple(
                    struct.unpack_from("!I", data, fci + 8 + 4 * i)[0] for i in range(num) if fci + 12 + 4 * i <= end
                )
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
    fci = bytearray()
    pending = sorted(set(lost), key=lambda s: (s - lost[0]) & 0xFFFF) if lost else []
    while pending:
        pid = pending.pop(0)
        blp = 0
        rest = []
        for s in pending:
            d = (s - pid - 1) & 0xFFFF
            if d < 16:
                blp |= 1 << d
            else:
                rest.append(s)
        pending = rest
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
