"""Pure keyframe-request rate limiting, one gate per published video track.

Every trigger (a new subscriber, a PLI or FIR from any subscriber, a subscriber leaving audio-only mode)
asks the gate; at most one request per interval reaches the publisher. A trigger inside the interval is not
dropped but remembered, and `due` releases it once the interval is over, so a late joiner always gets its
keyframe.
"""

from __future__ import annotations


class KeyframeGate:
    __slots__ = ("_last", "_min_interval", "_pending")

    def __init__(self, min_interval_s: float) -> None:
        self._min_interval = min_interval_s
        self._last: float | None = None
        self._pending = False

    def request(self, now: float) -> bool:
        """A keyframe is wanted: True if a request should be sent to the publisher now."""
        if self._last is None or now - self._last >= self._min_interval:
            self._last = now
            self._pending = False
            return True
        self._pending = True
        return False

    def due(self, now: float) -> bool:
        """True when a postponed request should be sent now (called from a periodic tick)."""
        if self._pending and self._last is not None and now - self._last >= self._min_interval:
            self._last = now
            self._pending = False
            return True
        return False

    @property
    def pending(self) -> bool:
        return self._pending
