"""The refusals of the ledger's routes, each a typed error with its stable code, HTTP status and title."""

from __future__ import annotations

from ..errors import Conflict, DomainError, Forbidden, NotFound


class ComplaintNotFound(NotFound):
    """No complaint with this id, or not one the caller may see."""

    code = "complaint_not_found"


class PayoutNotFound(NotFound):
    """No payout with this id."""

    code = "payout_not_found"


class NotYourStatement(Forbidden):
    """A practitioner sees only their own statement (an admin anyone's)."""

    code = "not_your_statement"


class SessionNotSettled(Conflict):
    """The session's money is not settled yet (it has not ended, or the ledger is still recording it)."""

    code = "session_not_settled"


class AlreadyComplained(Conflict):
    """This booking already has a complaint: one per booking."""

    code = "already_complained"


class ComplaintWindowClosed(DomainError):
    """Complaints about a session are taken for a set number of days after it; that time is over."""

    status, code, title = 409, "complaint_window_closed", "Complaint window closed"


class HoldPending(DomainError):
    """The complaint's money is being held right now: try again in a moment."""

    status, code, title = 409, "hold_pending", "Hold pending"


class AlreadyResolved(Conflict):
    """The complaint was resolved already: a hold resolves once."""

    code = "already_resolved"


class RefundTooLarge(DomainError):
    """A refund comes from the held amount and cannot exceed it."""

    status, code, title = 422, "refund_too_large", "Refund too large"


class PayoutAnswered(Conflict):
    """The bank's answer for this payout was recorded already."""

    code = "payout_answered"


class RefundNotFound(NotFound):
    """No refund with this id, or not one the caller may see."""

    code = "refund_not_found"


class RefundNotSent(Conflict):
    """The refund has not been handed to the payment gateway yet: there is nothing to answer."""

    code = "refund_not_sent"


class RefundAnswered(Conflict):
    """The gateway's answer for this refund was recorded already."""

    code = "refund_answered"


class RefundAttemptStale(Conflict):
    """The answer names an earlier hand-over of this refund than its latest: it was handed over again since."""

    code = "refund_attempt_stale"


class RefundNotFailed(Conflict):
    """Only a refund the gateway could not make is sent again."""

    code = "refund_not_failed"


class NotAnEstimatedHoliday(DomainError):
    """The date is not one of Algeria's estimated (Islamic) holidays."""

    status, code, title = 422, "not_an_estimated_holiday", "Not an estimated holiday"


def script_refusal(status: str) -> DomainError:
    refusals: dict[str, DomainError] = {
        "not_found": ComplaintNotFound("no such complaint"),
        "exists": AlreadyComplained("this booking already has a complaint"),
        "hold_pending": HoldPending("the complaint's money is being held; try again in a moment"),
        "resolved": AlreadyResolved("this complaint was resolved already"),
        "too_large": RefundTooLarge("the refund cannot exceed the held amount"),
        "no_payout": PayoutNotFound("no such payout"),
        "answered": PayoutAnswered("this payout was answered already"),
        "no_refund": RefundNotFound("no such refund"),
        "refund_not_sent": RefundNotSent("this refund has not been handed to the payment gateway yet"),
        "refund_answered": RefundAnswered("this refund was answered already"),
        "refund_not_failed": RefundNotFailed("only a refund the gateway could not make is sent again"),
        "refund_attempt_stale": RefundAttemptStale("this answer is for an earlier hand-over of the refund"),
    }
    return refusals[status]
