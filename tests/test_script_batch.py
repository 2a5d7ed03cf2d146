"""Calls of one Lua script that share their trips to Redis still each get their own reply, survive a
flushed script cache and a Redis restart, and fail cleanly when the server stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from session_server.script_batch import BatchedScript
from session_server.tasks import TaskSupervisor

from .conftest import make_settings
from .redis_support import PrivateRedis

# Counts a call, refuses a negative amount with an error reply of its own.
SCRIPT = """
if tonumber(ARGV[1]) < 0 then return redis.error_reply('NEGATIVE amount') end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


@pytest.fixture
async def tasks() -> AsyncIterator[TaskSupervisor]:
    supervisor = TaskSupervisor()
    yield supervisor
    await supervisor.stop()


async def test_calls_that_arrive_together_travel_together_and_each_gets_its_own_reply(
        redis_client: aioredis.Redis, tasks: TaskSupervisor) -> None:
    script = BatchedScript(redis_client, SCRIPT)
    tasks.spawn("batch", script.run)
    amounts = [1, 2, -1, 3, 4] * 10
    replies = await asyncio.gather(*(script(keys=[f"batch:{i % 2}"], args=[a]) for i, a in enumerate(amounts)),
                                   return_exceptions=True)
    assert script.calls == 50 and script.batches < 50
    for amount, reply in zip(amounts, replies, strict=True):
        if amount < 0:
            assert isinstance(reply, redis.exceptions.ResponseError) and "NEGATIVE" in str(reply)
        else:
            assert isinstance(reply, int)
    # every call ran once, in the order made, and got its own reply: each key's running total
    for key in (0, 1):
        accepted = [(a, r) for i, (a, r) in enumerate(zip(amounts, replies, strict=True)) if i % 2 == key and a > 0]
        running = [sum(a for a, _ in accepted[:n + 1]) for n in range(len(accepted))]
        assert [r for _, r in accepted] == running
        assert int(await redis_client.get(f"batch:{key}")) == running[-1]


async def test_a_flushed_script_cache_is_refilled_and_the_calls_still_run(
        tmp_path: Path, tasks: TaskSupervisor) -> None:
    private = PrivateRedis(tmp_path)  # SCRIPT FLUSH empties a whole server's cache, not one database's
    await private.start()
    client = aioredis.Redis.from_url(private.url)
    try:
        script = BatchedScript(client, SCRIPT)
        tasks.spawn("batch", script.run)
        assert await script(keys=["flush:n"], args=[1]) == 1
        await client.script_flush()
        assert await asyncio.gather(*(script(keys=["flush:n"], args=[1]) for _ in range(5))) == [2, 3, 4, 5, 6]
        assert await client.script_exists(script.sha) == [True]
    finally:
        await tasks.stop()
        await client.aclose()
        private.stop()


async def test_without_its_loop_a_call_is_sent_by_itself(redis_client: aioredis.Redis) -> None:
    script = BatchedScript(redis_client, SCRIPT)
    first, second = await asyncio.gather(script(keys=["alone:n"], args=[2]), script(keys=["alone:n"], args=[3]))
    assert (first, second) in ((2, 5), (5, 3))
    assert script.batches == 2


async def test_calls_fail_cleanly_while_redis_is_down_and_work_again_when_it_is_back(
        tmp_path: Path, tasks: TaskSupervisor) -> None:
    from session_server.redis_client import command_client

    private = PrivateRedis(tmp_path)
    await private.start()
    client = command_client(private.url, make_settings(tmp_path, private.url, redis_socket_timeout_s=0.5))
    try:
        script = BatchedScript(client, SCRIPT)
        tasks.spawn("batch", script.run)
        assert await script(keys=["down:n"], args=[1]) == 1
        private.stop()
        results = await asyncio.gather(*(script(keys=["down:n"], args=[1]) for _ in range(10)),
                                       return_exceptions=True)
        assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results), results
        await private.start()  # a fresh Redis (no persistence): an empty script cache
        assert await asyncio.gather(*(script(keys=["up:n"], args=[1]) for _ in range(3))) == [1, 2, 3]
    finally:
        await client.aclose()
        if private.proc and private.proc.poll() is None:
            private.stop()


async def test_calls_still_queued_when_the_server_stops_fail_instead_of_hanging(
        redis_client: aioredis.Redis) -> None:
    supervisor = TaskSupervisor()
    script = BatchedScript(redis_client, SCRIPT)
    supervisor.spawn("batch", script.run)
    assert await script(keys=["stop:n"], args=[1]) == 1
    pending = [asyncio.ensure_future(script(keys=["stop:n"], args=[1])) for _ in range(5)]
    await supervisor.stop()
    results = await asyncio.gather(*pending, return_exceptions=True)
    # each either ran before the stop or was refused; none hangs, and Redis counted exactly the ones that ran
    ran = [r for r in results if isinstance(r, int)]
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results if not isinstance(r, int))
    assert int(await redis_client.get("stop:n")) == 1 + len(ran)


async def test_a_call_with_a_value_that_cannot_be_sent_fails_alone(
        redis_client: aioredis.Redis, tasks: TaskSupervisor) -> None:
    script = BatchedScript(redis_client, SCRIPT)
    tasks.spawn("batch", script.run)
    args: list[object] = [1, None, 2, 3]
    results = await asyncio.gather(*(script(keys=["bad:n"], args=[a]) for a in args),  # type: ignore[list-item]
                                   return_exceptions=True)
    assert results[0] == 1 and results[2] == 3 and results[3] == 6
    assert isinstance(results[1], redis.exceptions.DataError)
    assert int(await redis_client.get("bad:n")) == 6


def test_a_batch_hands_over_the_oldest_items_up_to_its_limit_and_drains_whatever_is_left() -> None:
    from session_server.batching import Batch

    calls: Batch[int] = Batch(3)
    assert [calls.add(i) for i in range(7)] == [False, False, True, True, True, True, True]
    assert calls.take() == [0, 1, 2]
    assert calls.take() == [3, 4, 5]
    assert (len(calls), calls.weight) == (1, 1)
    reads: Batch[bytes] = Batch(10, len)
    assert not reads.add(b"abcd") and reads.add(b"efghijk")  # the read that reaches the limit is in
    assert reads.drain() == [b"abcd", b"efghijk"] and not reads and reads.weight == 0
