"""Redis I/O for practitioners, availability, codes, bookings and interest: each change and its event in
one Lua script, so an event exists if and only if its change happened.

Redis layout (all times epoch seconds, UTC):
  ss:practitioner:{id}            hash: id, display_name, specialty, session_minutes, price_minor, currency,
                                  timezone, status, created_at, updated_at, activated_at, available_until,
                                  availability (the spec as entered, JSON), status_reason, rev (a
                                  counter bumped by every change but availability: see BOOK_LUA)
  ss:practitioners                zset: practitioner id -> created_at
  ss:practitioner:{id}:windows    zset: "start:end" -> start; published UTC windows, merged
  ss:practitioner:{id}:holds      zset: "start:end:booking_id" -> start; bookings that hold their time range
  ss:practitioner:{id}:bookings   zset: booking id -> starts_at (every booking, any state)
  ss:client:{id}:holds            zset: like the practitioner's, for one client's overlapping bookings
  ss:client:{id}:bookings         zset: booking id -> starts_at
  ss:bookings                     zset: booking id -> starts_at (all bookings, for admins)
  ss:booking:{id}                 hash: see model.py; plus status_changed_at, cancel_reason, cancelled_by,
                                  rescheduled_from / rescheduled_to (the links of a free reschedule)
  ss:code:{CODE}                  hash: code, kind, owner_id, amount_minor, percent, referrer_credit_minor,
                                  expires_at, max_uses, uses, currency, once_per_client, created_at
  ss:code:{CODE}:clients          set: clients who used a once-per-client (referral) code
  ss:interest:{practitioner_id}   zset: client id -> time they asked to be told about new slots
  ss:bookings:in_session          zset: booking id -> ends_at, for bookings in session (see jobs.py); a
                                  booking leaves it with its verdict (VERDICT_LUA)
  ss:lock:{name}                  string: the token of the process running a scheduled job (see jobs.py)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis

from ledger.pricing import CodeKind, DiscountCode

from ..events import EVENTS_STREAM, LUA_XADD_EVENT, Event, lua_args
from ..script_batch import BatchedScript
from .errors import AlreadyExists, BookingNotFound, IllegalTransition, PractitionerNotFound, script_refusal
from .model import BOOKING_KEY, Booking, BookingStatus, load_booking
from .rules import (
    MAX_SESSION_MINUTES,
    RELEASING_STATES,
    PractitionerStatus,
    can_transition,
    practitioner_sources,
)

PRACTITIONER_KEY = "ss:practitioner:{}"
PRACTITIONERS_KEY = "ss:practitioners"
WINDOWS_KEY = "ss:practitioner:{}:windows"
P_HOLDS_KEY = "ss:practitioner:{}:holds"
P_BOOKINGS_KEY = "ss:practitioner:{}:bookings"
C_HOLDS_KEY = "ss:client:{}:holds"
C_BOOKINGS_KEY = "ss:client:{}:bookings"
ALL_BOOKINGS_KEY = "ss:bookings"
CODE_KEY = "ss:code:{}"
CODE_CLIENTS_KEY = "ss:code:{}:clients"
INTEREST_KEY = "ss:interest:{}"
IN_SESSION_KEY = "ss:bookings:in_session"
# What a booking's hash keeps beside the `Booking` fields, read with it for the views. The links of a
# reschedule are written by session_server/reschedule/store.py.
EXTRA_FIELDS = ("status_changed_at", "cancel_reason", "cancelled_by", "rescheduled_from", "rescheduled_to")


_JSON = msgspec.json.Encoder()


def _d(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def at(ts: int | float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def iso(ts: int) -> str:
    if type(ts) is int and ts >= 0:  # whole seconds: the same text, written faster
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return at(ts).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Practitioner:
    id: str
    display_name: str
    specialty: str
    session_minutes: int
    price_minor: int
    currency: str
    timezone: str
    status: PractitionerStatus
    created_at: int
    updated_at: int
    activated_at: int
    available_until: int
    availability: dict[str, Any]
    rev: int = 0  # bumped by every change of the record: the booking script refuses a stale read

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Practitioner:
        h = {_d(k): _d(v) for k, v in raw.items()}
        return cls(id=h["id"], display_name=h["display_name"], specialty=h["specialty"],
                   session_minutes=int(h["session_minutes"]), price_minor=int(h["price_minor"]),
                   currency=h["currency"], timezone=h["timezone"], status=PractitionerStatus(h["status"]),
                   created_at=int(h["created_at"]), updated_at=int(h.get("updated_at", h["created_at"])),
                   activated_at=int(h.get("activated_at", "0")),
                   available_until=int(h.get("available_until", "0")),
                   availability=json.loads(h.get("availability", "{}")), rev=int(h.get("rev", "0")))

    @property
    def session_s(self) -> int:
        return self.session_minutes * 60

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "display_name": self.display_name, "specialty": self.specialty,
                "session_minutes": self.session_minutes, "price_minor": self.price_minor,
                "currency": self.currency, "timezone": self.timezone, "status": self.status.value,
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}


def code_from_hash(raw: Mapping[Any, Any]) -> DiscountCode:
    h = {_d(k): _d(v) for k, v in raw.items()}
    return DiscountCode(code=h["code"], kind=CodeKind(h["kind"]), owner_id=h.get("owner_id", ""),
                        amount_minor=int(h.get("amount_minor", "0")), percent=int(h.get("percent", "0")),
                        referrer_credit_minor=int(h.get("referrer_credit_minor", "0")),
                        expires_at=int(h.get("expires_at", "0")), max_uses=int(h.get("max_uses", "0")),
                        uses=int(h.get("uses", "0")), currency=h.get("currency", "DZD"))


# --- Lua -----------------------------------------------------------------------------------------
# Every script answers {status, ...}: "ok" or a refusal code the store turns into a DomainError.

_PAIRS = """
local function hset_pairs(key, from)
  local args = {}
  for i = from, #ARGV do args[#args + 1] = ARGV[i] end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end
