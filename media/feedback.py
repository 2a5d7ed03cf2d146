"""Pure bounds on what one participant's RTCP feedback can make the server do.

A participant's RTCP is authenticated, yet it is theirs to write: a NACK can list every sequence number
there is, a REMB can name one SSRC 255 times, and nothing stops them sending hundreds a second. Each of
these used to cost the server work in proportion to what the packet claimed (a NACK flood made it resend
hundreds of thousands of packets, a REMB flood filled a core), and the other rooms of the process paid for
it. The rules here cap that work, as libwebrtc and mediasoup cap theirs:

- a participant's RTCP is rate limited (`FeedbackLimiter`): a token bucket of compound packets;
- one compound packet is reduced to what it means (`digest`): duplicate SSRCs, report blocks, keyframe
  requests and sequence numbers collapse to one each, and a NACK is read up to `MAX_NACK_ITEMS` items;
- a NACKed number is answered only from the send history, at most once per round trip, and within a
  retransmission budget that is a share of the stream's own rate (`Retransmitter`, the libwebrtc
  `RtpPacketHistory` and retransmission rate limiter, mediasoup's `RtpStreamSend` "resent in the last RTT");
- a REMB's bitrate is clamped to what a video stream can mean, and at most one per stream per interval
  reaches the publisher (`RembGate`); a value held back is sent when the interval ends, never lost.

No I/O, no clock: every decision takes `now`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from media import rtcp

MAX_NACK_ITEMS = rtcp.MAX_NACK_ITEMS
# A REMB bitrate outside this range means nothing a video stream can do: clamped (bit/s).
REMB_MIN_BPS = 30_000
REMB_MAX_BPS = 20_000_000
# The round trip used to space the answers to one number when none has been measured yet, and the range
# a measured one is held to (an RTT is the subscriber's to influence through its own reports).
DEFAULT_RTT_S = 0.1
MIN_RESEND_INTERVAL_S = 0.02
MAX_RESEND_INTERVAL_S = 1.0

SEQ_MASK = 0xFFFF


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last: float | None = None

    def take(self, now: float, amount: float = 1.0) -> bool:
        if self._last is not None and now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens < amount:
            return False
        self._tokens -= amount
        return True


class FeedbackLimiter(TokenBucket):
    """One participant's RTCP compound packets: what is over the rate is dropped before it is acted on."""


@dataclass(slots=True)
class Digest:
    """One compound RTCP packet, reduced to what it asks for."""

    sender_reports: dict[int, rtcp.SenderReport] = field(default_factory=dict)  # by SSRC: the last one
    report_blocks: dict[int, rtcp.ReportBlock] = field(default_factory=dict)  # by SSRC: the last one
    keyframes: set[int] = field(default_factory=set)  # media SSRCs a PLI or FIR asks a keyframe of
    nacks: dict[int, list[int]] = field(default_factory=dict)  # media SSRC -> distinct numbers, in order
    remb: rtcp.Remb | None = None  # the last REMB, its SSRCs distinct and its bitrate clamped
    remb_clamped: bool = False  # ... its bitrate was out of range
    collapsed: int = 0  # duplicate items that were dropped


def digest(packets: Iterable[rtcp.Rtcp]) -> Digest:
    d = Digest()
    seen_lost: dict[int, set[int]] = {}
    for packet in packets:
        if isinstance(packet, rtcp.SenderReport):
            d.collapsed += packet.ssrc in d.sender_reports
            d.sender_reports[packet.ssrc] = packet
            _blocks(d, packet.reports)
        elif isinstance(packet, rtcp.ReceiverReport):
            _blocks(d, packet.reports)
        elif isinstance(packet, rtcp.KeyframeRequest):
            d.collapsed += packet.media_ssrc in d.keyframes
            d.keyframes.add(packet.media_ssrc)
        elif isinstance(packet, rtcp.Nack):
            seen = seen_lost.setdefault(packet.media_ssrc, set())
            kept = d.nacks.setdefault(packet.media_ssrc, [])
            for seq in packet.lost:
                if seq in seen:
                    d.collapsed += 1
                else:
                    seen.add(seq)
                    kept.append(seq)
        elif isinstance(packet, rtcp.Remb):
            d.collapsed += (d.remb is not None) + len(packet.ssrcs) - len(set(packet.ssrcs))
            bitrate = clamp_bitrate(packet.bitrate)
            d.remb_clamped = bitrate != packet.bitrate
            d.remb = rtcp.Remb(packet.ssrc, bitrate, tuple(dict.fromkeys(packet.ssrcs)))
    return d


def _blocks(d: Digest, blocks: tuple[rtcp.ReportBlock, ...]) -> None:
    for block in blocks:
        d.collapsed += block.ssrc in d.report_blocks
        d.report_blocks[block.ssrc] = block


