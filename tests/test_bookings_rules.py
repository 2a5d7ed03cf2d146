"""Availability, slots and state machines as pure rules: wall-clock windows, UTC instants, DST, horizon."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from session_server.bookings.model import BookingStatus
from session_server.bookings.rules import (
    BOOKING_TRANSITIONS,
    PRACTITIONER_TRANSITIONS,
    AvailabilityError,
    AvailabilitySpec,
    DatedException,
    PractitionerStatus,
    SlotWindow,
    WeeklyWindow,
    can_transition,
    check_slot_range,
    check_spec,
    expand,
    is_slot,
    slots,
)

PARIS = ZoneInfo("Europe/Paris")
ALGIERS = ZoneInfo("Africa/Algiers")


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def utc(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def daily(start: time, end: time | None) -> tuple[WeeklyWindow, ...]:
    return tuple(WeeklyWindow(d, start, end) for d in range(7))


def test_paris_morning_hours_move_an_hour_earlier_in_utc_after_spring_forward() -> None:
    spec = AvailabilitySpec(weekly=daily(time(9), time(10)))
    windows = expand(spec, now=ts("2026-03-27T00:00"), zone=PARIS, horizon_days=4)
    assert [utc(s) for s, _ in windows] == [
        "2026-03-27 08:00", "2026-03-28 08:00",  # CET, UTC+1
        "2026-03-29 07:00", "2026-03-30 07:00"]  # CEST, UTC+2


def test_paris_morning_hours_move_an_hour_later_in_utc_after_fall_back() -> None:
    spec = AvailabilitySpec(weekly=daily(time(9), time(10)))
    windows = expand(spec, now=ts("2026-10-24T00:00"), zone=PARIS, horizon_days=3)
    assert [utc(s) for s, _ in windows] == ["2026-10-24 07:00", "2026-10-25 08:00", "2026-10-26 08:00"]


def test_algiers_has_no_daylight_saving_and_stays_at_utc_plus_one() -> None:
    spec = AvailabilitySpec(weekly=daily(time(9), time(10)))
    windows = expand(spec, now=ts("2026-03-27T00:00"), zone=ALGIERS, horizon_days=4)
    assert {utc(s)[-5:] for s, _ in windows} == {"08:00"}
    windows = expand(spec, now=ts("2026-10-24T00:00"), zone=ALGIERS, horizon_days=2)
    assert {utc(s)[-5:] for s, _ in windows} == {"08:00"}


def test_the_short_night_of_spring_forward_holds_one_slot_fewer() -> None:
    # 01:00-04:00 on the wall clock is only two real hours on 29 March 2026 in Paris.
    spec = AvailabilitySpec(exceptions=(DatedException(date(2026, 3, 29), start=time(1), end=time(4)),))
    now = ts("2026-03-27T00:00")
    windows = expand(spec, now=now, zone=PARIS, horizon_days=31)
    assert [(utc(s), utc(e)) for s, e in windows] == [("2026-03-29 00:00", "2026-03-29 02:00")]
    found = slots(windows, [], session_s=3600, start=now, end=now + 31 * 86400,
                  bounds=SlotWindow(now, now + 31 * 86400))
    assert len(found) == 2


def test_the_long_night_of_fall_back_holds_one_slot_more() -> None:
    spec = AvailabilitySpec(exceptions=(DatedException(date(2026, 10, 25), start=time(1), end=time(4)),))
    now = ts("2026-10-20T00:00")
    windows = expand(spec, now=now, zone=PARIS, horizon_days=31)
    found = slots(windows, [], session_s=3600, start=now, end=now + 31 * 86400,
                  bounds=SlotWindow(now, now + 31 * 86400))
    assert len(found) == 4


def test_a_window_starting_inside_the_spring_gap_starts_when_the_clock_resumes() -> None:
    spec = AvailabilitySpec(exceptions=(DatedException(date(2026, 3, 29), start=time(2, 30), end=time(5)),))
    windows = expand(spec, now=ts("2026-03-27T00:00"), zone=PARIS, horizon_days=5)
    assert [(utc(s), utc(e)) for s, e in windows] == [("2026-03-29 01:30", "2026-03-29 03:00")]


def test_nothing_is_published_beyond_the_horizon() -> None:
    now = ts("2026-01-01T12:00")
    windows = expand(AvailabilitySpec(weekly=daily(time(0), None)), now=now, zone=ALGIERS, horizon_days=31)
    assert windows[-1][1] == now + 31 * 86400
    assert all(e > now for _, e in windows)


def test_slots_respect_the_lead_time_and_the_horizon() -> None:
    now = ts("2026-01-01T12:00")
    windows = [(ts("2026-01-01T00:00"), ts("2026-03-01T00:00"))]
    bounds = SlotWindow.at(now, lead_time_s=3600, horizon_days=31)
    found = slots(windows, [], session_s=3600, start=now - 86400, end=now + 60 * 86400, bounds=bounds)
    assert found[0][0] == now + 3600
    assert found[-1][0] <= now + 31 * 86400
    assert found[-1][0] > now + 30 * 86400


def test_overlapping_windows_merge_into_one_grid_without_duplicate_slots() -> None:
    day = date(2026, 1, 5)  # a Monday
    spec = AvailabilitySpec(weekly=(WeeklyWindow(0, time(9), time(12)), WeeklyWindow(0, time(11), time(14))),
                            exceptions=(DatedException(day, start=time(10), end=time(11)),))
    now = ts("2026-01-04T00:00")
    windows = expand(spec, now=now, zone=ALGIERS, horizon_days=2)
    assert [(utc(s), utc(e)) for s, e in windows] == [("2026-01-05 08:00", "2026-01-05 13:00")]
    found = slots(windows, [], session_s=3600, start=now, end=now + 2 * 86400, bounds=SlotWindow(now, now + 86400 * 2),
                  )
    assert len(found) == 5


def test_a_blocked_day_has_no_windows_and_an_extra_window_adds_one() -> None:
    spec = AvailabilitySpec(weekly=daily(time(9), time(10)),
                            exceptions=(DatedException(date(2026, 1, 6), blocked=True),
                                        DatedException(date(2026, 1, 7), start=time(18), end=None)))
    windows = expand(spec, now=ts("2026-01-05T00:00"), zone=ALGIERS, horizon_days=3)
    assert [(utc(s), utc(e)) for s, e in windows][:3] == [
        ("2026-01-05 08:00", "2026-01-05 09:00"),
        ("2026-01-07 08:00", "2026-01-07 09:00"), ("2026-01-07 17:00", "2026-01-07 23:00")]


def test_booked_ranges_are_not_offered_and_slots_sit_on_the_window_grid() -> None:
    windows = [(ts("2026-01-05T08:00"), ts("2026-01-05T12:00"))]
    busy = [(ts("2026-01-05T09:00"), ts("2026-01-05T09:50"))]
    now = ts("2026-01-01T00:00")
    found = slots(windows, busy, session_s=3000, start=now, end=now + 9 * 86400,
                  bounds=SlotWindow(now, now + 9 * 86400))
    # 08:50 and 09:40 overlap the booking; 11:20 would end after the window
    assert [utc(s) for s, _ in found] == ["2026-01-05 08:00", "2026-01-05 10:30"]
    assert is_slot(windows, ts("2026-01-05T08:50"), session_s=3000)
    assert not is_slot(windows, ts("2026-01-05T08:30"), session_s=3000)  # off the grid
    assert not is_slot(windows, ts("2026-01-05T11:20"), session_s=3000)  # would end after the window


@pytest.mark.parametrize(("spec", "code"), [
    (AvailabilitySpec(weekly=(WeeklyWindow(0, time(10), time(9)),)), "bad_window"),
    (AvailabilitySpec(exceptions=(DatedException(date(2025, 12, 1), blocked=True),)), "date_in_past"),
    (AvailabilitySpec(exceptions=(DatedException(date(2026, 3, 1), blocked=True),)), "beyond_horizon"),
    (AvailabilitySpec(exceptions=(DatedException(date(2026, 1, 9)),)), "bad_window"),
])
def test_bad_availability_is_refused_with_a_reason(spec: AvailabilitySpec, code: str) -> None:
    with pytest.raises(AvailabilityError) as info:
        check_spec(spec, now=ts("2026-01-05T00:00"), zone=ALGIERS, horizon_days=31)
    assert info.value.code == code


def test_slot_ranges_must_be_forward_and_short() -> None:
    with pytest.raises(AvailabilityError, match="end after"):
        check_slot_range(100, 100)
    with pytest.raises(AvailabilityError) as info:
        check_slot_range(0, 10 * 365 * 86400)
    assert info.value.code == "range_too_long"


LEGAL = {("confirmed", "cancelled"), ("confirmed", "in_session"), ("in_session", "completed"),
         ("in_session", "interrupted"), ("interrupted", "rescheduled"),
         # a session's verdict: no-shows before anyone met; an interruption or an early end either way
         ("confirmed", "client_no_show"), ("confirmed", "practitioner_no_show"), ("confirmed", "both_no_show"),
         ("confirmed", "interrupted"), ("confirmed", "ended_early"), ("in_session", "ended_early")}


@pytest.mark.parametrize(("current", "to"), list(itertools.product(list(BookingStatus), repeat=2)))
def test_every_booking_transition_is_legal_exactly_when_the_table_says(current: BookingStatus,
                                                                      to: BookingStatus) -> None:
    assert can_transition(current, to) == ((current.value, to.value) in LEGAL)


def test_the_transition_tables_cover_every_state() -> None:
    assert set(BOOKING_TRANSITIONS) == set(BookingStatus)
    assert {
        PractitionerStatus.PENDING_REVIEW: {PractitionerStatus.ACTIVE},
        PractitionerStatus.ACTIVE: {PractitionerStatus.SUSPENDED},
        PractitionerStatus.SUSPENDED: {PractitionerStatus.ACTIVE},
    } == PRACTITIONER_TRANSITIONS


def _slots_of_day(spec: AvailabilitySpec, day: date, *, now: int, zone: ZoneInfo, session_s: int = 3000
                  ) -> list[tuple[int, int]]:
    """The slots a client asking for the whole local `day` sees, availability published at `now`."""
    windows = expand(spec, now=now, zone=zone, horizon_days=31)
    start = int(datetime.combine(day, time(0), tzinfo=zone).timestamp())
    end = int(datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).timestamp())
    return slots(windows, [], session_s=session_s, start=start, end=end,
                 bounds=SlotWindow.at(now, lead_time_s=3600, horizon_days=31))


def _local(t: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize(("zone", "day", "count"), [
    (ALGIERS, date(2026, 1, 8), 28),  # 1,440 minutes: 28 slots of 50, the last 40 minutes unused
    (PARIS, date(2026, 1, 8), 28),
    (PARIS, date(2026, 3, 29), 27),  # spring forward: a 23-hour day
    (PARIS, date(2026, 10, 25), 30),  # fall back: a 25-hour day
])
def test_a_round_the_clock_grid_starts_at_local_midnight_whatever_day_it_was_published(
        zone: ZoneInfo, day: date, count: int) -> None:
    spec = AvailabilitySpec(weekly=daily(time(0), None))
    # published "today" (three days before `day`) and again "tomorrow", each at several hours of the day
    for hour in (0, 7, 13, 23):
        today = int(datetime.combine(day - timedelta(days=3), time(hour), tzinfo=zone).timestamp())
        first = _slots_of_day(spec, day, now=today, zone=zone)
        again = _slots_of_day(spec, day, now=today + 86400, zone=zone)
        assert first == again, (hour, [_local(s, zone) for s, _ in first][:3],
                                [_local(s, zone) for s, _ in again][:3])
        assert _local(first[0][0], zone) == f"{day} 00:00"
        assert len(first) == count
        assert all(b[0] - a[0] == 3000 for a, b in itertools.pairwise(first))  # one grid all day
    windows = expand(spec, now=today, zone=zone, horizon_days=31)
    assert all(is_slot(windows, s, session_s=3000) for s, _ in first)
    # the next day's first slot is at its own midnight, not on the previous day's grid
    nxt = _slots_of_day(spec, day + timedelta(days=1), now=today, zone=zone)
    assert _local(nxt[0][0], zone) == f"{day + timedelta(days=1)} 00:00"


def test_windows_of_consecutive_days_stay_apart_and_one_days_windows_merge_before_any_cut() -> None:
    spec = AvailabilitySpec(weekly=daily(time(0), None))
    now = ts("2026-01-05T10:00")  # 11:00 in Algiers
    windows = expand(spec, now=now, zone=ALGIERS, horizon_days=2)
    assert [(utc(s), utc(e)) for s, e in windows] == [
        ("2026-01-04 23:00", "2026-01-05 23:00"), ("2026-01-05 23:00", "2026-01-06 23:00"),
        ("2026-01-06 23:00", "2026-01-07 10:00")]  # today's keeps its start; the last is cut at the horizon
    # 08:00-10:00 and 10:00-12:00 on one day are one window from 08:00, even once 08:00-10:00 is over
    spec = AvailabilitySpec(weekly=(WeeklyWindow(0, time(8), time(10)), WeeklyWindow(0, time(10), time(12))))
    for now in (ts("2026-01-05T06:00"), ts("2026-01-05T10:00")):  # 07:00 and 11:00 in Algiers
        assert [(utc(s), utc(e)) for s, e in expand(spec, now=now, zone=ALGIERS, horizon_days=2)] == [
            ("2026-01-05 07:00", "2026-01-05 11:00")]
