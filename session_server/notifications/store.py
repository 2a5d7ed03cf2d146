"""Per-user notifications in Redis, written idempotently and pushed to every node in the same script.

Redis layout:
  ss:notif:{user}          zset: notification id -> arrival number; the newest KEEP are kept
  ss:notif:{user}:unread   zset: notification id -> arrival number, the unread ones
  ss:notif:{user}:seq      string: the user's arrival counter (events of one second keep their order)
  ss:notif:{user}:items    hash: notification id -> JSON
  ss:notif:push:{user}     pub/sub channel: JSON of each new notification, for connected WebSockets
                           (a process subscribes to the channels of the users connected to it)
  ss:notif:node:{consumer} pub/sub channel a process stays subscribed to (nothing is published there)
  consumer group `notifications` on the events stream (see service.py)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from .rules import Notification

ALL_KEY = "ss:notif:{}"
UNREAD_KEY = "ss:notif:{}:unread"
ITEMS_KEY = "ss:notif:{}:items"
SEQ_KEY = "ss:notif:{}:seq"
PUSH_CHANNEL = "ss:notif:push:{}"
NODE_CHANNEL = "ss:notif:node:{}"  # each process's own channel: keeps its push listener subscribed
KEEP = 500

# One script per batch of events: their notifications (stored and pushed) and the acknowledgement of the
# entries, so a batch costs one round trip and its effects and its XACK happen together.
# KEYS: 1 events stream, then five per notification (all, unread, items, channel, seq).
# ARGV: 1 keep, 2 notification count n, 3 consumer group, 4 entry count m, then the m entry ids to XACK,
#       then id and JSON per notification.
# Returns how many notifications were new (a redelivered event makes none).
WRITE_LUA = """
local keep, n, m = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local added, a = 0, 5 + m
for i = 0, n - 1 do
  local all, unread, items, channel, seq = KEYS[5 * i + 2], KEYS[5 * i + 3], KEYS[5 * i + 4],
    KEYS[5 * i + 5], KEYS[5 * i + 6]
  local id, body = ARGV[a + 2 * i], ARGV[a + 2 * i + 1]
  if redis.call('HSETNX', items, id, body) == 1 then
    local seen = redis.call('INCR', seq)
    redis.call('ZADD', all, seen, id)
    redis.call('ZADD', unread, seen, id)
    local extra = redis.call('ZCARD', all) - keep
    if extra > 0 then
      local old = redis.call('ZRANGE', all, 0, extra - 1)
      redis.call('ZREM', all, unpack(old))
      redis.call('ZREM', unread, unpack(old))
      redis.call('HDEL', items, unpack(old))
    end
    redis.call('PUBLISH', channel, body)
    added = added + 1
  end
end
if m > 0 then
  local ids = {}
  for j = 5, 4 + m do ids[#ids + 1] = ARGV[j] end
  redis.call('XACK', KEYS[1], ARGV[3], unpack(ids))
end
return added
"""

# Up to ARGV[3] new entries for consumer ARGV[2] of group ARGV[1] on stream KEYS[1], without blocking, as
# one JSON string: a list of [entry id, [field, value, ...]]. A batch read this way costs the client one
# string to parse instead of a dozen protocol elements per entry.
READ_LUA = """
local found = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not found or #found[1][2] == 0 then return '[]' end
return cjson.encode(found[1][2])
"""

_JSON = msgspec.json.Encoder()


def _d(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class NotificationStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._write = redis.register_script(WRITE_LUA)
        self._read = redis.register_script(READ_LUA)

    async def read_new(self, stream: str, group: str, consumer: str, count: int
                       ) -> list[tuple[str, dict[str, str]]] | None:
        """Up to `count` new entries delivered to `consumer` (now pending for it), without blocking.

        None if the batch cannot be decoded (an entry that is not UTF-8 text): its entries stay pending
        and are claimed, one by one, once they have been idle long enough.
        """
        raw = await self._read(keys=[stream], args=[group, consumer, count])
        try:
            found = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(found, list):  # an empty Lua table encodes as {}
            return []
        return [(entry_id, dict(zip(flat[::2], flat[1::2], strict=True))) for entry_id, flat in found]

    async def write(self, notes: Sequence[Notification], *,
                    ack: tuple[str, str, Sequence[Any]] | None = None) -> int:
        """Store and push `notes` and XACK `ack` (stream, group, entry ids) in one script. Returns how many
        notifications were new."""
        stream, group, entry_ids = ack if ack is not None else ("", "", ())
        if not notes and not entry_ids:
            return 0
        keys: list[str] = [stream]
        args: list[Any] = [KEEP, len(notes), group, len(entry_ids), *entry_ids]
        for n in notes:
            u = n.user_id
            keys += [ALL_KEY.format(u), UNREAD_KEY.format(u), ITEMS_KEY.format(u), PUSH_CHANNEL.format(u),
                     SEQ_KEY.format(u)]
            args += [n.id, _JSON.encode(n.as_json())]
        return int(await self._write(keys=keys, args=args))

    async def recent(self, user: str, *, unread_only: bool, limit: int) -> tuple[list[dict[str, Any]], int]:
        key = UNREAD_KEY.format(user) if unread_only else ALL_KEY.format(user)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(key, 0, limit - 1)
            pipe.zcard(UNREAD_KEY.format(user))
            ids, unread_count = await pipe.execute()
        if not ids:
            return [], int(unread_count)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(ITEMS_KEY.format(user), ids)
            for i in ids:
                pipe.zscore(UNREAD_KEY.format(user), i)
            items, *scores = await pipe.execute()
        out = []
        for raw, score in zip(items, scores, strict=True):
            if raw is not None:
                item = json.loads(raw)
                item["read"] = score is None
                out.append(item)
        return out, int(unread_count)

    async def mark_read(self, user: str, ids: list[str] | None) -> int:
        """Mark the given notifications (or all, with None) read; returns how many were unread."""
        if ids is None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zcard(UNREAD_KEY.format(user))
                pipe.delete(UNREAD_KEY.format(user))
                count, _ = await pipe.execute()
            return int(count)
        return int(await self.redis.zrem(UNREAD_KEY.format(user), *ids)) if ids else 0

    async def unread_count(self, user: str) -> int:
        return int(await self.redis.zcard(UNREAD_KEY.format(user)))