def clamp_bitrate(bps: int) -> int:
    return max(REMB_MIN_BPS, min(REMB_MAX_BPS, bps))


class RembGate:
    """At most one REMB per interval for one stream; the latest value held back is released when due."""

    __slots__ = ("_interval", "_last", "_pending")

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._last: float | None = None
        self._pending: int | None = None

    def offer(self, bitrate: int, now: float) -> int | None:
        """A REMB arrived: the bitrate to send to the publisher now, or None if it is held back."""
        if self._last is None or now - self._last >= self._interval:
            self._last = now
            self._pending = None
            return bitrate
        self._pending = bitrate
        return None

    def due(self, now: float) -> int | None:
        """The held-back bitrate once the interval is over (called from the periodic tick)."""
        if self._pending is not None and self._last is not None and now - self._last >= self._interval:
            bitrate, self._pending = self._pending, None
            self._last = now
            return bitrate
        return None


class History(Protocol):
    def get(self, seq: int) -> tuple[bytes, int, int] | None: ...


@dataclass(slots=True)
class NackPlan:
    """What to do about one subscriber's NACK of one stream."""

    resend: list[tuple[int, bytes, int, int]] = field(default_factory=list)  # (seq, packet, pt, ts)
    pass_on: list[int] = field(default_factory=list)  # numbers inside the history window we never had
    unknown: int = 0  # numbers outside the history window: never sent, or long gone
    repeated: int = 0  # already answered (or passed on) within the round trip
    over_budget: int = 0  # the retransmission budget was spent: this one and the rest of the NACK, unread


def resend_interval(rtt_s: float | None) -> float:
    if rtt_s is None:
        return DEFAULT_RTT_S
    return min(MAX_RESEND_INTERVAL_S, max(MIN_RESEND_INTERVAL_S, rtt_s))


class Retransmitter:
    """The NACK answers of one output video stream.

    The budget is a token bucket of payload bytes filled by the stream itself: every payload byte forwarded
    adds `share` tokens, at most `burst_bytes` are saved up, and a retransmission spends its payload size.
    So over any stretch of time the retransmitted payload is at most `share` times the payload forwarded in
    it, plus `burst_bytes`; once it is spent, the rest of a NACK is not even read. Each number is answered
    (or passed on to the publisher) at most once per round trip, and only if it lies within the last
    `history_size` numbers sent.
    """

    __slots__ = ("_answered", "_burst", "_credited", "_seqs", "_share", "_size", "_tokens")

    def __init__(self, history_size: int, share: float, burst_bytes: int) -> None:
        self._size = history_size
        self._share = share
        self._burst = float(burst_bytes)
        self._tokens = 0.0
        self._credited = 0  # forwarded payload bytes already turned into tokens
        self._seqs: list[int] = [-1] * history_size  # which number each slot's time belongs to
        self._answered: list[float] = [0.0] * history_size

    @property
    def tokens(self) -> float:
        return self._tokens

    def credit(self, forwarded_octets: int) -> None:
        """The stream has now forwarded `forwarded_octets` payload bytes in all."""
        gained = forwarded_octets - self._credited
        if gained > 0:
            self._tokens = min(self._burst, self._tokens + gained * self._share)
        self._credited = forwarded_octets

    def plan(
        self,
        lost: Sequence[int],
        *,
        now: float,
        rtt_s: float | None,
        newest: int,
        sent: int,
        forwarded_octets: int,
        history: History | None,
    ) -> NackPlan:
        """`newest` is the last number sent, `sent` how many were sent in all (the window can be no longer)."""
        self.credit(forwarded_octets)
        plan = NackPlan()
        interval = resend_interval(rtt_s)
        window = min(self._size, sent)
        size = self._size
        seqs, answered = self._seqs, self._answered
        tokens = self._tokens
        resend, pass_on = plan.resend, plan.pass_on
        unknown = repeated = over_budget = 0
        for i, seq in enumerate(lost):  # a hostile NACK names hundreds of numbers: locals only in this loop
            if (newest - seq) & SEQ_MASK >= window:
                unknown += 1
                continue
            slot = seq % size
            if seqs[slot] == seq and now - answered[slot] < interval:
                repeated += 1
                continue
            kept = history.get(seq) if history is not None else None
            if kept is None:
                pass_on.append(seq)
            else:
                cost = len(kept[0]) - 10  # payload plus the 2-byte original sequence number, minus the header
                if cost > tokens:
                    # The budget is spent: the rest of this NACK is not read (the subscriber asks again).
                    over_budget += len(lost) - i
                    break
                tokens -= cost
                resend.append((seq, *kept))
            seqs[slot] = seq
            answered[slot] = now
        self._tokens = tokens
        plan.unknown, plan.repeated, plan.over_budget = unknown, repeated, over_budget
        return plan
