"""The outages' Redis store: one timeline per session, the sessions being watched, what the pages were told.

Redis layout (id = booking id; times epoch ms):
  ss:outage:{id}:timeline   zset  score at -> JSON {at, kind, role, state, ref}: what says whether the two
                                  parties could talk (rules.Entry). A member is its whole content, so
                                  the same fact recorded twice (a stream entry delivered again) is kept
                                  once. Expires 30 days after the session's scheduled end.
  ss:outages:live           zset  booking id -> scheduled end (s): sessions with a timeline and no verdict
                                  yet, which every process's watch looks at
  ss:outage:{id}:told       string  what both pages were last told: "on:{since}" (an outage since then)
                                  or "off:{since}" (it is over); a change is claimed by one process only
  ss:outage:{id}:notice     string  while the pages are told of an outage going on: the `outage` message
                                  they were sent (JSON), for a page that comes in or back meanwhile;
                                  written and removed with `told`, in one script
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from ..bookings.model import BOOKING_KEY
from .rules import Entry, Kind

TIMELINE = "ss:outage:{}:timeline"
LIVE = "ss:outages:live"
TOLD = "ss:outage:{}:told"
NOTICE = "ss:outage:{}:notice"
KEEP_S = 30 * 86400

# Append one entry and watch the session (unless its verdict is written: KEYS[3] is the booking's hash).
# KEYS: timeline, live set, booking hash. ARGV: 1 at, 2 member, 3 booking id, 4 scheduled end (s), 5 expiry (s).
_APPEND = """
local added = redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[5])
if not redis.call('HGET', KEYS[3], 'verdict') then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
return added
"""
# Set what the pages were told if it differs: 1 when this call changed it (and must tell them). The notice
# a page coming in is sent is kept with it: the message of an outage going on, or nothing once it is over.
# KEYS: told, notice. ARGV: 1 what, 2 expiry (s), 3 the notice ("" for none).
_TELL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2]) end
return 1
"""


def _encode(e: Entry) -> str:
    return json.dumps({"at": e.at_ms, "kind": e.kind.value, "role": e.role, "state": e.state, "ref": e.ref},
                      separators=(",", ":"), sort_keys=True)


def _decode(raw: Any) -> Entry:
    d = json.loads(raw)
    return Entry(int(d["at"]), Kind(d["kind"]), str(d.get("role", "")), str(d.get("state", "")),
                 str(d.get("ref", "")))


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class OutageStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._append = redis.register_script(_APPEND)
        self._tell = redis.register_script(_TELL)

    async def append(self, booking_id: str, entry: Entry, ends_at: int) -> bool:
        """Record one fact of the session; False when it was recorded already."""
        return bool(await self._append(
            keys=[TIMELINE.format(booking_id), LIVE, BOOKING_KEY.format(booking_id)],
            args=[entry.at_ms, _encode(entry), booking_id, ends_at, ends_at + KEEP_S]))

    async def timeline(self, booking_id: str) -> list[Entry]:
        return [_decode(r) for r in await self.redis.zrange(TIMELINE.format(booking_id), 0, -1)]

    async def live(self, limit: int = 10_000) -> list[str]:
        return [_text(r) for r in await self.redis.zrange(LIVE, 0, limit - 1)]

    async def unwatch(self, booking_id: str) -> None:
        await self.redis.zrem(LIVE, booking_id)

    async def tell(self, booking_id: str, what: str, notice: dict[str, Any] | None = None) -> bool:
        """Claim telling the pages `what`; True for the one process that changed it. `notice` is the
        message of an outage going on, kept for pages that come in meanwhile (None: there is none)."""
        kept = "" if notice is None else json.dumps(notice, separators=(",", ":"))
        return bool(await self._tell(keys=[TOLD.format(booking_id), NOTICE.format(booking_id)],
                                     args=[what, KEEP_S, kept]))

    async def notice(self, booking_id: str) -> dict[str, Any] | None:
        """The `outage` message of the outage the pages are being told of now, if any."""
        raw = await self.redis.get(NOTICE.format(booking_id))
        if raw is None:
            return None
        kept: dict[str, Any] = json.loads(raw)
        return kept

    async def told(self, booking_id: str) -> str:
        raw = await self.redis.get(TOLD.format(booking_id))
        return "" if raw is None else _text(raw)
