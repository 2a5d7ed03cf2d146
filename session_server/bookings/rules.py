"""Booking rules: availability, slots and the state machines. Pure: no I/O, no clock (`now` is passed).

Everything that decides whether a booking or a state change may happen lives here; the store only turns
these decisions into atomic Redis writes with their events.

Availability is entered in the practitioner's own zone (weekly windows plus dated exceptions) and
expanded here into UTC intervals, one local date at a time, so a window of 09:00–17:00 stays 09:00–17:00
on the wall clock across a daylight-saving change while its UTC instants move. Slots are laid on a grid
from each window's start, and windows are merged only within a local date, so a date's grid depends on
that date's hours alone, never on the day the availability was published. A wall-clock time that does
not exist (inside a spring-forward gap) resolves with the offset in force before the change, which moves
it forward by the gap; an ambiguous one (autumn fold) takes its first occurrence.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .errors import AvailabilityError as AvailabilityError  # what check_spec raises, by kind
from .errors import (
    BadRange,
    BadWindow,
    BeyondHorizon,
    ConflictingException,
    DateInPast,
    RangeTooLong,
    TooLateToCancel,
)
from .model import BookingStatus

DAY_S = 86400
MAX_SESSION_MINUTES = 240
MAX_SLOT_RANGE_DAYS = 62


class Specialty(enum.StrEnum):
    PSYCHOLOGIST = "psychologist"
    PSYCHIATRIST = "psychiatrist"
    DIETITIAN = "dietitian"
    SPEECH_THERAPIST = "speech_therapist"


class PractitionerStatus(enum.StrEnum):
    PENDING_REVIEW = "pending_review"
    ACTIVE = "active"
    SUSPENDED = "suspended"


# --- state machines ------------------------------------------------------------------------------

PRACTITIONER_TRANSITIONS: Mapping[PractitionerStatus, frozenset[PractitionerStatus]] = {
    PractitionerStatus.PENDING_REVIEW: frozenset({PractitionerStatus.ACTIVE}),
    PractitionerStatus.ACTIVE: frozenset({PractitionerStatus.SUSPENDED}),
    PractitionerStatus.SUSPENDED: frozenset({PractitionerStatus.ACTIVE}),
}

_B = BookingStatus
# A session's verdict (session_server/outages) moves the booking on from `confirmed` (no-shows; an
# interruption or an early end when the parties never were in the room together) or from `in_session`.
BOOKING_TRANSITIONS: Mapping[BookingStatus, frozenset[BookingStatus]] = {
    _B.CONFIRMED: frozenset({_B.CANCELLED, _B.IN_SESSION, _B.CLIENT_NO_SHOW, _B.PRACTITIONER_NO_SHOW,
                             _B.BOTH_NO_SHOW, _B.INTERRUPTED, _B.ENDED_EARLY}),
    _B.IN_SESSION: frozenset({_B.COMPLETED, _B.INTERRUPTED, _B.ENDED_EARLY}),
    _B.INTERRUPTED: frozenset({_B.RESCHEDULED}),
    _B.CANCELLED: frozenset(),
    _B.COMPLETED: frozenset(),
    _B.RESCHEDULED: frozenset(),
    _B.CLIENT_NO_SHOW: frozenset(),
    _B.PRACTITIONER_NO_SHOW: frozenset(),
    _B.BOTH_NO_SHOW: frozenset(),
    _B.ENDED_EARLY: frozenset(),
}
# The statuses a session's verdict moves a booking to: each is written once, with `session.verdict`.
VERDICT_STATES: frozenset[BookingStatus] = frozenset({
    _B.COMPLETED, _B.INTERRUPTED, _B.CLIENT_NO_SHOW, _B.PRACTITIONER_NO_SHOW, _B.BOTH_NO_SHOW, _B.ENDED_EARLY})

# States whose booking no longer holds its time range: the slot is free again for everyone.
RELEASING_STATES: frozenset[BookingStatus] = frozenset({_B.CANCELLED, _B.RESCHEDULED})


def booking_sources(to: BookingStatus) -> frozenset[BookingStatus]:
    """The states from which a booking may move to `to`."""
    return frozenset(s for s, targets in BOOKING_TRANSITIONS.items() if to in targets)


def practitioner_sources(to: PractitionerStatus) -> frozenset[PractitionerStatus]:
    return frozenset(s for s, targets in PRACTITIONER_TRANSITIONS.items() if to in targets)


def can_transition(current: BookingStatus, to: BookingStatus) -> bool:
    return to in BOOKING_TRANSITIONS[current]


# --- availability --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    weekday: int  # 0 Monday .. 6 Sunday
    start: time
    end: time | None  # None: midnight at the end of the day


@dataclass(frozen=True, slots=True)
class DatedException:
    day: date
    blocked: bool = False
    start: time | None = None
    end: time | None = None  # None with a start: midnight at the end of the day


@dataclass(frozen=True, slots=True)
class AvailabilitySpec:
    weekly: tuple[WeeklyWindow, ...] = ()
    exceptions: tuple[DatedException, ...] = ()


def _utc(day: date, at: time | None, zone: ZoneInfo) -> int:
    if at is None:
        local = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    else:
        local = datetime.combine(day, at, tzinfo=zone)
    return int(local.astimezone(UTC).timestamp())


def local_today(now: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(now, UTC).astimezone(zone).date()


def check_spec(spec: AvailabilitySpec, *, now: int, zone: ZoneInfo, horizon_days: int) -> None:
    """Refuse windows that end before they start and exceptions outside [today, today + horizon]."""
    for w in spec.weekly:
        if not 0 <= w.weekday <= 6:
            raise BadWindow("weekday must be 0 (Monday) to 6 (Sunday)")
        if w.end is not None and w.end <= w.start:
            raise BadWindow("a window must end after it starts")
    today = local_today(now, zone)
    last = today + timedelta(days=horizon_days)
    for e in spec.exceptions:
        if e.day < today:
            raise DateInPast(f"the exception date {e.day} is in the past")
        if e.day > last:
            raise BeyondHorizon(f"availability is published at most {horizon_days} days ahead")
        if e.blocked and e.start is not None:
            raise BadWindow("a blocked day has no window")
        if not e.blocked and e.start is None:
            raise BadWindow("an exception is either blocked or has a window")
        if e.start is not None and e.end is not None and e.end <= e.start:
            raise BadWindow("a window must end after it starts")
    blocked = {e.day for e in spec.exceptions if e.blocked}
    for e in spec.exceptions:
        if not e.blocked and e.day in blocked:
            raise ConflictingException(f"{e.day} is both blocked and given a window: say which one")


def merge(intervals: Iterable[tuple[int, int]], *, join_touching: bool = True) -> list[tuple[int, int]]:
    """Sorted, non-overlapping intervals covering the same instants.

    Touching intervals (one ends where the next starts) are joined unless `join_touching` is false.
    """
    out: list[tuple[int, int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and (start < out[-1][1] or (join_touching and start == out[-1][1])):
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def expand(spec: AvailabilitySpec, *, now: int, zone: ZoneInfo, horizon_days: int) -> list[tuple[int, int]]:
    """The UTC windows (epoch seconds) the spec publishes from today to `now + horizon`.

    Slots are laid from each window's start, so a window must depend only on its own local day as
    entered, never on when the spec is published. Hence the windows of one local date (weekly ones and
    the date's extras) are merged with each other, overlapping or touching, *before* anything is cut,
    and windows of different dates stay apart even where they touch at midnight: otherwise a practitioner
    available round the clock would get one long window from the publication day on, and every later
    day's grid would shift with the publication day (1,440 minutes is not a multiple of 50). A window
    keeps its entered start (today's is not clipped to `now`); only the last one's end is cut at the
    horizon. Windows of different dates could overlap only if a clock change skipped across midnight;
    they would then be joined, as the booking script relies on published windows never overlapping.
    """
    today = local_today(now, zone)
    horizon_end = now + horizon_days * DAY_S
    blocked = {e.day for e in spec.exceptions if e.blocked}
    extra: dict[date, list[DatedException]] = {}
    for e in spec.exceptions:
        if not e.blocked:
            extra.setdefault(e.day, []).append(e)
    found: list[tuple[int, int]] = []
    for offset in range(horizon_days + 1):
        day = today + timedelta(days=offset)
        if day in blocked:
            continue
        own = [(_utc(day, w.start, zone), _utc(day, w.end, zone)) for w in spec.weekly
               if w.weekday == day.weekday()]
        for e in extra.get(day, ()):
            assert e.start is not None
            own.append((_utc(day, e.start, zone), _utc(day, e.end, zone)))
        found += [(s, min(e, horizon_end)) for s, e in merge(own) if e > now and s < horizon_end]
    return merge(found, join_touching=False)


# --- slots ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotWindow:
    """The bounds within which a slot may start: lead time and horizon applied to `now`."""

    earliest: int
    latest: int

    @classmethod
    def at(cls, now: int, *, lead_time_s: int, horizon_days: int) -> SlotWindow:
        return cls(now + lead_time_s, now + horizon_days * DAY_S)


def slots(windows: Iterable[tuple[int, int]], busy: Iterable[tuple[int, int]], *, session_s: int,
          start: int, end: int, bounds: SlotWindow) -> list[tuple[int, int]]:
    """Free slots of `session_s` starting in [start, end).

    Slots are laid on a grid from each window's start, so every client sees the same slot boundaries;
    a slot must fit in its window, start within the bounds, and overlap no busy interval.
    """
    busy_sorted = sorted(busy)
    out: list[tuple[int, int]] = []
    lo, hi = max(start, bounds.earliest), min(end, bounds.latest + 1)
    for w_start, w_end in windows:
        t = w_start
        if t < lo:
            t += -(-(lo - t) // session_s) * session_s
        while t + session_s <= w_end and t < hi:
            if not any(b_start < t + session_s and b_end > t for b_start, b_end in busy_sorted):
                out.append((t, t + session_s))
            t += session_s
    return out


def is_slot(windows: Iterable[tuple[int, int]], starts_at: int, *, session_s: int) -> bool:
    """Does a slot start at `starts_at` on the grid of one of the windows, and fit in it?"""
    return any(w_start <= starts_at and starts_at + session_s <= w_end
               and (starts_at - w_start) % session_s == 0 for w_start, w_end in windows)


def check_slot_range(start: int, end: int) -> None:
    if end <= start:
        raise BadRange("the range must end after it starts")
    if end - start > MAX_SLOT_RANGE_DAYS * DAY_S:
        raise RangeTooLong(f"ask for at most {MAX_SLOT_RANGE_DAYS} days of slots")


# --- cancellation --------------------------------------------------------------------------------


def check_cancellation(status: BookingStatus, starts_at: int, *, by: str, now: int) -> None:
    """A party may cancel a confirmed booking until its session starts; after that only an admin may
    (the session may be under way: support settles it)."""
    if by != "admin" and now >= starts_at and status is BookingStatus.CONFIRMED:
        raise TooLateToCancel("the session has already started; contact support")


def overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end
