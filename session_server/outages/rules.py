"""Outage rules: what a session's timeline says happened. Pure: no I/O, no clock (`now_ms` is passed).

A session's timeline is a list of `Entry`s (joins, leaves, connection lost and back, media states,
quality verdicts, a lost media node, problem reports, the practitioner's "technical problem,
reschedule", the room's end). `decide` reads it against the booking's scheduled times and the
`Thresholds` and returns a `Decision`: the outage going on now (for the pages) and, once the verdict is
final, the verdict with its attribution and minutes.

The rules, in words (docs/outages.md says the same for support):

- **Media flows** while both parties are in the room, their connections answer, and (when the server
  carries the media, `judge_media`) both media connections are `connected` and neither quality verdict
  is `lost`, and no media node was lost since their media last connected.
- **Net minutes** are the minutes of the scheduled time during which media flowed; they never exceed
  the scheduled minutes. Present minutes, per party, are the scheduled minutes they were in the room.
- **An outage** is a stretch, after both parties were first in the room together, during which media
  does not flow, and that is not simply someone leaving on purpose (a departure on purpose during an
  outage that is already going on does not end it: the outage caused it).
- **No-show**: a party who has not entered the room by the start plus `no_show_s`.
- **Give-up**: an outage that has lasted `giveup_s` makes the verdict final at once.
- **Interrupted**: an outage longer than `interrupt_s` and less than `min_share_pct` % of the scheduled
  minutes had with media flowing; also whenever the practitioner ends the session with "technical
  problem, reschedule". The attribution is the side that was down for most of the decisive outage:
  `platform` when a media node was lost (or a participant's server node died) for at least as long as
  any side was down, `client_connection` or `practitioner_connection` when that side was down at least
  twice as long as the other, else `unknown`.
- **Ended early**: a party left on purpose before the end, did not come back, and less than `min_share_pct` % was had.
- **Completed**: everything else, including sessions with short reconnects.

The verdict is final at the no-show time (for a no-show), at the give-up, at the practitioner's
"technical problem", or when the room closes (`ends_at + grace_s`, or the room's end entry).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

CLIENT = "client"
PRACTITIONER = "practitioner"
ROLES = (CLIENT, PRACTITIONER)


class Kind(enum.StrEnum):
    JOIN = "join"
    LEAVE = "leave"  # state: the room's reason (leave | timeout | node_lost | room_closed | ...)
    CONNECTION_LOST = "connection_lost"  # heartbeats stopped; the participant is shown reconnecting
    CONNECTION_BACK = "connection_back"
    MEDIA = "media"  # state: connecting | connected | reconnecting | media_stopped | failed | closed
    QUALITY = "quality"  # state: excellent | good | poor | lost
    NODE_LOST = "node_lost"  # the server node that carried the room's media stopped answering
    PROBLEM = "problem"  # "report a technical problem"; state: what they chose
    END_TECHNICAL = "end_technical"  # the practitioner's "technical problem, reschedule"
    ROOM_END = "room_end"  # state: why (room_closed: the room's time is over)


# Equal times are read in this order, so the result never depends on the order entries arrived in.
_ORDER = {k: i for i, k in enumerate((Kind.NODE_LOST, Kind.LEAVE, Kind.CONNECTION_LOST, Kind.JOIN,
                                      Kind.CONNECTION_BACK, Kind.MEDIA, Kind.QUALITY, Kind.PROBLEM,
                                      Kind.END_TECHNICAL, Kind.ROOM_END))}


# Media states at the same instant are read in the order a connection goes through them (the last one wins).
_STATE_ORDER = {s: i for i, s in enumerate(("connecting", "connected", "reconnecting", "media_stopped", "failed",
                                            "closed"))}


class Verdict(enum.StrEnum):
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    CLIENT_NO_SHOW = "client_no_show"
    PRACTITIONER_NO_SHOW = "practitioner_no_show"
    BOTH_NO_SHOW = "both_no_show"
    ENDED_EARLY = "ended_early"


class Attribution(enum.StrEnum):
    PLATFORM = "platform"
    CLIENT_CONNECTION = "client_connection"
    PRACTITIONER_CONNECTION = "practitioner_connection"
    UNKNOWN = "unknown"


class LeaveReason(enum.StrEnum):
    """Why a party is gone, in the taxonomy the timeline reports (after LiveKit's disconnect reasons and
    the Matrix call spec's split between media that never connected and media that failed)."""

    LEFT_ON_PURPOSE = "left_on_purpose"
    SIGNAL_LOST = "signal_lost"  # the connection stopped answering
    MEDIA_FAILED = "media_failed"  # media had flowed, then failed, and the party went
    NEVER_CONNECTED = "never_connected"  # the party's media never connected before they went
    NODE_LOST = "node_lost"  # the server node holding their connection died
    ROOM_CLOSED = "room_closed"


@dataclass(frozen=True, slots=True)
class Entry:
    at_ms: int
    kind: Kind
    role: str = ""  # client | practitioner; "" for the room itself
    state: str = ""
    ref: str = ""  # what makes two entries of the same kind, role, state and time distinct

    def key(self) -> tuple[int, int, str, int, str, str]:
        return (self.at_ms, _ORDER[self.kind], self.role, _STATE_ORDER.get(self.state, 9), self.state, self.ref)


@dataclass(frozen=True, slots=True)
class Schedule:
    starts_at_ms: int
    ends_at_ms: int

    @property
    def scheduled_ms(self) -> int:
        return max(0, self.ends_at_ms - self.starts_at_ms)


@dataclass(frozen=True, slots=True)
class Thresholds:
    no_show_s: float = 15 * 60
    notify_s: float = 20.0
    interrupt_s: float = 5 * 60
    min_share_pct: int = 80
    giveup_s: float = 10 * 60
    grace_s: float = 15 * 60  # the room stays open this long after the end: then the verdict is final
    judge_media: bool = True  # False when the server does not carry the media (relay mode)


@dataclass(frozen=True, slots=True)
class Outage:
    since_ms: int
    until_ms: int | None  # None: still going on
    attribution: Attribution
    client_ms: int = 0
    practitioner_ms: int = 0
    platform_ms: int = 0

    def duration_ms(self, now_ms: int) -> int:
        return (now_ms if self.until_ms is None else self.until_ms) - self.since_ms


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict | None  # None: not final yet
    attribution: Attribution | None  # for an interruption
    net_ms: int
    scheduled_ms: int
    present_ms: dict[str, int]
    first_join_ms: dict[str, int | None]
    outage: Outage | None  # the outage going on at `now`
    outages: tuple[Outage, ...] = ()
    ended_by: str | None = None  # the party who left on purpose, for ended_early
    leave_reasons: dict[str, str] = field(default_factory=dict)  # each party's last leave, classified

    @property
    def net_minutes(self) -> int:
        return self.net_ms // 60_000

    @property
    def scheduled_minutes(self) -> int:
        return self.scheduled_ms // 60_000

    def present_minutes(self, role: str) -> int:
        return self.present_ms.get(role, 0) // 60_000


def classify_leave(raw: str, media_ever_connected: bool, last_media: str, judge_media: bool) -> LeaveReason:
    """The taxonomy's reason for a leave the room recorded as `raw`."""
    if raw == "leave":
        return LeaveReason.LEFT_ON_PURPOSE
    if raw == "node_lost":
        return LeaveReason.NODE_LOST
    if raw == "room_closed":
        return LeaveReason.ROOM_CLOSED
    if judge_media and not media_ever_connected:
        return LeaveReason.NEVER_CONNECTED
    if judge_media and last_media == "failed":
        return LeaveReason.MEDIA_FAILED
    return LeaveReason.SIGNAL_LOST


@dataclass
class _Side:
    present: bool = False
    connection_ok: bool = True
    media: str = "none"
    quality_lost: bool = False
    media_ever: bool = False
    node_down: bool = False  # the media node was lost since this side's media last connected
    left: LeaveReason | None = None  # the last leave while absent
    left_at: int = 0
    first_join: int | None = None
    present_ms: int = 0

    def ok(self, judge_media: bool) -> bool:
        if not (self.present and self.connection_ok):
            return False
        if not judge_media:
            return True
        return self.media == "connected" and not self.quality_lost and not self.node_down

    def gone_on_purpose(self) -> bool:
        return not self.present and self.left is LeaveReason.LEFT_ON_PURPOSE

    def platform_down(self, judge_media: bool) -> bool:
        return (self.node_down and judge_media) or (not self.present and self.left is LeaveReason.NODE_LOST)


@dataclass
class _Open:
    since: int
    client: int = 0
    practitioner: int = 0
    platform: int = 0


def _attribution(o: _Open) -> Attribution:
    if o.platform > 0 and o.platform >= max(o.client, o.practitioner):
        return Attribution.PLATFORM
    if o.client > 0 and o.client >= 2 * o.practitioner:
        return Attribution.CLIENT_CONNECTION
    if o.practitioner > 0 and o.practitioner >= 2 * o.client:
        return Attribution.PRACTITIONER_CONNECTION
    return Attribution.UNKNOWN


def _close(o: _Open, until: int | None) -> Outage:
    return Outage(o.since, until, _attribution(o), o.client, o.practitioner, o.platform)


def decide(schedule: Schedule, entries: Iterable[Entry], now_ms: int, th: Thresholds) -> Decision:
    """The session as its timeline tells it at `now_ms` (entries after `now_ms` are not yet known)."""
    ordered = sorted((e for e in entries if e.at_ms <= now_ms), key=Entry.key)
    sides = {r: _Side() for r in ROLES}
    c, p = sides[CLIENT], sides[PRACTITIONER]
    start, end = schedule.starts_at_ms, schedule.ends_at_ms
    net = 0
    started = False
    room_closed_at: int | None = None
    end_technical_at: int | None = None
    outages: list[Outage] = []
    current: _Open | None = None
    cursor: int | None = None

    def flowing() -> bool:
        return c.ok(th.judge_media) and p.ok(th.judge_media)

    def advance(to: int) -> None:
        """Count the time from the cursor to `to` in the state as it stands."""
        nonlocal net, cursor
        if cursor is None or to <= cursor:
            cursor = to if cursor is None else max(cursor, to)
            return
        lo, hi = max(cursor, start), min(to, end)
        if hi > lo:
            if flowing():
                net += hi - lo
            for s in sides.values():
                if s.present:
                    s.present_ms += hi - lo
        if current is not None:
            dt = min(to, end) - max(cursor, current.since)
            if dt > 0:
                if c.platform_down(th.judge_media) or p.platform_down(th.judge_media):
                    current.platform += dt
                else:
                    # a party who left on purpose during the outage is not counted down: the outage is
                    # the other side's (or nobody's) to explain
                    if not c.ok(th.judge_media) and not c.gone_on_purpose():
                        current.client += dt
                    if not p.ok(th.judge_media) and not p.gone_on_purpose():
                        current.practitioner += dt
        cursor = to

    def settle(at: int) -> None:
        """Open or close the outage after a change at `at`."""
        nonlocal current, started
        if c.present and p.present:
            started = True
        if not started or room_closed_at is not None:
            return
        if flowing():
            if current is not None:
                outages.append(_close(current, at))
                current = None
            return
        departed = any(not s.present and s.left is LeaveReason.LEFT_ON_PURPOSE for s in sides.values())
        if current is None and not departed and start <= at < end:
            current = _Open(at)

    for e in ordered:
        if cursor is not None and cursor < start <= e.at_ms:
            advance(start)  # the scheduled time begins: an outage can only start from here
            settle(start)
        advance(e.at_ms)
        side = sides.get(e.role)
        if e.kind is Kind.JOIN and side is not None:
            side.present, side.connection_ok, side.left = True, True, None
            if side.first_join is None:
                side.first_join = e.at_ms
        elif e.kind is Kind.LEAVE and side is not None:
            if side.present:
                side.left = classify_leave(e.state, side.media_ever, side.media, th.judge_media)
                side.left_at = e.at_ms
            side.present = False
        elif e.kind is Kind.CONNECTION_LOST and side is not None:
            side.connection_ok = False
        elif e.kind is Kind.CONNECTION_BACK and side is not None:
            side.connection_ok = True
        elif e.kind is Kind.MEDIA and side is not None:
            side.media = e.state
            if e.state == "connected":
                side.media_ever, side.node_down = True, False
        elif e.kind is Kind.QUALITY and side is not None:
            side.quality_lost = e.state == "lost"
        elif e.kind is Kind.NODE_LOST:
            for s in sides.values():
                s.node_down = True
        elif e.kind is Kind.END_TECHNICAL and e.role == PRACTITIONER and end_technical_at is None:
            end_technical_at = e.at_ms
        elif e.kind is Kind.ROOM_END and e.state == "room_closed" and room_closed_at is None:
            if current is not None:
                outages.append(_close(current, e.at_ms))
                current = None
            room_closed_at = e.at_ms
        settle(e.at_ms)
    if cursor is not None and cursor < start <= now_ms:
        advance(start)
        settle(start)
    advance(now_ms)
    if current is not None and now_ms >= end:
        outages.append(_close(current, end))
        current = None
    ongoing = _close(current, None) if current is not None else None
    present = {r: s.present_ms for r, s in sides.items()}
    first = {r: s.first_join for r, s in sides.items()}
    reasons = {r: s.left.value for r, s in sides.items() if s.left is not None}
    pending = Decision(verdict=None, attribution=None, net_ms=net, scheduled_ms=schedule.scheduled_ms,
                       present_ms=present, first_join_ms=first, outage=ongoing,
                       outages=tuple(outages) + ((ongoing,) if ongoing else ()), leave_reasons=reasons)

    def final(verdict: Verdict, attribution: Attribution | None = None, ended_by: str | None = None) -> Decision:
        return replace(pending, verdict=verdict, attribution=attribution, ended_by=ended_by)

    all_outages = list(outages) + ([ongoing] if ongoing else [])
    if end_technical_at is not None:
        last = all_outages[-1].attribution if all_outages else Attribution.UNKNOWN
        return final(Verdict.INTERRUPTED, last)
    no_show_at = start + int(th.no_show_s * 1000)
    if now_ms >= no_show_at:
        came = {r: s.first_join is not None and s.first_join <= no_show_at for r, s in sides.items()}
        if not came[CLIENT] and not came[PRACTITIONER]:
            return final(Verdict.BOTH_NO_SHOW)
        if not came[CLIENT]:
            return final(Verdict.CLIENT_NO_SHOW)
        if not came[PRACTITIONER]:
            return final(Verdict.PRACTITIONER_NO_SHOW)
    gave_up = ongoing is not None and now_ms - ongoing.since_ms >= th.giveup_s * 1000
    closed = room_closed_at is not None or now_ms >= end + int(th.grace_s * 1000)
    if not (gave_up or closed):
        return pending
    enough = net * 100 >= th.min_share_pct * schedule.scheduled_ms
    on_purpose = [r for r, s in sides.items() if s.gone_on_purpose() and s.left_at < end]
    if not started:
        if on_purpose:
            return final(Verdict.ENDED_EARLY, ended_by=min(on_purpose, key=lambda r: (sides[r].left_at, r)))
        return final(Verdict.INTERRUPTED, _never_met(sides))
    decisive = [o for o in all_outages if o.duration_ms(min(now_ms, end)) > th.interrupt_s * 1000]
    if decisive and not enough:
        longest = max(decisive, key=lambda o: (o.duration_ms(min(now_ms, end)), o.since_ms))
        return final(Verdict.INTERRUPTED, longest.attribution)
    if on_purpose and not enough:
        first_gone = min(on_purpose, key=lambda r: (sides[r].left_at, r))
        return final(Verdict.ENDED_EARLY, ended_by=first_gone)
    return final(Verdict.COMPLETED)


def _never_met(sides: dict[str, _Side]) -> Attribution:
    """Both came but were never in the room together and nobody left on purpose: whose connection went."""
    if any(s.left is LeaveReason.NODE_LOST for s in sides.values()):
        return Attribution.PLATFORM
    gone = [r for r, s in sides.items() if s.left is not None]
    if gone == [CLIENT]:
        return Attribution.CLIENT_CONNECTION
    if gone == [PRACTITIONER]:
        return Attribution.PRACTITIONER_CONNECTION
    return Attribution.UNKNOWN


def media_down_since(state: str, reason: str, at_ms: int, *, silence_s: float, consent_s: float) -> int:
    """When the media really stopped, for a state the media server reports only after waiting: no RTP
    for `silence_s` (media_stopped), no datagram for `consent_s` (a consent timeout)."""
    if state == "media_stopped":
        return at_ms - int(silence_s * 1000)
    if state == "reconnecting" and reason == "consent timeout":
        return at_ms - int(consent_s * 1000)
    return at_ms


def verdict_status(verdict: Verdict) -> str:
    """The booking status a verdict moves the booking to (the same word)."""
    return verdict.value