"""

# KEYS: hash, stream, index zset. ARGV: 1-5 event, 6 index score, 7.. field pairs.
CREATE_LUA = LUA_XADD_EVENT + _PAIRS + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
hset_pairs(KEYS[1], 7)
-- the first field pair is (id, <id>): that id goes into the index
if KEYS[3] ~= '' then redis.call('ZADD', KEYS[3], ARGV[6], ARGV[8]) end
xadd_event(KEYS[2], 1)
return {'ok'}
"""

# KEYS: hash, stream. ARGV: 1-5 event, 6.. field pairs.
UPDATE_LUA = LUA_XADD_EVENT + _PAIRS + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
hset_pairs(KEYS[1], 6)
redis.call('HINCRBY', KEYS[1], 'rev', 1)
xadd_event(KEYS[2], 1)
return {'ok'}
"""

# Compare-and-set a status with its event, optionally releasing a held range and checking a guard field.
# KEYS: hash, stream, [hold zset, hold zset, [code hash, code clients set]]. ARGV: 1-5 event, 6 allowed
# current statuses (comma list), 7 guard field ('' none), 8 guard value, 9 hold member ('' none), 10..
# field pairs. With the code's keys (a cancelled booking that used a code), the use is given back: one
# use fewer counted, and the booking's client may use a once-per-client code again.
STATUS_LUA = LUA_XADD_EVENT + _PAIRS + """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return {'not_found'} end
local allowed = false
for s in string.gmatch(ARGV[6], '[^,]+') do if s == cur then allowed = true end end
if not allowed then return {'illegal', cur} end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], ARGV[7]) ~= ARGV[8] then return {'stale', cur} end
hset_pairs(KEYS[1], 10)
redis.call('HINCRBY', KEYS[1], 'rev', 1)
if ARGV[9] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[9])
  redis.call('ZREM', KEYS[4], ARGV[9])
  if KEYS[6] then
    if tonumber(redis.call('HGET', KEYS[5], 'uses') or '0') > 0 then redis.call('HINCRBY', KEYS[5], 'uses', -1) end
    redis.call('SREM', KEYS[6], redis.call('HGET', KEYS[1], 'client_id'))
  end
