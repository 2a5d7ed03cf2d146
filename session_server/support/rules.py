"""The support board's decisions, pure: what state a session is in, what is trouble, how a ticket moves,
how the day's response figures are counted, and the pseudonym a client is shown under.

Nothing here reads a clock or Redis: callers pass `now_ms` (epoch milliseconds) and the facts.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import EmptyNote, TicketMoveRefused, TicketNoteTooLong, UnknownCause


class SessionState(enum.StrEnum):
    UPCOMING = "upcoming"  # the room opens within the hour
    WAITING_FOR_BOTH = "waiting_for_both"  # the room is open, nobody came yet
    WAITING_FOR_CLIENT = "waiting_for_client"
    WAITING_FOR_PRACTITIONER = "waiting_for_practitioner"
    IN_SESSION = "in_session"
    RECONNECTING = "reconnecting"  # a party's connection is being re-established
    MEDIA_DOWN = "media_down"  # both are in the room but a party's media failed or stopped
    INTERRUPTED = "interrupted"  # the session's verdict: technical interruption
    ENDED = "ended"


# Trouble first: the board sorts by this rank (lower is more urgent), then by scheduled start.
TROUBLE_RANK: Mapping[SessionState, int] = {
    SessionState.MEDIA_DOWN: 0,
    SessionState.INTERRUPTED: 1,
    SessionState.RECONNECTING: 2,
    SessionState.WAITING_FOR_PRACTITIONER: 3,
    SessionState.WAITING_FOR_CLIENT: 4,
    SessionState.WAITING_FOR_BOTH: 5,
    SessionState.IN_SESSION: 6,
    SessionState.UPCOMING: 7,
    SessionState.ENDED: 8,
}
TROUBLE = frozenset({SessionState.MEDIA_DOWN, SessionState.INTERRUPTED, SessionState.RECONNECTING})
POOR_QUALITY = frozenset({"poor", "lost"})
MEDIA_DOWN_STATES = frozenset({"media_stopped", "failed"})
ENDED_STATUSES = frozenset({"completed", "cancelled", "rescheduled", "client_no_show", "practitioner_no_show",
                            "both_no_show", "ended_early"})


@dataclass(frozen=True, slots=True)
class PartyFacts:
    present: bool = False
    reconnecting: bool = False  # the room's heartbeat lost the socket; it may come back
    media: str | None = None  # the last media.state_changed state
    quality: str | None = None  # the last quality verdict


@dataclass(frozen=True, slots=True)
class SessionFacts:
    starts_at_ms: int
    ends_at_ms: int
    opens_at_ms: int
    closes_at_ms: int
    status: str  # the booking's status
    client: PartyFacts = field(default_factory=PartyFacts)
    practitioner: PartyFacts = field(default_factory=PartyFacts)
    verdict: str | None = None


def session_state(f: SessionFacts, now_ms: int) -> SessionState:
    """What a support agent needs to know first about a session, from its booking and presence."""
    if f.verdict == "interrupted" or f.status == "interrupted":
        return SessionState.INTERRUPTED
    if f.status in ENDED_STATUSES or f.verdict is not None or now_ms >= f.closes_at_ms:
        return SessionState.ENDED
    if now_ms < f.opens_at_ms:
        return SessionState.UPCOMING
    c, p = f.client, f.practitioner
    if c.present and p.present:
        if c.media in MEDIA_DOWN_STATES or p.media in MEDIA_DOWN_STATES:
            return SessionState.MEDIA_DOWN
        if c.reconnecting or p.reconnecting or c.media == "reconnecting" or p.media == "reconnecting":
            return SessionState.RECONNECTING
        return SessionState.IN_SESSION
    if c.reconnecting or p.reconnecting:
        return SessionState.RECONNECTING
    if c.present:
        return SessionState.WAITING_FOR_PRACTITIONER
    if p.present:
        return SessionState.WAITING_FOR_CLIENT
    return SessionState.WAITING_FOR_BOTH


def trouble_key(state: SessionState, worst_quality: str | None, open_tickets: int,
                starts_at_ms: int) -> tuple[int, int, int, int]:
    """Sort key, most urgent first: open tickets, then the state's rank, then poor quality, then start."""
    poor = 0 if worst_quality in POOR_QUALITY else 1
    return (0 if open_tickets else 1, TROUBLE_RANK[state], poor, starts_at_ms)


def minutes(start_ms: int, end_ms: int, now_ms: int) -> tuple[int, int]:
    """(elapsed, remaining) whole minutes of the scheduled session at `now_ms`, never negative."""
    elapsed = max(0, min(now_ms, end_ms) - start_ms) // 60_000
    remaining = max(0, end_ms - max(now_ms, start_ms)) // 60_000
    return int(elapsed), int(remaining)


def pseudonym(secret: bytes, booking_id: str, client_id: str) -> str:
    """A client's name on the board: stable for one booking, unlinkable across bookings without the
    secret, never the name or the id. Four groups of Crockford base32 would be more than an agent can say
    on the phone: two groups of four are enough to tell the clients of one hour apart."""
    digest = hmac.new(secret, f"{booking_id}\x1f{client_id}".encode(), hashlib.sha256).digest()
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    n = int.from_bytes(digest[:5], "big")
    chars = "".join(alphabet[(n >> (5 * i)) & 31] for i in range(8))
    return f"C-{chars[:4]}-{chars[4:]}"


# --- tickets ---------------------------------------------------------------------------------------

class TicketStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    UNRESOLVABLE = "unresolvable"
    ABANDONED = "abandoned"  # the reporter left the room before anyone answered


FINAL = frozenset({TicketStatus.RESOLVED, TicketStatus.UNRESOLVABLE, TicketStatus.ABANDONED})


