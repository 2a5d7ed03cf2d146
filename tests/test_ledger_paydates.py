"""Payout dates: every Sunday (Africa/Algiers), or the first working day after it when that Sunday is an
official holiday in Algeria (Friday and Saturday are the weekend); an admin's correction of an estimated
Islamic date moves the dates that depend on it."""

from __future__ import annotations

from datetime import date

import pytest

from ledger import paydates

CAL = paydates.calendar([2026, 2027, 2028])

# Every Sunday of 2026–2028 that is an official holiday by the package's estimates, and the payout date.
HOLIDAY_SUNDAYS = {
    date(2026, 3, 22): date(2026, 3, 23),  # Eid al-Fitr (estimated), third day
    date(2026, 7, 5): date(2026, 7, 6),  # Independence Day
    date(2026, 11, 1): date(2026, 11, 2),  # Revolution Day
    date(2027, 5, 16): date(2027, 5, 19),  # Eid al-Adha (estimated): Monday and Tuesday are holidays too
    date(2027, 6, 6): date(2027, 6, 7),  # Islamic New Year (estimated)
    date(2028, 2, 27): date(2028, 2, 29),  # Eid al-Fitr (estimated): Monday 28 is a holiday too
    date(2028, 5, 7): date(2028, 5, 8),  # Eid al-Adha (estimated), third day
}


def test_every_sunday_of_2026_to_2028_pays_on_the_sunday_or_the_first_working_day_after_its_holiday() -> None:
    sundays = paydates.sundays(date(2026, 1, 1), date(2028, 12, 31))
    assert len(sundays) == 157
    got = {s: paydates.payout_date(s, CAL) for s in sundays}
    assert {s: d for s, d in got.items() if s != d} == HOLIDAY_SUNDAYS
    for day in HOLIDAY_SUNDAYS.values():
        assert CAL.is_working_day(day) and day.weekday() not in (4, 5)


@pytest.mark.parametrize("sunday", [date(2026, 3, 22), date(2027, 5, 16), date(2027, 6, 6)])
def test_islamic_holidays_are_marked_estimated_and_national_ones_are_not(sunday: date) -> None:
    assert CAL.days[sunday].estimated
    assert not CAL.days[date(2026, 7, 5)].estimated


def test_a_holiday_is_named_in_arabic_french_and_english_without_the_estimate_mark_that_a_page_says_itself() -> None:
    assert CAL.days[date(2027, 6, 6)].names == {"ar": "رأس السنة الهجرية", "fr": "Awal Moharram",
                                                 "en": "Islamic New Year"}
    assert CAL.days[date(2026, 11, 1)].names["fr"] == "Fête de la Révolution"
    corrected = paydates.calendar([2027], {date(2027, 6, 6): date(2027, 6, 7)})
    assert corrected.days[date(2027, 6, 7)].names["ar"] == "رأس السنة الهجرية"  # a corrected date keeps its names


def test_an_admin_correction_of_an_estimated_date_moves_the_payout_date() -> None:
    # the moon is sighted a day later: the Islamic New Year of 2027 falls on Monday 7 June, not Sunday 6
    corrected = paydates.calendar([2027], {date(2027, 6, 6): date(2027, 6, 7)})
    assert paydates.payout_date(date(2027, 6, 6), corrected) == date(2027, 6, 6)
    assert corrected.days[date(2027, 6, 7)].corrected_from == date(2027, 6, 6)
    assert not corrected.days[date(2027, 6, 7)].estimated
    # the other way: Ashura 2027 estimated on Tuesday 15 June is in fact Sunday 13 June
    earlier = paydates.calendar([2027], {date(2027, 6, 15): date(2027, 6, 13)})
    assert paydates.payout_date(date(2027, 6, 13), earlier) == date(2027, 6, 14)
    # a confirmation changes nothing but the mark
    confirmed = paydates.calendar([2027], {date(2027, 5, 16): date(2027, 5, 16)})
    assert paydates.payout_date(date(2027, 5, 16), confirmed) == date(2027, 5, 19)
    assert not confirmed.days[date(2027, 5, 16)].estimated


def test_only_a_sunday_has_a_payout_date() -> None:
    with pytest.raises(ValueError, match="not a Sunday"):
        paydates.payout_date(date(2026, 3, 23), CAL)


def test_the_payout_week_of_a_day_starts_on_its_sunday_in_algiers() -> None:
    assert paydates.sunday_of(date(2026, 3, 28)) == date(2026, 3, 22)  # a Saturday
    assert paydates.sunday_of(date(2026, 3, 22)) == date(2026, 3, 22)
    # 23:30 UTC on Saturday is already Sunday in Algiers (UTC+1)
    assert paydates.local_date(1774135800.0) == date(2026, 3, 22)
