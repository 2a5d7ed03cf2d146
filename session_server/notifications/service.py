"""The notifications service: a consumer of the events stream that stores notifications, and a hub that
pushes new ones to this process's WebSocket connections.

Delivery is at-least-once (the shared EventConsumer): the consumer group `notifications` reads the events
stream, stores what each event causes (idempotently, by a notification id derived from the event id), then
XACKs. Entries that a crashed process left pending are claimed with XAUTOCLAIM after CLAIM_IDLE_MS.
Every process runs one consumer (its share of the work) and one subscriber, to the pushes of the users
who have sockets on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import PubSub

from ..clock import Clock
from ..event_consumer import EventConsumer
from ..events import EVENTS_STREAM, Event
from ..rooms.presence import RoomPresence
from .rules import Notification, needs_room_presence, needs_waiting_clients, notifications_for
from .store import NODE_CHANNEL, PUSH_CHANNEL, NotificationStore

if TYPE_CHECKING:
    from ..bookings.service import BookingService

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
SUBSCRIBE_WAIT_S = 5.0  # a new socket waits at most this long for its push subscription


class NotificationService:
    def __init__(self, redis: aioredis.Redis, blocking: Callable[[], aioredis.Redis], bookings: BookingService,
                 presence: RoomPresence, clock: Clock, *, send_queue: int, max_per_user: int,
                 stream: str = EVENTS_STREAM) -> None:
        self.redis = redis
        self.blocking = blocking
        self.store = NotificationStore(redis)
        self.bookings = bookings  # the waiting lists are the bookings': read and emptied through its service
        self.presence = presence
        self.clock = clock
        self.stream = stream
        self.consumer = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.send_queue = send_queue
        self.max_per_user = max_per_user
        self._sockets: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._stopping = False
        # the push listener's subscription (see listen): users followed, and subscriptions not yet
        # confirmed (how many SUBSCRIBEs are outstanding, and a future resolved when none is)
        self._push_lock = asyncio.Lock()
        self._pubsub: PubSub | None = None
        self._following: set[str] = set()
        self._confirmations: dict[str, tuple[int, asyncio.Future[None]]] = {}

    # --- consumer ---

    async def ensure_group(self) -> None:
        try:
            # from the start of the stream: an event written before the first start is not lost
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _decide(self, event: Event) -> tuple[list[Notification], list[str]]:
        """The event's notifications, and the waiting clients they answer (to be forgotten). An event whose
        body lacks what its notification needs notifies nobody, and never stops the events after it (left
        pending, it would stop the consumer each time it was claimed again)."""
        try:
            waiting = await self.bookings.waiting_clients(event.body["practitioner_id"]) \
                if needs_waiting_clients(event) else []
            present: set[str] = set()
            if needs_room_presence(event):
                present = await self.presence.participants(event.body["booking_id"])
            return notifications_for(event, waiting, present), waiting
        except (KeyError, ValueError, TypeError) as exc:
            log.error("notifications: event %s (%s) lacks what its notification needs (%s); skipped",
                      event.id, event.type, type(exc).__name__)  # not the body's values
            return [], []

    async def handle(self, event: Event) -> int:
        notes, waiting = await self._decide(event)
        added = await self.store.write(notes)
        if waiting:
            await self.bookings.forget_interest(event.body["practitioner_id"], waiting)
        return added

    async def _handle(self, event: Event) -> None:
        await self.handle(event)

    async def _read_batch(self, blocking: aioredis.Redis, *, wait: bool = True) -> int:
        """Read new events and write all their notifications and the XACK in one script call.

        With `wait` the read blocks up to BLOCK_MS for the first event; without, it takes what is there
        through a script that hands the batch over as one JSON string (far cheaper to parse under load).
        Under load a booking's notification would otherwise cost round trips of its own. The batch is
        acknowledged only by the script that writes its effects; if that fails, the entries stay pending
        and are claimed again (notification writes are idempotent).
        """
        entries: list[tuple[Any, Any]]
        if wait:
            reply: Any = await blocking.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=BATCH,
                                                   block=BLOCK_MS)
            entries = [e for _, found in reply or [] for e in found]
        else:
            read = await self.store.read_new(self.stream, GROUP, self.consumer, BATCH)
            if read is None:
                log.error("notifications: an unreadable batch of events is left pending, to be claimed")
                return 0
            entries = list(read)
        if not entries:
            return 0
        notes: list[Notification] = []
        told: list[tuple[str, list[str]]] = []  # practitioner, the waiting clients now told of their slots
        for _, fields in entries:
            try:
                event = Event.from_fields(fields)
            except (KeyError, ValueError):
                log.error("notifications: unreadable event entry acknowledged and skipped")
                continue
            made, waiting = await self._decide(event)
            notes += made
            if waiting:
                told.append((event.body["practitioner_id"], waiting))
        ack = (self.stream, GROUP, [entry_id for entry_id, _ in entries])
        if not told:
            await self.store.write(notes, ack=ack)
            return len(entries)
        # The waiting lists belong to bookings, so they cannot be emptied in this script: the notifications
        # are stored first, the lists emptied, and only then the batch acknowledged. A process dying in
        # between leaves the entries pending; their redelivery finds the same clients waiting and stores
        # the same notifications once (their ids are derived from the event).
        await self.store.write(notes)
        for practitioner_id, waiting in told:
            await self.bookings.forget_interest(practitioner_id, waiting)
        await self.store.write((), ack=ack)
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
        # A failure (Redis unavailable) ends this run; the app's task supervisor logs it and starts the
        # consumer again after a pause, on a new connection.
        try:
            await consumer.ensure_group()
            claimed_at: float | None = None
            wait = True
            while not self._stopping:
                if claimed_at is None or self.clock.monotonic() - claimed_at >= CLAIM_EVERY_S:
                    await consumer.claim_abandoned()
                    claimed_at = self.clock.monotonic()
                # block for the first event only when the last read found none
                read = await self._read_batch(blocking, wait=wait)
                wait = read == 0
                if 0 < read < BATCH:
                    await asyncio.sleep(COALESCE_S)
        finally:
            await blocking.aclose()

    # --- push to this process's sockets ---
    #
    # The push listener subscribes to the channel of each user who has a socket on this process, and to
    # this process's own channel (so that it is always subscribed, and subscribing a user is only ever a
    # command sent while the listener reads). A process never receives the pushes of users it does not
    # serve: under load most notifications are for people who are not connected anywhere.

    @contextlib.asynccontextmanager
    async def connection(self, user: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]] | None]:
        """A queue of pushes for one socket of `user`; None when the user has too many sockets.

        The queue is handed over once Redis has confirmed the subscription to the user's pushes, so
        nothing stored after that is missed.
        """
        queues = self._sockets.setdefault(user, set())
        if len(queues) >= self.max_per_user:
            yield None
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.send_queue)
        queues.add(queue)
        try:
            subscribed = await self._follow(user)
            if subscribed is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(subscribed), SUBSCRIBE_WAIT_S)
                except TimeoutError:
                    log.warning("notifications: the push subscription was not confirmed in time")
            yield queue
        finally:
            queues.discard(queue)
            if not queues:
                self._sockets.pop(user, None)
                await self._follow(user)

    async def _follow(self, user: str) -> asyncio.Future[None] | None:
        """Subscribe to or unsubscribe from `user`'s pushes, as their sockets here require.

        Returns the future that resolves when Redis has confirmed the subscription, if one is pending.
        """
        async with self._push_lock:
            pubsub = self._pubsub
            if pubsub is None:
                return None  # the listener subscribes every connected user when it (re)starts
            wanted, following = user in self._sockets, user in self._following
            try:
                if wanted and not following:
                    self._expect_confirmation(user)
                    self._following.add(user)
                    await pubsub.subscribe(PUSH_CHANNEL.format(user))
                elif following and not wanted:
                    self._following.discard(user)
                    await pubsub.unsubscribe(PUSH_CHANNEL.format(user))
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                # the listener fails too, restarts, and subscribes every connected user again
                log.warning("notifications: redis unavailable while following a user's pushes")
                return None
            pending = self._confirmations.get(user)
            return pending[1] if pending is not None else None

    def _expect_confirmation(self, user: str) -> None:
        count, future = self._confirmations.get(user, (0, None))
        if future is None or future.done():
            future = asyncio.get_running_loop().create_future()
        self._confirmations[user] = (count + 1, future)

    def _confirmed(self, user: str) -> None:
        pending = self._confirmations.get(user)
        if pending is None:
            return
        count, future = pending
        if count > 1:
            self._confirmations[user] = (count - 1, future)
            return
        del self._confirmations[user]
        if not future.done():
            future.set_result(None)

    def deliver(self, user: str, payload: dict[str, Any]) -> None:
        for queue in self._sockets.get(user, ()):
            with contextlib.suppress(asyncio.QueueFull):  # a slow socket misses pushes, not the list
                queue.put_nowait(payload)

    async def listen(self) -> None:
        prefix = PUSH_CHANNEL.format("").encode()
        blocking = self.blocking()
        try:
            async with blocking.pubsub() as pubsub:
                try:
                    await self._listen(pubsub, prefix)
                finally:
                    self._pubsub = None
                    self._following = set()
                    for _, waiting in self._confirmations.values():  # sockets waiting go on; the next
                        if not waiting.done():                        # listener subscribes them again
                            waiting.set_result(None)
                    self._confirmations.clear()
        finally:
            await blocking.aclose()

    async def _listen(self, pubsub: PubSub, prefix: bytes) -> None:
        async with self._push_lock:
            users = list(self._sockets)
            for user in users:
                self._expect_confirmation(user)
            await pubsub.subscribe(NODE_CHANNEL.format(self.consumer), *(PUSH_CHANNEL.format(u) for u in users))
            self._following = set(users)
            self._pubsub = pubsub
        while not self._stopping:
            message = await pubsub.get_message(timeout=BLOCK_MS / 1000)
            if message is None:
                continue
            channel = message.get("channel")
            if not isinstance(channel, bytes) or not channel.startswith(prefix):
                continue
            user = channel[len(prefix):].decode()
            kind = message.get("type")
            if kind == "subscribe":
                self._confirmed(user)
            elif kind == "message":
                try:
                    payload = json.loads(message["data"])
                except ValueError:
                    continue
                self.deliver(user, payload)
