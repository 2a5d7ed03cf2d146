"""Support's records in Redis: problem tickets (each step written with its event in one script) and the
append-only audit of every look at a session.

Keys:
- `ss:support:ticket:{id}`: hash (booking_id, reporter_id, reporter_role, kind, status, opened_ms,
  acknowledged_ms, acknowledged_by, closed_ms, closed_by, practitioner_id)
- `ss:support:ticket:{id}:notes`: list of JSON notes (by, cause, text, at) — staff only
- `ss:support:tickets:active`: sorted set of open and acknowledged tickets by opening time
- `ss:support:tickets:day:{YYYY-MM-DD}`: sorted set of the tickets opened that day (UTC), for the figures
- `ss:support:tickets:booking:{booking_id}`: set of a booking's tickets
- `ss:audit`: stream, one entry per look (who, role, action, booking_id, ticket_id, at); no route writes
  to it but the looks themselves, and none deletes from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from ..events import EVENTS_STREAM, LUA_XADD_EVENT, Event, lua_args
from .rules import TicketStatus, TicketTimes

TICKET = "ss:support:ticket:{}"
NOTES = "ss:support:ticket:{}:notes"
ACTIVE = "ss:support:tickets:active"
DAY = "ss:support:tickets:day:{}"
BY_BOOKING = "ss:support:tickets:booking:{}"
AUDIT_STREAM = "ss:audit"
DAY_TTL_S = 40 * 24 * 3600
TICKET_TTL_S = 400 * 24 * 3600
AUDIT_MAXLEN = 10_000_000  # an audit is kept: trimming is an operator's decision (docs/support.md)

# Open a ticket, unless the reporter already has one open or acknowledged for this booking (a second
# press of the button is the same problem): then return that one's id. KEYS: ticket hash, active set, day
# set, booking set, stream. ARGV: 1 id, 2 booking, 3 reporter, 4 role, 5 kind, 6 opened_ms, 7 practitioner,
# 8 TTL, 9 day TTL, 10-14 the event, 15 ticket key prefix.
_OPEN = LUA_XADD_EVENT + """
for _, other in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  local h = ARGV[15] .. other
  local st = redis.call('HGET', h, 'status')
  if (st == 'open' or st == 'acknowledged') and redis.call('HGET', h, 'reporter_id') == ARGV[3] then
    return {0, other}
  end
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'booking_id', ARGV[2], 'reporter_id', ARGV[3],
  'reporter_role', ARGV[4], 'kind', ARGV[5], 'status', 'open', 'opened_ms', ARGV[6],
  'practitioner_id', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[9])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[8])
