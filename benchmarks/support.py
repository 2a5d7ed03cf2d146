"""The support board under load: N live sessions, K agents on two server processes.

Starts everything it needs: a private redis-server, then two real server processes on 127.0.0.1 sharing
it. The sessions are simulated at the producers' edge: their bookings are written as the bookings store
writes them, and their activity is appended to the streams exactly as the rooms and the SFU append it —
a quality report per participant every 2 s (the SFU's rate), joins at the start, a share of the sessions
leaving and coming back each second, a media state change now and then, and problem tickets. K agents
(half on each process) hold the board's socket. For each quality report the benchmark measures the time
from its append to its arrival in an agent's socket (p50/p99; one agent per process decodes and times
every point, the others receive every frame and count it), and the servers' CPU per session update
delivered (each agent counts once), the idle CPU of the same processes with the agents connected
subtracted. The producers run in a process of their own. The baseline, in the same run: a plain blocking
reader of the same stream (the floor any board on Redis Streams starts from), in the agents' process; the
ratio says how far above it the board is. Last line: JSON.

    .venv/bin/python benchmarks/support.py [--sessions 100,500,1000] [--agents 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import random
import secrets
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.chat import API_ID, API_SECRET, cpu_s, start_redis, start_server, stop  # noqa: E402
from session_server.auth import Role, TokenAuthority  # noqa: E402
from session_server.bookings.model import BOOKING_KEY, Booking, BookingStatus  # noqa: E402
from session_server.bookings.store import ALL_BOOKINGS_KEY  # noqa: E402
from session_server.events import EVENTS_STREAM, Event  # noqa: E402
from session_server.rooms.media_bridge import QUALITY_SAMPLES  # noqa: E402

QUALITY_EVERY_S = 2.0  # the SFU's quality interval (media/config.py)
WARMUP_S = 2.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def write_bookings(r: aioredis.Redis, prefix: str, n: int) -> None:
    now = int(time.time())
    async with r.pipeline(transaction=False) as pipe:
        for i in range(n):
            b = Booking(id=f"{prefix}{i}", practitioner_id=f"p{i}", client_id=f"c{i}", starts_at=now - 60,
                        ends_at=now + 3000, status=BookingStatus.CONFIRMED, currency="DZD", client_total=1,
                        practitioner_share=1, platform_share=0, discount=0, code="", created_at=now - 3600,
                        timezone="Africa/Algiers")
            pipe.hset(BOOKING_KEY.format(b.id), mapping=b.to_hash())  # type: ignore[arg-type]
            pipe.zadd(ALL_BOOKINGS_KEY, {b.id: b.starts_at})
        await pipe.execute()


def event(kind: str, body: dict[str, Any]) -> dict[str, str]:
    return Event(kind, body).fields()


def sample(booking: str, participant: str) -> dict[str, str]:
    at = time.time()
    direction = {"rtt_ms": round(random.uniform(20, 120), 1), "loss": round(random.uniform(0, 0.03), 4),
                 "jitter_ms": 3.0, "bitrate_bps": random.randint(200_000, 900_000), "receiving": True}
    record = {"quality": "good", "up": direction, "down": direction, "suggest_audio_only": False, "at": at}
    return {"b": booking, "p": participant, "r": json.dumps(record, separators=(",", ":")), "at": str(int(at * 1000))}


class Agent:
    """An agent's socket. One agent per server process decodes every frame and measures each point's
    latency; the others receive every frame too and count its sessions without decoding it, so that the
    benchmark's own process (which holds every agent) does not become what is measured."""

    def __init__(self, ws: ClientConnection, timed: bool) -> None:
        self.ws = ws
        self.timed = timed
        self.latencies_ms: list[float] = []
        self.updates = 0
        self.measuring = False
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                now_ms = time.time() * 1000
                if not self.timed:
                    if self.measuring and isinstance(raw, str) and raw.startswith('{"type":"update"'):
                        self.updates += raw.count('"support_present":')  # once per session row
                    continue
                frame = json.loads(raw)
                if frame.get("type") != "update" or not self.measuring:
                    continue
                self.updates += len(frame["sessions"])
                for s in frame["sessions"]:
                    for points in s.get("points", {}).values():
                        for p in points:
                            self.latencies_ms.append(now_ms - p[0])


