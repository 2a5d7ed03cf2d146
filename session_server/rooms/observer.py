"""What other features learn about rooms as it happens: the `RoomObserver` interface.

A feature that follows sessions (outages, the support board) implements the methods it needs (the others
may stay as the no-op defaults of `BaseRoomObserver`) and plugs in from its `Feature.start()` with
`ctx.rooms.observe(observer)`; it starts after the rooms feature. The room service calls observers after
the change is stored and its event written, in the order of the changes on this node, and awaits them:
an observer is quick (a Redis write, a queue put) and leaves slow work to its own loops. An observer that
raises is logged and the room goes on; the others are still called.

Observers run on the node where the change happened, so each change is observed once in the cluster
(a participant swept after its node died is observed by the node that swept it). The events stream
(docs/events.md) remains the durable record; observers are for reacting while a session runs.
No chat text reaches an observer.

One question goes the other way: `ongoing` asks each observer what a participant entering the room (or
coming back to it) must be told of what is going on, since what the others were told earlier on the room's
push channel did not reach that page. Its answer is sent right after `joined`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..bookings.model import Booking


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    booking: Booking
    participant_id: str
    role: str
    resumed: bool  # the participant already had an entry: a reconnection or a second device
    at_ms: int


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    room_id: str  # the booking id
    participant_id: str
    role: str
    reason: str  # leave | timeout | room_closed | node_lost (docs/protocol.md, participant.left)
    at_ms: int


@dataclass(frozen=True, slots=True)
class ProblemReported:
    booking: Booking
    participant_id: str
    role: str
    kind: str  # what the participant chose: audio | video | connection | other


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    room_id: str  # the booking id
    participant_id: str
    role: str
    lost: bool  # True: heartbeats stopped (shown reconnecting); False: heard again
    at_ms: int


@dataclass(frozen=True, slots=True)
class TechnicalEnd:
    booking: Booking
    participant_id: str  # the practitioner
    at_ms: int


class RoomObserver(Protocol):
    async def session_started(self, booking: Booking, at_ms: int) -> None:
        """Both parties were present for the first time (after `session.started` is written)."""
        ...

    async def participant_joined(self, joined: ParticipantJoined) -> None:
        """A participant entered the room (after `room.joined` is written for a fresh entry)."""
        ...

    async def participant_left(self, left: ParticipantLeft) -> None:
        """A participant is gone from the room (after `room.left` is written)."""
        ...

    async def problem_reported(self, report: ProblemReported) -> None:
        """A party pressed "report a technical problem"."""
        ...

    async def room_ended(self, room_id: str, reason: str, at_ms: int) -> None:
        """The room's last participant left, for `reason`. With `room_closed` the session's time is
        over and nobody can come back; otherwise someone may still join while the room is open, and
        the room runs again (and ends again)."""
        ...

    async def connection_changed(self, changed: ConnectionChanged) -> None:
        """A participant's heartbeats stopped (shown reconnecting) or were heard again."""
        ...

    async def technical_end(self, end: TechnicalEnd) -> None:
        """The practitioner ended the session with "technical problem, reschedule"."""
        ...

    async def ongoing(self, booking: Booking, participant_id: str, role: str) -> list[dict[str, Any]]:
        """What a participant entering the room now (fresh or resumed) is told, right after `joined`, of
        what the room's push channel told the others and still holds: messages as that channel carries
        them (a JSON object with a `type`; the room adds the `id`). Asked only for participants who get the
        room's pushes (not support staff)."""
        ...


class BaseRoomObserver:
    """Every notification ignored: subclass it and override what the feature needs."""

    async def session_started(self, booking: Booking, at_ms: int) -> None:
        return None

    async def participant_joined(self, joined: ParticipantJoined) -> None:
        return None

    async def participant_left(self, left: ParticipantLeft) -> None:
        return None

    async def problem_reported(self, report: ProblemReported) -> None:
        return None

    async def room_ended(self, room_id: str, reason: str, at_ms: int) -> None:
        return None

    async def connection_changed(self, changed: ConnectionChanged) -> None:
        return None

    async def technical_end(self, end: TechnicalEnd) -> None:
        return None

    async def ongoing(self, booking: Booking, participant_id: str, role: str) -> list[dict[str, Any]]:
        return []
