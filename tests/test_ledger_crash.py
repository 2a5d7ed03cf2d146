"""The ledger's own process (`session-server ledger`) killed with SIGKILL at random points of a backlog,
twenty times, then left to finish: its balances equal a clean replay of the stream, no practitioner
is paid twice for a week, and every refund it owes a client is one refund, handed to the payment gateway in
one refund file (its refund job was killed too, wherever it was)."""

from __future__ import annotations

import asyncio
import csv
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ledger.consumer import replay
from ledger.intake import wanted
from ledger.processor import Processor
from ledger.store import LedgerStore
from session_server.events import EVENTS_STREAM, Event

from .ledger_support import POLICY, T0, at, balances, created, publish, transition, verdict
from .support import eventually

KILLS = 20
BOOKINGS = 1200


def _backlog() -> list[Event]:
    rng = random.Random(18)
    events: list[Event] = []
    for i in range(BOOKINGS):
        bid, pid, cid = f"b{i}", f"p{i % 7}", f"c{i % 11}"
        starts = T0 + 86400 * 3
        events.append(created(bid, pid=pid, cid=cid, share=rng.randrange(1, 9) * 50_000, now=T0 + i))
        ending = rng.random()
        if ending < 0.6:
            events.append(transition(bid, "completed", pid=pid, cid=cid, now=starts + 4000))
        elif ending < 0.8:
            events.append(transition(bid, "cancelled", pid=pid, cid=cid, by="client", reason="r",
                                     starts_at="2026-11-26T08:00:00Z", now=starts - rng.randrange(1, 72) * 3600))
        else:
            events.append(verdict(bid, rng.choice(["client_no_show", "practitioner_no_show", "ended_early"]),
                                  now=starts + 4000))
        if i % 300 == 299:
            sunday = f"2026-12-{i // 300 + 1:02d}"
            events.append(Event("payout.run", {"sunday": sunday, "date": sunday, "currency": "DZD"},
                                time=at(starts + 5000)))
    return events


def _start(tmp_path: Path, redis_url: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "SESSION_SERVER_DATA_DIR": str(tmp_path / "data"),
           "SESSION_SERVER_LEDGER_CLAIM_IDLE_MS": "200", "SESSION_SERVER_LEDGER_PAYOUT_CHECK_INTERVAL_S": "3600",
           "SESSION_SERVER_LOG_LEVEL": "warning"}
    exe = Path(sys.executable).with_name("session-server")
    return subprocess.Popen([str(exe), "ledger", "--consumer", "crash-test"], env=env,
                            stdout=stdout, stderr=subprocess.DEVNULL)


def _refund_files(directory: Path) -> list[tuple[str, int]]:
    """Every (refund id, amount) line of the refund files handed to the gateway."""
    found: list[tuple[str, int]] = []
    for f in sorted(directory.glob("refunds-*.csv")):
        with f.open(encoding="utf-8") as lines:
            found += [(row["refund_id"], int(row["amount_minor"])) for row in csv.DictReader(lines)]
    return found


@pytest.mark.slow
async def test_killed_twenty_times_the_ledger_ends_as_a_clean_replay_and_pays_no_one_twice(
        tmp_path: Path, system_redis_url: str) -> None:
    redis = aioredis.Redis.from_url(system_redis_url)
    try:
        await redis.flushdb()
        events = _backlog()
        for i in range(0, len(events), 500):
            await publish(redis, *events[i:i + 500])
        total = len(events)
        rng = random.Random(7)
        points = sorted(rng.sample(range(1, total), KILLS))

        async def processed() -> int:
            return int(await redis.scard("ledger:processed"))

        for point in points:
            proc = _start(tmp_path, system_redis_url)
            try:
                async def reached(point: int = point, proc: subprocess.Popen[bytes] = proc) -> bool:
                    return await processed() >= point or proc.poll() is not None

                await eventually(reached, timeout=60, what=f"{point} events applied")
                assert proc.poll() is None, "the ledger process ended by itself"
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        proc = _start(tmp_path, system_redis_url, stdout=subprocess.PIPE)
        try:
            # it says it runs once its SIGTERM handler is in place (the backlog may be all done already)
            assert proc.stdout is not None
            said = await asyncio.to_thread(proc.stdout.readline)
            assert b"running" in said, said

            async def caught_up() -> bool:
                groups = {g["name"]: g for g in await redis.xinfo_groups(EVENTS_STREAM)}
                last = (await redis.xrevrange(EVENTS_STREAM, count=1))[0][0]
                g = groups.get(b"ledger")
                return bool(g and g["last-delivered-id"] == last and g["pending"] == 0)

            await eventually(caught_up, timeout=120, what="the ledger caught up")

            async def refunds_handed_over() -> bool:
                return not await redis.zcard("ledger:refunds:due") and not await redis.exists("ledger:refund_sending")

            await eventually(refunds_handed_over, timeout=30, what="every refund handed to the gateway")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        assert await redis.xlen("ledger:dead") == 0
        # every event the ledger applies (the backlog, and a payout run its job may have started meanwhile)
        applied = [f for _id, f in await redis.xrange(EVENTS_STREAM) if wanted(f)]
        assert await processed() == len(applied) >= total

        fresh = LedgerStore(redis, prefix="clean", events_stream="clean:events")
        await replay(fresh, Processor(fresh, POLICY, payout_minimum=100_000), redis, EVENTS_STREAM)
        assert await balances(redis) == await balances(redis, "clean")
        payouts = [e for _id, f in await redis.xrange(EVENTS_STREAM) if f[b"type"] == b"payout.created"
                   for e in [Event.from_fields(f)]]
        per_week = Counter((e.body["practitioner_id"], e.body["sunday"]) for e in payouts)
        assert payouts and max(per_week.values()) == 1
        got = await balances(redis)
        assert sum(v for k, v in got.items() if k.endswith(":in_transit")) == sum(e.body["amount"] for e in payouts)

        def owed(refunds: list[dict[str, str]]) -> dict[str, tuple[str, str, int]]:
            return {r["refund_id"]: (r["client_id"], r["booking_id"], int(r["amount"])) for r in refunds}

        refunds = owed(await LedgerStore(redis).refunds(count=BOOKINGS))
        assert refunds and refunds == owed(await fresh.refunds(count=BOOKINGS))
        payable = sum(v for k, v in got.items() if k.endswith(":refund_payable"))
        assert sum(a for _c, _b, a in refunds.values()) == payable
        in_files = await asyncio.to_thread(_refund_files, tmp_path / "data" / "refunds")
        assert sorted(in_files) == sorted((rid, a) for rid, (_c, _b, a) in refunds.items())  # each in one file
    finally:
        await redis.aclose()