async def open_agent(ws_url: str, token: str, timed: bool) -> Agent:
    ws = await connect(f"{ws_url}/v1/support/ws", subprotocols=["support.v1", "bearer." + token],  # type: ignore[list-item]
                       compression=None, max_size=None, max_queue=None)
    first = json.loads(await ws.recv())
    assert first["type"] == "snapshot", first
    return Agent(ws, timed)


async def raw_reader(redis_url: str, stop_at: float, out: list[float]) -> None:
    """The floor: a plain blocking reader of the samples stream."""
    r = aioredis.Redis.from_url(redis_url)
    last = "$"
    try:
        while time.monotonic() < stop_at:
            got: Any = await r.xread({QUALITY_SAMPLES: last}, block=500, count=1000)
            now_ms = time.time() * 1000
            for _stream, entries in got or []:
                for eid, fields in entries:
                    last = eid
                    out.append(now_ms - int(fields[b"at"]))
    finally:
        await r.aclose()


async def load(redis_url: str, prefix: str, n: int, seconds: float, stop_at: float) -> int:
    """The sessions' activity at the producers' rate; returns the number of entries appended."""
    r = aioredis.Redis.from_url(redis_url)
    appended = 0
    try:
        async with r.pipeline(transaction=False) as pipe:
            now_ms = int(time.time() * 1000)
            for i in range(n):
                for role, pid in (("client", f"c{i}"), ("practitioner", f"p{i}")):
                    pipe.xadd(EVENTS_STREAM, event("room.joined", {  # type: ignore[arg-type]
                        "booking_id": f"{prefix}{i}", "participant_id": pid, "role": role, "at": now_ms,
                        "practitioner_id": f"p{i}", "client_id": f"c{i}"}))
            await pipe.execute()
        tick = 0.1
        per_tick = 2 * n * tick / QUALITY_EVERY_S
        carry = 0.0
        cursor = 0
        next_at = time.monotonic()
        while time.monotonic() < stop_at:
            carry += per_tick
            k = int(carry)
            carry -= k
            async with r.pipeline(transaction=False) as pipe:
                for _ in range(k):
                    i, who = divmod(cursor, 2)
                    i %= n
                    cursor += 1
                    pipe.xadd(QUALITY_SAMPLES, sample(f"{prefix}{i}", f"c{i}" if who == 0 else f"p{i}"),  # type: ignore[arg-type]
                              maxlen=200_000, approximate=True)
                now_ms = int(time.time() * 1000)
                if random.random() < 0.5:  # a media state change, a leave and a return: ~5 per second each
                    i = random.randrange(n)
                    pipe.xadd(EVENTS_STREAM, event("media.state_changed", {  # type: ignore[arg-type]
                        "booking_id": f"{prefix}{i}", "participant_id": f"c{i}",
                        "state": random.choice(["reconnecting", "connected"]), "reason": None, "node_id": "n",
                        "at": now_ms}))
                    j = random.randrange(n)
                    pipe.xadd(EVENTS_STREAM, event("room.left", {  # type: ignore[arg-type]
                        "booking_id": f"{prefix}{j}", "participant_id": f"p{j}", "role": "practitioner",
                        "reason": "timeout", "at": now_ms}))
                    pipe.xadd(EVENTS_STREAM, event("room.joined", {  # type: ignore[arg-type]
                        "booking_id": f"{prefix}{j}", "participant_id": f"p{j}", "role": "practitioner",
                        "at": now_ms, "practitioner_id": f"p{j}", "client_id": f"c{j}"}))
                if random.random() < 0.05:  # a problem report about every 2 s
                    i = random.randrange(n)
                    pipe.xadd(EVENTS_STREAM, event("support.ticket_opened", {  # type: ignore[arg-type]
                        "ticket_id": secrets.token_hex(8), "booking_id": f"{prefix}{i}", "reporter_role": "client",
                        "kind": "video", "practitioner_id": f"p{i}", "at": now_ms}))
                appended += len(pipe)
                await pipe.execute()
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        await r.aclose()
    del seconds
    return appended


