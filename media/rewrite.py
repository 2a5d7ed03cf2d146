"""Pure RTP arithmetic of forwarding: SSRC, sequence number, timestamp and payload type per subscriber.

A subscriber sees one continuous stream per kind even when the publisher behind it changes its SSRC (a
reconnection builds a new peer connection with new SSRCs): on a source switch the offsets are re-based so
that sequence numbers continue at last+1 and timestamps advance by the wall-clock time that passed.
"""

from __future__ import annotations

import struct

SEQ_MASK = 0xFFFF
TS_MASK = 0xFFFFFFFF

_HEADER = struct.Struct("!BBHII")


def seq_newer(a: int, b: int) -> bool:
    """True if sequence number a comes after b (RFC 1982 serial arithmetic on 16 bits)."""
    return a != b and ((a - b) & SEQ_MASK) < 0x8000


class SeqTsRewriter:
    """Maps (source ssrc, seq, ts) of a publisher onto one continuous output stream."""

    __slots__ = ("_clock_rate", "_last_seq", "_last_time", "_last_ts", "_seq_off", "_source", "_ts_off")

    def __init__(self, clock_rate: int, seq_start: int = 0, ts_start: int = 0) -> None:
        self._clock_rate = clock_rate
        self._source: int | None = None
        self._seq_off = 0
        self._ts_off = 0
        # Treat the stream as if the packet before the first one was (seq_start - 1, ts_start).
        self._last_seq = (seq_start - 1) & SEQ_MASK
        self._last_ts = ts_start
        self._last_time: float | None = None

    @property
    def source(self) -> int | None:
        return self._source

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def rebase(self, source: int, seq: int, ts: int, now: float) -> None:
        """Continue the output after a new source: next seq = last+1, ts advanced by elapsed time."""
        step = 0
        if self._last_time is not None:
            step = max(1, round(max(0.0, now - self._last_time) * self._clock_rate))
        self._source = source
        self._seq_off = (self._last_seq + 1 - seq) & SEQ_MASK
        self._ts_off = (self._last_ts + step - ts) & TS_MASK

    def restart(self) -> None:
        """Re-base on the next packet even if it comes from the same source."""
        self._source = None

    def map(self, source: int, seq: int, ts: int, now: float) -> tuple[int, int]:
        if source != self._source:
            self.rebase(source, seq, ts, now)
        out_seq = (seq + self._seq_off) & SEQ_MASK
        out_ts = (ts + self._ts_off) & TS_MASK
        if seq_newer(out_seq, self._last_seq):
            self._last_seq = out_seq
            self._last_ts = out_ts
            self._last_time = now
        return out_seq, out_ts

    def map_ts(self, ts: int) -> int:
        return (ts + self._ts_off) & TS_MASK

    def unmap_seq(self, out_seq: int) -> int:
        """The publisher's sequence number behind an output one (for passing a NACK on)."""
        return (out_seq - self._seq_off) & SEQ_MASK


def header_length(packet: bytes | bytearray) -> int:
    """Length of fixed header plus CSRCs (header extension not included)."""
    return 12 + 4 * (packet[0] & 0x0F)


def strip_extension(packet: bytes) -> bytes:
    """Copy of an RTP packet without its header extension.

    Extension ids are negotiated per peer connection (and sdes:mid names the publisher's m-line), so they
    would mean something else to the subscriber; the subscriber demultiplexes by the SSRCs in its answer.
    """
    if not packet[0] & 0x10:
        return packet
    start = header_length(packet)
    if len(packet) < start + 4:
        return packet
    words = (packet[start + 2] << 8) | packet[start + 3]
    end = start + 4 + 4 * words
    return bytes((packet[0] & 0xEF,)) + packet[1:start] + packet[end:]


def patch_header(buf: bytearray, payload_type: int, seq: int, ts: int, ssrc: int) -> None:
    """Rewrite payload type (keeping the marker bit), sequence number, timestamp and SSRC in place."""
    _HEADER.pack_into(buf, 0, buf[0], (buf[1] & 0x80) | payload_type, seq, ts, ssrc)


def build_rtx(packet: bytes | bytearray, rtx_pt: int, rtx_seq: int, rtx_ssrc: int) -> bytearray:
    """RFC 4588 retransmission: same header under the RTX ssrc/pt, original seq first in the payload."""
    start = header_length(packet)
    payload_end = len(packet)
    first = packet[0]
    if first & 0x20:  # padding belongs to the original packet, not to the retransmission
        payload_end -= packet[-1]
        first &= 0xDF
    out = bytearray(packet[:start])
    out[0] = first
    out += packet[2:4]
    out += packet[start:payload_end]
    patch_header(out, rtx_pt, rtx_seq, struct.unpack_from("!I", packet, 4)[0], rtx_ssrc)
    return out


def unwrap_rtx(packet: bytes | bytearray, media_pt: int, media_ssrc: int) -> bytearray | None:
    """The original packet inside an RTX packet, or None for RTX padding-only probes."""
    start = header_length(packet)
    if packet[0] & 0x10:
        if len(packet) < start + 4:
            return None
        start += 4 + 4 * ((packet[start + 2] << 8) | packet[start + 3])
    payload_end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
    if payload_end - start < 2:
        return None
    osn = (packet[start] << 8) | packet[start + 1]
    out = bytearray(packet[:start])
    out[0] &= 0xDF
    out += packet[start + 2 : payload_end]
    patch_header(out, media_pt, osn, struct.unpack_from("!I", packet, 4)[0], media_ssrc)
    return out


class SendHistory:
    """What was sent on one output stream, by sequence number, to answer NACKs.

    Keeps the payload as received (immutable bytes, no copy) with the header fields it went out with;
    the packet is rebuilt only when a NACK asks for it. Parallel lists rather than a tuple per packet: no
    allocation the garbage collector would have to track on the forwarding path.
    """

    __slots__ = ("_packets", "_pts", "_seqs", "_size", "_tss")

    def __init__(self, size: int) -> None:
        self._size = size
        self._seqs: list[int] = [-1] * size
        self._packets: list[bytes] = [b""] * size
        self._pts: list[int] = [0] * size
        self._tss: list[int] = [0] * size

    def store(self, seq: int, packet: bytes, payload_type: int, ts: int) -> None:
        i = seq % self._size
        self._seqs[i] = seq
        self._packets[i] = packet
        self._pts[i] = payload_type
        self._tss[i] = ts

    def get(self, seq: int) -> tuple[bytes, int, int] | None:
        """(packet as received, payload type, timestamp) sent under `seq`, if still kept."""
        i = seq % self._size
        if self._seqs[i] != seq:
            return None
        return self._packets[i], self._pts[i], self._tss[i]
