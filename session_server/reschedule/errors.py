"""The refusals of free reschedules, each a typed error with its stable code, HTTP status and title.

The reschedule scripts answer a code, which `script_refusal` turns into its class (codes the bookings
share, such as `slot_taken`, keep the bookings' classes).
"""

from __future__ import annotations

from ..bookings.errors import SCRIPT_REFUSALS as BOOKING_REFUSALS
from ..bookings.errors import script_refusal as booking_refusal
from ..errors import Conflict, DomainError, Forbidden, NotFound


class OfferNotFound(NotFound):
    """No reschedule offer for this booking, or not one the caller may see."""

    code = "offer_not_found"

    def __init__(self, message: str = "there is no reschedule offer for this booking", **extra: object) -> None:
        super().__init__(message, **extra)


class OfferUsed(Conflict):
    """The offer has already been used: the session was rescheduled once (`new_booking_id` says to which)."""

    code = "offer_used"


class OfferExpired(DomainError):
    """The offer has expired unused; support has been told and will contact both parties."""

    status, code, title = 409, "offer_expired", "Offer expired"


class NotReschedulable(Conflict):
    """Only a session in progress or interrupted can be offered a free reschedule."""

    code = "not_reschedulable"


class WrongParty(Forbidden):
    """Only the client chooses the new time; only the practitioner proposes times."""

    code = "wrong_party"


class OutsideOffer(DomainError):
    """The time is after the offer's last day: choose one within the days the offer covers."""

    status, code, title = 422, "outside_offer", "Outside the offer"


class NotOffered(DomainError):
    """The time is not one of the times the practitioner proposed (they may have changed them)."""

    status, code, title = 422, "not_offered", "Not offered"


_OWN: dict[str, type[DomainError]] = {cls.code: cls for cls in (
    OfferNotFound, OfferUsed, OfferExpired, NotReschedulable, NotOffered)}

_MESSAGES = {
    "offer_not_found": "there is no reschedule offer for this booking",
    "offer_used": "this offer has already been used: the session was rescheduled",
    "offer_expired": "this offer has expired; support will contact you",
    "not_reschedulable": "only a session in progress or interrupted can be rescheduled free of charge",
    "not_offered": "that time is not one the practitioner proposed",
}


def script_refusal(code: str, **extra: object) -> DomainError:
    """The error for a refusal code a reschedule script answered."""
    cls = _OWN.get(code)
    if cls is not None:
        return cls(_MESSAGES[code], **extra)
    if code in BOOKING_REFUSALS:
        return booking_refusal(code)
    return Conflict(code)  # a script answering a code with no class (a defect): still a conflict, never a 500
