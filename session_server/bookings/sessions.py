"""The booking's side of a session: `session.started` moves the booking to `in_session` (and the completion
job in jobs.py moves it on to `completed` after its scheduled end).

The rooms write `session.started` (both parties present for the first time) in the same script as the
room's state. This consumer group on the events stream turns it into the booking's transition and its
`booking.in_session` event. Delivery is at-least-once: a process that dies between reading the event
and acknowledging it leaves the entry pending, and another process claims it. The transition is
idempotent in effect: a booking already in session, or cancelled meanwhile, refuses it with a conflict,
which is acknowledged and forgotten.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis

from ..errors import Conflict, NotFound
from ..event_consumer import EventConsumer
from ..events import Event
from .model import BookingStatus
from .store import BookingStore

GROUP = "bookings.sessions"
BLOCK_S = 1.0
COALESCE_S = 0.02  # under load, read the stream in batches: a booking follows its session at most this later


class SessionStartedConsumer:
    def __init__(self, store: BookingStore) -> None:
        self.store = store
        self.consumer = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    async def handle(self, event: Event) -> None:
        if event.type != "session.started":
            return
        with contextlib.suppress(Conflict, NotFound):
            await self.store.transition(event.body["booking_id"], BookingStatus.IN_SESSION, "booking.in_session",
                                        {}, int(event.time.timestamp()))

    async def run(self, new_reader: Callable[[], aioredis.Redis], writer: aioredis.Redis) -> None:
        """Consume until cancelled: blocking reads on a client of its own, acks on `writer`."""
        reader = new_reader()
        consumer = EventConsumer(reader, writer, group=GROUP, consumer=self.consumer, handler=self.handle,
                                 block_ms=int(BLOCK_S * 1000), types=frozenset({"session.started"}),
                                 coalesce_s=COALESCE_S)
        try:
            await consumer.run()
        finally:
            await reader.aclose()