xadd_event(KEYS[5], 10)
return {1, ARGV[1]}
"""

# Move a ticket from the status the caller read (compare and set). KEYS: ticket hash, active set, notes,
# stream. ARGV: 1 expected status, 2 new status, 3 fields JSON (set on the hash), 4 note JSON or '',
# 5 final ('1' leaves the active set), 6-10 the event.
_MOVE = LUA_XADD_EVENT + """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
for k, v in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', KEYS[1], k, v) end
if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[4]); redis.call('EXPIRE', KEYS[3], 34560000) end
if ARGV[5] == '1' then redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'id')) end
xadd_event(KEYS[4], 6)
return 1
"""


def _d(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    booking_id: str
    reporter_id: str
    reporter_role: str
    kind: str
    status: TicketStatus
    opened_ms: int
    practitioner_id: str
    acknowledged_ms: int | None = None
    acknowledged_by: str | None = None
    closed_ms: int | None = None
    closed_by: str | None = None

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Ticket:
        h = {_d(k): _d(v) for k, v in raw.items()}

        def opt_int(k: str) -> int | None:
            return int(h[k]) if h.get(k) else None

        return cls(id=h["id"], booking_id=h["booking_id"], reporter_id=h["reporter_id"],
                   reporter_role=h["reporter_role"], kind=h["kind"], status=TicketStatus(h["status"]),
                   opened_ms=int(h["opened_ms"]), practitioner_id=h.get("practitioner_id", ""),
                   acknowledged_ms=opt_int("acknowledged_ms"), acknowledged_by=h.get("acknowledged_by") or None,
                   closed_ms=opt_int("closed_ms"), closed_by=h.get("closed_by") or None)

    def times(self) -> TicketTimes:
        return TicketTimes(self.status, self.opened_ms, self.acknowledged_ms, self.closed_ms)


class SupportStore:
    def __init__(self, redis: aioredis.Redis, *, stream: str = EVENTS_STREAM) -> None:
        self.redis = redis
        self.stream = stream
        self._open = redis.register_script(_OPEN)
        self._move = redis.register_script(_MOVE)

    async def open_ticket(self, *, ticket_id: str, booking_id: str, reporter_id: str, reporter_role: str,
                          kind: str, opened_ms: int, practitioner_id: str, event: Event) -> tuple[bool, str]:
        """(created, id): a new ticket, or the reporter's ticket already open for this booking."""
        created, tid = await self._open(
            keys=[TICKET.format(ticket_id), ACTIVE, DAY.format(day_of(opened_ms)), BY_BOOKING.format(booking_id),
                  self.stream],
            args=[ticket_id, booking_id, reporter_id, reporter_role, kind, opened_ms, practitioner_id,
                  TICKET_TTL_S, DAY_TTL_S, *lua_args(event), TICKET.format("")])
        return bool(int(created)), _d(tid)

    async def move(self, ticket: Ticket, to: TicketStatus, fields: Mapping[str, str | int], note: str,
                   event: Event, *, final: bool) -> bool:
        """Write the move if the ticket is still in the status it was read in; False if it moved since."""
        done = await self._move(
            keys=[TICKET.format(ticket.id), ACTIVE, NOTES.format(ticket.id), self.stream],
            args=[ticket.status.value, to.value, json.dumps({k: str(v) for k, v in fields.items()}), note,
                  "1" if final else "0", *lua_args(event)])
        return bool(int(done))

    async def ticket(self, ticket_id: str) -> Ticket | None:
        raw = await self.redis.hgetall(TICKET.format(ticket_id))
        return Ticket.from_hash(raw) if raw else None

    async def tickets(self, ids: Sequence[str]) -> list[Ticket]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.hgetall(TICKET.format(tid))
            raws = await pipe.execute()
        return [Ticket.from_hash(r) for r in raws if r]

    async def notes(self, ticket_id: str) -> list[dict[str, Any]]:
        return [json.loads(_d(n)) for n in await self.redis.lrange(NOTES.format(ticket_id), 0, -1)]

    async def active(self, limit: int = 1000) -> list[Ticket]:
        return await self.tickets([_d(i) for i in await self.redis.zrange(ACTIVE, 0, limit - 1)])

    async def of_day(self, day: str, limit: int = 10_000) -> list[Ticket]:
        return await self.tickets([_d(i) for i in await self.redis.zrange(DAY.format(day), 0, limit - 1)])

    async def of_booking(self, booking_id: str) -> list[Ticket]:
        ids = sorted(_d(i) for i in await self.redis.smembers(BY_BOOKING.format(booking_id)))
        return await self.tickets(ids)

    # --- audit ---------------------------------------------------------------------------------------

    async def audit(self, *, who: str, role: str, action: str, booking_id: str, ticket_id: str, at_ms: int
                    ) -> str:
        entry_id = await self.redis.xadd(AUDIT_STREAM, {"who": who, "role": role, "action": action,
                                                        "booking_id": booking_id, "ticket_id": ticket_id,
                                                        "at": str(at_ms)},
                                         maxlen=AUDIT_MAXLEN, approximate=True)
        return _d(entry_id)

    async def audit_records(self, *, booking_id: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest records first; of one booking when given (a scan of the stream, newest first, until
        `limit` records of it are found: audits are read rarely, by admins)."""
        out: list[dict[str, Any]] = []
        last = "+"
        while len(out) < limit:
            batch: Any = await self.redis.xrevrange(AUDIT_STREAM, max=last, min="-", count=500)
            if not batch:
                break
            for entry_id, raw in batch:
                f = {_d(k): _d(v) for k, v in raw.items()}
                if booking_id is None or f.get("booking_id") == booking_id:
                    out.append({"id": _d(entry_id), "who": f["who"], "role": f["role"], "action": f["action"],
                                "booking_id": f["booking_id"], "ticket_id": f.get("ticket_id") or None,
                                "at": int(f["at"])})
                    if len(out) >= limit:
                        break
            last = "(" + _d(batch[-1][0])
        return out
