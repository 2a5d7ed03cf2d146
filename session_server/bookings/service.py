"""The bookings service: rules and pricing decide, the store writes. The HTTP edge and the demo call it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from ledger.pricing import DiscountCode, PricingError, Quote, check_code, quote

from ..errors import DomainError
from ..events import Event, new_id
from ..settings import Settings
from . import rules
from .model import Booking, BookingStatus
from .rules import PractitionerStatus, SlotWindow
from .store import BookingStore, Practitioner, at, iso, refusal

# The booking script refuses a stale practitioner by its `rev` (bumped by every change that matters to a
# booking), and a refusal is retried once with a fresh read; so the cache can live for a while. Bounded,
# oldest entries dropped first.
PRACTITIONER_CACHE_S = 10.0
PRACTITIONER_CACHE_SIZE = 10_000
# Slots are listed only if they start at least this long after the lead time, so that a slot a client
# has just been shown is still bookable while they decide (a booking checks the lead time alone).
LISTING_MARGIN_S = 300
# Refusals that a stale cached practitioner can cause: retried once with a fresh read.
_STALE_REFUSALS = frozenset({"practitioner_changed", "not_bookable", "practitioner_not_found", "price_changed"})


@dataclass(frozen=True, slots=True)
class Slot:
    starts_at: int
    ends_at: int
    quote: Quote

    def as_json(self) -> dict[str, Any]:
        return {"starts_at": iso(self.starts_at), "ends_at": iso(self.ends_at), "price": self.quote.as_json()}


def booking_event_body(b: Booking, referrer_id: str = "", referrer_credit: int = 0) -> dict[str, Any]:
    return {"booking_id": b.id, "practitioner_id": b.practitioner_id, "client_id": b.client_id,
            "starts_at": iso(b.starts_at), "ends_at": iso(b.ends_at), "timezone": b.timezone,
            "currency": b.currency, "client_total": b.client_total,
            "practitioner_share": b.practitioner_share, "platform_share": b.platform_share,
            "discount": b.discount, "code": b.code or None, "referrer_id": referrer_id or None,
            "referrer_credit": referrer_credit}


class BookingService:
    def __init__(self, store: BookingStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        # practitioner id -> (valid until, monotonic; record): saves a read per booking
        self._cache: dict[str, tuple[float, Practitioner]] = {}

    def bounds(self, now: int, *, lead_time_s: int | None = None) -> SlotWindow:
        lead = self.settings.booking_lead_time_s if lead_time_s is None else lead_time_s
        return SlotWindow.at(now, lead_time_s=lead, horizon_days=self.settings.booking_horizon_days)

    def price(self, p: Practitioner, code: DiscountCode | None, *, client_id: str, now: int) -> Quote:
        if code is not None:
            try:
                check_code(code, practitioner_id=p.id, client_id=client_id, currency=p.currency, now=now)
            except PricingError as exc:
                raise refusal(exc.refusal.value, str(exc)) from None
        return quote(p.price_minor, self.settings.platform_commission_minor, p.currency, code)

    async def load_for_quote(self, pid: str, code: str | None, client_id: str = "",
                             visible: Callable[[Practitioner], None] | None = None
                             ) -> tuple[Practitioner, DiscountCode | None]:
        """The practitioner and the code. `visible` refuses a practitioner the caller may not see, before
        anything about the code is said (which would tell that the practitioner exists)."""
        p, c, used = await self.store.practitioner_and_code(pid, code, client_id)
        if p is None:
            raise refusal("practitioner_not_found")
        if visible is not None:
            visible(p)
        if code and c is None:
            raise refusal("code_unknown", f"no code {code}")
        if used:  # the booking script would refuse it: the quote and the slots say so first
            raise refusal("code_already_used")
        return p, c

    async def free_slots(self, p: Practitioner, start: int, end: int, now: int,
                         code: DiscountCode | None = None, client_id: str = "") -> list[Slot]:
        if p.status is not PractitionerStatus.ACTIVE:
            return []
        windows, busy = await self.store.windows_and_busy(p.id, start, end)
        price = self.price(p, code, client_id=client_id, now=now)
        lead = self.settings.booking_lead_time_s + LISTING_MARGIN_S
        found = rules.slots(windows, busy, session_s=p.session_s, start=start, end=end,
                            bounds=self.bounds(now, lead_time_s=lead))
        return [Slot(s, e, price) for s, e in found]

    async def _practitioner_for_booking(self, pid: str, code: str | None, client_id: str, *, fresh: bool
                                        ) -> tuple[Practitioner, DiscountCode | None]:
        """The practitioner from a short cache (a stale entry is caught by the booking script's rev check)."""
        cached = None if fresh or code else self._cache.get(pid)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], None
        p, c = await self.load_for_quote(pid, code, client_id)
        self._cache.pop(pid, None)
        self._cache[pid] = (time.monotonic() + PRACTITIONER_CACHE_S, p)
        if len(self._cache) > PRACTITIONER_CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        return p, c

    async def book(self, *, client_id: str, practitioner_id: str, starts_at: int, code: str | None,
                   expected_total: int | None, now: int, lead_time_s: int | None = None) -> Booking:
        try:
            return await self._book(client_id=client_id, practitioner_id=practitioner_id, starts_at=starts_at,
                                    code=code, expected_total=expected_total, now=now, lead_time_s=lead_time_s,
                                    fresh=False)
        except DomainError as exc:
            if exc.code not in _STALE_REFUSALS:
                raise
        self._cache.pop(practitioner_id, None)
        booking = await self._book(client_id=client_id, practitioner_id=practitioner_id, starts_at=starts_at,
                                   code=code, expected_total=expected_total, now=now, lead_time_s=lead_time_s,
                                   fresh=True)
        return booking

    async def _book(self, *, client_id: str, practitioner_id: str, starts_at: int, code: str | None,
                    expected_total: int | None, now: int, lead_time_s: int | None, fresh: bool) -> Booking:
        p, c = await self._practitioner_for_booking(practitioner_id, code, client_id, fresh=fresh)
        booking, event = self.prepare_booking(p, c, client_id=client_id, starts_at=starts_at,
                                              expected_total=expected_total, now=now, lead_time_s=lead_time_s)
        await self.store.book(booking, p, event, now)
        return booking

    def prepare_booking(self, p: Practitioner, c: DiscountCode | None, *, client_id: str, starts_at: int,
                        expected_total: int | None, now: int, lead_time_s: int | None = None
                        ) -> tuple[Booking, Event]:
        """The booking and its event, or the refusal, decided without I/O; the store's script then checks
        what only Redis knows (the slot is free, the client is free, the code is not used up)."""
        if p.status is not PractitionerStatus.ACTIVE:
            raise refusal("not_bookable")
        bounds = self.bounds(now, lead_time_s=lead_time_s)
        if starts_at < bounds.earliest:
            raise DomainError("that slot starts too soon to be booked", code="too_soon", status=422)
        if starts_at > bounds.latest:
            raise DomainError(f"bookings open at most {self.settings.booking_horizon_days} days ahead",
                              code="beyond_horizon", status=422)
        q = self.price(p, c, client_id=client_id, now=now)
        if expected_total is not None and expected_total != q.client_total:
            raise DomainError(f"the price is now {q.client_total} {q.currency}; ask for a new quote",
                              code="price_changed", status=409, quote=q.as_json())
        booking = Booking(
            id=new_id(), practitioner_id=p.id, client_id=client_id, starts_at=starts_at,
            ends_at=starts_at + p.session_s, status=BookingStatus.CONFIRMED, currency=q.currency,
            client_total=q.client_total, practitioner_share=q.practitioner_share,
            platform_share=q.platform_share, discount=q.discount, code=q.code, created_at=now,
            timezone=p.timezone)
        event = Event("booking.created", booking_event_body(booking, q.referrer_id, q.referrer_credit),
                      time=at(now))
        return booking, event

    def check_availability(self, spec: rules.AvailabilitySpec, timezone: str, now: int) -> None:
        """A 422 problem for availability that cannot be published in `timezone` (nothing is written)."""
        try:
            rules.check_spec(spec, now=now, zone=ZoneInfo(timezone), horizon_days=self.settings.booking_horizon_days)
        except rules.AvailabilityError as exc:
            raise DomainError(str(exc), code=exc.code, status=422) from None

    async def publish(self, p: Practitioner, spec: rules.AvailabilitySpec, raw_spec: dict[str, Any],
                      now: int) -> tuple[list[tuple[int, int]], int]:
        zone = ZoneInfo(p.timezone)
        self.check_availability(spec, p.timezone, now)
        windows = rules.expand(spec, now=now, zone=zone, horizon_days=self.settings.booking_horizon_days)
        bookable = 0
        if windows and p.status is PractitionerStatus.ACTIVE:  # waiting clients are told only of real slots
            bounds = self.bounds(now)
            _, busy = await self.store.windows_and_busy(p.id, bounds.earliest, bounds.latest + p.session_s)
            bookable = len(rules.slots(windows, busy, session_s=p.session_s, start=bounds.earliest,
                                       end=bounds.latest + 1, bounds=bounds))
        event = Event("availability.published",
                      {"practitioner_id": p.id, "timezone": p.timezone, "windows": len(windows), "slots": bookable,
                       "first_start": iso(windows[0][0]) if windows else None,
                       "last_end": iso(windows[-1][1]) if windows else None}, time=at(now))
        waiting = await self.store.publish_availability(p.id, raw_spec, windows, event, now)
        return windows, waiting
