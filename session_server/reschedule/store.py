"""Redis I/O for reschedule offers: each change and its events in one Lua script.

Redis layout (all times epoch seconds, UTC):
  ss:reschedule:{booking_id}   hash: booking_id, practitioner_id, client_id, status (open, accepted,
                               expired), reason (verdict, support, practitioner), attribution, offered_at,
                               expires_at, original_starts_at, offered_by, source_event_id, problem_id,
                               proposals (JSON list of epoch starts), proposed_at, reminded_at,
                               new_booking_id, choice (slot, proposal), accepted_at, expired_at, rev
  ss:reschedule:open           zset: booking id -> expires_at, the offers not yet used or expired
  ss:reschedule:remind         zset: booking id -> when to say the offer expires soon
  ss:reschedule:expired        zset: booking id -> expired_at: offers that expired unused, for support
  consumer group `reschedule.offers` on the events stream (see consumer.py)

An offer belongs to its booking (one per booking), so a verdict delivered twice offers once. Choosing a
new time is one script with the booking's own slot-locking logic (bookings/store.py LUA_BOOKING_LIB): the
new booking, its holds and indexes, the original moved to `rescheduled` (its range released), the links
both ways, the offer marked used, and the events `booking.created` and `booking.rescheduled`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from ..bookings.errors import BookingNotFound
from ..bookings.model import BOOKING_KEY, Booking
from ..bookings.rules import MAX_SESSION_MINUTES
from ..bookings.store import (
    ALL_BOOKINGS_KEY,
    C_BOOKINGS_KEY,
    C_HOLDS_KEY,
    IN_SESSION_KEY,
    LUA_BOOKING_LIB,
    P_BOOKINGS_KEY,
    P_HOLDS_KEY,
    PRACTITIONER_KEY,
    WINDOWS_KEY,
)
from ..events import EVENTS_STREAM, LUA_XADD_EVENT, Event, lua_args
from .errors import script_refusal
from .rules import Choice, Offer, Terms

OFFER_KEY = "ss:reschedule:{}"
OPEN_KEY = "ss:reschedule:open"
REMIND_KEY = "ss:reschedule:remind"
EXPIRED_KEY = "ss:reschedule:expired"

_JSON = msgspec.json.Encoder()

# KEYS: 1 offer, 2 open zset, 3 remind zset, 4 expired zset, 5 stream, 6 booking, 7 in-session index.
# ARGV: 1 statuses the booking may be in (comma list), 2 now, 3 the offer's fields as one JSON object,
#       4 expires_at, 5 remind_at, 6 may replace an expired offer ('1' or ''), 7-11 the offer's event,
#       12-16 the booking's `booking.interrupted` event, for a booking still in session ('' ids: none).
OFFER_LUA = LUA_XADD_EVENT + """
local id = redis.call('HGET', KEYS[6], 'id')
if not id then return {'booking_not_found'} end
local had = redis.call('HGET', KEYS[1], 'status')
if had and not (had == 'expired' and ARGV[6] == '1') then return {'exists', had} end
local cur = redis.call('HGET', KEYS[6], 'status')
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == cur then allowed = true end end
if not allowed then return {'not_reschedulable', cur} end
if cur == 'in_session' then
  if ARGV[12] == '' then return {'not_reschedulable', cur} end
  redis.call('HSET', KEYS[6], 'status', 'interrupted', 'status_changed_at', ARGV[2])
  redis.call('HINCRBY', KEYS[6], 'rev', 1)
  redis.call('ZREM', KEYS[7], id)
  xadd_event(KEYS[5], 12)
