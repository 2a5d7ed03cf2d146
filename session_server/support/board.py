"""The live board: one process's view of every session whose room is open or opens within the hour,
held in memory and kept current from the events stream and the quality samples, and pushed to every
connected agent, coalesced.

How it stays current: at start it loads the bookings in its window and replays the last hours of the
events stream (joins, leaves, media states, quality verdicts, tickets, verdicts), then follows the stream
and the quality samples with one blocking read. Every change marks its session dirty; a flush every
`push_interval_s` sends each dirty session once to every agent (so a session costs at most a few updates
a second, whatever its rate of events), built once and shared by all the agents' queues. A clock tick
moves the sessions whose state depends on time (the room opening, the end) and takes in the bookings that
enter the window. Every process that serves agents holds its own board from the same records, so two
processes show the same thing.

What an agent sees is ids, the client's pseudonym, the practitioner's id, times, states and network
figures: never a name, chat, a document, SDP or a token (rows never hold them).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from ..bookings.model import Booking
from ..clock import Clock
from ..events import EVENTS_STREAM
from . import rules
from .rules import PartyFacts, SessionFacts, TicketStatus
from .service import SupportService
from .store import Ticket, day_of

log = logging.getLogger(__name__)

QUALITY_STREAM = "ss:quality"
SERIES_WINDOW_MS = 10 * 60_000  # the charts show the last ten minutes
SERIES_MAX_POINTS = 240
LOOKBACK_S = 6 * 3600  # the events replayed at start
AHEAD_S = 3600  # sessions whose room opens within the hour
KEEP_ENDED_S = 30 * 60  # an ended session stays on the board this long after its room closed
READ_BLOCK_MS = 1000
READ_COUNT = 2000
DIRECTIONS = ("client.up", "client.down", "practitioner.up", "practitioner.down")

Loader = Callable[[int, int], Awaitable[list[Booking]]]  # bookings starting in [start, end] (epoch s)
OneLoader = Callable[[str], Awaitable[Booking | None]]
# Events of a booking that is not on the board yet bring it in (a booking the time index missed).
ROOM_EVENTS = ("room.", "session.", "media.")


def _d(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class Party:
    present: bool = False
    reconnecting: bool = False
    media: str | None = None
    quality: str | None = None
    left_at_ms: int | None = None
    left_reason: str | None = None

    def facts(self) -> PartyFacts:
        return PartyFacts(self.present, self.reconnecting, self.media, self.quality)

    def as_json(self) -> dict[str, Any]:
        return {"present": self.present, "reconnecting": self.reconnecting, "media": self.media,
                "quality": self.quality, "left_at": self.left_at_ms, "left_reason": self.left_reason}


@dataclass
class Row:
    booking_id: str
    practitioner_id: str
    client_id: str  # never sent: only to tell the client's events from the practitioner's
    pseudonym: str
    starts_at_ms: int
    ends_at_ms: int
    opens_at_ms: int
    closes_at_ms: int
    status: str
    started_at_ms: int | None = None
    ended_at_ms: int | None = None
    verdict: str | None = None
    attribution: str | None = None
    client: Party = field(default_factory=Party)
    practitioner: Party = field(default_factory=Party)
    support: set[str] = field(default_factory=set)
    series: dict[str, deque[list[float]]] = field(
        default_factory=lambda: {d: deque(maxlen=SERIES_MAX_POINTS) for d in DIRECTIONS})
    fresh: dict[str, list[list[float]]] = field(default_factory=dict)  # points since the last push
    state: rules.SessionState = rules.SessionState.UPCOMING

    def party(self, participant_id: str) -> tuple[str, Party] | None:
        if participant_id == self.client_id:
            return "client", self.client
        if participant_id == self.practitioner_id:
            return "practitioner", self.practitioner
        return None

    def facts(self) -> SessionFacts:
        return SessionFacts(starts_at_ms=self.starts_at_ms, ends_at_ms=self.ends_at_ms,
                            opens_at_ms=self.opens_at_ms, closes_at_ms=self.closes_at_ms, status=self.status,
                            client=self.client.facts(), practitioner=self.practitioner.facts(),
                            verdict=self.verdict)

    def worst_quality(self) -> str | None:
        order = {"lost": 0, "poor": 1, "good": 2, "excellent": 3}
        qs = [q for q in (self.client.quality, self.practitioner.quality) if q in order]
        return min(qs, key=lambda q: order[q]) if qs else None

    def as_json(self, open_tickets: int, *, full: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "booking_id": self.booking_id, "practitioner_id": self.practitioner_id, "client": self.pseudonym,
            "state": self.state.value, "status": self.status, "verdict": self.verdict,
            "attribution": self.attribution, "starts_at": self.starts_at_ms, "ends_at": self.ends_at_ms,
            "opens_at": self.opens_at_ms, "closes_at": self.closes_at_ms, "started_at": self.started_at_ms,
            "ended_at": self.ended_at_ms,
            "parties": {"client": self.client.as_json(), "practitioner": self.practitioner.as_json()},
            "support_present": len(self.support), "open_tickets": open_tickets,
            "rank": list(rules.trouble_key(self.state, self.worst_quality(), open_tickets, self.starts_at_ms)),
        }
        if full:
            out["series"] = {d: list(s) for d, s in self.series.items()}
        else:
            out["points"] = self.fresh
        return out


class Agent:
    """One agent's socket: a bounded queue of frames, sent by its own task (api.py)."""

    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.overflowed = False

    def send(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.overflowed = True  # too slow for the board: its socket is closed and it reconnects


@dataclass
class BoardTicket:
    id: str
    booking_id: str
    reporter_role: str
    kind: str
    status: TicketStatus
    opened_ms: int
    acknowledged_ms: int | None = None
    acknowledged_by: str | None = None
    closed_ms: int | None = None

    @classmethod
    def of(cls, t: Ticket) -> BoardTicket:
        return cls(t.id, t.booking_id, t.reporter_role, t.kind, t.status, t.opened_ms, t.acknowledged_ms,
                   t.acknowledged_by, t.closed_ms)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "booking_id": self.booking_id, "reporter_role": self.reporter_role,
                "kind": self.kind, "status": self.status.value, "opened_at": self.opened_ms,
                "acknowledged_at": self.acknowledged_ms, "acknowledged_by": self.acknowledged_by,
                "closed_at": self.closed_ms}


