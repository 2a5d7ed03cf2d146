"""Events reach consumer groups at least once, are acknowledged after the effect, and survive a dead consumer."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from session_server.event_consumer import EventConsumer, already_handled, mark_handled
from session_server.events import EVENTS_STREAM, Event, add_to
from session_server.tasks import TaskSupervisor


async def _publish(r: aioredis.Redis, *events: Event) -> None:
    async with r.pipeline(transaction=True) as pipe:
        for e in events:
            add_to(pipe, e)
        await pipe.execute()


async def test_each_event_is_handled_and_acknowledged(redis_client: aioredis.Redis) -> None:
    seen: list[Event] = []

    async def handle(e: Event) -> None:
        seen.append(e)

    consumer = EventConsumer(redis_client, redis_client, group="ledger", consumer="a", handler=handle, block_ms=10)
    await consumer.ensure_group()
    sent = [Event("booking.created", {"booking_id": f"b{i}"}) for i in range(3)]
    await _publish(redis_client, *sent)
    assert await consumer.read_once() == 3
    assert [(e.id, e.type, e.body) for e in seen] == [(e.id, e.type, e.body) for e in sent]
    pending = await redis_client.xpending(EVENTS_STREAM, "ledger")
    assert pending["pending"] == 0


async def test_a_failed_handler_leaves_the_event_for_another_consumer(redis_client: aioredis.Redis) -> None:
    async def crash(e: Event) -> None:
        raise RuntimeError("consumer died mid-effect")

    dead = EventConsumer(redis_client, redis_client, group="ledger", consumer="dead", handler=crash, block_ms=10)
    await dead.ensure_group()
    event = Event("session.completed", {"booking_id": "b1"})
    await _publish(redis_client, event)
    with pytest.raises(RuntimeError):
        await dead.read_once()
    assert (await redis_client.xpending(EVENTS_STREAM, "ledger"))["pending"] == 1

    effects: list[str] = []

    async def settle(e: Event) -> None:
        if await already_handled(redis_client, "ledger", e.id):
            return
        async with redis_client.pipeline(transaction=True) as pipe:
            pipe.incr("balance")
            mark_handled(pipe, "ledger", e.id)
            await pipe.execute()
        effects.append(e.id)

    heir = EventConsumer(redis_client, redis_client, group="ledger", consumer="heir", handler=settle,
                         block_ms=10, claim_idle_ms=0)
    assert await heir.claim_abandoned() == 1
    assert effects == [event.id]
    assert (await redis_client.xpending(EVENTS_STREAM, "ledger"))["pending"] == 0
    # delivered again (at least once): the idempotent handler changes nothing the second time
    await settle(event)
    assert await redis_client.get("balance") == b"1"


async def test_a_group_that_wants_some_types_acknowledges_the_others_unhandled(redis_client: aioredis.Redis) -> None:
    seen: list[str] = []

    async def handle(e: Event) -> None:
        seen.append(e.body["booking_id"])

    consumer = EventConsumer(redis_client, redis_client, group="sessions", consumer="a", handler=handle,
                             block_ms=10, types=frozenset({"session.started"}))
    await consumer.ensure_group()
    await _publish(redis_client, Event("booking.created", {"booking_id": "b1"}),
                   Event("session.started", {"booking_id": "b2"}), Event("booking.cancelled", {"booking_id": "b3"}))
    assert await consumer.read_once() == 3
    assert seen == ["b2"]
    assert (await redis_client.xpending(EVENTS_STREAM, "sessions"))["pending"] == 0


async def test_a_handler_failing_mid_batch_leaves_that_event_and_the_later_ones_pending(
        redis_client: aioredis.Redis) -> None:
    seen: list[str] = []

    async def handle(e: Event) -> None:
        if e.body["booking_id"] == "b2":
            raise RuntimeError("consumer died mid-effect")
        seen.append(e.body["booking_id"])

    consumer = EventConsumer(redis_client, redis_client, group="ledger", consumer="a", handler=handle, block_ms=10)
    await consumer.ensure_group()
    await _publish(redis_client, *(Event("booking.created", {"booking_id": f"b{i}"}) for i in (1, 2, 3)))
    with pytest.raises(RuntimeError):
        await consumer.read_once()
    assert seen == ["b1"]
    pending = await redis_client.xpending_range(EVENTS_STREAM, "ledger", min="-", max="+", count=10)
    assert len(pending) == 2  # b2 and b3, for a consumer that claims them


async def test_the_consumer_creates_its_group_again_when_it_is_deleted(redis_client: aioredis.Redis) -> None:
    seen: list[str] = []
    arrived = asyncio.Event()

    async def handle(e: Event) -> None:
        seen.append(e.body["booking_id"])
        arrived.set()

    consumer = EventConsumer(redis_client, redis_client, group="ledger", consumer="a", handler=handle, block_ms=10)
    tasks = TaskSupervisor()
    tasks.spawn("consumer", consumer.run)
    try:
        await _publish(redis_client, Event("booking.created", {"booking_id": "b1"}))
        await asyncio.wait_for(arrived.wait(), 10)
        arrived.clear()
        await redis_client.xgroup_destroy(EVENTS_STREAM, "ledger")
        await _publish(redis_client, Event("booking.created", {"booking_id": "b2"}))
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        await tasks.stop()
        assert tasks.names == []
    # the group is created again from the start of the stream: b1 comes again (at least once), b2 arrives
    assert seen[0] == "b1" and "b2" in seen[1:]
