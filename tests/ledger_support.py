"""Helpers of the ledger's tests: events written to the stream as the server writes them, and a consumer
driven step by step."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from ledger.consumer import ConsumerConfig, LedgerConsumer
from ledger.processor import Processor
from ledger.rules import Policy
from ledger.store import LedgerStore
from session_server.events import EVENTS_STREAM, Event, add_to

T0 = int(datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp())  # a Monday
POLICY = Policy(cancel_notice_s=24 * 3600, late_cancel_refund_percent=50, late_cancel_practitioner_percent=50)


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def iso(ts: int) -> str:
    return at(ts).isoformat().replace("+00:00", "Z")


def created(bid: str, *, pid: str = "p1", cid: str = "c1", share: int = 300_000, platform: int = 50_000,
            discount: int = 0, code: str | None = None, code_kind: str | None = None, referrer: str | None = None,
            credit: int = 0, starts: int = T0 + 3 * 86400, now: int = T0) -> Event:
    body: dict[str, Any] = {
        "booking_id": bid, "practitioner_id": pid, "client_id": cid, "starts_at": iso(starts),
        "ends_at": iso(starts + 3000), "timezone": "Africa/Algiers", "currency": "DZD",
        "client_total": share + platform, "practitioner_share": share, "platform_share": platform,
        "discount": discount, "code": code, "referrer_id": referrer, "referrer_credit": credit}
    if code_kind:
        body["code_kind"] = code_kind
    return Event("booking.created", body, time=at(now))


def transition(bid: str, to: str, *, pid: str = "p1", cid: str = "c1", now: int = T0, **extra: Any) -> Event:
    return Event(f"booking.{to}", {"booking_id": bid, "practitioner_id": pid, "client_id": cid, "from": "x",
                                   "to": to, **extra}, time=at(now))


def verdict(bid: str, what: str, *, now: int = T0) -> Event:
    return Event("session.verdict", {"booking_id": bid, "verdict": what, "attribution": "network",
                                     "net_minutes": 20, "scheduled_minutes": 50, "decided_at": iso(now)},
                 time=at(now))


async def publish(redis: aioredis.Redis, *events: Event) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        for e in events:
            add_to(pipe, e)
        await pipe.execute()


async def session_took_place(redis: aioredis.Redis, bid: str, starts: int, *, pid: str = "p1",
                             cid: str = "c1") -> None:
    """What the rooms write when both parties are in the session with their media flowing."""
    when = at(starts)
    await publish(redis, Event("session.started", {"booking_id": bid, "practitioner_id": pid, "client_id": cid,
                                                   "at": starts * 1000}, time=when))
    for who, role in ((cid, "client"), (pid, "practitioner")):
        await publish(redis, Event("room.joined", {
            "booking_id": bid, "participant_id": who, "role": role, "at": starts * 1000,
            "practitioner_id": pid, "client_id": cid}, time=when))
        await publish(redis, Event("media.state_changed", {
            "booking_id": bid, "participant_id": who, "state": "connected", "reason": None, "node_id": "n1",
            "at": starts * 1000}, time=when))


async def publish_raw(redis: aioredis.Redis, fields: dict[str, str]) -> None:
    await redis.xadd(EVENTS_STREAM, fields)  # type: ignore[arg-type]


def make_consumer(redis: aioredis.Redis, *, name: str = "t1", prefix: str = "ledger", max_failures: int = 3,
                  minimum: int = 100_000, batch: int = 200) -> LedgerConsumer:
    """A ledger consumer; with a small `batch`, a backlog of a few events already goes through the catch-up
    path (the next batch decided while the one before is written)."""
    store = LedgerStore(redis, prefix=prefix)
    return LedgerConsumer(redis, store, Processor(store, POLICY, payout_minimum=minimum), stream=EVENTS_STREAM,
                          consumer=name, config=ConsumerConfig(block_ms=10, claim_idle_ms=10, batch=batch,
                                                               max_failures=max_failures))


async def drain(consumer: LedgerConsumer, rounds: int = 10) -> None:
    """Read everything there is, then retry what failed, until a round finds nothing to do."""
    await consumer.ensure_group()
    for _ in range(rounds):
        n = 0
        while (read := await consumer.read_once(block=False)) > 0:
            n += read
        pending = await consumer.redis.xpending(EVENTS_STREAM, consumer.config.group)
        if pending["pending"]:
            n += await consumer.read_own_pending()
        if n == 0:
            return


async def balances(redis: aioredis.Redis, prefix: str = "ledger") -> dict[str, int]:
    return {k: v for k, v in (await LedgerStore(redis, prefix=prefix).balances("DZD")).items() if v != 0}
