"""The outages service: feeds each session's timeline, watches live sessions, tells the pages, and has the
verdict written once.

What feeds a timeline (ids, roles, times and states only):
- the events stream, through the consumer group `outages.timeline` (`consumer.py`): `room.joined`,
  `room.left` (with its reason), `media.state_changed`, `media.quality_changed`. At-least-once; an entry
  recorded twice is kept once (the timeline is a set of facts);
- the rooms, as they happen on the node where they happen (`RoomObserver`): joins and resumes, leaves,
  heartbeats lost and heard again, problem reports, the practitioner's "technical problem, reschedule",
  the room's end;
- the watch itself: a room whose media node stopped proving itself alive (its liveness key expired
  and nobody took the media over) gets a `node_lost` entry, from whichever process notices first.

The watch (`tick`, every `outage_check_interval_s` on every process) reads each watched session's
booking and timeline, lets `rules.decide` judge, tells both pages of an outage past `outage_notify_s`
(and of its end) once across all processes, and writes a final verdict through the bookings' service,
whose one script writes it once even when several processes decide at the same moment. A page that comes
in or back during an outage is told what the others were told (`ongoing`, which the rooms ask as they
welcome it). The completion
job asks `judge` too, for the sessions no process was watching (nobody came) or that every process
missed while down.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..bookings.model import Booking, BookingStatus, SessionVerdict, load_booking
from ..bookings.service import BookingService
from ..clock import Clock
from ..events import Event
from ..rooms.observer import (
    BaseRoomObserver,
    ConnectionChanged,
    ParticipantJoined,
    ParticipantLeft,
    ProblemReported,
    TechnicalEnd,
)
from ..rooms.service import RoomService
from ..settings import Settings
from . import rules
from .rules import Decision, Entry, Kind, Schedule, Thresholds
from .store import OutageStore

log = logging.getLogger(__name__)

ROOM_PUSH = "ss:room:{}:push"  # the rooms' channel for other features' messages to a room's parties
UNDECIDED = frozenset({BookingStatus.CONFIRMED, BookingStatus.IN_SESSION})
NO_SHOWS = frozenset({rules.Verdict.CLIENT_NO_SHOW, rules.Verdict.PRACTITIONER_NO_SHOW, rules.Verdict.BOTH_NO_SHOW})


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(no_show_s=settings.outage_no_show_s, notify_s=settings.outage_notify_s,
                      interrupt_s=settings.outage_interrupt_s, min_share_pct=settings.outage_min_share_pct,
                      giveup_s=settings.outage_giveup_s, grace_s=settings.room_grace_after_s,
                      judge_media=settings.media_mode == "sfu")


def role_of(booking: Booking, participant_id: str, role: str = "") -> str:
    """The party a participant is in this booking ("" for staff and strangers)."""
    if role in (rules.CLIENT, rules.PRACTITIONER):
        return role if booking.party(participant_id, role) else ""
    if participant_id == booking.client_id:
        return rules.CLIENT
    if participant_id == booking.practitioner_id:
        return rules.PRACTITIONER
    return ""


class OutageService(BaseRoomObserver):
    def __init__(self, store: OutageStore, bookings: BookingService, settings: Settings, clock: Clock,
                 rooms: RoomService | None = None) -> None:
        self.store = store
        self.bookings = bookings
        self.settings = settings
        self.clock = clock
        self.rooms = rooms
        self.thresholds = thresholds(settings)

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    async def _booking(self, booking_id: str) -> Booking | None:
        return await load_booking(self.store.redis, booking_id)

    async def record(self, booking: Booking, entry: Entry) -> None:
        if entry.kind not in (Kind.NODE_LOST, Kind.ROOM_END) and not entry.role:
            return  # staff in the room: not a party to the session
        await self.store.append(booking.id, entry, booking.ends_at)

    # --- from the events stream ----------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        body = event.body
        booking_id = str(body.get("booking_id", ""))
        booking = await self._booking(booking_id) if booking_id else None
        if booking is None:
            return
        pid = str(body.get("participant_id", ""))
        role = role_of(booking, pid, str(body.get("role", "")))
        at = int(body.get("at") or int(event.time.timestamp() * 1000))
        if event.type == "room.joined":
            await self.record(booking, Entry(at, Kind.JOIN, role))
        elif event.type == "room.left":
            await self.record(booking, Entry(at, Kind.LEAVE, role, str(body.get("reason", ""))))
        elif event.type == "media.state_changed":
            state, reason = str(body.get("state", "")), str(body.get("reason") or "")
            since = rules.media_down_since(state, reason, at, silence_s=self.settings.media_silence_timeout_s,
                                           consent_s=self.settings.media_consent_timeout_s)
            await self.record(booking, Entry(since, Kind.MEDIA, role, state, str(body.get("node_id", ""))))
        elif event.type == "media.quality_changed":
            quality = str(body.get("quality", ""))
            up = body.get("up") or {}
            if quality == "lost" and up.get("receiving", False):
                # what this participant sends still arrives: it is what they receive that is lost, which
                # is the other side's (or the path's) outage, not theirs
                quality = "lost_downstream"
            await self.record(booking, Entry(at, Kind.QUALITY, role, quality))

    # --- from the rooms, as it happens ---------------------------------------------------------

    async def participant_joined(self, joined: ParticipantJoined) -> None:
        await self.record(joined.booking, Entry(joined.at_ms, Kind.JOIN, role_of(joined.booking,
                                                                                  joined.participant_id,
                                                                                  joined.role)))

    async def participant_left(self, left: ParticipantLeft) -> None:
        booking = await self._booking(left.room_id)
        if booking is not None:
            await self.record(booking, Entry(left.at_ms, Kind.LEAVE, role_of(booking, left.participant_id,
                                                                             left.role), left.reason))

    async def connection_changed(self, changed: ConnectionChanged) -> None:
        booking = await self._booking(changed.room_id)
        if booking is not None:
            kind = Kind.CONNECTION_LOST if changed.lost else Kind.CONNECTION_BACK
            await self.record(booking, Entry(changed.at_ms, kind, role_of(booking, changed.participant_id,
                                                                          changed.role)))

    async def problem_reported(self, report: ProblemReported) -> None:
        await self.record(report.booking, Entry(self.now_ms(), Kind.PROBLEM,
                                                role_of(report.booking, report.participant_id, report.role),
                                                report.kind))

    async def technical_end(self, end: TechnicalEnd) -> None:
        await self.record(end.booking, Entry(end.at_ms, Kind.END_TECHNICAL, rules.PRACTITIONER))
        await self.check(end.booking.id, end.at_ms)

    async def room_ended(self, room_id: str, reason: str, at_ms: int) -> None:
        booking = await self._booking(room_id)
        if booking is not None:
            await self.record(booking, Entry(at_ms, Kind.ROOM_END, "", reason))
            if reason == "room_closed":
                await self.check(room_id, at_ms)

    # --- the watch -----------------------------------------------------------------------------

    async def tick(self) -> None:
        """One look at every watched session (on every process)."""
        now = self.now_ms()
        for booking_id in await self.store.live():
            try:
                await self.check(booking_id, now)
            except Exception:
                log.exception("outages: could not judge session %s now", booking_id)

    async def judge(self, booking_id: str, now_s: int) -> bool:
        """For the completion job: decide and record the verdict if it is final at `now_s`."""
        return await self.check(booking_id, now_s * 1000) is not None

    async def check(self, booking_id: str, now_ms: int) -> rules.Verdict | None:
        """Judge the session at `now_ms`: tell the pages what changed, write a final verdict. Returns the
        verdict this call wrote, if any."""
        booking = await self._booking(booking_id)
        if booking is None or booking.status not in UNDECIDED:
            await self.store.unwatch(booking_id)
            return None
        entries = await self.store.timeline(booking_id)
        if self.rooms is not None and booking.status is BookingStatus.IN_SESSION:
            lost = await self.rooms.media_node_lost(booking_id)
            if lost is not None and not any(e.kind is Kind.NODE_LOST and e.ref == lost for e in entries):
                entry = Entry(now_ms, Kind.NODE_LOST, "", "", lost)
                log.warning("outages: the server node running the media of session %s is lost", booking_id)
                await self.store.append(booking_id, entry, booking.ends_at)
                entries.append(entry)
        schedule = Schedule(booking.starts_at * 1000, booking.ends_at * 1000)
        decision = rules.decide(schedule, entries, now_ms, self.thresholds)
        if decision.verdict is None:
            await self._tell_pages(booking_id, decision, now_ms)
            return None
        if booking.status is BookingStatus.IN_SESSION and decision.verdict in NO_SHOWS:
            # the rooms saw both parties together, but the timeline did not (it was fed while something was
            # down): no verdict is guessed; support sees the booking still in session
            log.warning("outages: session %s is in session but its timeline shows a no-show; no verdict written",
                        booking_id)
            await self.store.unwatch(booking_id)
            return None
        written = await self.bookings.record_verdict(booking_id, self._verdict(decision, entries, now_ms))
        if written:
            # each process tells its own sockets (`outage` ended, then `room.closing`) when it reads the
            # verdict's event on the stream (rooms/jobs.py)
            log.info("outages: session %s is %s%s", booking_id, decision.verdict.value,
                     f" ({decision.attribution.value})" if decision.attribution else "")
        await self.store.unwatch(booking_id)
        return decision.verdict if written else None

    def _verdict(self, d: Decision, entries: list[Entry], now_ms: int) -> SessionVerdict:
        assert d.verdict is not None
        if any(e.kind is Kind.END_TECHNICAL for e in entries) and d.verdict is rules.Verdict.INTERRUPTED:
            trigger = "practitioner"
        elif d.verdict in (rules.Verdict.CLIENT_NO_SHOW, rules.Verdict.PRACTITIONER_NO_SHOW,
                           rules.Verdict.BOTH_NO_SHOW):
            trigger = "no_show"
        elif d.outage is not None:
            trigger = "gave_up"
        else:
            trigger = "room_closed"
        first = d.first_join_ms
        return SessionVerdict(
            verdict=d.verdict.value, attribution=d.attribution.value if d.attribution else None,
            net_minutes=d.net_minutes, scheduled_minutes=d.scheduled_minutes,
            client_present_minutes=d.present_minutes(rules.CLIENT),
            practitioner_present_minutes=d.present_minutes(rules.PRACTITIONER),
            client_first_joined_at=None if first[rules.CLIENT] is None else int(first[rules.CLIENT] or 0) // 1000,
            practitioner_first_joined_at=(None if first[rules.PRACTITIONER] is None
                                          else int(first[rules.PRACTITIONER] or 0) // 1000),
            ended_by=d.ended_by, decided_at=now_ms // 1000, trigger=trigger)

    async def _tell_pages(self, booking_id: str, d: Decision, now_ms: int) -> None:
        o = d.outage
        if o is not None and now_ms - o.since_ms >= self.thresholds.notify_s * 1000:
            ongoing = {"type": "outage", "state": "ongoing", "since": o.since_ms, "side": o.attribution.value,
                       "gives_up_at": o.since_ms + int(self.thresholds.giveup_s * 1000)}
            if await self.store.tell(booking_id, f"on:{o.since_ms}", ongoing):
                await self._push(booking_id, ongoing)
        elif o is None:
            told = await self.store.told(booking_id)
            if told.startswith("on:") and await self.store.tell(booking_id, "off:" + told[3:]):
                await self._push(booking_id, {"type": "outage", "state": "resolved", "since": int(told[3:])})

    async def ongoing(self, booking: Booking, participant_id: str, role: str) -> list[dict[str, Any]]:
        """A page coming into the room (or back to it) while both pages are told of an outage is told too,
        right after `joined`: the same `outage` message the others had (its `resolved` follows on the room's
        push channel like theirs)."""
        if booking.status not in UNDECIDED:
            return []
        notice = await self.store.notice(booking.id)
        return [] if notice is None else [notice]

    async def _push(self, booking_id: str, message: dict[str, Any]) -> None:
        await self.store.redis.publish(ROOM_PUSH.format(booking_id),
                                       json.dumps(message, separators=(",", ":")))