class Board:
    def __init__(self, service: SupportService, clock: Clock, *, load_bookings: Loader, load_booking: OneLoader,
                 open_before_s: int,
                 grace_after_s: int, queue_size: int = 512, idle_logout_s: int = 900) -> None:
        self.service = service
        self.redis: aioredis.Redis = service.redis
        self.clock = clock
        self._load_bookings = load_bookings
        self._load_booking = load_booking
        self.open_before_s = open_before_s
        self.grace_after_s = grace_after_s
        self.queue_size = queue_size
        self.idle_logout_s = idle_logout_s
        self.rows: dict[str, Row] = {}
        self.tickets: dict[str, BoardTicket] = {}
        self.agents: set[Agent] = set()
        self._dirty: set[str] = set()
        self._dirty_tickets: set[str] = set()
        self._figures_dirty = False
        self._cursor = {EVENTS_STREAM: "$", QUALITY_STREAM: "$"}
        self.loaded = asyncio.Event()
        self.updates_sent = 0  # session updates put on agents' queues (each agent counts once)

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    # --- loading -------------------------------------------------------------------------------------

    async def _add_booking(self, b: Booking) -> Row | None:
        if b.id in self.rows:
            return self.rows[b.id]
        opens, closes = (b.starts_at - self.open_before_s) * 1000, (b.ends_at + self.grace_after_s) * 1000
        now = self.now_ms()
        if opens > now + AHEAD_S * 1000 or closes + KEEP_ENDED_S * 1000 < now:
            return None
        row = Row(booking_id=b.id, practitioner_id=b.practitioner_id, client_id=b.client_id,
                  pseudonym=await self.service.pseudonym(b.id, b.client_id), starts_at_ms=b.starts_at * 1000,
                  ends_at_ms=b.ends_at * 1000, opens_at_ms=opens, closes_at_ms=closes, status=str(b.status))
        row.state = rules.session_state(row.facts(), now)
        self.rows[b.id] = row
        self._dirty.add(b.id)
        return row

    async def refresh_window(self) -> None:
        """Take in the bookings whose room opens within the hour (or is open), drop the long ended."""
        now_s = int(self.clock.now())
        lo = now_s - LOOKBACK_S
        hi = now_s + AHEAD_S + self.open_before_s
        for b in await self._load_bookings(lo, hi):
            await self._add_booking(b)
        now = self.now_ms()
        for bid in [bid for bid, r in self.rows.items() if r.closes_at_ms + KEEP_ENDED_S * 1000 < now]:
            del self.rows[bid]
            self._dirty.add(bid)

    async def load(self) -> None:
        """The bookings of the window, then the last hours of events and quality samples, then live."""
        # Cursors first: what is written while we load is read after it (and applied idempotently).
        for stream in (EVENTS_STREAM, QUALITY_STREAM):
            last = await self.redis.xrevrange(stream, count=1)
            self._cursor[stream] = _d(last[0][0]) if last else "0-0"
        await self.refresh_window()
        since_ms = self.now_ms() - LOOKBACK_S * 1000
        for _eid, raw in await self._recent(EVENTS_STREAM, since_ms, by_time=True):
            self._apply_entry(raw)
        samples_since = self.now_ms() - SERIES_WINDOW_MS
        for _eid, raw in await self._recent(QUALITY_STREAM, samples_since, by_time=False):
            self._apply_sample(raw)
        for t in await self.service.store.active():
            self.tickets[t.id] = BoardTicket.of(t)
        for t in await self.service.store.of_day(day_of(self.now_ms())):
            self.tickets[t.id] = BoardTicket.of(t)
        self._restate_all()
        for r in self.rows.values():
            r.fresh = {}
        self._dirty.clear()
        self._dirty_tickets.clear()
        self.loaded.set()

    async def _recent(self, stream: str, since_ms: int, *, by_time: bool) -> list[tuple[Any, Any]]:
        """The stream's entries newer than `since_ms` (by their `time` field, or their `at` field for
        samples), oldest first, read backwards from the newest in pages."""
        out: list[tuple[Any, Any]] = []
        top = self._cursor[stream]
        if top == "0-0":
            return out
        last = top
        while True:
            page: Any = await self.redis.xrevrange(stream, max=last, min="-", count=1000)
            if not page:
                break
            stop = False
            for eid, raw in page:
                if self._entry_ms(raw, by_time) < since_ms:
                    stop = True
                    break
                out.append((eid, raw))
            if stop or len(page) < 1000:
                break
            last = "(" + _d(page[-1][0])
        out.reverse()
        return out

    @staticmethod
    def _entry_ms(raw: Mapping[Any, Any], by_time: bool) -> int:
        f = {_d(k): _d(v) for k, v in raw.items()}
        try:
            if by_time:
                return int(datetime.fromisoformat(f["time"].replace("Z", "+00:00")).timestamp() * 1000)
            return int(f.get("at", "0"))
        except (KeyError, ValueError):
            return 0

    # --- following -----------------------------------------------------------------------------------

    async def follow(self, client: aioredis.Redis) -> None:
        """Read the events and the quality samples as they come (one blocking read for both)."""
        await self.loaded.wait()
        while True:
            got: Any = await client.xread(dict(self._cursor), block=READ_BLOCK_MS, count=READ_COUNT)  # type: ignore[arg-type]
            for stream, entries in got or []:
                name = _d(stream)
                for eid, raw in entries:
                    self._cursor[name] = _d(eid)
                    if name == QUALITY_STREAM:
                        self._apply_sample(raw)
                    else:
                        await self._apply_live(raw)

    async def _apply_live(self, raw: Mapping[Any, Any]) -> None:
        f = {_d(k): _d(v) for k, v in raw.items()}
        if f.get("type") == "booking.created":
            body = json.loads(f.get("body", "{}"))
            bid = body.get("booking_id")
            if isinstance(bid, str) and bid not in self.rows:
                await self.refresh_window()
            return
        if f.get("type", "").startswith(ROOM_EVENTS):
            try:
                bid = json.loads(f.get("body", "{}")).get("booking_id")
            except (ValueError, AttributeError):
                bid = None
            if isinstance(bid, str) and bid not in self.rows:
                booking = await self._load_booking(bid)
                if booking is not None:
                    await self._add_booking(booking)
        self._apply_entry(raw)

    def _apply_entry(self, raw: Mapping[Any, Any]) -> None:
        f = {_d(k): _d(v) for k, v in raw.items()}
        kind = f.get("type", "")
        try:
            body = json.loads(f.get("body", "{}"))
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        try:
            self.apply(kind, body)
        except (KeyError, TypeError, ValueError):
            log.warning("the board skipped a %s event it could not read", kind)

    def apply(self, kind: str, body: dict[str, Any]) -> None:
        """One event's effect on the board (events it does not follow change nothing)."""
        if kind.startswith("support.ticket_"):
            self._apply_ticket(kind, body)
            return
        row = self.rows.get(str(body.get("booking_id", "")))
        if row is None:
            return
        pid = str(body.get("participant_id", ""))
        at = int(body.get("at") or self.now_ms())
        if kind == "room.joined":
            found = row.party(pid)
            if found is None:
                if body.get("role") in ("support", "admin"):
                    row.support.add(pid)
            else:
                party = found[1]
                party.present, party.reconnecting, party.left_at_ms, party.left_reason = True, False, None, None
        elif kind == "room.left":
            found = row.party(pid)
            if found is None:
                row.support.discard(pid)
            else:
                party = found[1]
                party.present, party.reconnecting = False, False
                party.left_at_ms, party.left_reason = at, str(body.get("reason") or "")
                party.media = None
        elif kind == "session.started":
            row.started_at_ms = row.started_at_ms or at
        elif kind == "media.state_changed":
            found = row.party(pid)
            if found is not None:
                state = str(body.get("state"))
                found[1].media = None if state == "closed" else state
        elif kind == "media.quality_changed":
            found = row.party(pid)
            if found is not None:
                found[1].quality = str(body.get("quality"))
        elif kind in ("participant.reconnecting", "room.reconnecting"):
            found = row.party(pid)
            if found is not None:
                found[1].reconnecting = True
        elif kind == "session.verdict":
            row.verdict = str(body.get("verdict"))
            row.attribution = body.get("attribution")
            row.ended_at_ms = row.ended_at_ms or at
        elif kind.startswith("booking."):
            to = body.get("to") or kind.removeprefix("booking.")
            if kind == "booking.cancelled":
                to = "cancelled"
            row.status = str(to)
        else:
            return
        self._restate(row)
        self._dirty.add(row.booking_id)

    def _apply_ticket(self, kind: str, body: dict[str, Any]) -> None:
        tid = str(body["ticket_id"])
        at = int(body["at"])
        if kind == "support.ticket_opened":
            if tid not in self.tickets:
                self.tickets[tid] = BoardTicket(tid, str(body["booking_id"]), str(body["reporter_role"]),
                                                str(body["kind"]), TicketStatus.OPEN, at)
        else:
            t = self.tickets.get(tid)
            if t is None:
                return
            if body.get("to"):
                t.status = TicketStatus(str(body["to"]))
            if "wait_s" in body and t.acknowledged_ms is None:
                t.acknowledged_ms, t.acknowledged_by = at, str(body.get("by") or "")
            if "open_s" in body:
                t.closed_ms = at
        self._dirty_tickets.add(tid)
        self._figures_dirty = True
        if t_row := self.rows.get(str(body.get("booking_id", ""))):
            self._dirty.add(t_row.booking_id)

    def _apply_sample(self, raw: Mapping[Any, Any]) -> None:
        f = {_d(k): _d(v) for k, v in raw.items()}
        row = self.rows.get(f.get("b", ""))
        if row is None:
            return
        found = row.party(f.get("p", ""))
        if found is None:
            return
        who, party = found
        try:
            record = json.loads(f["r"])
            at = int(float(record["at"]) * 1000) if float(record["at"]) < 1e11 else int(record["at"])
        except (KeyError, ValueError, TypeError):
            return
        party.quality = str(record.get("quality") or party.quality)
        for direction in ("up", "down"):
            d = record.get(direction) or {}
            point = [at, _num(d.get("rtt_ms")), _num(d.get("loss")), _num(d.get("bitrate_bps"))]
            key = f"{who}.{direction}"
            row.series[key].append(point)
            row.fresh.setdefault(key, []).append(point)
        cutoff = at - SERIES_WINDOW_MS
        for s in row.series.values():
            while s and s[0][0] < cutoff:
                s.popleft()
        self._restate(row)
        self._dirty.add(row.booking_id)

    def _restate(self, row: Row) -> bool:
        state = rules.session_state(row.facts(), self.now_ms())
        if state is row.state:
            return False
        row.state = state
        return True

    def _restate_all(self) -> None:
        for row in self.rows.values():
            if self._restate(row):
                self._dirty.add(row.booking_id)

    async def tick(self) -> None:
        """Time moves states (a room opens, a session ends) and brings bookings into the window."""
        await self.refresh_window()
        self._restate_all()
        self._figures_dirty = True

    # --- pushing -------------------------------------------------------------------------------------

    def open_tickets(self, booking_id: str) -> int:
        return sum(1 for t in self.tickets.values()
                   if t.booking_id == booking_id and t.status in (TicketStatus.OPEN, TicketStatus.ACKNOWLEDGED))

    def figures(self) -> rules.DayFigures:
        now = self.now_ms()
        today = day_of(now)
        return rules.day_figures(
            (rules.TicketTimes(t.status, t.opened_ms, t.acknowledged_ms, t.closed_ms)
             for t in self.tickets.values() if day_of(t.opened_ms) == today), now, self.service.answer_within_s)

    def snapshot(self) -> dict[str, Any]:
        """Everything an agent's page needs when it connects."""
        now = self.now_ms()
        return {"type": "snapshot", "now": now, "answer_within_s": self.service.answer_within_s,
                "idle_logout_s": self.idle_logout_s,
                "sessions": [r.as_json(self.open_tickets(r.booking_id), full=True) for r in self.rows.values()],
                "tickets": [t.as_json() for t in self._visible_tickets()],
                "figures": self.figures().as_json(), "causes": list(rules.CAUSES)}

    def _visible_tickets(self) -> list[BoardTicket]:
        today = day_of(self.now_ms())
        return [t for t in self.tickets.values()
                if t.status in (TicketStatus.OPEN, TicketStatus.ACKNOWLEDGED) or day_of(t.opened_ms) == today]

    def flush(self) -> int:
        """Send what changed since the last flush to every agent, once; the number of sessions sent."""
        if not (self._dirty or self._dirty_tickets or self._figures_dirty):
            return 0
        sessions: list[dict[str, Any]] = []
        gone: list[str] = []
        for bid in self._dirty:
            row = self.rows.get(bid)
            if row is None:
                gone.append(bid)
                continue
            sessions.append(row.as_json(self.open_tickets(bid), full=False))
            row.fresh = {}
        tickets = [self.tickets[t].as_json() for t in self._dirty_tickets if t in self.tickets]
        frame: dict[str, Any] = {"type": "update", "now": self.now_ms(), "sessions": sessions, "gone": gone,
                                 "tickets": tickets}
        if self._figures_dirty:
            frame["figures"] = self.figures().as_json()
        self._dirty.clear()
        self._dirty_tickets.clear()
        self._figures_dirty = False
        text = json.dumps(frame, separators=(",", ":"))
        for agent in list(self.agents):
            agent.send(text)
        self.updates_sent += len(sessions) * len(self.agents)
        return len(sessions)

    async def run_pushes(self, interval_s: float) -> None:
        await self.loaded.wait()
        while True:
            await asyncio.sleep(interval_s)
            self.flush()

    def connect(self) -> Agent:
        agent = Agent(self.queue_size)
        agent.send(json.dumps(self.snapshot(), separators=(",", ":")))
        self.agents.add(agent)
        return agent

    def disconnect(self, agent: Agent) -> None:
        self.agents.discard(agent)


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return 0.0
    return round(x, 4) if x == x else 0.0