end
xadd_event(KEYS[2], 1)
return {'ok', cur}
"""

# KEYS: practitioner hash, windows zset, stream, interest zset.
# ARGV: 1-5 event, 6 spec JSON, 7 now, 8.. window starts and ends, alternating.
PUBLISH_LUA = LUA_XADD_EVENT + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
redis.call('DEL', KEYS[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'available_until') or '0')
for i = 8, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i] .. ':' .. ARGV[i + 1])
  if tonumber(ARGV[i + 1]) > last then last = tonumber(ARGV[i + 1]) end
end
redis.call('HSET', KEYS[1], 'availability', ARGV[6], 'available_until', tostring(last), 'updated_at', ARGV[7])
xadd_event(KEYS[3], 1)
return {'ok', tostring(redis.call('ZCARD', KEYS[4]))}
"""

# The slot-locking logic every script that creates a booking shares (BOOK_LUA here, the reschedule's
# script in session_server/reschedule/store.py): is a start on a published window's grid, is a time range
# free in a holds zset, and the writes that make a booking hold its range and appear in the indexes.
# A holds member is "start:end:booking_id"; `longest` (s) bounds how far back an overlapping hold may start.
LUA_BOOKING_LIB = """
local function on_grid(windows_key, s, e)
  local w = redis.call('ZREVRANGEBYSCORE', windows_key, s, '-inf', 'LIMIT', 0, 1)
  if #w == 0 then return false end
  local ws, we = string.match(w[1], '^(%d+):(%d+)$')
  return tonumber(we) >= e and (s - tonumber(ws)) % (e - s) == 0
end
local function busy(key, s, e, longest)
  local items = redis.call('ZRANGEBYSCORE', key, s - longest, '(' .. e)
  for _, m in ipairs(items) do
    local ms, me = string.match(m, '^(%d+):(%d+):')
    if tonumber(ms) < e and tonumber(me) > s then return true end
  end
  return false
end
-- b: the booking's hash as a table of strings; keys: booking, practitioner holds, client holds,
-- practitioner bookings, client bookings, all bookings
local function hold_booking(b, booking_key, p_holds, c_holds, p_bookings, c_bookings, all_bookings)
  local fields = {}
  for k, v in pairs(b) do fields[#fields + 1] = k; fields[#fields + 1] = v end
  redis.call('HSET', booking_key, unpack(fields))
  local s = tonumber(b.starts_at)
  local member = b.starts_at .. ':' .. b.ends_at .. ':' .. b.id
  redis.call('ZADD', p_holds, s, member)
  redis.call('ZADD', c_holds, s, member)
  redis.call('ZADD', p_bookings, s, b.id)
  redis.call('ZADD', c_bookings, s, b.id)
  redis.call('ZADD', all_bookings, s, b.id)
end
"""

