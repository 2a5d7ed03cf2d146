"""One view of a Redis outage, shared by every part of the server that sees Redis fail.

Without it each background loop, request and socket logged its own traceback for the same cause
(hundreds a minute). Now an outage writes one ERROR line when it starts, at most one WARNING summary
every `summary_every_s` while it lasts, and one WARNING line when Redis answers again; the failures in
between are counted, not logged. A probe (`probe`, run every second by the lifespan) notices both the
start of an outage nobody else has met yet and its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.exceptions
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

REDIS_FAILURES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def is_redis_failure(exc: BaseException) -> bool:
    """True for the errors that mean "Redis does not answer" (not a wrong command, not a script error)."""
    return isinstance(exc, REDIS_FAILURES)


class RedisOutage:
    def __init__(self, *, monotonic: Callable[[], float], up: Gauge, outages: Counter,
                 summary_every_s: float = 10.0) -> None:
        self._monotonic = monotonic
        self._up = up
        self._outages = outages
        self._summary_every_s = summary_every_s
        self._since: float | None = None
        self._last_summary = 0.0
        self._failures = 0
        self._unsummarised = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, where: str, exc: BaseException) -> None:
        """Redis did not answer `where` (a task's name, a route): start the outage or count the failure."""
        now = self._monotonic()
        self._up.set(0)
        if self._since is None:
            self._since = self._last_summary = now
            self._failures, self._unsummarised = 1, 0
            self._outages.inc()
            log.error("redis outage began: %s did not get an answer (%s); requests get 503 redis_unavailable "
                      "until it answers, and further failures are summarised every %.0f s",
                      where, type(exc).__name__, self._summary_every_s)
            return
        self._failures += 1
        self._unsummarised += 1
        if now - self._last_summary >= self._summary_every_s:
            log.warning("redis still unavailable after %.0f s: %d failed call(s) since the last report",
                        now - self._since, self._unsummarised)
            self._last_summary, self._unsummarised = now, 0

    def report(self, where: str, exc: BaseException) -> bool:
        """For `TaskSupervisor(report=...)`: account for a Redis failure here (True), leave others (False)."""
        if not is_redis_failure(exc):
            return False
        self.failed(where, exc)
        return True

    def answered(self) -> None:
        """Redis answered: end the outage if there was one."""
        self._up.set(1)
        if self._since is None:
            return
        log.warning("redis outage ended after %.1f s (%d failed call(s))", self._monotonic() - self._since,
                    self._failures)
        self._since = None

    async def probe(self, ping: Callable[[], Awaitable[object]], timeout_s: float) -> None:
        """One check of Redis, for a periodic task: it never raises for a Redis failure."""
        try:
            await asyncio.wait_for(ping(), timeout_s)
        except (*REDIS_FAILURES, OSError, TimeoutError) as exc:
            self.failed("the health probe", exc)
            return
        self.answered()