def produce(conn: Connection, redis_url: str, prefix: str, n: int) -> None:
    """The producers, in a process of their own: ready, then run until the instant the parent sends."""
    conn.send("ready")
    stop_at = conn.recv()
    conn.send(asyncio.run(load(redis_url, prefix, n, 0.0, stop_at)))


async def phase(redis_url: str, urls: tuple[str, str], procs: tuple[Any, Any], n: int, agents_n: int,
                seconds: float, authority: TokenAuthority) -> dict[str, Any]:
    prefix = f"s{n}-"
    r = aioredis.Redis.from_url(redis_url)
    await write_bookings(r, prefix, n)
    await r.aclose()
    token = authority.mint(sub="agent", name="Agent", role=Role.SUPPORT, ttl_s=3600)[0]
    agents = [await open_agent(urls[k % 2], token, timed=k < 2) for k in range(agents_n)]
    # the boards take the new bookings in on their clock tick (every 5 s): wait for it, idle
    await asyncio.sleep(6)
    idle_from = cpu_s(*procs)
    idle_t = time.monotonic()
    await asyncio.sleep(3)
    idle_cores = (cpu_s(*procs) - idle_from) / (time.monotonic() - idle_t)
    spawn = multiprocessing.get_context("spawn")
    mine, theirs = spawn.Pipe()
    producer = spawn.Process(target=produce, args=(theirs, redis_url, prefix, n), daemon=True)
    producer.start()
    assert await asyncio.to_thread(mine.recv) == "ready"
    stop_at = time.monotonic() + WARMUP_S + seconds  # CLOCK_MONOTONIC: the same clock in both processes
    mine.send(stop_at)
    raw: list[float] = []
    reader = asyncio.create_task(raw_reader(redis_url, stop_at, raw))
    await asyncio.sleep(WARMUP_S)
    for a in agents:
        a.measuring = True
    raw.clear()
    cpu_from, t_from = cpu_s(*procs), time.monotonic()
    appended = await asyncio.to_thread(mine.recv)
    producer.join()
    await reader
    await asyncio.sleep(0.6)  # the last pushes
    for a in agents:
        a.measuring = False
    elapsed = time.monotonic() - t_from
    busy = cpu_s(*procs) - cpu_from
    board_cpu = max(0.0, busy - idle_cores * elapsed)
    latencies = [x for a in agents for x in a.latencies_ms]
    updates = sum(a.updates for a in agents)
    for a in agents:
        await a.ws.close()
        a.task.cancel()
    raw_p99 = pct(raw, 0.99)
    out = {"sessions": n, "agents": agents_n, "entries_appended": appended,
           "update_p50_ms": round(pct(latencies, 0.5), 1), "update_p99_ms": round(pct(latencies, 0.99), 1),
           "raw_read_p99_ms": round(raw_p99, 1),
           "p99_ratio_to_raw": round(pct(latencies, 0.99) / raw_p99, 1) if raw_p99 > 0 else None,
           "updates_delivered": updates, "points_measured": len(latencies),
           "cpu_us_per_update": round(board_cpu / updates * 1e6, 1) if updates else None,
           "board_cores": round(board_cpu / elapsed, 3), "idle_cores": round(idle_cores, 3)}
    print(json.dumps(out), flush=True)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", default="100,500,1000")
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    authority = TokenAuthority({API_ID: API_SECRET}, max_ttl_s=24 * 3600)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis_proc, redis_url = start_redis(base)
        procs: list[Any] = []
        try:
            a, url_a = await start_server(redis_url, base / "a")
            procs.append(a)
            b, url_b = await start_server(redis_url, base / "b")
            procs.append(b)
            results = [await phase(redis_url, (url_a, url_b), (a, b), int(n), args.agents, args.seconds, authority)
                       for n in args.sessions.split(",")]
        finally:
            for p in procs:
                await stop(p)
            redis_proc.terminate()
            redis_proc.wait()
    last = results[-1]
    summary = {"sessions": last["sessions"], "agents": last["agents"], "update_p50_ms": last["update_p50_ms"],
               "update_p99_ms": last["update_p99_ms"], "raw_read_p99_ms": last["raw_read_p99_ms"],
               "p99_ratio_to_raw": last["p99_ratio_to_raw"], "cpu_us_per_update": last["cpu_us_per_update"],
               "board_cores": last["board_cores"], "phases": results}
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
