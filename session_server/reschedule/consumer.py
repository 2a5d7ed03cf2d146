"""Offers from verdicts: a consumer group on the events stream turns each `session.verdict` that says
`interrupted` for a technical reason into the booking's reschedule offer.

Durable, not best-effort: the group starts at the beginning of the stream, so a verdict written while no
process ran is read when one starts; a process that dies between reading a verdict and acknowledging it
leaves the entry pending, and another claims it. The offer is idempotent by booking (one per booking), so
a verdict handled twice offers once.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis

from ..event_consumer import EventConsumer
from ..events import Event
from .service import RescheduleService

GROUP = "reschedule.offers"
BLOCK_S = 1.0
VERDICT = "session.verdict"


class VerdictConsumer:
    def __init__(self, service: RescheduleService, *, claim_idle_ms: int = 30_000) -> None:
        self.service = service
        self.consumer = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.claim_idle_ms = claim_idle_ms

    async def handle(self, event: Event) -> None:
        if event.type == VERDICT:
            await self.service.offer_for_verdict(event)

    async def run(self, new_reader: Callable[[], aioredis.Redis], writer: aioredis.Redis) -> None:
        """Consume until cancelled: blocking reads on a client of its own, acks on `writer`."""
        reader = new_reader()
        consumer = EventConsumer(reader, writer, group=GROUP, consumer=self.consumer, handler=self.handle,
                                 block_ms=int(BLOCK_S * 1000), types=frozenset({VERDICT}),
                                 claim_idle_ms=self.claim_idle_ms)
        try:
            await consumer.run()
        finally:
            await reader.aclose()
