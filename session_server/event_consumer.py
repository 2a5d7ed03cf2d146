"""Reading the event stream as a consumer group: at-least-once, acknowledged after the effect.

A consumer reads new entries with XREADGROUP on a connection of its own (its socket timeout longer
than the block time), hands each event to its handler, and XACKs only after the handler returned.
Entries another consumer of the group took but never acknowledged (it died) are claimed with
XAUTOCLAIM once they have been idle for `claim_idle_ms`. Handlers must be idempotent by event id:
`already_handled` / `mark_handled` give them a Redis set to check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from .events import EVENTS_STREAM, Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None]]
HANDLED_KEY = "ss:consumer:{group}:handled"  # set of event ids a group has fully handled


class EventConsumer:
    def __init__(self, reader: aioredis.Redis, writer: aioredis.Redis, *, group: str, consumer: str,
                 handler: Handler, stream: str = EVENTS_STREAM, block_ms: int = 1000, batch: int = 100,
                 claim_idle_ms: int = 30_000, retry_delay_s: float = 1.0) -> None:
        self._reader = reader  # blocking reads only
        self._writer = writer  # acks and claims
        self.group, self.consumer, self.stream = group, consumer, stream
        self._handler = handler
        self._block_ms, self._batch, self._claim_idle_ms = block_ms, batch, claim_idle_ms
        self._retry_delay_s = retry_delay_s

    async def ensure_group(self) -> None:
        try:
            await self._writer.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume until cancelled; survives Redis outages by retrying."""
        while True:
            try:
                await self.ensure_group()
                await self.claim_abandoned()
                await self.read_once()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                log.warning("event consumer %s/%s: redis unavailable, retrying", self.group, self.consumer)
                await asyncio.sleep(self._retry_delay_s)

    async def read_once(self) -> int:
        reply: Any = await self._reader.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                                   count=self._batch, block=self._block_ms)
        handled = 0
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                handled += await self._handle(entry_id, fields)
        return handled

    async def claim_abandoned(self) -> int:
        """Take over what a dead consumer of the group read but never acknowledged."""
        start, handled = "0-0", 0
        while True:
            result = await self._writer.xautoclaim(self.stream, self.group, self.consumer,
                                                   min_idle_time=self._claim_idle_ms, start_id=start,
                                                   count=self._batch)
            start, entries = result[0], result[1]
            for entry_id, fields in entries:
                if fields:  # a trimmed entry comes back empty: nothing left to do with it
                    handled += await self._handle(entry_id, fields)
                else:
                    await self._writer.xack(self.stream, self.group, entry_id)
            if start in (b"0-0", "0-0"):
                return handled

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> int:
        try:
            event = Event.from_fields(fields)
        except (KeyError, ValueError):
            log.error("event consumer %s: unreadable entry %r acknowledged and skipped", self.group, entry_id)
            await self._writer.xack(self.stream, self.group, entry_id)
            return 0
        await self._handler(event)  # an exception leaves it pending, to be claimed and retried
        await self._writer.xack(self.stream, self.group, entry_id)
        return 1


async def already_handled(redis: aioredis.Redis, group: str, event_id: str) -> bool:
    return bool(await redis.sismember(HANDLED_KEY.format(group=group), event_id))


def mark_handled(pipe: aioredis.client.Pipeline, group: str, event_id: str) -> None:
    """Queue on the same transaction as the handler's effect, so effect and mark are one."""
    pipe.sadd(HANDLED_KEY.format(group=group), event_id)
