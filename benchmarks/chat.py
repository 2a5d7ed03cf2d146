"""Chat fan-out: latency from `chat.send` to the other party's `chat.message`, one process vs two.

Starts everything it needs: a private redis-server (the embedded one), then the real server process(es)
on 127.0.0.1. Phase `single`: both parties of every room on one process (the baseline). Phase `cross`:
each room's client on process A and its practitioner on process B, sharing the Redis. Each room's
client sends at a fixed rate (open loop: the sender never waits for the previous message), so the
latency is measured at the offered load. The last line is one JSON object.

    .venv/bin/python benchmarks/chat.py [--rooms 20] [--rate 2400] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from session_server.auth import Role, TokenAuthority  # noqa: E402
from session_server.bookings.model import BOOKING_KEY, Booking, BookingStatus  # noqa: E402
from session_server.embedded_redis import redis_server_binary  # noqa: E402

API_ID, API_SECRET = "bench", secrets.token_urlsafe(32)
MASTER = base64.b64encode(secrets.token_bytes(32)).decode()
WARMUP_S = 1.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(directory), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"redis://127.0.0.1:{port}/0"


async def start_server(redis_url: str, data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVER_") and k != "REDIS_URL"}
    env.update({
        "REDIS_URL": redis_url, "SESSION_SERVER_HOST": "127.0.0.1", "SESSION_SERVER_PORT": str(port),
        "SESSION_SERVER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SESSION_SERVER_DATA_DIR": str(data_dir), "SESSION_SERVER_API_KEYS": f"{API_ID}:{API_SECRET}",
        "SESSION_SERVER_MASTER_KEYS": f"m1:{MASTER}", "SESSION_SERVER_ACTIVE_MASTER_KEY_ID": "m1",
        "SESSION_SERVER_CHAT_RATE_PER_S": "10000", "SESSION_SERVER_CHAT_BURST": "10000",
        "SESSION_SERVER_WS_SEND_QUEUE": "4096", "SESSION_SERVER_LOG_LEVEL": "warning",
    })
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "session_server.cli", "serve", env=env,
                                                cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90  # a busy machine starts a process slowly
    async with httpx.AsyncClient() as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/readyz", timeout=1)).status_code == 200:
                    return proc, f"ws://127.0.0.1:{port}"
            if proc.returncode is not None or time.monotonic() > deadline:
                raise SystemExit("a server process did not start")
            await asyncio.sleep(0.05)


def cpu_s(*procs: asyncio.subprocess.Process) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc)."""
    total = 0.0
    for p in procs:
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def join(ws_url: str, room: str, token: str) -> ClientConnection:
    ws = await connect(f"{ws_url}/v1/rooms/{room}/ws", subprotocols=["session.v1", "bearer." + token],  # type: ignore[list-item]
                       compression=None, max_size=None, max_queue=None)
    await ws.send(json.dumps({"type": "join", "id": "j", "v": 1}))
    while json.loads(await ws.recv())["type"] != "joined":
        pass
    return ws