class TicketAction(enum.StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    UNRESOLVABLE = "unresolvable"
    ABANDON = "abandon"
    NOTE = "note"


# The moves an agent (or the room, for `abandon`) may make from each status.
MOVES: Mapping[TicketStatus, Mapping[TicketAction, TicketStatus]] = {
    TicketStatus.OPEN: {TicketAction.ACKNOWLEDGE: TicketStatus.ACKNOWLEDGED,
                        TicketAction.RESOLVE: TicketStatus.RESOLVED,
                        TicketAction.UNRESOLVABLE: TicketStatus.UNRESOLVABLE,
                        TicketAction.ABANDON: TicketStatus.ABANDONED,
                        TicketAction.NOTE: TicketStatus.OPEN},
    TicketStatus.ACKNOWLEDGED: {TicketAction.RESOLVE: TicketStatus.RESOLVED,
                                TicketAction.UNRESOLVABLE: TicketStatus.UNRESOLVABLE,
                                TicketAction.NOTE: TicketStatus.ACKNOWLEDGED},
    TicketStatus.RESOLVED: {TicketAction.NOTE: TicketStatus.RESOLVED},
    TicketStatus.UNRESOLVABLE: {TicketAction.NOTE: TicketStatus.UNRESOLVABLE},
    TicketStatus.ABANDONED: {TicketAction.NOTE: TicketStatus.ABANDONED},
}

# Why a problem happened, as an agent records it: a fixed list, so that the day's figures can be read.
CAUSES = ("client_network", "practitioner_network", "client_device", "practitioner_device",
          "browser_permissions", "browser_unsupported", "platform", "resolved_by_itself", "other")
NOTE_MAX_CHARS = 1000
# What an agent's cause says about who the breakdown is attributed to, when they mark it unresolvable
# (the outages' attributions: docs/outages.md).
CAUSE_ATTRIBUTION: Mapping[str, str] = {
    "client_network": "client_connection", "client_device": "client_connection",
    "practitioner_network": "practitioner_connection", "practitioner_device": "practitioner_connection",
    "platform": "platform",
}


def attribution_of(causes: Iterable[str | None]) -> str:
    """The attribution of an unresolvable problem: from the agent's latest note with a cause, else unknown."""
    for cause in reversed(list(causes)):
        if cause:
            return CAUSE_ATTRIBUTION.get(cause, "unknown")
    return "unknown"


def next_status(current: TicketStatus, action: TicketAction) -> TicketStatus:
    """Where `action` takes a ticket in `current`; refused (nothing changes) when it is not a move."""
    to = MOVES[current].get(action)
    if to is None:
        raise TicketMoveRefused(f"a ticket that is {current.value} cannot be moved by {action.value}")
    return to


def check_note(cause: str | None, text: str) -> None:
    if cause is not None and cause not in CAUSES:
        raise UnknownCause(f"the cause must be one of {', '.join(CAUSES)}")
    if len(text) > NOTE_MAX_CHARS:
        raise TicketNoteTooLong(f"a note holds at most {NOTE_MAX_CHARS} characters")
    if cause is None and not text.strip():
        raise EmptyNote("give a cause, a text, or both")


def is_overdue(status: TicketStatus, opened_ms: int, now_ms: int, answer_within_s: int) -> bool:
    """Open past the stated response time: the board shows it first, in red."""
    return status is TicketStatus.OPEN and now_ms - opened_ms > answer_within_s * 1000


@dataclass(frozen=True, slots=True)
class TicketTimes:
    status: TicketStatus
    opened_ms: int
    acknowledged_ms: int | None  # the first answer (acknowledged, or resolved at once)
    closed_ms: int | None


@dataclass(frozen=True, slots=True)
class DayFigures:
    tickets: int
    answered: int
    answered_in_time_share: float | None  # of the tickets answered or overdue; None when none
    wait_p50_s: float | None
    wait_p90_s: float | None
    abandoned: int
    open_now: int
    overdue_now: int

    def as_json(self) -> dict[str, object]:
        return {"tickets": self.tickets, "answered": self.answered,
                "answered_in_time_share": self.answered_in_time_share, "wait_p50_s": self.wait_p50_s,
                "wait_p90_s": self.wait_p90_s, "abandoned": self.abandoned, "open_now": self.open_now,
                "overdue_now": self.overdue_now}


def _quantile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank quantile (what a person checking by hand would compute)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def day_figures(tickets: Iterable[TicketTimes], now_ms: int, answer_within_s: int) -> DayFigures:
    """The day's response figures, counted the way crisis lines count theirs: the share of tickets answered
    within the stated time (a ticket still open past it counts as missed; one still open within it is not
    counted yet), the median and p90 wait of the answered ones, and the tickets abandoned unanswered."""
    waits: list[float] = []
    in_time = judged = abandoned = open_now = overdue = total = 0
    for t in tickets:
        total += 1
        if t.acknowledged_ms is not None:
            wait = (t.acknowledged_ms - t.opened_ms) / 1000
            waits.append(wait)
            judged += 1
            in_time += wait <= answer_within_s
        elif t.status is TicketStatus.ABANDONED:
            abandoned += 1
            judged += 1
        elif t.status is TicketStatus.OPEN:
            open_now += 1
            if is_overdue(t.status, t.opened_ms, now_ms, answer_within_s):
                overdue += 1
                judged += 1
    waits.sort()
    return DayFigures(tickets=total, answered=len(waits),
                      answered_in_time_share=round(in_time / judged, 4) if judged else None,
                      wait_p50_s=_quantile(waits, 0.5), wait_p90_s=_quantile(waits, 0.9),
                      abandoned=abandoned, open_now=open_now, overdue_now=overdue)


