"""Pure quality classification: RTT, loss and jitter of one direction summarised in one word."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Quality(StrEnum):
    EXCELLENT = "excellent"
    GOOD = "good"
    POOR = "poor"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class DirectionStats:
    """One direction of one participant's media: 'up' is participant→server, 'down' server→participant."""

    rtt_ms: float | None
    loss: float  # fraction 0..1
    jitter_ms: float
    bitrate_bps: float
    receiving: bool  # any media arrived in the interval


# (max rtt ms, max loss fraction, max jitter ms): the thresholds telehealth video is usually judged by —
# above ~300 ms RTT conversation overlaps, above ~5 % loss video freezes.
EXCELLENT = (150.0, 0.01, 20.0)
GOOD = (300.0, 0.05, 50.0)


def classify(stats: DirectionStats) -> Quality:
    if not stats.receiving:
        return Quality.LOST
    rtt = stats.rtt_ms if stats.rtt_ms is not None else 0.0
    for limit, verdict in ((EXCELLENT, Quality.EXCELLENT), (GOOD, Quality.GOOD)):
        if rtt <= limit[0] and stats.loss <= limit[1] and stats.jitter_ms <= limit[2]:
            return verdict
    return Quality.POOR


def worst(*qualities: Quality) -> Quality:
    order = [Quality.EXCELLENT, Quality.GOOD, Quality.POOR, Quality.LOST]
    return max(qualities, key=order.index)


class PoorStreak:
    """Suggest audio only after `limit` consecutive poor (or lost) reports; one good report resets."""

    __slots__ = ("_count", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0

    def observe(self, quality: Quality) -> bool:
        if quality in (Quality.POOR, Quality.LOST):
            self._count += 1
        else:
            self._count = 0
        return self._count >= self._limit
