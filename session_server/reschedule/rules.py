"""Free reschedule rules: who gets an offer, until when, and which new times it allows. Pure: no I/O, no
clock (`now` is passed).

A session that broke down for a technical reason (the verdict `interrupted`, with the platform, either
party's connection or an unknown cause to blame) is offered a new session at no extra cost. The offer
lasts `window_days`: the new session must start before the offer expires, at least the booking lead time
after the choice, either on one of the practitioner's free slots or at one of up to three times the
practitioner proposed (which may lie outside their published availability). The offer is used once.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..bookings.errors import TooSoon
from .errors import OfferExpired, OfferUsed, OutsideOffer

DAY_S = 86400
MAX_PROPOSALS = 3


class OfferStatus(enum.StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    EXPIRED = "expired"


class OfferReason(enum.StrEnum):
    VERDICT = "verdict"  # the session's verdict said interrupted, for a technical reason
    SUPPORT = "support"  # support staff (or an admin) could not solve a reported problem
    PRACTITIONER = "practitioner"  # the practitioner ended a broken session: "technical problem, reschedule"


class Choice(enum.StrEnum):
    SLOT = "slot"  # one of the practitioner's published free slots
    PROPOSAL = "proposal"  # one of the times the practitioner proposed


# The attributions of an interruption that make it the platform's (or the network's) fault, not a party's
# choice: each of them is rescheduled free of charge.
TECHNICAL_ATTRIBUTIONS = frozenset({"platform", "client_connection", "practitioner_connection", "unknown"})


def wants_offer(verdict_body: Mapping[str, Any]) -> bool:
    """Does a `session.verdict` event call for a free reschedule?"""
    return (verdict_body.get("verdict") == "interrupted"
            and verdict_body.get("attribution") in TECHNICAL_ATTRIBUTIONS)


@dataclass(frozen=True, slots=True)
class Terms:
    offered_at: int
    expires_at: int  # the offer ends, and a new session must start before then
    remind_at: int  # both parties are told the offer expires soon

    @classmethod
    def at(cls, now: int, *, window_days: int, reminder_s: int) -> Terms:
        expires = now + window_days * DAY_S
        return cls(now, expires, max(now, expires - reminder_s))


@dataclass(frozen=True, slots=True)
class Offer:
    booking_id: str
    practitioner_id: str
    client_id: str
    status: OfferStatus
    reason: OfferReason
    attribution: str
    offered_at: int
    expires_at: int
    original_starts_at: int
    proposals: tuple[int, ...] = ()  # start times the practitioner proposed, epoch seconds
    new_booking_id: str = ""
    choice: str = ""
    accepted_at: int = 0
    expired_at: int = 0
    reminded_at: int = 0
    proposed_at: int = 0

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Offer:
        h = {_text(k): _text(v) for k, v in raw.items()}
        return cls(booking_id=h["booking_id"], practitioner_id=h["practitioner_id"], client_id=h["client_id"],
                   status=OfferStatus(h["status"]), reason=OfferReason(h["reason"]),
                   attribution=h["attribution"], offered_at=int(h["offered_at"]),
                   expires_at=int(h["expires_at"]), original_starts_at=int(h["original_starts_at"]),
                   proposals=tuple(int(x) for x in json.loads(h.get("proposals") or "[]")),
                   new_booking_id=h.get("new_booking_id", ""), choice=h.get("choice", ""),
                   accepted_at=int(h.get("accepted_at") or 0), expired_at=int(h.get("expired_at") or 0),
                   reminded_at=int(h.get("reminded_at") or 0), proposed_at=int(h.get("proposed_at") or 0))

    def party(self, sub: str, role: str) -> str | None:
        if role == "client" and sub == self.client_id:
            return "client"
        if role == "practitioner" and sub == self.practitioner_id:
            return "practitioner"
        return None

    def is_open(self, now: int) -> bool:
        return self.status is OfferStatus.OPEN and now < self.expires_at


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def check_open(offer: Offer, now: int) -> None:
    """Refuse anything on an offer already used or past its end."""
    if offer.status is OfferStatus.ACCEPTED:
        raise OfferUsed("this offer has already been used: the session was rescheduled",
                        new_booking_id=offer.new_booking_id)
    if not offer.is_open(now):
        raise OfferExpired("this offer has expired; support will contact you")


def check_start(offer: Offer, starts_at: int, *, now: int, lead_time_s: int) -> None:
    """A new session's start must leave the lead time and fall before the offer ends."""
    if starts_at < now + lead_time_s:
        raise TooSoon("that time starts too soon to be booked")
    if starts_at >= offer.expires_at:
        raise OutsideOffer("that time is after the offer's last day")


def choice_for(offer: Offer, starts_at: int) -> Choice:
    """A proposed time is taken as proposed (it may lie outside the published availability); any other time
    must be one of the practitioner's free slots."""
    return Choice.PROPOSAL if starts_at in offer.proposals else Choice.SLOT


def check_proposals(offer: Offer, starts: Iterable[int], *, now: int, lead_time_s: int) -> tuple[int, ...]:
    """The proposed times, distinct and in order, each one a possible start for the new session."""
    check_open(offer, now)
    chosen = tuple(sorted(set(starts)))
    for s in chosen:
        check_start(offer, s, now=now, lead_time_s=lead_time_s)
    return chosen


def free_for_both(candidates: Sequence[tuple[int, int]], client_busy: Iterable[tuple[int, int]]
                  ) -> list[tuple[int, int]]:
    """The practitioner's free slots the client is free for too."""
    busy = list(client_busy)
    return [(s, e) for s, e in candidates if not any(bs < e and be > s for bs, be in busy)]
