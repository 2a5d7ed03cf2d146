"""Who is in a room now, for other features: a read model over the rooms' presence hash.

The rooms' store writes presence (join, leave, expiry); other features (notifications, support) read it
here, so they never import the rooms' store or spell its keys.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from .store import PRESENCE


class RoomPresence:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def participants(self, room_id: str) -> set[str]:
        """The participants present in the room (a booking's id) now."""
        return {p.decode() if isinstance(p, bytes) else str(p)
                for p in await self.redis.hkeys(PRESENCE.format(room_id))}
