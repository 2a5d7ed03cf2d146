"""Events reach consumer groups at least once, are acknowledged after the effect, and survive a dead consumer."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from session_server.event_consumer import EventConsumer, already_handled, mark_handled
from session_server.events import EVENTS_STREAM, Event, add_to


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
