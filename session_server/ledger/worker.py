"""The ledger's moving parts, built from the settings: its consumer, its payout job and its refund job. The
server's lifespan runs them (the default), or `session-server ledger` runs them in a process of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from ledger.consumer import ConsumerConfig, LedgerConsumer
from ledger.payouts import CsvTransferExporter, PayoutExporter, PayoutJob
from ledger.processor import Processor
from ledger.refunds import CsvRefundExporter, RefundExporter, RefundJob
from ledger.rules import Policy
from ledger.store import LedgerStore

from ..clock import Clock, SystemClock
from ..events import EVENTS_STREAM
from ..settings import Settings

log = logging.getLogger(__name__)

BLOCK_MS = 1000


def policy_of(settings: Settings) -> Policy:
    return Policy(cancel_notice_s=settings.ledger_cancel_notice_hours * 3600,
                  late_cancel_refund_percent=settings.ledger_late_cancel_refund_percent,
                  late_cancel_practitioner_percent=settings.ledger_late_cancel_practitioner_percent,
                  client_no_show_refund_percent=settings.ledger_client_no_show_refund_percent)


def processor_of(store: LedgerStore, settings: Settings) -> Processor:
    return Processor(store, policy_of(settings), payout_minimum=settings.ledger_payout_minimum_minor)


def exporter_of(settings: Settings) -> PayoutExporter:
    return CsvTransferExporter(settings.ledger_payout_dir or settings.data_dir / "payouts")


def refund_exporter_of(settings: Settings) -> RefundExporter:
    return CsvRefundExporter(settings.ledger_refund_dir or settings.data_dir / "refunds")


def consumer_name(settings: Settings, suffix: str) -> str:
    """Stable across restarts: a restarted process first takes back what it had read and not finished."""
    return f"{socket.gethostname()}-{suffix}"


def build_consumer(settings: Settings, store: LedgerStore, reader: aioredis.Redis, *, name: str,
                   on_dead_letter: Callable[[str], None] | None = None,
                   on_posted: Callable[[int], None] | None = None,
                   on_batch: Callable[[str], None] | None = None) -> LedgerConsumer:
    config = ConsumerConfig(block_ms=BLOCK_MS, claim_idle_ms=settings.ledger_claim_idle_ms,
                            max_failures=settings.ledger_max_failures)
    return LedgerConsumer(reader, store, processor_of(store, settings), stream=EVENTS_STREAM, consumer=name,
                          config=config, on_dead_letter=on_dead_letter, on_posted=on_posted, on_batch=on_batch)


@dataclass
class PayoutTicker:
    """The payout job's turns: the first one interval after the start (by the app's clock), not at it, so
    that a process starting writes no event before it has run for a while. Between turns it only looks for a
    run the consumer has applied since, to write its transfer file without waiting a whole interval."""

    job: PayoutJob
    clock: Clock
    interval_s: float
    _due: float | None = None

    async def step(self) -> None:
        now = self.clock.monotonic()
        if self._due is None:
            self._due = now + self.interval_s
        if now < self._due:
            await self.job.export_ready(self.clock.now())
            return
        self._due = now + self.interval_s
        await self.job.step(self.clock.now())


def build_payouts(settings: Settings, store: LedgerStore, clock: Clock) -> PayoutTicker:
    return PayoutTicker(PayoutJob(store, exporter_of(settings), currency=settings.currency), clock,
                        settings.ledger_payout_check_interval_s)


@dataclass
class RefundTicker:
    """The refund job's turns, every second: a client waits for their money no longer than that, and a
    refund job that fails (its files' disk full, say) never holds up the payouts, which run on their own.
    After each turn it says how many were handed over and how many wait (for the metrics)."""

    job: RefundJob
    clock: Clock
    on_turn: Callable[[int, int, int], None] | None = None  # handed over, due, failed

    async def step(self) -> None:
        handed = await self.job.step(self.clock.now())
        if self.on_turn is not None:
            self.on_turn(len(handed), *await self.job.waiting())


def build_refunds(settings: Settings, store: LedgerStore, clock: Clock,
                  on_turn: Callable[[int, int, int], None] | None = None) -> RefundTicker:
    return RefundTicker(RefundJob(store, refund_exporter_of(settings)), clock, on_turn)


async def run_apart(settings: Settings, consumer: str | None = None, clock: Clock | None = None) -> None:
    """`session-server ledger`: the consumer, the payout job and the refund job until SIGTERM or SIGINT."""
    from ..redis_client import blocking_client, command_client

    if settings.redis_url is None:
        raise SystemExit("error: the ledger process needs REDIS_URL (the server's Redis)")
    client = command_client(settings.redis_url, settings)
    reader = blocking_client(settings.redis_url, settings, block_s=BLOCK_MS / 1000)
    store = LedgerStore(client, events_stream=EVENTS_STREAM)
    consumer_ = build_consumer(settings, store, reader, name=consumer or consumer_name(settings, "ledger"),
                               on_dead_letter=lambda reason: log.error("ledger dead letter: %s", reason))
    ticker = build_payouts(settings, store, clock or SystemClock())
    refunds = build_refunds(settings, store, clock or SystemClock())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def turns(step: Callable[[], Awaitable[None]], what: str, interval_s: float = 1.0) -> None:
        while True:
            try:
                await step()
            except Exception:
                log.exception("ledger %s failed; retrying at its next turn", what)
            await asyncio.sleep(interval_s)

    print(f"Ledger consumer {consumer_.consumer} running", flush=True)
    tasks = [asyncio.create_task(consumer_.run()),
             asyncio.create_task(turns(ticker.step, "payout job", min(1.0, settings.ledger_payout_check_interval_s))),
             asyncio.create_task(turns(refunds.step, "refund job"))]
    try:
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await reader.aclose()
        await client.aclose()
