"""Room rules: when a room is open, who may enter, what each role sees. Pure: no I/O, no clock.

- A room belongs to one booking. It opens `open_before_s` before the start and closes `grace_after_s`
  after the end. Only confirmed (or already running) bookings have a room.
- The booking's client and practitioner are the parties. A support agent or an admin may also enter;
  they are listed to everyone like any participant (nobody is hidden), but they never receive the
  chat text or the documents (health data) and take no part in the media.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ..auth import Identity, Permission, Role
from ..bookings.model import Booking, BookingStatus
from ..errors import DomainError, Forbidden, Gone, InvalidInput, NotFound, UnsupportedMediaType

JOINABLE = frozenset({BookingStatus.CONFIRMED, BookingStatus.IN_SESSION})
PARTY_ROLES = frozenset({Role.CLIENT, Role.PRACTITIONER})
STAFF_ROLES = frozenset({Role.SUPPORT, Role.ADMIN})


# The room's refusals, each with the stable code docs/protocol.md lists. The socket edge turns them into
# an `error` message, and a refused join into the close code the protocol names for its kind. A missing
# or bad token is refused with auth.py's token errors, as on HTTP.


class RoomNotFound(NotFound):
    """No room for this id: there is no such booking."""

    code, title = "room_not_found", "Room not found"


class NotAParty(Forbidden):
    """Not this booking's client or practitioner (staff may enter, but only the parties act as one)."""

    code, title = "not_a_party", "Not a party"


class RoomNotOpenYet(DomainError):
    """The room opens `room_open_before_s` before the session starts: join again then."""

    status, code, title = 425, "room_not_open", "Room not open yet"


class RoomClosed(Gone):
    """The booking is cancelled or done, or `room_grace_after_s` after the session's end has passed; its
    `reason` is why, with the codes of `room.closing` (`ENDED_BY`), so that a page says which."""

    code, title = "room_closed", "Room closed"


class TooManyConnections(DomainError):
    """The user already has `ws_max_connections_per_user` sockets open to other rooms, on any server process."""

    status, code, title = 429, "too_many_connections", "Too many connections"


class TokenMismatch(Forbidden):
    """A `token.refresh` whose token is for another user or role than the connection's."""

    code, title = "token_mismatch", "Token for someone else"


class NotThePractitioner(Forbidden):
    """`session.end_technical` from someone other than the booking's practitioner."""

    code, title = "not_the_practitioner", "Only the practitioner"


class NotYourPeer(Forbidden):
    """Media signaling addressed to someone other than the other party of the session."""

    code, title = "not_your_peer", "Not your peer"


class AlreadyJoined(InvalidInput):
    """A second `join` on a socket that has joined already."""

    code, title = "already_joined", "Already joined"


class MessageTooLarge(InvalidInput):
    """A chat message over `chat_max_bytes`."""

    code, title = "message_too_large", "Message too large"


# Refusals of the socket itself, decided by the edge (rooms/ws.py) before a message reaches the room.


class JoinTimeout(DomainError):
    """The socket sent no `join` in time after it opened; it is closed with 4408."""

    status, code, title = 408, "join_timeout", "Join timeout"


class BinaryNotSupported(UnsupportedMediaType):
    """A binary WebSocket frame: the protocol speaks JSON text frames only."""

    code, title = "binary_not_supported", "Binary not supported"


class Flood(DomainError):
    """All messages together over ten times the chat rate; the socket is closed with 4429."""

    status, code, title = 429, "flood", "Flood"


class RoomState(enum.StrEnum):
    EMPTY = "empty"
    WAITING_FOR_PRACTITIONER = "waiting_for_practitioner"
    WAITING_FOR_CLIENT = "waiting_for_client"
    IN_SESSION = "in_session"


@dataclass(frozen=True, slots=True)
class Window:
    opens_at: int  # epoch seconds, UTC
    closes_at: int

    def is_open(self, now: float) -> bool:
        return self.opens_at <= now < self.closes_at


