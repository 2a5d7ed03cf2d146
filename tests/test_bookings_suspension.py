"""The suspension job: practitioners with no availability for 90 days are suspended, once, by one runner."""

from __future__ import annotations

import asyncio
import time

import httpx
import redis.asyncio as aioredis
from starlette.applications import Starlette

from session_server.bookings.jobs import RedisLock, SuspensionJob
from session_server.context import AppContext

from .bookings_support import events, every_day, make_practitioner
from .conftest import auth

DAY = 86400


async def test_an_idle_practitioner_is_suspended_once_and_told(
        client: httpx.AsyncClient, app: Starlette, redis_client: aioredis.Redis, token: object) -> None:
    ctx: AppContext = app.state.ctx
    await make_practitioner(client, "idle", weekly=[])
    await make_practitioner(client, "busy", weekly=every_day())
    job = SuspensionJob(ctx.bookings.store, idle_days=90)
    now = int(time.time())
    assert await job.run_once(now + 89 * DAY) == []
    # "busy" published 31 days ahead, so it is idle only 90 days after that
    assert await job.run_once(now + 91 * DAY) == ["idle"]
    assert await job.run_once(now + 91 * DAY) == []
    assert await job.run_once(now + 122 * DAY) == ["busy"]
    suspended = await events(redis_client, "practitioner.suspended")
    assert [(e.body["practitioner_id"], e.body["reason"], e.body["automatic"]) for e in suspended] == [
        ("idle", "no_availability", True), ("busy", "no_availability", True)]
    r = await client.get("/v1/practitioners/idle", headers=auth(token("admin", "a")))  # type: ignore[operator]
    assert r.json()["status"] == "suspended"


async def test_several_processes_running_the_job_at_once_suspend_each_practitioner_once(
        client: httpx.AsyncClient, app: Starlette, redis_client: aioredis.Redis) -> None:
    ctx: AppContext = app.state.ctx
    for i in range(5):
        await make_practitioner(client, f"idle{i}", weekly=[])
    now = int(time.time()) + 100 * DAY
    jobs = [SuspensionJob(ctx.bookings.store, idle_days=90) for _ in range(4)]
    results = await asyncio.gather(*(j.run_once(now) for j in jobs))
    ran = [r for r in results if r is not None]
    assert sorted(p for r in ran for p in r) == [f"idle{i}" for i in range(5)]
    assert len(await events(redis_client, "practitioner.suspended")) == 5
    assert await redis_client.exists("ss:lock:suspension") == 0  # released


async def test_the_lock_is_released_only_by_its_holder(redis_client: aioredis.Redis) -> None:
    mine, theirs = RedisLock(redis_client, "x", ttl_s=30), RedisLock(redis_client, "x", ttl_s=30)
    assert await mine.acquire()
    assert not await theirs.acquire()
    assert not await theirs.release()
    assert await redis_client.get("ss:lock:x") == mine.token.encode()
    assert await mine.release()
    assert await theirs.acquire()


async def test_a_practitioner_who_publishes_meanwhile_is_not_suspended(
        client: httpx.AsyncClient, app: Starlette, redis_client: aioredis.Redis) -> None:
    ctx: AppContext = app.state.ctx
    await make_practitioner(client, "p1", weekly=[])
    p = await ctx.bookings.store.require_practitioner("p1")
    # the job judged on an old available_until; the practitioner has published since
    await make_practitioner_publish(client)
    from session_server.bookings.rules import PractitionerStatus
    from session_server.errors import Conflict
    from session_server.events import Event

    try:
        await ctx.bookings.store.set_practitioner_status(
            "p1", PractitionerStatus.SUSPENDED, Event("practitioner.suspended", {"practitioner_id": "p1"}),
            int(time.time()), guard=("available_until", str(p.available_until)))
        raise AssertionError("a stale suspension went through")
    except Conflict as exc:
        assert exc.code == "stale"
    assert await events(redis_client, "practitioner.suspended") == []


async def make_practitioner_publish(client: httpx.AsyncClient) -> None:
    from .conftest import api_key_auth

    r = await client.put("/v1/practitioners/p1/availability", headers=api_key_auth(), json={"weekly": every_day()})
    assert r.status_code == 200
