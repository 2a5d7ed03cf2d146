"""The reschedule service: the rules decide, the store writes, the bookings service answers what the
bookings know (the booking, the practitioner, the free slots). The HTTP edge, the verdict consumer and the
expiry job call it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..bookings.errors import BookingNotFound, SlotTaken
from ..bookings.model import Booking, BookingStatus
from ..bookings.rules import MAX_SESSION_MINUTES, RELEASING_STATES
from ..bookings.service import LISTING_MARGIN_S, BookingService, booking_event_body
from ..bookings.store import at, iso
from ..clock import Clock
from ..events import Event, new_id
from ..settings import Settings
from . import rules
from .errors import NotReschedulable, OfferNotFound, WrongParty
from .rules import Offer, OfferReason, OfferStatus, Terms
from .store import EXPIRED_KEY, OPEN_KEY, REMIND_KEY, RescheduleStore

log = logging.getLogger(__name__)

STAFF_ROLES = frozenset({"support", "admin"})
NO_CODE = ""  # a free new session uses no discount code (the original's stays with the original)


@dataclass(frozen=True, slots=True)
class OfferSlots:
    offer: Offer
    timezone: str
    session_minutes: int
    slots: list[tuple[int, int]]
    proposals: list[tuple[int, int]]


def _offer_event_body(offer: Offer) -> dict[str, Any]:
    return {"booking_id": offer.booking_id, "practitioner_id": offer.practitioner_id,
            "client_id": offer.client_id}


class RescheduleService:
    def __init__(self, store: RescheduleStore, bookings: BookingService, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.bookings = bookings
        self.settings = settings
        self.clock = clock

    def now(self) -> int:
        return int(self.clock.now())

    def terms(self, now: int) -> Terms:
        return Terms.at(now, window_days=self.settings.reschedule_window_days,
                        reminder_s=self.settings.reschedule_reminder_s)

    # --- making an offer ---

    async def offer_for_verdict(self, event: Event) -> bool:
        """The offer a `session.verdict` event calls for; False when it calls for none or one exists."""
        body = event.body
        if not rules.wants_offer(body):
            return False
        booking = await self._booking(str(body.get("booking_id") or ""))
        if booking is None:
            log.warning("a verdict names a booking that does not exist; no reschedule offered")
            return False
        now = int(event.time.timestamp())  # the offer runs from the verdict, even when handled late
        made = await self._create(booking, reason=OfferReason.VERDICT, attribution=str(body["attribution"]),
                                  by="", source_event_id=event.id, problem_id="", now=now,
                                  statuses=(BookingStatus.INTERRUPTED.value,))
        return made is not None

    async def offer_by(self, booking_id: str, *, sub: str, role: str, attribution: str, problem_id: str
                       ) -> tuple[Offer, bool]:
        """Support staff, an admin, or the booking's practitioner makes the offer (a problem that cannot be
        solved). A booking still in session is moved to `interrupted` with it. Returns the offer and whether
        it is new (an open or used offer is answered as it is)."""
        booking = await self._booking(booking_id)
        if booking is None or (role not in STAFF_ROLES and booking.party(sub, role) != "practitioner"):
            raise BookingNotFound()
        reason = OfferReason.PRACTITIONER if role == "practitioner" else OfferReason.SUPPORT
        made = await self._create(booking, reason=reason, attribution=attribution, by=sub, source_event_id="",
                                  problem_id=problem_id, now=self.now(),
                                  statuses=(BookingStatus.INTERRUPTED.value, BookingStatus.IN_SESSION.value),
                                  may_replace_expired=True)
        offer = await self.store.offer(booking_id)
        assert offer is not None  # written or found by the script
        return offer, made is not None

    async def _create(self, booking: Booking, *, reason: OfferReason, attribution: str, by: str,
                      source_event_id: str, problem_id: str, now: int, statuses: Sequence[str],
                      may_replace_expired: bool = False) -> Offer | None:
        terms = self.terms(now)
        fields = {"booking_id": booking.id, "practitioner_id": booking.practitioner_id,
                  "client_id": booking.client_id, "status": OfferStatus.OPEN.value, "reason": reason.value,
                  "attribution": attribution, "offered_at": str(terms.offered_at),
                  "expires_at": str(terms.expires_at), "original_starts_at": str(booking.starts_at),
                  "offered_by": by, "source_event_id": source_event_id, "problem_id": problem_id,
                  "proposals": "[]", "rev": "0"}
        event = Event("booking.reschedule_offered", {
            "booking_id": booking.id, "practitioner_id": booking.practitioner_id, "client_id": booking.client_id,
            "reason": reason.value, "attribution": attribution, "offered_by": by or None,
            "verdict_event_id": source_event_id or None, "problem_id": problem_id or None,
            "starts_at": iso(booking.starts_at), "offered_at": iso(terms.offered_at),
            "expires_at": iso(terms.expires_at), "window_days": self.settings.reschedule_window_days},
            time=at(now))
        interrupted = Event("booking.interrupted", {
            "booking_id": booking.id, "practitioner_id": booking.practitioner_id, "client_id": booking.client_id,
            "from": BookingStatus.IN_SESSION.value, "to": BookingStatus.INTERRUPTED.value, "by": reason.value,
            "attribution": attribution, "reason": "unresolved_technical_problem"}, time=at(now))
        outcome, _ = await self.store.create_offer(
            booking.id, fields, terms, statuses=statuses, event=event,
            interrupted=interrupted if BookingStatus.IN_SESSION.value in statuses else None,
            may_replace_expired=may_replace_expired)
        return None if outcome == "exists" else await self.store.offer(booking.id)

    # --- reading ---

    async def _booking(self, booking_id: str) -> Booking | None:
        found = await self.bookings.booking(booking_id)
        return found[0] if found else None

    async def offer(self, booking_id: str, *, sub: str, role: str) -> Offer:
        """The offer, for the booking's parties and staff; anyone else is told there is none."""
        offer = await self.store.offer(booking_id)
        if offer is None or (role not in STAFF_ROLES and offer.party(sub, role) is None):
            raise OfferNotFound()
        return offer

    async def slots(self, booking_id: str, *, sub: str, role: str) -> OfferSlots:
        """The times the client may choose: the practitioner's free slots (the client free too) from the
        lead time to the offer's end, and the practitioner's proposals still ahead."""
        offer = await self.offer(booking_id, sub=sub, role=role)
        now = self.now()
        p = await self.bookings.practitioner(offer.practitioner_id)
        slots: list[tuple[int, int]] = []
        proposals: list[tuple[int, int]] = []
        if offer.is_open(now):
            start = now + self.settings.booking_lead_time_s + LISTING_MARGIN_S
            end = offer.expires_at
            if start < end:
                free = [(s.starts_at, s.ends_at) for s in await self.bookings.free_slots(p, start, end, now)]
                mine = await self.bookings.bookings(client_id=offer.client_id, start=start - 86400, end=end,
                                                    limit=500)
                busy = [(b.starts_at, b.ends_at) for b, _ in mine if b.status not in RELEASING_STATES]
                slots = rules.free_for_both(free, busy)
            lead = now + self.settings.booking_lead_time_s
            proposals = [(s, s + p.session_s) for s in offer.proposals if lead <= s < offer.expires_at]
        return OfferSlots(offer, p.timezone, p.session_minutes, slots, proposals)

    async def offers(self, status: OfferStatus, limit: int) -> list[Offer]:
        """Open offers, or those that expired unused (support follows these up)."""
        key = EXPIRED_KEY if status is OfferStatus.EXPIRED else OPEN_KEY
        return [o for o in await self.store.offers(key, limit) if o.status is status]

    # --- the practitioner proposes, the client chooses ---

    async def propose(self, booking_id: str, starts: Sequence[int], *, sub: str, role: str) -> Offer:
        offer = await self.offer(booking_id, sub=sub, role=role)
        if offer.party(sub, role) != "practitioner":
            raise WrongParty("only the practitioner proposes times; the client chooses one")
        now = self.now()
        chosen = rules.check_proposals(offer, starts, now=now, lead_time_s=self.settings.booking_lead_time_s)
        p = await self.bookings.practitioner(offer.practitioner_id)
        # A time the practitioner is already booked at would only be refused when the client chose it.
        held = await self.bookings.bookings(practitioner_id=p.id, start=chosen[0] - MAX_SESSION_MINUTES * 60,
                                            end=chosen[-1] + p.session_s, limit=500)
        busy = [(b.starts_at, b.ends_at) for b, _ in held if b.status not in RELEASING_STATES]
        if rules.free_for_both([(s, s + p.session_s) for s in chosen], busy) != [
                (s, s + p.session_s) for s in chosen]:
            raise SlotTaken("you already have a session at one of these times")
        event = Event("booking.reschedule_proposed", {
            **_offer_event_body(offer),
            "proposals": [{"starts_at": iso(s), "ends_at": iso(s + p.session_s)} for s in chosen],
            "expires_at": iso(offer.expires_at)}, time=at(now))
        await self.store.propose(booking_id, chosen, event, now)
        updated = await self.store.offer(booking_id)
        assert updated is not None
        return updated

    async def choose(self, booking_id: str, starts_at: int, *, sub: str, role: str) -> tuple[Booking, Offer]:
        """The client takes one new time: the new booking, linked both ways, at no extra cost."""
        offer = await self.offer(booking_id, sub=sub, role=role)
        if offer.party(sub, role) != "client":
            raise WrongParty("only the client chooses the new time; the practitioner may propose times")
        now = self.now()
        rules.check_open(offer, now)
        rules.check_start(offer, starts_at, now=now, lead_time_s=self.settings.booking_lead_time_s)
        original = await self._booking(booking_id)
        if original is None:
            raise OfferNotFound()
        if original.status is not BookingStatus.INTERRUPTED:
            raise NotReschedulable(f"the booking is {original.status.value}")
        p = await self.bookings.practitioner(offer.practitioner_id)
        choice = rules.choice_for(offer, starts_at)
        # The client pays nothing more: the new booking costs 0, and the original's payment, shares and
        # discount carry over (the events say so, for the ledger).
        new = Booking(id=new_id(), practitioner_id=p.id, client_id=original.client_id, starts_at=starts_at,
                      ends_at=starts_at + p.session_s, status=BookingStatus.CONFIRMED, currency=original.currency,
                      client_total=0, practitioner_share=original.practitioner_share,
                      platform_share=original.platform_share, discount=0, code=NO_CODE, created_at=now,
                      timezone=p.timezone)
        carried = {"currency": original.currency, "client_total": original.client_total,
                   "practitioner_share": original.practitioner_share,
                   "platform_share": original.platform_share, "discount": original.discount,
                   "code": original.code or None}
        created = Event("booking.created", {**booking_event_body(new), "rescheduled_from": original.id,
                                            "carried_over": carried}, time=at(now))
        rescheduled = Event("booking.rescheduled", {
            "booking_id": original.id, "new_booking_id": new.id, "practitioner_id": new.practitioner_id,
            "client_id": new.client_id, "from": BookingStatus.INTERRUPTED.value,
            "to": BookingStatus.RESCHEDULED.value, "chosen_by": "client", "choice": choice.value,
            "reason": offer.reason.value, "attribution": offer.attribution,
            "original_starts_at": iso(original.starts_at), "starts_at": iso(new.starts_at),
            "ends_at": iso(new.ends_at), "client_total": 0, "carried_over": carried}, time=at(now))
        await self.store.choose(original, new, choice, created, rescheduled, now)
        used = await self.store.offer(booking_id)
        assert used is not None
        return new, used

    # --- the expiry job ---

    async def remind_due(self, now: int) -> list[str]:
        """Tell both parties of each offer that expires soon (once per offer)."""
        told = []
        for booking_id in await self.store.due(REMIND_KEY, now):
            offer = await self.store.offer(booking_id)
            if offer is None:
                continue
            event = Event("booking.reschedule_offer_expiring",
                          {**_offer_event_body(offer), "expires_at": iso(offer.expires_at)}, time=at(now))
            if await self.store.remind(booking_id, event, now):
                told.append(booking_id)
        return told

    async def expire_due(self, now: int) -> list[str]:
        """Close each offer past its end, unused, and flag it for support."""
        expired = []
        for booking_id in await self.store.due(OPEN_KEY, now):
            offer = await self.store.offer(booking_id)
            if offer is None:
                continue
            event = Event("booking.reschedule_offer_expired", {
                **_offer_event_body(offer), "reason": offer.reason.value, "attribution": offer.attribution,
                "offered_at": iso(offer.offered_at), "expires_at": iso(offer.expires_at),
                "needs_support": True}, time=at(now))
            if await self.store.expire(booking_id, event, now):
                expired.append(booking_id)
        if expired:
            log.warning("%d reschedule offer(s) expired unused; support is to follow them up", len(expired))
        return expired