def window(booking: Booking, open_before_s: int, grace_after_s: int) -> Window:
    return Window(booking.starts_at - open_before_s, booking.ends_at + grace_after_s)


# Why a booking has no right to its room: the code `room.closing` and a refused join's `error` (`reason`)
# carry, and what a person reads. A status out of JOINABLE that is not named here is a session whose
# verdict is written (completed, interrupted, a no-show, ended early).
SESSION_OVER = ("session_over", "the session is over and its room is closed")
SESSION_ENDED = ("session_ended", "the session is over")
PRACTITIONER_SUSPENDED = ("practitioner_suspended", "the practitioner's account is suspended; the room is closed")
ENDED_BY = {
    BookingStatus.CANCELLED: ("booking_cancelled", "the booking was cancelled"),
    BookingStatus.RESCHEDULED: ("booking_rescheduled", "the session was moved to another time; its new "
                                                        "booking has a room of its own"),
}
NO_BOOKING = ("booking_ended", "the booking no longer exists")


def ended(booking: Booking | None, win: Window | None, now: float, *,
          practitioner_suspended: bool = False) -> tuple[str, str] | None:
    """Why `booking` has no right to its room at `now` (code, words), or None while it has one."""
    if booking is None or win is None:
        return NO_BOOKING
    if practitioner_suspended:  # first: a room it closed has a verdict written since, for this reason
        return PRACTITIONER_SUSPENDED
    if booking.status not in JOINABLE:
        return ENDED_BY.get(booking.status, SESSION_ENDED)
    if now >= win.closes_at:
        return SESSION_OVER
    return None


def admit(identity: Identity, booking: Booking | None, win: Window | None, now: float, *,
          practitioner_suspended: bool = False) -> Role:
    """The role the caller enters with, or the refusal. Checks run cheapest and least revealing first:
    a stranger learns nothing about the booking's times or status."""
    identity.require(Permission.ROOMS_JOIN)
    if booking is None or win is None:
        raise RoomNotFound("there is no room for this booking")
    role = identity.role
    if role is Role.CLIENT and identity.sub != booking.client_id:
        raise NotAParty("this room belongs to another booking's client")
    if role is Role.PRACTITIONER and identity.sub != booking.practitioner_id:
        raise NotAParty("this room belongs to another practitioner's booking")
    if practitioner_suspended:
        code, words = PRACTITIONER_SUSPENDED
        raise RoomClosed(words, reason=code)
    if booking.status not in JOINABLE:
        code, words = ENDED_BY.get(booking.status, SESSION_ENDED)
        raise RoomClosed(f"{words} (the booking is {booking.status.value}); its room is closed", reason=code)
    if now < win.opens_at:
        raise RoomNotOpenYet("the room opens shortly before the session starts",
                             opens_at=win.opens_at)
    if now >= win.closes_at:
        raise RoomClosed(SESSION_OVER[1], reason=SESSION_OVER[0])
    return role


def receives_health_data(role: Role | str) -> bool:
    """Chat text and documents reach the parties only."""
    return role in PARTY_ROLES


def room_state(present_roles: Iterable[Role | str]) -> RoomState:
    roles = set(present_roles)
    has_client, has_practitioner = Role.CLIENT in roles, Role.PRACTITIONER in roles
    if has_client and has_practitioner:
        return RoomState.IN_SESSION
    if has_client:
        return RoomState.WAITING_FOR_PRACTITIONER
    if has_practitioner:
        return RoomState.WAITING_FOR_CLIENT
    return RoomState.EMPTY


def media_peer(role: Role | str, booking: Booking) -> str | None:
    """In relay mode each party's media goes to the other party, and nobody else's goes anywhere."""
    if role == Role.CLIENT:
        return booking.practitioner_id
    if role == Role.PRACTITIONER:
        return booking.client_id
    return None
