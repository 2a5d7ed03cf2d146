"""Redis faults on a live server: the embedded Redis dies and comes back; an external one freezes or dies.

What each test holds to: readiness comes back by itself, every acknowledged booking is still there, no
event is doubled, and the supervisor's work shows in the metrics.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from session_server.embedded_redis import EmbeddedRedis
from session_server.events import EVENTS_STREAM, Event

from .bookings_support import every_day, iso, make_practitioner
from .conftest import auth
from .documents_support import Minter
from .support import eventually, free_port
from .test_redis_lifecycle import _alive, _embedded_redis_child, _start_server


async def _slots(c: httpx.AsyncClient, pid: str, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    now = time.time()
    r = await c.get(f"/v1/practitioners/{pid}/slots", headers=headers,
                    params={"from": iso(now), "to": iso(now + 3 * 86400)})
    assert r.status_code == 200, r.text
    slots: list[dict[str, Any]] = r.json()["slots"]
    assert len(slots) >= count, slots
    return slots[:count]


async def _book(c: httpx.AsyncClient, token: Minter, n: int, slot: dict[str, Any]) -> dict[str, Any] | None:
    """The booking if the server acknowledged it; None if it refused or did not answer."""
    try:
        r = await c.post("/v1/bookings", headers=auth(token("client", f"c{n}")), json={
            "practitioner_id": "p1", "starts_at": slot["starts_at"],
            "expected_total": slot["price"]["client_total"]})
    except httpx.TransportError:
        return None
    if r.status_code == 201:
        booking: dict[str, Any] = r.json()
        return booking
    assert r.status_code == 503 and r.json()["code"] == "redis_unavailable", r.text
    return None


async def _created_events(redis: aioredis.Redis) -> list[str]:
    found = [Event.from_fields(f) for _, f in await redis.xrange(EVENTS_STREAM)]
    return [e.body["booking_id"] for e in found if e.type == "booking.created"]


async def test_a_sigkilled_embedded_redis_is_restarted_and_every_acknowledged_booking_survives(
        tmp_path: Path, token: Minter) -> None:
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    server = await _start_server(data_dir, port)
    pids = [server.pid]
    try:
        redis_pid = _embedded_redis_child(server.pid, data_dir)
        pids.append(redis_pid)
        async with httpx.AsyncClient(base_url=base, timeout=20) as c:
            await make_practitioner(c, "p1", weekly=every_day())
            slots = await _slots(c, "p1", auth(token("client", "c0")), 24)
            acknowledged: list[dict[str, Any]] = []
            three_booked = asyncio.Event()

            async def burst() -> None:
                for n, slot in enumerate(slots):
                    booking = await _book(c, token, n, slot)
                    if booking is not None:
                        acknowledged.append(booking)
                    if len(acknowledged) == 3:
                        three_booked.set()

            bookings = asyncio.create_task(burst())
            await three_booked.wait()
            os.kill(redis_pid, signal.SIGKILL)
            await bookings

            async def ready() -> bool:
                return (await c.get("/readyz")).status_code == 200

            await eventually(ready, timeout=30, what="/readyz to come back after the embedded redis died")
            assert server.returncode is None
            new_pid = _embedded_redis_child(server.pid, data_dir)
            pids.append(new_pid)
            assert new_pid != redis_pid and not _alive(redis_pid)

            for booking in acknowledged:
                r = await c.get(f"/v1/bookings/{booking['id']}", headers=auth(token("practitioner", "p1")))
                assert r.status_code == 200, r.text
                assert r.json()["starts_at"] == booking["starts_at"]
            metrics = (await c.get("/metrics")).text
            assert "session_embedded_redis_restarts_total 1.0" in metrics

        direct = aioredis.Redis(unix_socket_path=str(data_dir / "redis" / "redis.sock"))
        try:
            created = await _created_events(direct)
        finally:
            await direct.aclose()
        assert len(created) == len(set(created)), "a booking.created event is doubled"
        assert {b["id"] for b in acknowledged} <= set(created)

        server.send_signal(signal.SIGTERM)
        assert await server.wait() in (0, -signal.SIGTERM)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if server.returncode is None:
            await server.wait()


async def test_an_embedded_redis_that_cannot_come_back_is_given_up_loudly_after_its_attempts(
        tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis", start_timeout_s=5)
    await embedded.start()
    restarts: list[int] = []
    verdicts: list[str] = []
    gave_up = asyncio.Event()

    def give_up(message: str) -> None:
        verdicts.append(message)
        gave_up.set()

    watcher = asyncio.create_task(embedded.supervise(
        restarted=lambda: restarts.append(1), give_up=give_up, max_failures=3, first_delay_s=0.01))
    try:
        assert embedded.pid is not None
        # an AOF that no redis-server will load: every restart fails
        (tmp_path / "redis" / "appendonly.aof").write_text("this is not an append-only file\n")
        os.kill(embedded.pid, signal.SIGKILL)
        await asyncio.wait_for(gave_up.wait(), 60)
        assert restarts == [] and len(verdicts) == 1
        assert "could not be restarted after 3 attempts" in verdicts[0]
        await watcher
    finally:
        watcher.cancel()
        await embedded.stop()


async def test_an_embedded_redis_restarted_by_its_supervisor_keeps_its_data(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis")
    await embedded.start()
    restarts: list[int] = []
    watcher = asyncio.create_task(embedded.supervise(
        restarted=lambda: restarts.append(1), give_up=lambda message: None, first_delay_s=0.01))
    client = aioredis.Redis(unix_socket_path=str(embedded.socket_path))
    try:
        await client.set("acknowledged", b"yes")
        old_pid = embedded.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)

        async def back() -> bool:
            try:
                return bool(await client.get("acknowledged") == b"yes")
            except (OSError, aioredis.RedisError):
                return False

        await eventually(back, timeout=30, what="the supervised redis to answer with its data again")
        assert restarts == [1] and embedded.pid != old_pid
    finally:
        await client.aclose()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await embedded.stop()
