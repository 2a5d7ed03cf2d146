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
    """One consumer of a group. `types`, when given, are the event types the handler wants: other
    entries are acknowledged without being parsed (most of the stream is not for most groups)."""

    def __init__(self, reader: aioredis.Redis, writer: aioredis.Redis, *, group: str, consumer: str,
                 handler: Handler, stream: str = EVENTS_STREAM, block_ms: int = 1000, batch: int = 100,
                 claim_idle_ms: int = 30_000, retry_delay_s: float = 1.0,
                 types: frozenset[str] | None = None, coalesce_s: float = 0.0) -> None:
        self._reader = reader  # blocking reads only
        self._writer = writer  # acks and claims
        self.group, self.consumer, self.stream = group, consumer, stream
        self._handler = handler
        self._block_ms, self._batch, self._claim_idle_ms = block_ms, batch, claim_idle_ms
        self._retry_delay_s = retry_delay_s
        self._types = None if types is None else frozenset(t.encode() for t in types)
        # Abandoned entries are looked for at most every tenth of their idle time, not on every read.
        self._claim_every_s = claim_idle_ms / 10_000
        # After a partial batch, wait this long for more events to gather: fewer round trips under load
        # for an event that waits at most this much longer.
        self._coalesce_s = coalesce_s

    async def ensure_group(self) -> None:
        try:
            await self._writer.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume until cancelled; survives Redis outages (and a deleted group) by starting over."""
        said_unavailable = False  # one warning per outage, not one per retry
        while True:
            try:
                await self.ensure_group()
                claimed_at = -self._claim_every_s
                wait = True
                while True:
                    now = asyncio.get_running_loop().time()
                    if now - claimed_at >= self._claim_every_s:
                        await self.claim_abandoned()
                        claimed_at = now
                    read = await self.read_once(block=wait)
                    said_unavailable = False
                    wait = read == 0  # block for the next event only when this read found none
                    if 0 < read < self._batch and self._coalesce_s:
                        await asyncio.sleep(self._coalesce_s)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                if not said_unavailable:
                    log.warning("event consumer %s/%s: redis unavailable, retrying", self.group, self.consumer)
                said_unavailable = True
                await asyncio.sleep(self._retry_delay_s)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("event consumer %s: the group is gone; creating it again", self.group)

    async def read_once(self, *, block: bool = True) -> int:
        """Read and handle one batch of new entries; the number read (handled or skipped)."""
        reply: Any = await self._reader.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                                   count=self._batch, block=self._block_ms if block else None)
        entries = [entry for _stream, found in reply or [] for entry in found]
        await self._handle_all(entries)
        return len(entries)

    async def claim_abandoned(self) -> int:
        """Take over what a dead consumer of the group read but never acknowledged."""
        start, claimed = "0-0", 0
        while True:
            result = await self._writer.xautoclaim(self.stream, self.group, self.consumer,
                                                   min_idle_time=self._claim_idle_ms, start_id=start,
                                                   count=self._batch)
            start, entries = result[0], result[1]
            await self._handle_all(entries)
            claimed += len(entries)
            if start in (b"0-0", "0-0"):
                return claimed

    async def _handle_all(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Hand each entry to the handler, in order, then acknowledge them with one XACK. An entry
        whose handler fails is left pending (to be claimed and retried), and so is every later one."""
        done: list[bytes] = []
        try:
            for entry_id, fields in entries:
                if fields and (self._types is None or fields.get(b"type") in self._types):
                    # (an entry trimmed from the stream comes back empty: nothing left to do with it)
                    try:
                        event = Event.from_fields(fields)
                    except (KeyError, ValueError):
                        log.error("event consumer %s: unreadable entry %r acknowledged and skipped",
                                  self.group, entry_id)
                    else:
                        await self._handler(event)  # an exception leaves it pending
                done.append(entry_id)
        finally:
            if done:
                await self._writer.xack(self.stream, self.group, *done)


async def already_handled(redis: aioredis.Redis, group: str, event_id: str) -> bool:
    return bool(await redis.sismember(HANDLED_KEY.format(group=group), event_id))


def mark_handled(pipe: aioredis.client.Pipeline, group: str, event_id: str) -> None:
    """Queue on the same transaction as the handler's effect, so effect and mark are one."""
    pipe.sadd(HANDLED_KEY.format(group=group), event_id)
