"""The ledger feature: its routes, its service on the context, and (unless a separate `session-server
ledger` process runs them) its consumer, Sunday payout job and refund job, owned by the lifespan's task
supervisor."""

from __future__ import annotations

from prometheus_client import Counter, Gauge
from starlette.routing import BaseRoute

from ledger.store import LedgerStore

from ..context import AppContext
from ..events import EVENTS_STREAM
from ..redis_client import blocking_client
from . import api
from .service import LedgerService
from .store import ComplaintStore, ComplaintText
from .worker import BLOCK_MS, build_consumer, build_payouts, build_refunds, consumer_name

COMPLAINT_INDEX_EVERY_S = 10.0


class LedgerFeature:
    name = "ledger"

    def routes(self) -> list[BaseRoute]:
        return api.routes()

    async def start(self, ctx: AppContext) -> None:
        settings = ctx.settings
        store = LedgerStore(ctx.redis, events_stream=EVENTS_STREAM)
        complaints = ComplaintStore(store)
        ctx.ledger = LedgerService(store, complaints, ComplaintText(ctx.keyring), ctx.clock,
                                   currency=settings.currency,
                                   complaint_window_days=settings.ledger_complaint_window_days,
                                   payout_minimum=settings.ledger_payout_minimum_minor)
        # a client's complaints are read from an index of their own: those filed before it existed go in now,
        # and those a process from before it files (a rolling deploy) within seconds
        await complaints.index_clients()

        async def index_complaints() -> None:
            await complaints.index_clients()

        ctx.tasks.every("ledger.complaint_index", COMPLAINT_INDEX_EVERY_S, index_complaints)
        if not settings.ledger_in_process:
            return
        registry = ctx.metrics.registry
        dead = Counter("ledger_dead_letters", "events the ledger could not apply (alert on any)", ["reason"],
                       registry=registry)
        posted = Counter("ledger_postings", "postings the ledger made", registry=registry)
        batches = Counter("ledger_batches", "batches the ledger wrote: as worked out (planned), decided again per "
                          "change because something moved since they were read (moved), or per change", ["how"],
                          registry=registry)
        name = consumer_name(settings, f"server-{settings.port}")

        async def consume() -> None:
            reader = blocking_client(ctx.redis_url, settings, block_s=BLOCK_MS / 1000)
            consumer = build_consumer(settings, store, reader, name=name,
                                      on_dead_letter=lambda reason: dead.labels(reason.split(":")[0][:40]).inc(),
                                      on_posted=posted.inc, on_batch=lambda how: batches.labels(how).inc())
            try:
                await consumer.run()
            finally:
                await reader.aclose()

        ctx.tasks.spawn("ledger.consumer", consume)
        ticker = build_payouts(settings, store, ctx.clock)
        # it looks at its clock every second: a test moving a manual clock sees it run at once
        ctx.tasks.every("ledger.payouts", min(1.0, settings.ledger_payout_check_interval_s), ticker.step)
        handed = Counter("ledger_refunds_handed_over", "refunds handed to the payment gateway (each hand-over)",
                         registry=registry)
        waiting = Gauge("ledger_refunds_waiting", "refunds not made yet, by what they wait for: due (to be handed "
                        "to the gateway: alert if it stays up) or failed (the gateway could not make them: an admin "
                        "sends them again)", ["for"], registry=registry)

        def refunds_turn(handed_over: int, due: int, failed: int) -> None:
            handed.inc(handed_over)
            waiting.labels("due").set(due)
            waiting.labels("failed").set(failed)

        ctx.tasks.every("ledger.refunds", 1.0, build_refunds(settings, store, ctx.clock, refunds_turn).step)

    async def stop(self, ctx: AppContext) -> None:
        return None  # the supervisor cancels the consumer and the job
