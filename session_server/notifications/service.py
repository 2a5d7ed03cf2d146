"""The notifications service: a consumer of the events stream that stores notifications, and a hub that
pushes new ones to this process's WebSocket connections.

Delivery is at-least-once (the shared EventConsumer): the consumer group `notifications` reads the events
stream, stores what each event causes (idempotently, by a notification id derived from the event id), then
XACKs. Entries that a crashed process left pending are claimed with XAUTOCLAIM after CLAIM_IDLE_MS.
Every process runs one consumer (its share of the work) and one pattern subscription (pushes for its own
sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from ..bookings.store import INTEREST_KEY, BookingStore
from ..event_consumer import EventConsumer
from ..events import EVENTS_STREAM, Event
from .rules import Notification, needs_waiting_clients, notifications_for
from .store import PUSH_CHANNEL, PUSH_PATTERN, NotificationStore

log = logging.getLogger(__name__)

GROUP = "notifications"
BLOCK_MS = 1000
BATCH = 100
CLAIM_IDLE_MS = 30_000
# Under load the loop would otherwise pay its fixed round trips (XAUTOCLAIM, XREADGROUP, the write
# pipeline) for every few events, on the same event loop that serves requests. So abandoned entries are
# looked for at most every tenth of their idle time, and after a partial batch the loop pauses briefly to
# let events gather: a notification waits at most COALESCE_S longer, and the writes stay idempotent.
CLAIM_EVERY_S = CLAIM_IDLE_MS / 10_000
COALESCE_S = 0.02


class NotificationService:
    def __init__(self, redis: aioredis.Redis, blocking: Callable[[], aioredis.Redis], bookings: BookingStore, *,
                 send_queue: int, max_per_user: int, stream: str = EVENTS_STREAM) -> None:
        self.redis = redis
        self.blocking = blocking
        self.store = NotificationStore(redis)
        self.bookings = bookings
        self.stream = stream
        self.consumer = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.send_queue = send_queue
        self.max_per_user = max_per_user
        self._sockets: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._stopping = False

    # --- consumer ---

    async def ensure_group(self) -> None:
        try:
            # from the start of the stream: an event written before the first start is not lost
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def handle(self, event: Event) -> int:
        waiting = await self.bookings.waiting_clients(event.body["practitioner_id"]) \
            if needs_waiting_clients(event) else []
        created_ms = int(event.time.timestamp() * 1000)
        added = 0
        for n in notifications_for(event, waiting):
            added += await self.store.add(n, created_ms)
        if waiting:
            await self.bookings.forget_interest(event.body["practitioner_id"], waiting)
        return added

    async def _handle(self, event: Event) -> None:
        await self.handle(event)

    async def _read_batch(self, blocking: aioredis.Redis) -> int:
        """Read new events and write all their notifications and the XACK in one round trip.

        Under load a booking's notification would otherwise cost two more round trips of its own. The
        batch is acknowledged only in the pipeline that writes its effects; if that fails, the entries
        stay pending and are claimed again (notification writes are idempotent).
        """
        reply: Any = await blocking.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=BATCH,
                                               block=BLOCK_MS)
        entries = [e for _, found in reply or [] for e in found]
        if not entries:
            return 0
        notes: list[tuple[Notification, int]] = []
        forget: list[tuple[str, list[str]]] = []
        for _, fields in entries:
            try:
                event = Event.from_fields(fields)
            except (KeyError, ValueError):
                log.error("notifications: unreadable event entry acknowledged and skipped")
                continue
            waiting = await self.bookings.waiting_clients(event.body["practitioner_id"]) \
                if needs_waiting_clients(event) else []
            created_ms = int(event.time.timestamp() * 1000)
            notes += [(n, created_ms) for n in notifications_for(event, waiting)]
            if waiting:
                forget.append((event.body["practitioner_id"], waiting))
        async with self.redis.pipeline(transaction=False) as pipe:
            for n, created_ms in notes:
                await self.store.queue_add(pipe, n, created_ms)
            for pid, clients in forget:
                pipe.zrem(INTEREST_KEY.format(pid), *clients)
            pipe.xack(self.stream, GROUP, *(entry_id for entry_id, _ in entries))
            await pipe.execute()
        return len(entries)

    def stop(self) -> None:
        """Ask the loops to finish; they notice within one block time.

        Cancelling a task blocked in a Redis read is not always enough here: the client library can
        swallow the cancellation inside its read timeout and carry on, so the loops also watch this flag.
        """
        self._stopping = True

    async def consume(self) -> None:
        blocking = self.blocking()
        consumer = EventConsumer(blocking, self.redis, group=GROUP, consumer=self.consumer, handler=self._handle,
                                 stream=self.stream, block_ms=BLOCK_MS, batch=BATCH, claim_idle_ms=CLAIM_IDLE_MS)
        try:
            await consumer.ensure_group()
            claimed_at = -CLAIM_EVERY_S
            while not self._stopping:
                try:
                    if time.monotonic() - claimed_at >= CLAIM_EVERY_S:
                        await consumer.claim_abandoned()
                        claimed_at = time.monotonic()
                    if 0 < await self._read_batch(blocking) < BATCH:
                        await asyncio.sleep(COALESCE_S)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                    log.warning("notifications consumer: redis unavailable, retrying")
                    await asyncio.sleep(1.0)
        finally:
            await blocking.aclose()

    # --- push to this process's sockets ---

    @contextlib.asynccontextmanager
    async def connection(self, user: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]] | None]:
        """A queue of pushes for one socket of `user`; None when the user has too many sockets."""
        queues = self._sockets.setdefault(user, set())
        if len(queues) >= self.max_per_user:
            yield None
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.send_queue)
        queues.add(queue)
        try:
            yield queue
        finally:
            queues.discard(queue)
            if not queues:
                self._sockets.pop(user, None)

    def deliver(self, user: str, payload: dict[str, Any]) -> None:
        for queue in self._sockets.get(user, ()):
            with contextlib.suppress(asyncio.QueueFull):  # a slow socket misses pushes, not the list
                queue.put_nowait(payload)

    async def listen(self) -> None:
        prefix = PUSH_CHANNEL.format("")
        blocking = self.blocking()
        try:
            async with blocking.pubsub() as pubsub:
                await pubsub.psubscribe(PUSH_PATTERN)
                while not self._stopping:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=BLOCK_MS / 1000)
                    if message is None or message.get("type") != "pmessage":
                        continue
                    channel = message["channel"].decode()
                    try:
                        payload = json.loads(message["data"])
                    except ValueError:
                        continue
                    self.deliver(channel[len(prefix):], payload)
        finally:
            await blocking.aclose()
