"""Per-user notifications in Redis, written idempotently and pushed to every node in the same script.

Redis layout:
  ss:notif:{user}          zset: notification id -> arrival number; the newest KEEP are kept
  ss:notif:{user}:unread   zset: notification id -> arrival number, the unread ones
  ss:notif:{user}:seq      string: the user's arrival counter (events of one second keep their order)
  ss:notif:{user}:items    hash: notification id -> JSON
  ss:notif:push:{user}     pub/sub channel: JSON of each new notification, for connected WebSockets
  consumer group `notifications` on the events stream (see service.py)
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from .rules import Notification

ALL_KEY = "ss:notif:{}"
UNREAD_KEY = "ss:notif:{}:unread"
ITEMS_KEY = "ss:notif:{}:items"
SEQ_KEY = "ss:notif:{}:seq"
PUSH_CHANNEL = "ss:notif:push:{}"
PUSH_PATTERN = "ss:notif:push:*"
KEEP = 500

# KEYS: all, unread, items, channel, seq. ARGV: id, (unused), json, keep.
ADD_LUA = """
if redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[3]) == 0 then return 0 end
local n = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[1], n, ARGV[1])
redis.call('ZADD', KEYS[2], n, ARGV[1])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[2], unpack(old))
  redis.call('HDEL', KEYS[3], unpack(old))
end
redis.call('PUBLISH', KEYS[4], ARGV[3])
return 1
"""


def _d(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class NotificationStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._add = redis.register_script(ADD_LUA)

    async def add(self, n: Notification, created_ms: int) -> bool:
        """Store and push a notification; False if it was already there (a redelivered event)."""
        return bool(await self._add(**self._call(n, created_ms)))

    async def queue_add(self, pipe: Any, n: Notification, created_ms: int) -> None:
        """Queue `add` on a (non-transactional) pipeline, to write a batch in one round trip."""
        await self._add(**self._call(n, created_ms), client=pipe)

    @staticmethod
    def _call(n: Notification, created_ms: int) -> dict[str, Any]:
        payload = json.dumps(n.as_json(), separators=(",", ":"))
        u = n.user_id
        return {"keys": [ALL_KEY.format(u), UNREAD_KEY.format(u), ITEMS_KEY.format(u), PUSH_CHANNEL.format(u),
                         SEQ_KEY.format(u)], "args": [n.id, created_ms, payload, KEEP]}

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
