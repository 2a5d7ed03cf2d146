"""Payout dates: every Sunday in Africa/Algiers, or the first working day after it when that Sunday is an
official holiday in Algeria. Pure: the calendar and the corrections are passed in.

The `holidays` package knows Algeria's holidays and its Friday–Saturday weekend, but it marks the Islamic
holidays as estimated: the sighting of the moon can move them by a day. Admins confirm or correct an
estimated date (`corrections`: the estimated date -> the date it really falls on, the same date for a
confirmation); the calendar here applies them. A payout date already announced is not recomputed here:
the store keeps announced dates and moves one only when an admin says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays

ZONE = ZoneInfo("Africa/Algiers")
COUNTRY = "DZ"
SUNDAY = 6
ESTIMATED_MARK = "estimated"
# the holiday's name in the pages' languages: the package's own translations
LANGUAGES = {"ar": "ar", "fr": "fr", "en": "en_US"}
# what the package appends to an estimated holiday's name, in those languages (a page says it in its own words)
_ESTIMATED_LABEL = re.compile(r"\s*\((?:estimated|estimé|تقديري)\)$")


@dataclass(frozen=True, slots=True)
class Holiday:
    day: date
    name: str
    estimated: bool  # the package's estimate of an Islamic date, not yet confirmed by an admin
    corrected_from: date | None = None
    names: Mapping[str, str] = field(default_factory=dict)  # language -> its name, without "(estimated)"


@dataclass(frozen=True, slots=True)
class Calendar:
    """Algeria's official holidays in some years, with admins' corrections applied, and its weekend."""

    days: Mapping[date, Holiday]
    weekend: frozenset[int]  # weekday numbers (Monday 0)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() not in self.weekend and day not in self.days


def calendar(years: Iterable[int], corrections: Mapping[date, date] | None = None) -> Calendar:
    """The package's holidays for `years`, an estimated date moved (or confirmed) by `corrections`."""
    found = holidays.country_holidays(COUNTRY, years=sorted(set(years)))
    translated = {lang: holidays.country_holidays(COUNTRY, years=sorted(set(years)), language=code)
                  for lang, code in LANGUAGES.items()}
    weekend = frozenset(int(d) for d in getattr(found, "weekend", {4, 5}))
    days: dict[date, Holiday] = {}
    for day, names in sorted(found.items()):
        for name in str(names).split("; "):
            estimated = ESTIMATED_MARK in name.lower()
            local = {lang: _ESTIMATED_LABEL.sub("", str(t.get(day, name)).split("; ")[0])
                     for lang, t in translated.items()}
            days.setdefault(day, Holiday(day, name, estimated, names=local))
    for estimated_day, actual in (corrections or {}).items():
        holiday = days.pop(estimated_day, None)
        if holiday is None:
            continue
        days[actual] = Holiday(actual, holiday.name, False,
                               corrected_from=estimated_day if actual != estimated_day else None,
                               names=holiday.names)
    return Calendar(days, weekend)


def sunday_of(day: date) -> date:
    """The Sunday that starts the payout week containing `day` (Sunday to Saturday)."""
    return day - timedelta(days=(day.weekday() - SUNDAY) % 7)


def payout_date(sunday: date, cal: Calendar) -> date:
    """The Sunday itself, or the first working day after it if it is an official holiday."""
    if sunday.weekday() != SUNDAY:
        raise ValueError(f"{sunday} is not a Sunday")
    if sunday not in cal.days:
        return sunday
    day = sunday + timedelta(days=1)
    while not cal.is_working_day(day):
        day += timedelta(days=1)
    return day


def local_date(now: float) -> date:
    return datetime.fromtimestamp(now, ZONE).date()


def sundays(start: date, end: date) -> list[date]:
    first = start + timedelta(days=(SUNDAY - start.weekday()) % 7)
    return [first + timedelta(weeks=i) for i in range(((end - first).days // 7) + 1) if first <= end]