# KEYS: 1 practitioner, 2 practitioner holds, 3 client holds, 4 booking, 5 practitioner bookings,
#       6 client bookings, 7 all bookings, 8 stream, 9 code, 10 code clients, 11 windows.
# ARGV: 1 the booking's hash as one JSON object of strings (see Booking.to_hash), 2 practitioner rev seen,
#       3 longest session (s), 4 now, 5-9 event.
# The booking travels as one argument: packing its fields one by one cost the client more than the script.
# The booking's id is new for every attempt, so finding its key means this very call ran already (a resend
# after a lost reply): it answers ok again, where checking the slot would refuse the client its own booking.
# Calls travel in batches (script_batch.py).
BOOK_LUA = LUA_XADD_EVENT + LUA_BOOKING_LIB + """
if redis.call('EXISTS', KEYS[4]) == 1 then return {'ok'} end
local b = cjson.decode(ARGV[1])
local p = redis.call('HMGET', KEYS[1], 'status', 'rev')
if not p[1] then return {'practitioner_not_found'} end
if (p[2] or '0') ~= ARGV[2] then return {'practitioner_changed'} end
if p[1] ~= 'active' then return {'not_bookable'} end
local s, e = tonumber(b.starts_at), tonumber(b.ends_at)
if not on_grid(KEYS[11], s, e) then return {'not_a_slot'} end
local longest = tonumber(ARGV[3])
if busy(KEYS[2], s, e, longest) then return {'slot_taken'} end
if busy(KEYS[3], s, e, longest) then return {'client_overlap'} end
if b.code ~= '' then
  local c = redis.call('HMGET', KEYS[9], 'uses', 'max_uses', 'expires_at', 'once_per_client')
  if not c[2] then return {'code_unknown'} end
  if tonumber(c[3]) > 0 and tonumber(ARGV[4]) >= tonumber(c[3]) then return {'code_expired'} end
  if tonumber(c[2]) > 0 and tonumber(c[1]) >= tonumber(c[2]) then return {'code_used_up'} end
  if c[4] == '1' then
    if redis.call('SADD', KEYS[10], b.client_id) == 0 then return {'code_already_used'} end
  end
  redis.call('HINCRBY', KEYS[9], 'uses', 1)
end
hold_booking(b, KEYS[4], KEYS[2], KEYS[3], KEYS[5], KEYS[6], KEYS[7])
xadd_event(KEYS[8], 5)
return {'ok'}
"""

# KEYS: interest zset, stream. ARGV: 1-5 event, 6 client id, 7 now.
INTEREST_LUA = LUA_XADD_EVENT + """
if redis.call('ZADD', KEYS[1], 'NX', ARGV[7], ARGV[6]) == 0 then return {'already'} end
xadd_event(KEYS[2], 1)
return {'ok', tostring(redis.call('ZCARD', KEYS[1]))}
"""

# A session's verdict, written once: the booking's status (compare-and-set on the status read), the verdict
# fields, `session.verdict` and the booking's transition event, in one script. A booking that already has a
# verdict refuses a second one, so several processes deciding at once write it once.
# KEYS: booking hash, stream, in-session index. ARGV: 1 expected current status, 2 new status, 3 now,
# 4 verdict, 5 attribution ('' none), 6 net minutes, 7 booking id, 8-12 session.verdict, 13-17 transition.
VERDICT_LUA = LUA_XADD_EVENT + """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return {'not_found'} end
local done = redis.call('HGET', KEYS[1], 'verdict')
if done then return {'already', cur, done} end
if cur ~= ARGV[1] then return {'changed', cur} end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'status_changed_at', ARGV[3], 'verdict', ARGV[4],
  'verdict_attribution', ARGV[5], 'verdict_at', ARGV[3], 'net_minutes', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('ZREM', KEYS[3], ARGV[7])
xadd_event(KEYS[2], 8)
xadd_event(KEYS[2], 13)
return {'ok', cur}
"""


def _result(raw: Sequence[Any]) -> tuple[str, list[str]]:
    items = [_d(x) for x in raw]
    return items[0], items[1:]


