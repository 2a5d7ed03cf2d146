"""The bookings service: rules and pricing decide, the store writes. The HTTP edge and the demo call it."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from ledger.pricing import CodeKind, DiscountCode, PricingError, Quote, check_code, platform_code_value, quote

from ..clock import Clock
from ..errors import DomainError
from ..events import Event, new_id
from ..settings import Settings
from . import rules
from .errors import (
    STALE_REFUSALS,
    BeyondHorizon,
    BookingNotFound,
    CodeAlreadyUsed,
    CodeUnknown,
    CurrencyNotSupported,
    DiscountExceedsCommission,
    ExpiresInPast,
    NotBookable,
    PractitionerNotFound,
    PriceChanged,
    SlotsAvailable,
    TooSoon,
    script_refusal,
)
from .model import Booking, BookingStatus, SessionVerdict
from .rules import PractitionerStatus, SlotWindow
from .store import BookingStore, Practitioner, at, iso

# The booking script refuses a stale practitioner by its `rev` (bumped by every change that matters to a
# booking), and a refusal is retried once with a fresh read; so the cache can live for a while. Bounded,
# oldest entries dropped first.
PRACTITIONER_CACHE_S = 10.0
PRACTITIONER_CACHE_SIZE = 10_000
# Slots are listed only if they start at least this long after the lead time, so that a slot a client
# has just been shown is still bookable while they decide (a booking checks the lead time alone).
LISTING_MARGIN_S = 300
# The published availability as entered, re-read for a new time zone: the spec and its raw form, with the
# exceptions before the given local date dropped (the edge parses; the service decides).
Respec = Callable[[Mapping[str, Any], date], tuple[rules.AvailabilitySpec, dict[str, Any]]]


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


def code_view(code: DiscountCode) -> dict[str, Any]:
    """A code as the API shows it, and the body of its `code.created` event."""
    return {"code": code.code, "kind": code.kind.value, "owner_id": code.owner_id or None,
            "amount_minor": code.amount_minor, "percent": code.percent,
            "referrer_credit_minor": code.referrer_credit_minor,
            "expires_at": iso(code.expires_at) if code.expires_at else None, "max_uses": code.max_uses,
            "currency": code.currency}


class BookingService:
    """Every booking operation: reads the clock, lets the rules and the pricing decide, builds the event,
    and has the store write the change with its event."""

    def __init__(self, store: BookingStore, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        # practitioner id -> (valid until, monotonic; record): saves a read per booking
        self._cache: dict[str, tuple[float, Practitioner]] = {}
        # Decides and records a session's verdict now (booking id, now) -> whether this call wrote one. The
        # outages feature sets it; the completion job asks it instead of completing blindly.
        self.judge: Callable[[str, int], Awaitable[bool]] | None = None

    async def record_verdict(self, booking_id: str, v: SessionVerdict) -> bool:
        """Move the booking to its verdict's status with `session.verdict` and the transition's event, once:
        False when the booking already has a verdict or left the states a verdict applies to."""
        to = BookingStatus(v.verdict)
        for _ in range(3):
            booking = await self.store.booking(booking_id)
            if booking is None:
                raise BookingNotFound()
            if booking.status is BookingStatus.CONFIRMED and to is BookingStatus.COMPLETED:
                # both met (the verdict says so), and the session consumer has not moved the booking yet
                with contextlib.suppress(DomainError):
                    await self.store.transition(booking_id, BookingStatus.IN_SESSION, "booking.in_session", {},
                                                v.decided_at)
                continue
            if not rules.can_transition(booking.status, to):
                return False
            ids = {"booking_id": booking.id, "practitioner_id": booking.practitioner_id,
                   "client_id": booking.client_id}
            body = {**ids, "verdict": v.verdict, "attribution": v.attribution, "net_minutes": v.net_minutes,
                    "scheduled_minutes": v.scheduled_minutes,
                    "client_present_minutes": v.client_present_minutes,
                    "practitioner_present_minutes": v.practitioner_present_minutes,
                    "client_first_joined_at": iso(v.client_first_joined_at)
                    if v.client_first_joined_at is not None else None,
                    "practitioner_first_joined_at": iso(v.practitioner_first_joined_at)
                    if v.practitioner_first_joined_at is not None else None,
                    "ended_by": v.ended_by, "trigger": v.trigger, "decided_at": iso(v.decided_at),
                    "starts_at": iso(booking.starts_at), "ends_at": iso(booking.ends_at),
                    "currency": booking.currency, "client_total": booking.client_total,
                    "practitioner_share": booking.practitioner_share, "platform_share": booking.platform_share,
                    "discount": booking.discount, "from": booking.status.value, "to": to.value}
            verdict_event = Event("session.verdict", body, time=at(v.decided_at))
            transition_event = Event(f"booking.{to.value}", {
                **ids, "from": booking.status.value, "to": to.value, "verdict": v.verdict,
                "attribution": v.attribution, "automatic": True}, time=at(v.decided_at))
            status, _ = await self.store.record_verdict(
                booking, to, verdict_event, transition_event, verdict=v.verdict, attribution=v.attribution or "",
                net_minutes=v.net_minutes, now=v.decided_at)
            if status == "ok":
                return True
            if status == "already":
                return False
        return False

    def now(self) -> int:
        return int(self.clock.now())

    def bounds(self, now: int, *, lead_time_s: int | None = None) -> SlotWindow:
        lead = self.settings.booking_lead_time_s if lead_time_s is None else lead_time_s
        return SlotWindow.at(now, lead_time_s=lead, horizon_days=self.settings.booking_horizon_days)

    # --- practitioners ---

    async def practitioner(self, pid: str) -> Practitioner:
        return await self.store.require_practitioner(pid)

    async def practitioners(self) -> list[Practitioner]:
        return await self.store.practitioners(limit=1000)

    async def create_practitioner(self, *, pid: str, display_name: str, specialty: str, session_minutes: int,
                                  price_minor: int, currency: str | None, timezone: str | None,
                                  now: int | None = None) -> Practitioner:
        now = self.now() if now is None else now
        currency = currency or self.settings.currency
        if currency != self.settings.currency:
            # the platform's commission is one amount in one currency: adding it to another would be wrong
            raise CurrencyNotSupported(f"prices are in {self.settings.currency} on this platform")
        zone = timezone or self.settings.default_timezone
        event = Event("practitioner.created",
                      {"practitioner_id": pid, "specialty": specialty, "session_minutes": session_minutes,
                       "price_minor": price_minor, "currency": currency, "timezone": zone,
                       "status": "pending_review"}, time=at(now))
        await self.store.create_practitioner(pid, display_name=display_name, specialty=specialty,
                                             session_minutes=session_minutes, price_minor=price_minor,
                                             currency=currency, timezone=zone, event=event, now=now)
        return await self.store.require_practitioner(pid)

    async def update_practitioner(self, pid: str, changes: dict[str, Any], respec: Respec) -> Practitioner:
        """Apply the profile changes that differ from the record (none: no event)."""
        now = self.now()
        before = await self.store.require_practitioner(pid)
        current = before.as_json()
        changes = {k: v for k, v in changes.items() if current.get(k) != v}
        if not changes:  # the profile already says so: nothing happened, so no event either
            return before
        # Weekly windows are entered in the practitioner's zone: in a new zone they fall at other UTC times,
        # so what was published is expanded again (checked first, so that a refusal changes nothing).
        moved = None
        if changes.get("timezone", before.timezone) != before.timezone and before.availability:
            # exceptions for days already past in the new zone are history, not a reason to refuse the move
            moved = respec(before.availability, rules.local_today(now, ZoneInfo(changes["timezone"])))
            self.check_availability(moved[0], changes["timezone"], now)
        # names stay out of events: a new display name is listed in `fields`, its text is not in `changes`
        event = Event("practitioner.updated", {"practitioner_id": pid, "fields": sorted(changes),
                                               "changes": {k: v for k, v in changes.items() if k != "display_name"}},
                      time=at(now))
        await self.store.update_practitioner(pid, changes, event, now)
        after = await self.store.require_practitioner(pid)
        if moved is not None:
            await self.publish(after, moved[0], moved[1], now)
        return after

    async def set_status(self, pid: str, to: PractitionerStatus, *, reason: str, by: str,
                         now: int | None = None) -> Practitioner:
        now = self.now() if now is None else now
        event_type = "practitioner.activated" if to is PractitionerStatus.ACTIVE else "practitioner.suspended"
        event = Event(event_type, {"practitioner_id": pid, "reason": reason or None, "by": by, "automatic": False},
                      time=at(now))
        await self.store.set_practitioner_status(pid, to, event, now, reason)
        return await self.store.require_practitioner(pid)

    async def set_price(self, pid: str, price_minor: int) -> Practitioner:
        now = self.now()
        p = await self.store.require_practitioner(pid)
        if p.price_minor == price_minor:  # unchanged: no event
            return p
        event = Event("practitioner.price_changed", {"practitioner_id": pid, "previous_price_minor": p.price_minor,
                                                     "price_minor": price_minor, "currency": p.currency},
                      time=at(now))
        await self.store.update_practitioner(pid, {"price_minor": price_minor}, event, now)
        return await self.store.require_practitioner(pid)

    # --- availability, slots, quotes ---

    async def put_availability(self, pid: str, spec: rules.AvailabilitySpec, raw_spec: dict[str, Any]
                               ) -> tuple[Practitioner, list[tuple[int, int]], int]:
        p = await self.store.require_practitioner(pid)
        windows, waiting = await self.publish(p, spec, raw_spec, self.now())
        return p, windows, waiting

    async def windows(self, p: Practitioner) -> list[tuple[int, int]]:
        """The published windows from now to the horizon."""
        now = self.now()
        windows, _ = await self.store.windows_and_busy(p.id, now, now + self.settings.booking_horizon_days * 86400)
        return windows

    async def slots(self, pid: str, start: int, end: int, code: str | None, client_id: str,
                    visible: Callable[[Practitioner], None]) -> tuple[Practitioner, list[Slot]]:
        rules.check_slot_range(start, end)
        p, c = await self.load_for_quote(pid, code, client_id, visible)
        return p, await self.free_slots(p, start, end, self.now(), c, client_id)

    async def quote(self, pid: str, code: str | None, client_id: str, visible: Callable[[Practitioner], None]
                    ) -> tuple[Practitioner, Quote]:
        p, c = await self.load_for_quote(pid, code, client_id, visible)
        return p, self.price(p, c, client_id=client_id, now=self.now())

    def price(self, p: Practitioner, code: DiscountCode | None, *, client_id: str, now: int) -> Quote:
        if code is not None:
            try:
                check_code(code, practitioner_id=p.id, client_id=client_id, currency=p.currency, now=now)
            except PricingError as exc:
                raise script_refusal(exc.refusal.value, str(exc)) from None
        return quote(p.price_minor, self.settings.platform_commission_minor, p.currency, code)

    async def load_for_quote(self, pid: str, code: str | None, client_id: str = "",
                             visible: Callable[[Practitioner], None] | None = None
                             ) -> tuple[Practitioner, DiscountCode | None]:
        """The practitioner and the code. `visible` refuses a practitioner the caller may not see, before
        anything about the code is said (which would tell that the practitioner exists)."""
        p, c, used = await self.store.practitioner_and_code(pid, code, client_id)
        if p is None:
            raise PractitionerNotFound()
        if visible is not None:
            visible(p)
        if code and c is None:
            raise CodeUnknown(f"no code {code}")
        if used:  # the booking script would refuse it: the quote and the slots say so first
            raise CodeAlreadyUsed("you have already used this code")
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

    # --- interest: clients waiting for slots ---

    async def register_interest(self, pid: str, client_id: str) -> int | None:
        """Put a client on the practitioner's waiting list; None if they were on it already (no event)."""
        now = self.now()
        p = await self.store.require_practitioner(pid)
        if p.status is not PractitionerStatus.ACTIVE:
            raise PractitionerNotFound()
        bounds = self.bounds(now)
        if await self.free_slots(p, bounds.earliest, bounds.latest + 1, now):
            raise SlotsAvailable("this practitioner has free slots: book one")
        event = Event("practitioner.interest_registered", {"practitioner_id": pid, "client_id": client_id},
                      time=at(now))
        return await self.store.register_interest(pid, client_id, event, now)

    async def waiting_clients(self, pid: str) -> list[str]:
        """The clients waiting to be told of this practitioner's new slots."""
        return await self.store.waiting_clients(pid)

    async def forget_interest(self, pid: str, clients: Sequence[str]) -> None:
        """Take clients who have been told of new slots off the practitioner's waiting list."""
        await self.store.forget_interest(pid, clients)

    # --- codes ---

    async def create_practitioner_code(self, pid: str, *, code: str, amount_minor: int, percent: int,
                                       expires_at: int, max_uses: int) -> dict[str, Any]:
        p = await self.store.require_practitioner(pid)
        return await self._create_code(DiscountCode(
            code=code, kind=CodeKind.PRACTITIONER, owner_id=pid, amount_minor=amount_minor, percent=percent,
            expires_at=expires_at, max_uses=max_uses, currency=p.currency))

    async def create_platform_code(self, *, code: str, kind: CodeKind, referrer_id: str, amount_minor: int,
                                   percent: int, referrer_credit_minor: int, expires_at: int,
                                   max_uses: int) -> dict[str, Any]:
        discount = DiscountCode(
            code=code, kind=kind, owner_id=referrer_id, amount_minor=amount_minor, percent=percent,
            referrer_credit_minor=referrer_credit_minor, expires_at=expires_at, max_uses=max_uses,
            currency=self.settings.currency)
        commission = self.settings.platform_commission_minor
        value = platform_code_value(discount, commission)
        if value > commission:  # the rule: never more than the commission; refused, not capped in silence
            currency = self.settings.currency
            raise DiscountExceedsCommission(amounts={"commission": (commission, currency), "value": (value, currency)},
                                            commission_minor=commission, currency=currency)
        return await self._create_code(discount)

    async def _create_code(self, code: DiscountCode) -> dict[str, Any]:
        now = self.now()
        if code.expires_at and code.expires_at <= now:
            raise ExpiresInPast("the code would already be expired")
        view = code_view(code)
        await self.store.create_code(code, Event("code.created", view, time=at(now)), now)
        return view

    # --- bookings ---

    async def _practitioner_for_booking(self, pid: str, code: str | None, client_id: str, *, fresh: bool
                                        ) -> tuple[Practitioner, DiscountCode | None]:
        """The practitioner from a short cache (a stale entry is caught by the booking script's rev check)."""
        cached = None if fresh or code else self._cache.get(pid)
        if cached is not None and cached[0] > self.clock.monotonic():
            return cached[1], None
        p, c = await self.load_for_quote(pid, code, client_id)
        self._cache.pop(pid, None)
        self._cache[pid] = (self.clock.monotonic() + PRACTITIONER_CACHE_S, p)
        if len(self._cache) > PRACTITIONER_CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        return p, c

    async def book(self, *, client_id: str, practitioner_id: str, starts_at: int, code: str | None,
                   expected_total: int | None, now: int | None = None, lead_time_s: int | None = None) -> Booking:
        now = self.now() if now is None else now
        try:
            return await self._book(client_id=client_id, practitioner_id=practitioner_id, starts_at=starts_at,
                                    code=code, expected_total=expected_total, now=now, lead_time_s=lead_time_s,
                                    fresh=False)
        except STALE_REFUSALS:
            pass
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
            raise NotBookable("this practitioner cannot be booked now")
        bounds = self.bounds(now, lead_time_s=lead_time_s)
        if starts_at < bounds.earliest:
            raise TooSoon("that slot starts too soon to be booked")
        if starts_at > bounds.latest:
            raise BeyondHorizon(f"bookings open at most {self.settings.booking_horizon_days} days ahead")
        q = self.price(p, c, client_id=client_id, now=now)
        if expected_total is not None and expected_total != q.client_total:
            raise PriceChanged(amounts={"total": (q.client_total, q.currency)}, quote=q.as_json())
        booking = Booking(
            id=new_id(), practitioner_id=p.id, client_id=client_id, starts_at=starts_at,
            ends_at=starts_at + p.session_s, status=BookingStatus.CONFIRMED, currency=q.currency,
            client_total=q.client_total, practitioner_share=q.practitioner_share,
            platform_share=q.platform_share, discount=q.discount, code=q.code, created_at=now,
            timezone=p.timezone)
        event = Event("booking.created", booking_event_body(booking, q.referrer_id, q.referrer_credit),
                      time=at(now))
        return booking, event

    async def booking(self, booking_id: str) -> tuple[Booking, dict[str, str]] | None:
        """The booking and what the store keeps beside it (cancellation reason, by whom)."""
        found = await self.store.bookings([booking_id])
        return found[0] if found else None

    async def bookings(self, *, client_id: str | None = None, practitioner_id: str | None = None,
                       start: int | None = None, end: int | None = None, limit: int
                       ) -> list[tuple[Booking, dict[str, str]]]:
        """Bookings starting in [start, end], of one practitioner, of one client (the practitioner wins if
        both are given), or of everyone."""
        ids = await self.store.booking_ids_of(client_id=client_id, practitioner_id=practitioner_id,
                                              start=start, end=end, limit=limit)
        return await self.store.bookings(ids)

    async def cancel(self, booking_id: str, *, sub: str, role: str, reason: str
                     ) -> tuple[Booking, dict[str, str]]:
        """Cancel as an admin (`role` "admin") or as one of the booking's parties; else it is not found."""
        now = self.now()
        booking = await self.store.booking(booking_id)
        by = "admin" if role == "admin" else (booking.party(sub, role) if booking else None)
        if booking is None or by is None:
            raise BookingNotFound()
        rules.check_cancellation(booking.status, booking.starts_at, by=by, now=now)
        await self.store.transition(booking_id, BookingStatus.CANCELLED, "booking.cancelled",
                                    {"by": by, "reason": reason, "starts_at": iso(booking.starts_at)}, now,
                                    extra={"cancel_reason": reason, "cancelled_by": by})
        found = await self.booking(booking_id)
        assert found is not None  # bookings are never deleted
        return found

    # --- availability ---

    def check_availability(self, spec: rules.AvailabilitySpec, timezone: str, now: int) -> None:
        """A 422 problem for availability that cannot be published in `timezone` (nothing is written)."""
        rules.check_spec(spec, now=now, zone=ZoneInfo(timezone), horizon_days=self.settings.booking_horizon_days)

    async def publish(self, p: Practitioner, spec: rules.AvailabilitySpec, raw_spec: dict[str, Any],
                      now: int) -> tuple[list[tuple[int, int]], int]:
        zone = ZoneInfo(p.timezone)
        self.check_availability(spec, p.timezone, now)
        windows = rules.expand(spec, now=now, zone=zone, horizon_days=self.settings.booking_horizon_days)
        return windows, await self.publish_windows(p, raw_spec, windows, now)

    async def publish_windows(self, p: Practitioner, raw_spec: dict[str, Any], windows: list[tuple[int, int]],
                              now: int) -> int:
        """Publish already expanded windows; returns how many clients are waiting for slots."""
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
        return await self.store.publish_availability(p.id, raw_spec, windows, event, now)
