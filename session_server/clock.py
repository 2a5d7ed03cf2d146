"""The one source of time: the lifespan builds a clock and passes it down to every service and job.

Rules never read a clock (they take `now`); services, jobs and edges read this one, so a test can run
the real HTTP and WebSocket edges at any instant by giving the app a `ManualClock`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall time, in seconds since 1970 (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: for intervals, timeouts and rates."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told: `set` jumps to an instant, `advance` moves both clocks on."""

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._mono = 1_000.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def set(self, instant: float) -> None:
        if instant > self._now:
            self._mono += instant - self._now
        self._now = float(instant)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        self._mono += seconds
