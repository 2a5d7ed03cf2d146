"""Pure receive statistics of one inbound RTP stream (RFC 3550 appendix A.3 and A.8)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    expected: int
    received: int
    bytes: int
    jitter_s: float


class InboundStats:
    __slots__ = ("_base", "_clock_rate", "_cycles", "_jitter", "_max_seq", "_transit", "bytes", "received")

    def __init__(self, clock_rate: int) -> None:
        self._clock_rate = clock_rate
        self._base: int | None = None
        self._max_seq = 0
        self._cycles = 0
        self._transit: float | None = None
        self._jitter = 0.0
        self.received = 0
        self.bytes = 0

    def update(self, seq: int, ts: int, arrival_s: float, size: int) -> None:
        self.received += 1
        self.bytes += size
        if self._base is None:
            self._base = seq
            self._max_seq = seq
        else:
            delta = (seq - self._max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self._max_seq:
                    self._cycles += 0x10000
                self._max_seq = seq
        transit = arrival_s * self._clock_rate - ts
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < self._clock_rate * 10:  # a timestamp jump (new source) is not jitter
                self._jitter += (d - self._jitter) / 16
        self._transit = transit

    def snapshot(self) -> StreamSnapshot:
        expected = 0 if self._base is None else self._cycles + self._max_seq - self._base + 1
        return StreamSnapshot(expected, self.received, self.bytes, self._jitter / self._clock_rate)

    def reset_source(self) -> None:
        """A new SSRC (reconnection): sequence numbers start over."""
        self._base = None
        self._cycles = 0
        self._transit = None


def interval_loss(prev: StreamSnapshot | None, cur: StreamSnapshot) -> float:
    """Fraction of packets lost between two snapshots (0 when nothing was expected)."""
    exp = cur.expected - (prev.expected if prev else 0)
    got = cur.received - (prev.received if prev else 0)
    if exp <= 0:
        return 0.0
    return max(0.0, min(1.0, (exp - got) / exp))
