"""Sessions end: a booking in session gets its verdict once its scheduled end and the grace are past, once,
by one runner, with the event the payouts follow; one that left the session meanwhile is left alone. The job
completes only what the session's timeline calls completed (tests/test_outages_*.py for the other verdicts)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import redis.asyncio as aioredis
from starlette.applications import Starlette

from session_server.bookings.jobs import COMPLETION_GRACE_S, CompletionJob
from session_server.bookings.model import BookingStatus
from session_server.bookings.sessions import SessionStartedConsumer
from session_server.context import AppContext
from session_server.events import Event
from session_server.outages.rules import Entry, Kind

from .bookings_support import events, every_day, first_slot, make_practitioner
from .conftest import auth


def _job(ctx: AppContext) -> CompletionJob:
    return CompletionJob(ctx.bookings.store, judge=ctx.bookings.judge)


async def _met(ctx: AppContext, booking_id: str, at_s: int) -> None:
    """The session's timeline: both parties in the room with media flowing from `at_s` on."""
    ends_at = (await ctx.bookings.store.booking(booking_id)).ends_at  # type: ignore[union-attr]
    for role in ("client", "practitioner"):
        for entry in (Entry(at_s * 1000, Kind.JOIN, role), Entry(at_s * 1000, Kind.MEDIA, role, "connected")):
            await ctx.outages.store.append(booking_id, entry, ends_at)


async def _started(ctx: AppContext, http: httpx.AsyncClient, token: object, client_id: str) -> tuple[str, int]:
    c = auth(token("client", client_id))  # type: ignore[operator]
    slot = await first_slot(http, "p1", c)
    r = await http.post("/v1/bookings", headers=c, json={"practitioner_id": "p1", "starts_at": slot["starts_at"]})
    assert r.status_code == 201, r.text
    booking = r.json()
    started = int(datetime.fromisoformat(booking["starts_at"]).timestamp())
    # the rooms' event when both parties are there, through the bookings' own consumer
    await SessionStartedConsumer(ctx.bookings.store).handle(Event(
        "session.started", {"booking_id": booking["id"], "practitioner_id": "p1", "client_id": client_id,
                            "at": started * 1000}, time=datetime.fromtimestamp(started, UTC)))
    await _met(ctx, booking["id"], started)
    return booking["id"], int(datetime.fromisoformat(booking["ends_at"]).timestamp())


async def test_a_session_is_completed_after_its_end_and_grace_once_and_with_its_event(
        client: httpx.AsyncClient, app: Starlette, redis_client: aioredis.Redis, token: object) -> None:
    ctx: AppContext = app.state.ctx
    await make_practitioner(client, "p1", weekly=every_day())
    bid, ends_at = await _started(ctx, client, token, "c1")
    admin = auth(token("admin", "a"))  # type: ignore[operator]
    assert (await client.get(f"/v1/bookings/{bid}", headers=admin)).json()["status"] == "in_session"
    job = _job(ctx)
    assert await job.run_once(ends_at + COMPLETION_GRACE_S - 1) == []  # may still be running over
    assert await job.run_once(ends_at + COMPLETION_GRACE_S) == [bid]
    assert await job.run_once(ends_at + COMPLETION_GRACE_S + 3600) == []
    assert (await client.get(f"/v1/bookings/{bid}", headers=admin)).json()["status"] == "completed"
    done = await events(redis_client, "booking.completed")
    assert [(e.body["booking_id"], e.body["from"], e.body["to"], e.body["automatic"]) for e in done] == [
        (bid, "in_session", "completed", True)]


async def test_several_runners_complete_each_session_once_and_leave_an_interrupted_one_alone(
        client: httpx.AsyncClient, app: Starlette, redis_client: aioredis.Redis, token: object) -> None:
    ctx: AppContext = app.state.ctx
    await make_practitioner(client, "p1", weekly=every_day())
    started = [await _started(ctx, client, token, f"c{i}") for i in range(4)]
    interrupted = started[0][0]
    await ctx.bookings.store.transition(interrupted, BookingStatus.INTERRUPTED, "booking.interrupted",
                                        {"reason": "outage"}, int(time.time()))
    later = max(e for _, e in started) + COMPLETION_GRACE_S
    results = await asyncio.gather(*(_job(ctx).run_once(later) for _ in range(3)))
    assert sorted(b for r in results if r for b in r) == sorted(b for b, _ in started[1:])
    assert len(await events(redis_client, "booking.completed")) == 3
    assert await redis_client.zcard("ss:bookings:in_session") == 0
    assert await redis_client.exists("ss:lock:completion") == 0


async def test_a_booking_put_in_session_by_any_caller_or_missing_from_the_index_is_still_completed(
        client: httpx.AsyncClient, app: Starlette, redis_client: aioredis.Redis, token: object) -> None:
    ctx: AppContext = app.state.ctx
    store = ctx.bookings.store
    await make_practitioner(client, "p1", weekly=every_day())
    job = _job(ctx)
    assert await job.run_once() == []  # its first run in this process, with nothing in session
    c = auth(token("client", "c1"))  # type: ignore[operator]
    slot = await first_slot(client, "p1", c)
    r = await client.post("/v1/bookings", headers=c, json={"practitioner_id": "p1", "starts_at": slot["starts_at"]})
    direct = r.json()
    # another feature moves it through the store, as docs/api.md says features do
    await store.transition(direct["id"], BookingStatus.IN_SESSION, "booking.in_session", {}, int(time.time()))
    await _met(ctx, direct["id"], int(datetime.fromisoformat(direct["starts_at"]).timestamp()))
    later = int(datetime.fromisoformat(direct["ends_at"]).timestamp()) + COMPLETION_GRACE_S
    assert await job.run_once(later) == [direct["id"]]
    # a process that died between a transition and its indexing (or data from before the index existed):
    # the job's first run in the next process finds it
    missed, ends_at = await _started(ctx, client, token, "c2")
    await redis_client.zrem("ss:bookings:in_session", missed)
    assert await job.run_once(ends_at + COMPLETION_GRACE_S) == []
    assert await _job(ctx).run_once(ends_at + COMPLETION_GRACE_S) == [missed]
