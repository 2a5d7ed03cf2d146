"""The support board's refusals (catalogued: docs/api.md lists them)."""

from __future__ import annotations

from ..errors import Conflict, Forbidden, InvalidInput, NotFound


class TicketNotFound(NotFound):
    """No problem ticket has this id."""

    code, title = "ticket_not_found", "Ticket not found"


class TicketMoveRefused(Conflict):
    """The ticket's status does not allow this step (it was already answered, resolved or abandoned)."""

    code, title = "ticket_move_refused", "Ticket move refused"


class UnknownCause(InvalidInput):
    """The cause of a note is not one of the fixed list (docs/support.md)."""

    code, title = "unknown_cause", "Unknown cause"


class TicketNoteTooLong(InvalidInput):
    """A ticket's note is longer than 1,000 characters."""

    code, title = "ticket_note_too_long", "Ticket note too long"


class EmptyNote(InvalidInput):
    """A note with neither a cause nor a text."""

    code, title = "empty_note", "Empty note"


class SessionNotOnBoard(NotFound):
    """No booking has this id."""

    code, title = "session_not_on_board", "Session not on the board"


class AuditNotYours(Forbidden):
    """A practitioner may read the audit of their own sessions only, one booking at a time."""

    code, title = "audit_not_yours", "Not your session"
