"""The refusals of bookings, each a typed error with its stable code, HTTP status and title.

Raised where the refusal is decided (rules, service, store); the booking scripts answer a code, which
`script_refusal` turns into its class. Titles are the ones clients have always been sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, WordedError


class _Unprocessable(DomainError):
    """Well-formed, but not something the bookings can do (422)."""

    status = 422


# --- not found -----------------------------------------------------------------------------------


class PractitionerNotFound(NotFound):
    """No practitioner with this id, or one that is not active and the caller is a client."""

    code = "practitioner_not_found"

    def __init__(self, message: str = "no such practitioner", **extra: Any) -> None:
        super().__init__(message, **extra)


class BookingNotFound(NotFound):
    """No booking with this id, or not one the caller is a party to."""

    code = "booking_not_found"

    def __init__(self, message: str = "no such booking", **extra: Any) -> None:
        super().__init__(message, **extra)


class NotYourProfile(Forbidden):
    """A practitioner may change only their own price, availability and codes (an admin anyone's)."""

    code = "not_your_profile"


# --- conflicts (title "Conflict", as ever) -------------------------------------------------------


class AlreadyExists(Conflict):
    """A practitioner or discount code with this id already exists."""

    code, title = "exists", "Already exists"


class NotBookable(Conflict):
    """The practitioner is not active (suspended or not yet activated): no new bookings."""

    code = "not_bookable"


class PractitionerChanged(Conflict):
    """The practitioner changed between the quote and the booking: ask for a new quote."""

    code = "practitioner_changed"


class SlotTaken(Conflict):
    """Someone else booked this slot first: pick another one."""

    code = "slot_taken"


class ClientOverlap(Conflict):
    """The client already has a booking that overlaps this slot."""

    code = "client_overlap"


class IllegalTransition(Conflict):
    """The booking or practitioner status cannot change this way from its current status."""

    code = "illegal_transition"


class Stale(Conflict):
    """The record changed while this request was deciding: read it again and retry."""

    code, title = "stale", "Stale record"


# --- refusals titled by their code ---------------------------------------------------------------


class PriceChanged(WordedError):
    """The price or session length differs from `expected_total`: ask for a new quote."""

    status, code, title = 409, "price_changed", "Price changed"
    texts: ClassVar[Mapping[str, str]] = {
        "en": "the price is now {total}; ask for a new quote",
        "fr": "le prix est maintenant de {total} ; demandez un nouveau devis",
        "ar": "أصبح السعر {total}؛ اطلب عرض سعر جديدًا",
    }


class DiscountExceedsCommission(WordedError):
    """A platform code (a promotion, or a referral's discount and credit) would give more than the
    platform's commission on a session (`SESSION_SERVER_PLATFORM_COMMISSION_MINOR`)."""

    status, code, title = 422, "discount_exceeds_commission", "Discount exceeds the commission"
    texts: ClassVar[Mapping[str, str]] = {
        "en": "a platform code gives at most the platform's commission, {commission}; this one would give {value}",
        "fr": "un code de la plateforme donne au plus la commission de la plateforme, {commission} ; "
              "celui-ci donnerait {value}",
        "ar": "لا يتجاوز رمز المنصة عمولتها، {commission}؛ وهذا الرمز يعطي {value}",
    }


class TooLateToCancel(DomainError):
    """The session has started: only an admin may cancel it now."""

    status, code, title = 409, "too_late_to_cancel", "Too late to cancel"


class SlotsAvailable(DomainError):
    """The practitioner has free slots: book one instead of joining the waiting list."""

    status, code, title = 409, "slots_available", "Slots available"


class NotASlot(_Unprocessable):
    """`starts_at` is not the start of one of the practitioner's published slots."""

    code, title = "not_a_slot", "Not a slot"


class TooSoon(_Unprocessable):
    """The slot starts sooner than the booking lead time allows."""

    code, title = "too_soon", "Too soon"


class CodeUnknown(_Unprocessable):
    """No discount code by this name."""

    code, title = "code_unknown", "Code unknown"


class CodeExpired(_Unprocessable):
    """The discount code has expired."""

    code, title = "code_expired", "Code expired"


class CodeUsedUp(_Unprocessable):
    """The discount code has reached its number of uses."""

    code, title = "code_used_up", "Code used up"


class CodeAlreadyUsed(_Unprocessable):
    """This client has already used this discount code once."""

    code, title = "code_already_used", "Code already used"


class CodeNotApplicable(_Unprocessable):
    """The discount code does not apply here (another practitioner's, another currency, the referrer's own)."""

    code, title = "code_not_applicable", "Code not applicable"


# --- availability (rules.check_spec, rules.check_slot_range) -------------------------------------


class AvailabilityError(_Unprocessable):
    """Availability or a range of slots that cannot be published or listed."""


class BadWindow(AvailabilityError):
    """An availability window is malformed: a weekday outside 0 to 6, an end not after its start, a
    blocked day with a window."""

    code, title = "bad_window", "Bad window"


class DateInPast(AvailabilityError):
    """An exception to availability names a date already past."""

    code, title = "date_in_past", "Date in the past"


class BeyondHorizon(AvailabilityError):
    """A booking, or an exception to availability, further ahead than bookings open."""

    code, title = "beyond_horizon", "Beyond horizon"


class ConflictingException(AvailabilityError):
    """The same date is given both as blocked and with a window: say which one."""

    code, title = "conflicting_exception", "Conflicting exception"


class BadRange(AvailabilityError):
    """The requested range of slots ends before it starts."""

    code, title = "bad_range", "Bad range"


class RangeTooLong(AvailabilityError):
    """The requested range of slots spans more days than the server lists at once."""

    code, title = "range_too_long", "Range too long"


# --- input the edge cannot take ------------------------------------------------------------------


class CurrencyNotSupported(InvalidInput):
    """The price is in a currency other than the platform's."""

    code = "currency_not_supported"


class EmptyUpdate(InvalidInput):
    """The update names no field to change."""

    code = "empty_update"


class DateOutOfRange(InvalidInput):
    """A date before 1970 or from 2100 on."""

    code = "date_out_of_range"


class ExpiresInPast(InvalidInput):
    """The discount code's expiry date is already past."""

    code, title = "expires_in_past", "Expiry in the past"


# The codes the booking scripts (and the pricing of a code) answer with, and the error each one is.
SCRIPT_REFUSALS: dict[str, type[DomainError]] = {cls.code: cls for cls in (
    PractitionerNotFound, AlreadyExists, NotBookable, PractitionerChanged, NotASlot, SlotTaken, ClientOverlap,
    CodeUnknown, CodeExpired, CodeUsedUp, CodeAlreadyUsed, CodeNotApplicable, IllegalTransition, Stale,
    PriceChanged,
)}

_MESSAGES = {
    "practitioner_not_found": "no such practitioner",
    "exists": "it already exists",
    "not_bookable": "this practitioner cannot be booked now",
    "price_changed": "the price or session length changed; ask for a new quote",
    "practitioner_changed": "the practitioner changed meanwhile; ask for a new quote",
    "not_a_slot": "that time is not one of the practitioner's slots",
    "slot_taken": "that slot has just been booked by someone else",
    "client_overlap": "you already have a booking at that time",
    "code_unknown": "no such code",
    "code_expired": "this code has expired",
    "code_used_up": "this code has been used up",
    "code_already_used": "you have already used this code",
    "code_not_applicable": "this code does not apply to this booking",
    "illegal_transition": "that change is not allowed in the current state",
    "stale": "the record changed meanwhile; try again",
}

# Refusals that a stale cached practitioner can cause: a booking is retried once with a fresh read.
STALE_REFUSALS: tuple[type[DomainError], ...] = (PractitionerChanged, NotBookable, PractitionerNotFound,
                                                 PriceChanged)


def script_refusal(code: str, detail: str = "") -> DomainError:
    """The error for a refusal code a booking script or the pricing answered."""
    cls = SCRIPT_REFUSALS.get(code)
    if cls is None:  # a script answering a code with no class (a defect): still a conflict, never a 500
        return Conflict(detail or code)
    return cls(detail or _MESSAGES[code])