async def phase(name: str, urls: tuple[str, str], rooms: int, rate: float, seconds: float,
                authority: TokenAuthority, redis_url: str) -> dict[str, float]:
    r = aioredis.Redis.from_url(redis_url)
    now = int(time.time())
    for i in range(rooms):
        b = Booking(id=f"{name}-{i}", practitioner_id=f"p{i}", client_id=f"c{i}", starts_at=now,
                    ends_at=now + 3600, status=BookingStatus.CONFIRMED, currency="DZD", client_total=1,
                    practitioner_share=1, platform_share=0, discount=0, code="", created_at=now,
                    timezone="Africa/Algiers")
        await r.hset(BOOKING_KEY.format(b.id), mapping=b.to_hash())  # type: ignore[misc]
    await r.aclose()

    def tok(role: Role, sub: str) -> str:
        return authority.mint(sub=sub, name=sub, role=role, ttl_s=3600)[0]

    senders = [await join(urls[0], f"{name}-{i}", tok(Role.CLIENT, f"c{i}")) for i in range(rooms)]
    receivers = [await join(urls[1], f"{name}-{i}", tok(Role.PRACTITIONER, f"p{i}")) for i in range(rooms)]
    latencies: list[float] = []
    t0 = time.perf_counter()
    measure_from, measure_to = t0 + WARMUP_S, t0 + WARMUP_S + seconds
    delivered = 0

    async def drain(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                if '"type":"ping"' in raw:
                    await ws.send('{"type":"pong","id":"p"}')

    async def receive(ws: ClientConnection) -> None:
        nonlocal delivered
        with contextlib.suppress(Exception):
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "chat.message":
                    now = time.perf_counter()
                    sent = float(msg["text"])
                    if measure_from <= sent < measure_to:
                        latencies.append((now - sent) * 1000)
                        delivered += 1
                elif msg["type"] == "ping":
                    await ws.send('{"type":"pong","id":"p"}')

    sent_total = 0

    async def send(ws: ClientConnection, offset: float) -> None:
        nonlocal sent_total
        per_room = rate / rooms
        n = 0
        start = t0 + offset
        while True:
            due = start + n / per_room
            if due >= measure_to + 0.2:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(f'{{"type":"chat.send","id":"m{n}","text":"{time.perf_counter():.9f}"}}')
            n += 1
            sent_total += 1

    readers = [asyncio.create_task(drain(ws)) for ws in senders] + [
        asyncio.create_task(receive(ws)) for ws in receivers]
    await asyncio.gather(*(send(ws, i / rate) for i, ws in enumerate(senders)))
    await asyncio.sleep(1.0)  # let the tail arrive
    for ws in senders + receivers:
        await ws.close()
    for t in readers:
        t.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    latencies.sort()
    expected = rate * seconds
    return {
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan"),
        "msgs_per_s": delivered / seconds,
        "delivered_ratio": delivered / expected,
        "sent": float(sent_total),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2400.0, help="chat messages per second, all rooms")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per phase")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    redis_proc, redis_url = start_redis(work)
    authority = TokenAuthority({API_ID: API_SECRET}, max_ttl_s=24 * 3600)
    procs: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(50):
            with contextlib.suppress(Exception):
                c = aioredis.Redis.from_url(redis_url)
                await c.ping()
                await c.aclose()
                break
            await asyncio.sleep(0.05)
        a, url_a = await start_server(redis_url, work / "a")
        procs.append(a)
        before = cpu_s(a)
        single = await phase("single", (url_a, url_a), args.rooms, args.rate, args.seconds, authority, redis_url)
        single_cpu = (cpu_s(a) - before) / single["sent"] * 1e6
        print(f"single process : p50 {single['p50_ms']:.2f} ms  p99 {single['p99_ms']:.2f} ms  "
              f"{single['msgs_per_s']:.0f} msg/s delivered ({single['delivered_ratio']:.1%} of offered)")
        b, url_b = await start_server(redis_url, work / "b")
        procs.append(b)
        before = cpu_s(a, b)
        cross = await phase("cross", (url_a, url_b), args.rooms, args.rate, args.seconds, authority, redis_url)
        cross_cpu = (cpu_s(a, b) - before) / cross["sent"] * 1e6
        print(f"two processes  : p50 {cross['p50_ms']:.2f} ms  p99 {cross['p99_ms']:.2f} ms  "
              f"{cross['msgs_per_s']:.0f} msg/s delivered ({cross['delivered_ratio']:.1%} of offered)")
        ratio = cross["p99_ms"] / single["p99_ms"]
        print(f"cross/single p99 ratio {ratio:.2f} (target <= 2.0 at >= 2000 msg/s); server CPU per message "
              f"{single_cpu:.0f} µs (one process), {cross_cpu:.0f} µs (two)")
        print(json.dumps({
            "rooms": args.rooms, "offered_msgs_per_s": args.rate, "seconds": args.seconds,
            "single_p50_ms": round(single["p50_ms"], 3), "single_p99_ms": round(single["p99_ms"], 3),
            "cross_p50_ms": round(cross["p50_ms"], 3), "cross_p99_ms": round(cross["p99_ms"], 3),
            "p99_ratio": round(ratio, 3), "single_msgs_per_s": round(single["msgs_per_s"], 1),
            "cross_msgs_per_s": round(cross["msgs_per_s"], 1),
            "single_server_cpu_us_per_msg": round(single_cpu), "cross_server_cpu_us_per_msg": round(cross_cpu),
            "msgs_per_s": round(min(single["msgs_per_s"], cross["msgs_per_s"]), 1),
        }))
    finally:
        for p in procs:
            await stop(p)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        import uvloop  # the server runs on it too (uvicorn's default when installed)

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
