"""The timeline's durable feed: the consumer group `outages.timeline` on the events stream.

The rooms and the media server write `room.joined`, `room.left`, `media.state_changed` and
`media.quality_changed` in the same script (or pipeline) as the change; this group turns each into a
timeline entry. At-least-once: an entry a dead process read but never acknowledged is claimed by another,
and recording it again changes nothing (the timeline is a set of facts).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis

from ..event_consumer import EventConsumer
from .service import OutageService

GROUP = "outages.timeline"
BLOCK_S = 1.0
TYPES = frozenset({"room.joined", "room.left", "media.state_changed", "media.quality_changed"})


class TimelineConsumer:
    def __init__(self, service: OutageService) -> None:
        self.service = service
        self.consumer = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    async def run(self, new_reader: Callable[[], aioredis.Redis], writer: aioredis.Redis) -> None:
        """Consume until cancelled: blocking reads on a client of its own, acks on `writer`."""
        reader = new_reader()
        consumer = EventConsumer(reader, writer, group=GROUP, consumer=self.consumer,
                                 handler=self.service.on_event, block_ms=int(BLOCK_S * 1000), types=TYPES,
                                 claim_idle_ms=5_000)
        try:
            await consumer.run()
        finally:
            await reader.aclose()