end
if had then redis.call('DEL', KEYS[1]) end
local o = cjson.decode(ARGV[3])
local fields = {}
for k, v in pairs(o) do fields[#fields + 1] = k; fields[#fields + 1] = v end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], ARGV[4], id)
redis.call('ZADD', KEYS[3], ARGV[5], id)
redis.call('ZREM', KEYS[4], id)
xadd_event(KEYS[5], 7)
return {'ok', cur}
"""

# KEYS: 1 offer, 2 stream. ARGV: 1 now, 2 proposals (JSON list of starts), 3-7 event.
PROPOSE_LUA = LUA_XADD_EVENT + """
local o = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'new_booking_id')
if not o[1] then return {'offer_not_found'} end
if o[1] == 'accepted' then return {'offer_used', o[3]} end
if o[1] ~= 'open' or tonumber(ARGV[1]) >= tonumber(o[2]) then return {'offer_expired'} end
redis.call('HSET', KEYS[1], 'proposals', ARGV[2], 'proposed_at', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'rev', 1)
xadd_event(KEYS[2], 3)
return {'ok'}
"""

# KEYS: 1 practitioner, 2 practitioner holds, 3 client holds, 4 new booking, 5 practitioner bookings,
#       6 client bookings, 7 all bookings, 8 stream, 9 windows, 10 original booking, 11 offer, 12 open zset,
#       13 remind zset.
# ARGV: 1 the new booking's hash as one JSON object of strings, 2 longest session (s), 3 now,
#       4 choice (slot, proposal), 5-9 `booking.created`, 10-14 `booking.rescheduled`.
# A resend of the very call that used the offer (same new booking id) answers ok again.
CHOOSE_LUA = LUA_XADD_EVENT + LUA_BOOKING_LIB + """
local b = cjson.decode(ARGV[1])
local o = redis.call('HMGET', KEYS[11], 'status', 'expires_at', 'new_booking_id', 'proposals')
if not o[1] then return {'offer_not_found'} end
if o[1] == 'accepted' then
  if o[3] == b.id then return {'ok'} end
  return {'offer_used', o[3]}
end
if o[1] ~= 'open' or tonumber(ARGV[3]) >= tonumber(o[2]) then return {'offer_expired'} end
local ob = redis.call('HMGET', KEYS[10], 'status', 'id', 'starts_at', 'ends_at')
if ob[1] ~= 'interrupted' then return {'illegal_transition', ob[1] or ''} end
local p = redis.call('HGET', KEYS[1], 'status')
if not p then return {'practitioner_not_found'} end
if p ~= 'active' then return {'not_bookable'} end
local s, e = tonumber(b.starts_at), tonumber(b.ends_at)
if ARGV[4] == 'proposal' then
  local offered = false
  for _, t in ipairs(cjson.decode(o[4] or '[]')) do if tonumber(t) == s then offered = true end end
  if not offered then return {'not_offered'} end
elseif not on_grid(KEYS[9], s, e) then
  return {'not_a_slot'}
end
local longest = tonumber(ARGV[2])
if busy(KEYS[2], s, e, longest) then return {'slot_taken'} end
if busy(KEYS[3], s, e, longest) then return {'client_overlap'} end
hold_booking(b, KEYS[4], KEYS[2], KEYS[3], KEYS[5], KEYS[6], KEYS[7])
local released = ob[3] .. ':' .. ob[4] .. ':' .. ob[2]
redis.call('ZREM', KEYS[2], released)
redis.call('ZREM', KEYS[3], released)
redis.call('HSET', KEYS[10], 'status', 'rescheduled', 'status_changed_at', ARGV[3], 'rescheduled_to', b.id)
redis.call('HINCRBY', KEYS[10], 'rev', 1)
redis.call('HSET', KEYS[11], 'status', 'accepted', 'new_booking_id', b.id, 'accepted_at', ARGV[3],
  'choice', ARGV[4])
