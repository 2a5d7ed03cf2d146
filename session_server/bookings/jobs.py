"""Scheduled jobs of bookings: the automatic suspension of practitioners with no availability, and the
verdict of sessions once their scheduled time (and a grace for overrunning) is over.

Several server processes may share one Redis. A job runs in one process at a time: it takes a lock
(SET NX PX with a random token) and releases it with a Lua compare-and-delete, so a process whose lock
expired never deletes the lock another process now holds. The job itself is idempotent: each suspension
is a compare-and-set on the practitioner's status *and* on the `available_until` it judged, so two runs
(or a run racing a new publication of availability) never suspend twice or suspend someone who just
published.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

import redis.asyncio as aioredis

from ..clock import Clock, SystemClock
from ..errors import Conflict
from ..events import Event
from .model import BookingStatus
from .rules import DAY_S, PractitionerStatus
from .store import BookingStore, at, iso

log = logging.getLogger(__name__)

LOCK_KEY = "ss:lock:{}"
# How often a job looks at its clock to see whether its next run is due: its runs follow the app's clock
# (a test moving a ManualClock past an instant sees the job run at once), not the event loop's timers.
TICK_S = 1.0
SUSPENSION_JOB = "suspension"
COMPLETION_JOB = "completion"
# A session may run over its scheduled end: it counts as completed this long after it.
COMPLETION_GRACE_S = 15 * 60
# At its first run in a process, the completion job indexes the bookings in session that started this far
# back and are missing from its index (a process that died between a transition and its indexing).
COMPLETION_LOOKBACK_S = 7 * DAY_S

UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLock:
    """A lease held by one process; `release` deletes it only while it is still ours."""

    def __init__(self, redis: aioredis.Redis, name: str, *, ttl_s: float) -> None:
        self.redis = redis
        self.key = LOCK_KEY.format(name)
        self.ttl_ms = int(ttl_s * 1000)
        self.token = secrets.token_hex(16)
        self._unlock = redis.register_script(UNLOCK_LUA)

    async def acquire(self) -> bool:
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def release(self) -> bool:
        return bool(await self._unlock(keys=[self.key], args=[self.token]))


def idle_since(activated_at: int, available_until: int) -> int:
    """Since when a practitioner has had no published availability (pure)."""
    return max(activated_at, available_until)


def is_idle(activated_at: int, available_until: int, now: int, idle_days: int) -> bool:
    return now - idle_since(activated_at, available_until) >= idle_days * DAY_S


class _OneRunnerAtATime:
    """A job that the app's task supervisor runs every `interval_s` (`step`), in one process at a time
    (under its lock)."""

    lock_name: ClassVar[str]
    store: BookingStore
    interval_s: float
    lock_ttl_s: float
    clock: Clock
    _due: float | None  # the clock's monotonic time of the next run

    async def run_once(self, now: int | None = None) -> list[str] | None:
        """The ids the run changed; None if another process holds the lock."""
        lock = RedisLock(self.store.redis, self.lock_name, ttl_s=self.lock_ttl_s)
        if not await lock.acquire():
            return None
        try:
            return await self._work(int(self.clock.now()) if now is None else now)
        finally:
            await lock.release()

    async def _work(self, now: int) -> list[str]:
        raise NotImplementedError

    @property
    def tick_s(self) -> float:
        return min(TICK_S, self.interval_s)

    async def step(self) -> None:
        """The supervisor's periodic step: a run once `interval_s` of the clock has passed since the last."""
        now = self.clock.monotonic()
        if self._due is not None and now < self._due:
            return
        self._due = now + self.interval_s  # a failed run is not retried before its next turn
        await self.run_once()


@dataclass
class SuspensionJob(_OneRunnerAtATime):
    """Suspends every active practitioner idle for `idle_days`."""

    lock_name = SUSPENSION_JOB
    store: BookingStore
    idle_days: int
    interval_s: float = 3600.0
    lock_ttl_s: float = 300.0
    clock: Clock = field(default_factory=SystemClock)
    _due: float | None = field(default=None, init=False)

    async def _work(self, now: int) -> list[str]:
        suspended = []
        for pid in await self.store.practitioner_ids():
            p = await self.store.practitioner(pid)
            if p is None or p.status is not PractitionerStatus.ACTIVE:
                continue
            if not is_idle(p.activated_at, p.available_until, now, self.idle_days):
                continue
            event = Event("practitioner.suspended",
                          {"practitioner_id": pid, "reason": "no_availability", "automatic": True, "by": None,
                           "idle_since": iso(idle_since(p.activated_at, p.available_until)),
                           "idle_days": self.idle_days}, time=at(now))
            try:
                await self.store.set_practitioner_status(
                    pid, PractitionerStatus.SUSPENDED, event, now, "no_availability",
                    guard=("available_until", str(p.available_until)))
            except Conflict:
                continue  # changed meanwhile (published, or already suspended): nothing to do
            suspended.append(pid)
        if suspended:
            log.info("suspended %d practitioner(s) with no availability", len(suspended))
        return suspended


# Asks the session's judge (the outages feature, through `BookingService.judge`) to decide and record a
# verdict for a booking now: whether this call wrote one.
Judge = Callable[[str, int], Awaitable[bool]]
# A booking still `confirmed` this long after its start is judged too (a no-show, or parties who never met):
# the sweep of the job's start covers the bookings of this period that the processes missed while down.
NO_SHOW_LOOKBACK_S = 2 * DAY_S


@dataclass
class CompletionJob(_OneRunnerAtATime):
    """Has the verdict of every session written once its time is up: each booking in session once its
    scheduled end and the grace are past, and each booking still `confirmed` once its no-show time is
    past. The verdict comes from the session's timeline (the judge); the job never completes a booking
    by itself, and a booking whose verdict is written leaves the index in the same script. Live sessions
    get their verdict earlier, from the outages feature's own watch; this job is the durable backstop,
    which also writes a verdict missed while every process was down."""

    lock_name = COMPLETION_JOB
    store: BookingStore
    judge: Judge | None = None
    grace_s: int = COMPLETION_GRACE_S
    no_show_s: int = 15 * 60
    interval_s: float = 60.0
    lock_ttl_s: float = 300.0
    clock: Clock = field(default_factory=SystemClock)
    _due: float | None = field(default=None, init=False)
    _indexed: bool = field(default=False, init=False)

    async def _work(self, now: int) -> list[str]:
        if not self._indexed:
            missing = await self.store.index_in_session(now - COMPLETION_LOOKBACK_S, now)
            if missing:
                log.warning("indexed %d booking(s) in session that the completion index had missed", missing)
            self._indexed = True
        if self.judge is None:
            return []  # without the outages feature nothing decides a verdict: nothing is completed blindly
        decided = []
        for booking_id in await self.store.in_session_ended_by(now - self.grace_s):
            booking = await self.store.booking(booking_id)
            if booking is None or booking.status is not BookingStatus.IN_SESSION:
                await self.store.forget_in_session(booking_id)
                continue
            if await self.judge(booking_id, now):
                decided.append(booking_id)
        for booking_id in await self.store.confirmed_started_between(now - NO_SHOW_LOOKBACK_S,
                                                                     now - self.no_show_s):
            if await self.judge(booking_id, now):
                decided.append(booking_id)
        if decided:
            log.info("wrote the verdict of %d session(s)", len(decided))
        return decided
