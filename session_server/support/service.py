"""Support's service: problem tickets from the rooms, each agent's step on them, the day's figures, and the
audit of every look. The board (board.py) shows what this writes; the edges (api.py) call it."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram

from signaling import messages as m

from ..clock import Clock
from ..events import Event
from . import rules
from .errors import TicketMoveRefused, TicketNotFound
from .rules import TicketAction, TicketStatus
from .store import SupportStore, Ticket, day_of

log = logging.getLogger(__name__)

PSEUDONYM_KEY = "ss:support:pseudonym_key"
# Buckets for waits an agent and a reporter live through: seconds to an hour.
WAIT_BUCKETS = (5, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)

Teller = Callable[[str, str, m.ServerMessage], Awaitable[None]]  # room, participant, message


@dataclass
class SupportMetrics:
    response: Histogram
    resolution: Histogram
    tickets: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SupportMetrics:
        return cls(
            response=Histogram("session_support_response_seconds",
                               "From a problem report to an agent's first answer", registry=registry,
                               buckets=WAIT_BUCKETS),
            resolution=Histogram("session_support_resolution_seconds",
                                 "From a problem report to its resolution (resolved or unresolvable)",
                                 registry=registry, buckets=WAIT_BUCKETS),
            tickets=Counter("session_support_tickets_total", "Problem tickets by step",
                            ["step"], registry=registry),
        )


class SupportService:
    def __init__(self, redis: aioredis.Redis, clock: Clock, metrics: SupportMetrics, *,
                 answer_within_s: int) -> None:
        self.store = SupportStore(redis)
        self.redis = redis
        self.clock = clock
        self.metrics = metrics
        self.answer_within_s = answer_within_s
        self.tell: Teller | None = None  # set by the feature when rooms run in this process
        # set by the feature: makes the free reschedule offer when a ticket is marked unresolvable
        # (booking id, the agent, their role, the ticket id, the attribution)
        self.offer_reschedule: Callable[[str, str, str, str, str], Awaitable[None]] | None = None
        self._pseudonym_key: bytes | None = None

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def _event(self, kind: str, body: dict[str, Any]) -> Event:
        return Event(kind, body, time=datetime.fromtimestamp(self.clock.now(), UTC))

    async def pseudonym_key(self) -> bytes:
        """One secret for the whole cluster (the first process to need it makes it)."""
        if self._pseudonym_key is None:
            await self.redis.set(PSEUDONYM_KEY, secrets.token_hex(32), nx=True)
            raw = await self.redis.get(PSEUDONYM_KEY)
            self._pseudonym_key = raw if isinstance(raw, bytes) else str(raw).encode()
        return self._pseudonym_key

    async def pseudonym(self, booking_id: str, client_id: str) -> str:
        return rules.pseudonym(await self.pseudonym_key(), booking_id, client_id)

    # --- tickets -------------------------------------------------------------------------------------

    async def report(self, *, booking_id: str, practitioner_id: str, reporter_id: str, reporter_role: str,
                     kind: str) -> tuple[bool, str]:
        """A party pressed "report a technical problem": a new ticket, or theirs still open."""
        now = self.now_ms()
        tid = secrets.token_hex(8)
        event = self._event("support.ticket_opened", {
            "ticket_id": tid, "booking_id": booking_id, "reporter_role": reporter_role, "kind": kind,
            "practitioner_id": practitioner_id, "at": now})
        created, tid = await self.store.open_ticket(
            ticket_id=tid, booking_id=booking_id, reporter_id=reporter_id, reporter_role=reporter_role,
            kind=kind, opened_ms=now, practitioner_id=practitioner_id, event=event)
        if created:
            self.metrics.tickets.labels("opened").inc()
        await self._tell_reporter(booking_id, reporter_id, tid, TicketStatus.OPEN)
        return created, tid

    async def ticket(self, ticket_id: str) -> Ticket:
        t = await self.store.ticket(ticket_id)
        if t is None:
            raise TicketNotFound(f"no ticket {ticket_id}")
        return t

    async def step(self, ticket_id: str, action: TicketAction, *, by: str, cause: str | None = None,
                   text: str = "", role: str = "support") -> Ticket:
        """An agent's step on a ticket (or the room's `abandon`): refused if the ticket's status does not
        allow it, or if someone else moved it in between (nothing is written then)."""
        t = await self.ticket(ticket_id)
        if action is TicketAction.NOTE:
            rules.check_note(cause, text)
        to = rules.next_status(t.status, action)
        now = self.now_ms()
        fields: dict[str, str | int] = {}
        body: dict[str, Any] = {"ticket_id": t.id, "booking_id": t.booking_id, "by": by, "at": now,
                                "from": t.status.value, "to": to.value}
        answered = t.acknowledged_ms is None and action in (TicketAction.ACKNOWLEDGE, TicketAction.RESOLVE,
                                                            TicketAction.UNRESOLVABLE)
        if answered:
            fields.update(acknowledged_ms=now, acknowledged_by=by)
            body["wait_s"] = round((now - t.opened_ms) / 1000, 3)
        final = to in rules.FINAL and t.status not in rules.FINAL
        if final:
            fields.update(closed_ms=now, closed_by=by)
            body["open_s"] = round((now - t.opened_ms) / 1000, 3)
        note = ""
        if action is TicketAction.NOTE:
            note = json.dumps({"by": by, "cause": cause, "text": text, "at": now}, ensure_ascii=False)
            body["cause"] = cause  # the note's text is staff-only: never in an event
        kind = {TicketAction.ACKNOWLEDGE: "support.ticket_acknowledged", TicketAction.RESOLVE:
                "support.ticket_resolved", TicketAction.UNRESOLVABLE: "support.ticket_unresolvable",
                TicketAction.ABANDON: "support.ticket_abandoned", TicketAction.NOTE: "support.ticket_noted"}[action]
        if not await self.store.move(t, to, fields, note, self._event(kind, body), final=final):
            raise TicketMoveRefused("someone else moved this ticket just now: reload it")
        if answered:
            self.metrics.response.observe((now - t.opened_ms) / 1000)
        if final and to is not TicketStatus.ABANDONED:
            self.metrics.resolution.observe((now - t.opened_ms) / 1000)
        if action is not TicketAction.NOTE:
            self.metrics.tickets.labels(to.value).inc()
        moved = await self.ticket(ticket_id)
        if action in (TicketAction.ACKNOWLEDGE, TicketAction.RESOLVE, TicketAction.UNRESOLVABLE):
            await self._tell_reporter(t.booking_id, t.reporter_id, t.id, to)
        if action is TicketAction.UNRESOLVABLE and self.offer_reschedule is not None:
            notes = await self.store.notes(t.id)
            attribution = rules.attribution_of(n.get("cause") for n in notes)
            await self.offer_reschedule(t.booking_id, by, role, t.id, attribution)
        return moved

    async def abandon_unanswered(self, booking_id: str, reporter_id: str) -> int:
        """The reporter left the room: their unanswered tickets of this booking are abandoned."""
        n = 0
        for t in await self.store.of_booking(booking_id):
            if t.reporter_id == reporter_id and t.status is TicketStatus.OPEN:
                try:
                    await self.step(t.id, TicketAction.ABANDON, by="room")
                    n += 1
                except TicketMoveRefused:
                    pass  # answered in the same instant: not abandoned
        return n

    async def _tell_reporter(self, booking_id: str, reporter_id: str, ticket_id: str, status: TicketStatus
                             ) -> None:
        if self.tell is None:
            return
        try:
            await self.tell(booking_id, reporter_id,
                            m.SupportUpdate(id=secrets.token_hex(8), ticket_id=ticket_id, status=status.value))
        except Exception:
            log.warning("could not tell the reporter of ticket %s where it stands", ticket_id)

    async def figures(self, now_ms: int | None = None) -> rules.DayFigures:
        now = self.now_ms() if now_ms is None else now_ms
        tickets = await self.store.of_day(day_of(now))
        return rules.day_figures((t.times() for t in tickets), now, self.answer_within_s)

    # --- audit ---------------------------------------------------------------------------------------

    async def audit(self, *, who: str, role: str, action: str, booking_id: str, ticket_id: str = "") -> None:
        await self.store.audit(who=who, role=role, action=action, booking_id=booking_id, ticket_id=ticket_id,
                               at_ms=self.now_ms())