redis.call('HINCRBY', KEYS[11], 'rev', 1)
redis.call('ZREM', KEYS[12], ob[2])
redis.call('ZREM', KEYS[13], ob[2])
xadd_event(KEYS[8], 5)
xadd_event(KEYS[8], 10)
return {'ok'}
"""

# KEYS: 1 offer, 2 remind zset, 3 stream. ARGV: 1 now, 2 booking id, 3-7 event.
REMIND_LUA = LUA_XADD_EVENT + """
local o = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'reminded_at')
if o[1] ~= 'open' or o[3] or tonumber(ARGV[1]) >= tonumber(o[2]) then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return {'skip'}
end
redis.call('HSET', KEYS[1], 'reminded_at', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
xadd_event(KEYS[3], 3)
return {'ok'}
"""

# KEYS: 1 offer, 2 open zset, 3 remind zset, 4 expired zset, 5 stream. ARGV: 1 now, 2 booking id, 3-7 event.
EXPIRE_LUA = LUA_XADD_EVENT + """
local o = redis.call('HMGET', KEYS[1], 'status', 'expires_at')
if o[1] ~= 'open' then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  return {'skip'}
end
if tonumber(ARGV[1]) < tonumber(o[2]) then return {'not_due'} end
redis.call('HSET', KEYS[1], 'status', 'expired', 'expired_at', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[1], ARGV[2])
xadd_event(KEYS[5], 3)
return {'ok'}
"""

_NO_EVENT = ["", "", "", "", ""]


def _d(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _result(raw: Sequence[Any]) -> tuple[str, list[str]]:
    items = [_d(x) for x in raw]
    return items[0], items[1:]


class RescheduleStore:
    def __init__(self, redis: aioredis.Redis, *, stream: str = EVENTS_STREAM) -> None:
        self.redis = redis
        self.stream = stream
        self._offer = redis.register_script(OFFER_LUA)
        self._propose = redis.register_script(PROPOSE_LUA)
        self._choose = redis.register_script(CHOOSE_LUA)
        self._remind = redis.register_script(REMIND_LUA)
        self._expire = redis.register_script(EXPIRE_LUA)

    async def offer(self, booking_id: str) -> Offer | None:
        raw = await self.redis.hgetall(OFFER_KEY.format(booking_id))
        return Offer.from_hash(raw) if raw else None

    async def create_offer(self, booking_id: str, fields: Mapping[str, str], terms: Terms, *,
                           statuses: Sequence[str], event: Event, interrupted: Event | None = None,
                           may_replace_expired: bool = False) -> tuple[str, str]:
        """Write the offer and its event (and, for a booking still in session, its move to interrupted).

        Returns (outcome, the booking's status before): "ok", or "exists" when the booking has an offer
        already (nothing written); raises for a booking that cannot be offered a reschedule.
        """
        status, rest = _result(await self._offer(
            keys=[OFFER_KEY.format(booking_id), OPEN_KEY, REMIND_KEY, EXPIRED_KEY, self.stream,
                  BOOKING_KEY.format(booking_id), IN_SESSION_KEY],
            args=[",".join(statuses), terms.offered_at, _JSON.encode(dict(fields)), terms.expires_at,
                  terms.remind_at, "1" if may_replace_expired else "",
                  *lua_args(event), *(lua_args(interrupted) if interrupted is not None else _NO_EVENT)]))
        if status in ("ok", "exists"):
            return status, rest[0] if rest else ""
        if status == "booking_not_found":
            raise BookingNotFound()
        raise script_refusal(status)

    async def propose(self, booking_id: str, starts: Sequence[int], event: Event, now: int) -> None:
        status, rest = _result(await self._propose(
            keys=[OFFER_KEY.format(booking_id), self.stream],
            args=[now, _JSON.encode(list(starts)), *lua_args(event)]))
        if status != "ok":
            raise script_refusal(status, **({"new_booking_id": rest[0]} if rest else {}))

    async def choose(self, original: Booking, new: Booking, choice: Choice, created: Event,
                     rescheduled: Event, now: int) -> None:
        pid, cid = new.practitioner_id, new.client_id
        record = {**new.to_hash(), "rescheduled_from": original.id}
        status, rest = _result(await self._choose(
            keys=[PRACTITIONER_KEY.format(pid), P_HOLDS_KEY.format(pid), C_HOLDS_KEY.format(cid),
                  BOOKING_KEY.format(new.id), P_BOOKINGS_KEY.format(pid), C_BOOKINGS_KEY.format(cid),
                  ALL_BOOKINGS_KEY, self.stream, WINDOWS_KEY.format(pid), BOOKING_KEY.format(original.id),
                  OFFER_KEY.format(original.id), OPEN_KEY, REMIND_KEY],
            args=[_JSON.encode(record), MAX_SESSION_MINUTES * 60, now, choice.value,
                  *lua_args(created), *lua_args(rescheduled)]))
        if status != "ok":
            extra = {"new_booking_id": rest[0]} if status == "offer_used" and rest else {}
            raise script_refusal(status, **extra)

    async def remind(self, booking_id: str, event: Event, now: int) -> bool:
        status, _ = _result(await self._remind(keys=[OFFER_KEY.format(booking_id), REMIND_KEY, self.stream],
                                               args=[now, booking_id, *lua_args(event)]))
        return status == "ok"

    async def expire(self, booking_id: str, event: Event, now: int) -> bool:
        status, _ = _result(await self._expire(
            keys=[OFFER_KEY.format(booking_id), OPEN_KEY, REMIND_KEY, EXPIRED_KEY, self.stream],
            args=[now, booking_id, *lua_args(event)]))
        return status == "ok"

    async def due(self, key: str, until: int, limit: int = 500) -> list[str]:
        return [_d(x) for x in await self.redis.zrangebyscore(key, "-inf", until, start=0, num=limit)]

    async def offers(self, key: str, limit: int) -> list[Offer]:
        """The offers of an index (open or expired), most recent first."""
        ids = [_d(x) for x in await self.redis.zrevrange(key, 0, limit - 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for bid in ids:
                pipe.hgetall(OFFER_KEY.format(bid))
            raws = await pipe.execute()
        return [Offer.from_hash(r) for r in raws if r]
