"""A Lua script whose calls share their trips to Redis.

Each call still runs on its own and atomically: Redis runs the scripts of a pipeline one after another,
and a call's reply (or its error) is its own. What calls share is the trip: while one batch is in flight,
the calls that arrive wait and then leave together as one pipeline, for one pool checkout, one write
and one read of every reply. Under no load a call leaves at once; under load redis-py's per-command
path and the system calls are paid once per batch instead of once per call.

The sending loop (`run`) belongs to the app's lifespan. Without it (a store used on its own), each call
is sent by itself, as a plain script call would be.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from .batching import Batch

MAX_BATCH = 64

Arg = str | bytes | int | float


@dataclass(slots=True)
class _Call:
    keys: Sequence[str]
    args: Sequence[Arg]
    future: asyncio.Future[Any]


class BatchedScript:
    def __init__(self, redis: aioredis.Redis, script: str, *, max_batch: int = MAX_BATCH) -> None:
        self.redis = redis
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self.max_batch = max_batch
        self._queue: Batch[_Call] = Batch(max_batch)
        self._ready = asyncio.Event()
        self._running = False
        self.batches = 0  # trips made, and calls carried: how much sharing there was
        self.calls = 0

    async def __call__(self, *, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        call = _Call(keys, args, asyncio.get_running_loop().create_future())
        if not self._running:
            await self._send([call])
        else:
            self._queue.add(call)
            self._ready.set()
        return await call.future

    async def run(self) -> None:
        """Send queued calls in batches until cancelled; calls still queued then fail cleanly."""
        self._running = True
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    await self._send(self._queue.take())
        finally:
            self._running = False
            stopping = redis.exceptions.ConnectionError("the server is stopping")
            for call in self._queue.drain():
                if not call.future.done():
                    call.future.set_exception(stopping)

    async def _send(self, batch: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            try:
                replies = await self._pipeline(batch)
            except redis.exceptions.DataError:
                if len(batch) == 1:
                    raise
                # a value that cannot be sent fails the packing, before anything leaves: alone, each call
                # fails or succeeds on its own
                for call in batch:
                    await self._send([call])
                return
            unknown = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
            if unknown:  # Redis restarted or its scripts were flushed: load it again, resend those calls
                await self.redis.script_load(self.script)
                for i, reply in zip(unknown, await self._pipeline([batch[i] for i in unknown]), strict=True):
                    replies[i] = reply
        except BaseException as exc:
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc if isinstance(exc, Exception) else
                                              redis.exceptions.ConnectionError("the call was interrupted"))
            if not isinstance(exc, Exception):
                raise
            return
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():
                continue
            if isinstance(reply, Exception):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for call in batch:
            pipe.evalsha(self.sha, len(call.keys), *call.keys, *call.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