class BookingStore:
    """Practitioners, availability, codes, bookings and interest in one Redis."""

    def __init__(self, redis: aioredis.Redis, *, stream: str = EVENTS_STREAM) -> None:
        self.redis = redis
        self.stream = stream
        self._create = redis.register_script(CREATE_LUA)
        self._update = redis.register_script(UPDATE_LUA)
        self._status = redis.register_script(STATUS_LUA)
        self._publish = redis.register_script(PUBLISH_LUA)
        self._book = BatchedScript(redis, BOOK_LUA)
        self._interest = redis.register_script(INTEREST_LUA)
        self._verdict = redis.register_script(VERDICT_LUA)

    # --- practitioners ---

    async def create_practitioner(self, pid: str, *, display_name: str, specialty: str, session_minutes: int,
                                  price_minor: int, currency: str, timezone: str, event: Event, now: int) -> None:
        """A new practitioner, pending review, with no availability; refused if the id is taken."""
        fields = {"id": pid, "display_name": display_name, "specialty": specialty,
                  "session_minutes": str(session_minutes), "price_minor": str(price_minor),
                  "currency": currency, "timezone": timezone, "status": PractitionerStatus.PENDING_REVIEW.value,
                  "created_at": str(now), "updated_at": str(now), "activated_at": "0", "available_until": "0",
                  "availability": "{}"}
        pairs = [x for k, v in fields.items() for x in (k, v)]  # (id, <id>) first: the script indexes it
        status, _ = _result(await self._create(
            keys=[PRACTITIONER_KEY.format(pid), self.stream, PRACTITIONERS_KEY],
            args=[*lua_args(event), now, *pairs]))
        if status != "ok":
            raise AlreadyExists(f"practitioner {pid} already exists")

    async def update_practitioner(self, pid: str, changes: Mapping[str, Any], event: Event, now: int) -> None:
        """Set the profile fields in `changes` (values as the API shows them) and `updated_at`."""
        fields = {**{k: str(v) for k, v in changes.items()}, "updated_at": str(now)}
        pairs = [x for k, v in fields.items() for x in (k, v)]
        status, _ = _result(await self._update(keys=[PRACTITIONER_KEY.format(pid), self.stream],
                                               args=[*lua_args(event), *pairs]))
        if status != "ok":
            raise PractitionerNotFound()

    async def practitioner(self, pid: str) -> Practitioner | None:
        raw = await self.redis.hgetall(PRACTITIONER_KEY.format(pid))
        return Practitioner.from_hash(raw) if raw else None

    async def require_practitioner(self, pid: str) -> Practitioner:
        p = await self.practitioner(pid)
        if p is None:
            raise PractitionerNotFound()
        return p

    async def practitioners(self, *, limit: int = 200, offset: int = 0) -> list[Practitioner]:
        ids = await self.redis.zrange(PRACTITIONERS_KEY, offset, offset + limit - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in ids:
                pipe.hgetall(PRACTITIONER_KEY.format(_d(pid)))
            raws = await pipe.execute()
        return [Practitioner.from_hash(r) for r in raws if r]

    async def practitioner_ids(self) -> list[str]:
        return [_d(x) for x in await self.redis.zrange(PRACTITIONERS_KEY, 0, -1)]

    async def set_practitioner_status(self, pid: str, to: PractitionerStatus, event: Event, now: int,
                                      reason: str = "", *, guard: tuple[str, str] | None = None) -> str:
        """Move a practitioner to `to` if the table allows it; returns the previous status."""
        sources = ",".join(s.value for s in practitioner_sources(to))
        pairs = ["status", to.value, "updated_at", str(now), "status_reason", reason]
        if to is PractitionerStatus.ACTIVE:
            pairs += ["activated_at", str(now)]
        gf, gv = guard or ("", "")
        status, rest = _result(await self._status(
            keys=[PRACTITIONER_KEY.format(pid), self.stream],
            args=[*lua_args(event), sources, gf, gv, "", *pairs]))
        if status == "not_found":
            raise PractitionerNotFound()
        if status == "illegal":
            raise IllegalTransition(f"a practitioner cannot go from {rest[0]} to {to.value}")
        if status != "ok":
            raise script_refusal(status)
        return rest[0]

    # --- availability ---

    async def publish_availability(self, pid: str, spec: dict[str, Any], windows: list[tuple[int, int]],
                                   event: Event, now: int) -> int:
        """Replace the published windows; returns how many clients are waiting for slots."""
        flat = [str(x) for w in windows for x in w]
        status, rest = _result(await self._publish(
            keys=[PRACTITIONER_KEY.format(pid), WINDOWS_KEY.format(pid), self.stream, INTEREST_KEY.format(pid)],
            args=[*lua_args(event), json.dumps(spec, separators=(",", ":")), now, *flat]))
        if status != "ok":
            raise PractitionerNotFound()
        return int(rest[0])

    async def windows_and_busy(self, pid: str, start: int, end: int
                               ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Published windows overlapping [start, end) and the held ranges near them."""
        longest = MAX_SESSION_MINUTES * 60
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrangebyscore(WINDOWS_KEY.format(pid), start, "-inf", start=0, num=1)
            pipe.zrangebyscore(WINDOWS_KEY.format(pid), f"({start}", f"({end}")
            pipe.zrangebyscore(P_HOLDS_KEY.format(pid), start - longest, f"({end}")
            first, rest, holds = await pipe.execute()
        windows = []
        for m in [*first, *rest]:
            s, e = _d(m).split(":")
            if int(e) > start:
                windows.append((int(s), int(e)))
        busy = []
        for m in holds:
            s, e, _ = _d(m).split(":", 2)
            busy.append((int(s), int(e)))
        return windows, busy

    # --- codes ---

    async def create_code(self, code: DiscountCode, event: Event, now: int) -> None:
        fields = {"code": code.code, "kind": code.kind.value, "owner_id": code.owner_id,
                  "amount_minor": str(code.amount_minor), "percent": str(code.percent),
                  "referrer_credit_minor": str(code.referrer_credit_minor),
                  "expires_at": str(code.expires_at), "max_uses": str(code.max_uses), "uses": "0",
                  "currency": code.currency, "created_at": str(now),
                  "once_per_client": "1" if code.kind is CodeKind.REFERRAL else "0"}
        pairs = [x for k, v in fields.items() for x in (k, v)]
        status, _ = _result(await self._create(keys=[CODE_KEY.format(code.code), self.stream, ""],
                                               args=[*lua_args(event), now, *pairs]))
        if status != "ok":
            raise AlreadyExists(f"the code {code.code} already exists")

    async def code(self, code: str) -> DiscountCode | None:
        raw = await self.redis.hgetall(CODE_KEY.format(code))
        return code_from_hash(raw) if raw else None

    async def practitioner_and_code(self, pid: str, code: str | None, client_id: str = ""
                                    ) -> tuple[Practitioner | None, DiscountCode | None, bool]:
        """The practitioner, the code, and whether `client_id` already used that code when it is one a
        client may use once (referral codes)."""
        # Plain reads, not a pipeline: on the booking path a pipeline costs more client time than the
        # round trip it saves.
        raw = await self.redis.hgetall(PRACTITIONER_KEY.format(pid))
        p = Practitioner.from_hash(raw) if raw else None
        c, used = None, False
        if code and p is not None:
            raw_code = await self.redis.hgetall(CODE_KEY.format(code))
            c = code_from_hash(raw_code) if raw_code else None
            once = any(_d(k) == "once_per_client" and _d(v) == "1" for k, v in raw_code.items())
            if c is not None and client_id and once:
                used = bool(await self.redis.sismember(CODE_CLIENTS_KEY.format(code), client_id))
        return p, c, used

    # --- bookings ---

    async def run_booking_batches(self) -> None:
        """Send the booking scripts that arrive together as one pipeline (see script_batch.py)."""
        await self._book.run()

    async def book(self, booking: Booking, practitioner: Practitioner, event: Event, now: int) -> None:
        pid, cid = booking.practitioner_id, booking.client_id
        status, _ = _result(await self._book(
            keys=[PRACTITIONER_KEY.format(pid), P_HOLDS_KEY.format(pid), C_HOLDS_KEY.format(cid),
                  BOOKING_KEY.format(booking.id), P_BOOKINGS_KEY.format(pid), C_BOOKINGS_KEY.format(cid),
                  ALL_BOOKINGS_KEY, self.stream, CODE_KEY.format(booking.code),
                  CODE_CLIENTS_KEY.format(booking.code), WINDOWS_KEY.format(pid)],
            args=[_JSON.encode(booking.to_hash()), practitioner.rev,
                  MAX_SESSION_MINUTES * 60, now, *lua_args(event)]))
        if status != "ok":
            raise script_refusal(status)

    async def booking(self, booking_id: str) -> Booking | None:
        return await load_booking(self.redis, booking_id)

    async def booking_extra(self, booking_id: str) -> dict[str, str]:
        raw = await self.redis.hmget(BOOKING_KEY.format(booking_id), list(EXTRA_FIELDS))
        return {k: _d(v) for k, v in zip(EXTRA_FIELDS, raw, strict=True) if v is not None}

    async def transition(self, booking_id: str, to_status: BookingStatus, event_type: str,
                         body: dict[str, Any], now: int, *, extra: dict[str, str] | None = None,
                         version: int = 1) -> Booking:
        """Move a booking to `to_status` and emit `event_type` in the same script; 409 if illegal.

        The event body is `body` plus booking_id, practitioner_id, client_id, from and to. A status
        that releases the time range (cancelled, rescheduled) frees the slot in the same script.
        Returns the booking as it was before the change.
        """
        booking = await load_booking(self.redis, booking_id)
        if booking is None:
            raise BookingNotFound()
        if not can_transition(booking.status, to_status):
            raise IllegalTransition(f"a booking cannot go from {booking.status.value} to {to_status.value}")
        full = {**body, "booking_id": booking.id, "practitioner_id": booking.practitioner_id,
                "client_id": booking.client_id, "from": booking.status.value, "to": to_status.value}
        event = Event(event_type, full, version=version, time=at(now))
        member = f"{booking.starts_at}:{booking.ends_at}:{booking.id}" if to_status in RELEASING_STATES else ""
        pairs = ["status", to_status.value, "status_changed_at", str(now)]
        for k, v in (extra or {}).items():
            pairs += [k, v]
        keys = [BOOKING_KEY.format(booking_id), self.stream, P_HOLDS_KEY.format(booking.practitioner_id),
                C_HOLDS_KEY.format(booking.client_id)]
        if to_status is BookingStatus.CANCELLED and booking.code:  # a session not had gives its code use back
            keys += [CODE_KEY.format(booking.code), CODE_CLIENTS_KEY.format(booking.code)]
        status, rest = _result(await self._status(
            keys=keys,
            # compare-and-set against the state we decided on, so a concurrent change cannot slip in
            args=[*lua_args(event), booking.status.value, "", "", member, *pairs]))
        if status == "illegal":
            raise IllegalTransition(f"a booking cannot go from {rest[0]} to {to_status.value}")
        if status == "not_found":
            raise BookingNotFound()
        if status != "ok":
            raise script_refusal(status)
        # the completion job's index (kept right by the job at each start should a process die here)
        if to_status is BookingStatus.IN_SESSION:
            await self.mark_in_session(booking)
        elif booking.status is BookingStatus.IN_SESSION:
            await self.forget_in_session(booking.id)
        return booking

    async def record_verdict(self, booking: Booking, to_status: BookingStatus, verdict_event: Event,
                             transition_event: Event, *, verdict: str, attribution: str, net_minutes: int,
                             now: int) -> tuple[str, str]:
        """Write the session's verdict once (see VERDICT_LUA): ("ok", previous status), ("already", status)
        when a verdict exists, ("changed", status) when the status moved since `booking` was read."""
        status, rest = _result(await self._verdict(
            keys=[BOOKING_KEY.format(booking.id), self.stream, IN_SESSION_KEY],
            args=[booking.status.value, to_status.value, now, verdict, attribution, net_minutes, booking.id,
                  *lua_args(verdict_event), *lua_args(transition_event)]))
        if status == "not_found":
            raise BookingNotFound()
        return status, rest[0] if rest else ""

    async def verdict_of(self, booking_id: str) -> dict[str, str]:
        """The verdict fields of a booking ({} before its verdict)."""
        names = ["verdict", "verdict_attribution", "verdict_at", "net_minutes"]
        raw = await self.redis.hmget(BOOKING_KEY.format(booking_id), names)
        return {k: _d(v) for k, v in zip(names, raw, strict=True) if v is not None}

    async def confirmed_started_between(self, since: int, until: int, limit: int = 10_000) -> list[str]:
        """Bookings still `confirmed` whose start is in [since, until], earliest first: the ones whose
        verdict (a no-show, most often) may be due."""
        ids = await self.booking_ids(ALL_BOOKINGS_KEY, since, until, limit)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for bid in ids:
                pipe.hget(BOOKING_KEY.format(bid), "status")
            statuses = await pipe.execute()
        return [bid for bid, st in zip(ids, statuses, strict=True)
                if st is not None and _d(st) == BookingStatus.CONFIRMED.value]

    async def mark_in_session(self, booking: Booking) -> None:
        """Remember a booking in session until it is completed (idempotent)."""
        await self.redis.zadd(IN_SESSION_KEY, {booking.id: booking.ends_at})

    async def in_session_ended_by(self, until: int, limit: int = 500) -> list[str]:
        """Bookings in session whose scheduled end is at or before `until`, earliest first."""
        return [_d(i) for i in await self.redis.zrangebyscore(IN_SESSION_KEY, "-inf", until, start=0, num=limit)]

    async def forget_in_session(self, booking_id: str) -> None:
        await self.redis.zrem(IN_SESSION_KEY, booking_id)

    async def index_in_session(self, since: int, until: int) -> int:
        """Index every booking in session that started in [since, until]; how many were missing."""
        missing = 0
        ids = await self.booking_ids(ALL_BOOKINGS_KEY, since, until, 100_000)
        for booking, _ in await self.bookings(ids):
            if booking.status is BookingStatus.IN_SESSION and await self.redis.zadd(
                    IN_SESSION_KEY, {booking.id: booking.ends_at}, nx=True):
                missing += 1
        return missing

    async def booking_ids_of(self, *, client_id: str | None, practitioner_id: str | None, start: int | None,
                             end: int | None, limit: int) -> list[str]:
        """Ids of the bookings starting in [start, end] (open where None) of one practitioner, of one
        client (the practitioner wins if both are given), or of everyone; earliest first."""
        if practitioner_id:
            key = P_BOOKINGS_KEY.format(practitioner_id)
        elif client_id:
            key = C_BOOKINGS_KEY.format(client_id)
        else:
            key = ALL_BOOKINGS_KEY
        return await self.booking_ids(key, "-inf" if start is None else start, "+inf" if end is None else end,
                                      limit)

    async def booking_ids(self, key: str, start: float | str, end: float | str, limit: int) -> list[str]:
        ids = await self.redis.zrangebyscore(key, start, end, start=0, num=limit)
        return [_d(i) for i in ids]

    async def bookings(self, ids: Sequence[str]) -> list[tuple[Booking, dict[str, str]]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for bid in ids:
                pipe.hgetall(BOOKING_KEY.format(bid))
            raws = await pipe.execute()
        out: list[tuple[Booking, dict[str, str]]] = []
        for raw in raws:
            if raw:
                h = {_d(k): _d(v) for k, v in raw.items()}
                out.append((Booking.from_hash(raw),
                            {k: h[k] for k in EXTRA_FIELDS if k in h}))
        return out

    # --- interest ---

    async def register_interest(self, pid: str, client_id: str, event: Event, now: int) -> int | None:
        """Record that a client waits for slots; None if they were already waiting (no new event)."""
        status, rest = _result(await self._interest(keys=[INTEREST_KEY.format(pid), self.stream],
                                                    args=[*lua_args(event), client_id, now]))
        return int(rest[0]) if status == "ok" else None

    async def waiting_clients(self, pid: str) -> list[str]:
        return [_d(x) for x in await self.redis.zrange(INTEREST_KEY.format(pid), 0, -1)]

    async def forget_interest(self, pid: str, clients: Sequence[str]) -> None:
        if clients:
            await self.redis.zrem(INTEREST_KEY.format(pid), *clients)
