"""The ledger's consumer group on the event stream: at-least-once, acknowledged after the posting.

A consumer first reads again what it had read but not acknowledged under its name (a restarted process
picks up where it died), then new entries; every `claim_every_s` it claims with XAUTOCLAIM what any
consumer of the group (itself included) left pending for `claim_idle_ms` — a dead process's entries and
its own that failed. A batch is decided in order (later events see the earlier ones' effects), written by
one script call (each event's change whole or refused), and acknowledged with one XACK for the entries
written. While it catches up (a read came back full), the next batch is read and decided while Redis writes
the one before, from the view that batch's decisions left; if Redis refused any of them, the next batch is
decided again from what Redis holds.

An entry that can never be applied (`Poison`: an unknown version, a malformed body, amounts that do not
add up) goes to the dead-letter stream at once, with its reason, in the same script as its processed
mark; one that fails for another reason (its booking not in the ledger yet, Redis refusing a stale
change) stays pending and is tried again; after `max_failures` it goes to the dead letter too. Either way
the entries after it are applied: a poison event never blocks the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from . import plan
from .intake import Incoming, Poison, parse, wanted
from .processor import NotYet, Processor, View
from .store import Change, LedgerStore, Refused

log = logging.getLogger(__name__)

GROUP = "ledger"
# Events decided from balances, which a batch's earlier changes may have moved.
READS_BALANCES = frozenset({"complaint.filed", "payout.run"})
# Records a view carries from batch to batch while catching up, before it starts afresh from Redis.
VIEW_LIMIT = 50_000


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    group: str = GROUP
    block_ms: int = 1000
    batch: int = 200
    claim_idle_ms: int = 5_000
    max_failures: int = 5
    retry_delay_s: float = 1.0
    # work out each batch's writes in the consumer and write them by compare-and-set (ledger.plan); off, the
    # per-change script decides every batch (the reference the planned writes are tested against)
    plan: bool = True


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _kind(moved: str) -> str:
    """What moved, for the log, without the ids it names (a person's account, a booking): `balances`,
    `booking`, `complaint`..., `postings`, `a posting id`, or `an event`."""
    if moved in ("postings", "a posting id"):
        return moved
    parts = moved.split(" ")[0].split(":")
    return parts[1] if len(parts) > 2 else "an event"


def _type(fields: Mapping[Any, Any] | None) -> str:
    """An entry's type, "" for none (an entry trimmed from the stream comes back without fields)."""
    return _s(fields.get(b"type", fields.get("type", b""))) if fields else ""


@dataclass
class Batch:
    """A batch of stream entries, decided and not yet written: the changes in order, the entries to
    acknowledge whatever happens, those that failed, and the postings already written for it."""

    entries: Sequence[tuple[Any, dict[Any, Any]]]
    done: list[str] = field(default_factory=list)
    todo: list[tuple[str, Incoming | None, Change]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    posted: int = 0
    plan: plan.Plan | None = None  # the writes of `todo`, worked out (None: the per-change script decides)
    clean: bool = True  # every change written so far was written as decided (the view is right)


class LedgerConsumer:
    def __init__(self, reader: aioredis.Redis, store: LedgerStore, processor: Processor, *, stream: str,
                 consumer: str, config: ConsumerConfig | None = None,
                 on_dead_letter: Callable[[str], None] | None = None,
                 on_posted: Callable[[int], None] | None = None,
                 on_batch: Callable[[str], None] | None = None) -> None:
        self._reader = reader  # blocking reads only
        self.store = store
        self.redis = store.redis  # acks, claims and scripts
        self.processor = processor
        self.stream = stream
        self.consumer = consumer
        self.config = config or ConsumerConfig()
        self._on_dead_letter = on_dead_letter or (lambda reason: None)
        self._on_posted = on_posted or (lambda n: None)
        self._on_batch = on_batch or (lambda how: None)  # "planned", "moved" or "per_change"
        self._claim_every_s = self.config.claim_idle_ms / 2000

    @property
    def failures_key(self) -> str:
        return self.store.key("failures")

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.config.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume until cancelled; survives Redis outages by starting over (its own pending first).

        A cancellation that lands in a blocking read does not always come out of the Redis client as one (the
        read may end normally, or with a timeout or connection error): the task's pending cancellation is
        looked at after every read and every error, and ends the loop."""
        said_unavailable = False
        current = asyncio.current_task()

        def stop_if_cancelled() -> None:
            if current is not None and current.cancelling():
                raise asyncio.CancelledError

        while True:
            try:
                await self.ensure_group()
                await self.read_own_pending()
                claimed_at = -self._claim_every_s
                wait = True
                while True:
                    stop_if_cancelled()
                    now = asyncio.get_running_loop().time()
                    if now - claimed_at >= self._claim_every_s:
                        await self.claim_abandoned()
                        claimed_at = now
                    read = await self.read_once(block=wait)
                    said_unavailable = False
                    wait = read == 0
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                stop_if_cancelled()  # not a Redis outage: stop, not retry
                if not said_unavailable:
                    log.warning("ledger consumer %s: redis unavailable, retrying", self.consumer)
                said_unavailable = True
                await asyncio.sleep(self.config.retry_delay_s)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("ledger consumer: the group is gone; creating it again")

    async def read_own_pending(self) -> int:
        """What this consumer read before and never acknowledged (it was killed): handled again first."""
        total, start = 0, "0"
        while True:
            reply: Any = await self.redis.xreadgroup(self.config.group, self.consumer, {self.stream: start},
                                                     count=self.config.batch)
            entries = [e for _s_, found in reply or [] for e in found]
            if not entries:
                return total
            await self.handle(entries)
            total += len(entries)
            start = _s(entries[-1][0])

    async def _read_new(self, *, block: bool) -> list[tuple[Any, dict[Any, Any]]]:
        reply: Any = await self._reader.xreadgroup(self.config.group, self.consumer, {self.stream: ">"},
                                                   count=self.config.batch,
                                                   block=self.config.block_ms if block else None)
        return [e for _s_, found in reply or [] for e in found]

    async def read_once(self, *, block: bool = True) -> int:
        """Read new entries and apply them; a full batch means more are waiting, and then the batches that
        follow are decided while Redis writes the one before (see `_pipeline`). The number of entries read."""
        entries = await self._read_new(block=block)
        if len(entries) < self.config.batch:
            await self.handle(entries)
            return len(entries)
        return await self._pipeline(entries)

    async def _pipeline(self, entries: list[tuple[Any, dict[Any, Any]]]) -> int:
        """Catching up: while one batch is written and acknowledged, the next one is read and decided from the
        view the written batch's decisions left. If Redis refused any of them, the next batch's decisions
        are dropped and made again from what Redis holds; a batch with an event decided from balances
        (`READS_BALANCES`) waits for the write before it. Until a read comes back short, or for as long as
        claims wait (`run` claims what other consumers left between two calls)."""
        total, view, decided = 0, View(self.store), set[str]()
        loop = asyncio.get_running_loop()
        until = loop.time() + self._claim_every_s
        prepared = await self._prepare(entries, view, decided)
        while True:
            total += len(entries)
            writing = asyncio.ensure_future(self._commit(prepared))
            try:
                more = len(entries) >= self.config.batch and loop.time() < until
                following = await self._read_new(block=False) if more else []
                ahead = None
                if following and not any(_type(f) in READS_BALANCES for _i, f in following):
                    ahead = await self._prepare(following, view, decided)
                clean = await writing
            finally:
                if not writing.done():
                    writing.cancel()
                    await asyncio.gather(writing, return_exceptions=True)
            if not following:
                return total
            if ahead is None or not clean or len(view.records) > VIEW_LIMIT:
                view, decided = View(self.store), set()
                ahead = await self._prepare(following, view, decided)
            entries, prepared = following, ahead

    async def claim_abandoned(self) -> int:
        start, claimed = "0-0", 0
        while True:
            result = await self.redis.xautoclaim(self.stream, self.config.group, self.consumer,
                                                 min_idle_time=self.config.claim_idle_ms, start_id=start,
                                                 count=self.config.batch)
            start, entries = _s(result[0]), result[1]
            await self.handle(entries)
            claimed += len(entries)
            if start == "0-0":
                return claimed

    async def handle(self, entries: Sequence[tuple[Any, dict[Any, Any]]]) -> None:
        """Decide, write and acknowledge one batch; what failed stays pending (or goes to the dead letter)."""
        if entries:
            await self._commit(await self._prepare(entries, View(self.store), set()))

    async def _prepare(self, entries: Sequence[tuple[Any, dict[Any, Any]]], view: View,
                       decided: set[str]) -> Batch:
        """Parse and decide a batch against `view` (which later batches go on from); `decided` holds the ids of
        the events decided in it so far, written or not yet."""
        batch = Batch(entries)
        parsed: list[tuple[str, Incoming | Poison]] = []
        for raw_id, fields in entries:
            entry_id = _s(raw_id)
            if not fields or not wanted(fields):
                batch.done.append(entry_id)  # not the ledger's (or trimmed away): nothing to do
                continue
            try:
                parsed.append((entry_id, parse(fields)))
            except Poison as poison:
                parsed.append((entry_id, poison))
        # which events were applied already, and the records the batch's decisions read, in one command; an
        # event applied already (a redelivery) is not decided again: its decision, laid over the view, would
        # make the events after it be decided from money that did not move
        keys = [k for _e, ev in parsed if isinstance(ev, Incoming) for k in self.processor.prefetch_keys(ev)]
        applied = await view.prefetch(keys, events=[ev.id for _e, ev in parsed if isinstance(ev, Incoming)])
        for entry_id, ev in parsed:
            if isinstance(ev, Poison):
                batch.todo.append((entry_id, None, self._dead(entry_id, None, str(ev))))
                continue
            if ev.id in applied or ev.id in decided:
                batch.done.append(entry_id)  # the same event again: the first one counts
                continue
            decided.add(ev.id)
            if ev.type in READS_BALANCES and batch.todo:
                # decided from balances: write what the batch decided so far, then read them fresh
                refused = len(batch.failed)
                posted, as_planned = await self._write(batch.todo, batch.done, batch.failed,
                                                       await self._plan(batch.todo, view))
                batch.posted += posted
                batch.clean = batch.clean and len(batch.failed) == refused and (as_planned or not self.config.plan)
                batch.todo = []
                view.balances.clear()
                view.seq = None
            try:
                change = await self.processor.decide(ev, view)
            except Poison as poison:
                change = self._dead(entry_id, ev, str(poison))
            except NotYet as exc:
                batch.failed[entry_id] = str(exc)
                continue
            view.lay(change, balances=False)
            batch.todo.append((entry_id, ev, change))
        batch.plan = await self._plan(batch.todo, view)
        return batch

    async def _plan(self, todo: list[tuple[str, Incoming | None, Change]], view: View) -> plan.Plan | None:
        """The batch's writes worked out from the balances before it (read into the view if not there), the view
        then holding the balances it leaves; None if the per-change script must decide it (the view then
        forgets the balances: they are read again after that write)."""
        changes = [c for _e, _ev, c in todo]
        if not changes or not self.config.plan:
            return None
        await view.read_balances(plan.accounts(changes))
        assert view.seq is not None
        made = plan.make(changes, self.store.prefix, view.balances, view.seq)
        if made is None:
            view.balances.clear()
            view.seq = None
            return None
        view.balances.update(made.after)
        view.seq = made.seq
        return made

    async def _commit(self, batch: Batch) -> bool:
        """Write a decided batch, acknowledge what was applied, count what failed; whether Redis took every
        change as decided (none refused)."""
        refused = len(batch.failed)
        posted, as_planned = await self._write(batch.todo, batch.done, batch.failed, batch.plan)
        batch.posted += posted
        refused = len(batch.failed) - refused
        if batch.done:
            await self.redis.xack(self.stream, self.config.group, *batch.done)
            if batch.failed:
                await self.redis.hdel(self.failures_key, *batch.done)
        if batch.posted:
            self._on_posted(batch.posted)
        if batch.failed:
            await self._failed(batch.entries, batch.failed)
        return batch.clean and refused == 0 and (as_planned or not self.config.plan)

    async def _write(self, todo: list[tuple[str, Incoming | None, Change]], done: list[str],
                     failed: dict[str, str], planned: plan.Plan | None) -> tuple[int, bool]:
        """Write the changes: as planned if nothing the plan came from has moved, else each decided again by the
        per-change script. The postings made, and whether Redis holds what the plan said (the view was right)."""
        if not todo:
            return 0, True
        as_planned = False
        if planned is not None:
            moved = await self.store.write(planned.args)
            as_planned = moved is None
            if moved is not None:
                log.info("ledger: %s moved since the batch was read; its changes are decided again", _kind(moved))
        self._on_batch("planned" if as_planned else "moved" if planned is not None else "per_change")
        results: Sequence[int | Refused] = (
            planned.posted if planned is not None and as_planned
            else await self.store.apply_many([c for _e, _ev, c in todo]))
        posted = 0
        for (entry_id, _ev, change), result in zip(todo, results, strict=True):
            if isinstance(result, Refused):
                failed[entry_id] = str(result)
                continue
            posted += result
            done.append(entry_id)
            if change.dead is not None:
                reason = change.dead[change.dead.index("reason") + 1]
                log.error("ledger: event %s went to the dead letter: %s", entry_id, reason)
                self._on_dead_letter(reason)
        return posted, as_planned

    def _dead(self, entry_id: str, ev: Incoming | None, reason: str, fields: dict[str, str] | None = None) -> Change:
        dead = ["entry_id", entry_id, "reason", reason, "event_id", ev.id if ev else "",
                "type", ev.type if ev else ""]
        return Change(event=ev.id if ev else "", dead=dead)

    async def _failed(self, entries: Sequence[tuple[Any, dict[Any, Any]]], failed: dict[str, str]) -> None:
        """Count each failure; an entry that failed `max_failures` times goes to the dead letter."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in failed:
                pipe.hincrby(self.failures_key, entry_id, 1)
            counts = await pipe.execute()
        by_id = {_s(i): f for i, f in entries}
        for (entry_id, reason), count in zip(failed.items(), counts, strict=True):
            if count < self.config.max_failures:
                log.warning("ledger: event %s not applied yet (%s); it will be retried", entry_id, reason)
                continue
            ev: Incoming | None
            try:
                ev = parse(by_id[entry_id])
            except Poison:
                ev = None
            why = f"failed {count} times; last: {reason}"
            change = self._dead(entry_id, ev, why)
            change.event = ""  # not marked processed: the dead letter can be replayed once the cause is fixed
            await self.store.apply(change)
            log.error("ledger: event %s went to the dead letter: %s", entry_id, why)
            await self.redis.xack(self.stream, self.config.group, entry_id)
            await self.redis.hdel(self.failures_key, entry_id)
            self._on_dead_letter("failed")


async def replay(store: LedgerStore, processor: Processor, source: aioredis.Redis, stream: str,
                 batch: int = 500) -> int:
    """Apply the whole stream from its start into `store` (an empty ledger under another prefix), in order,
    without a consumer group: what a fresh ledger would hold. The number of events applied."""
    start, applied, seen = "-", 0, set[str]()
    while True:
        found: Any = await source.xrange(stream, min=start, count=batch)
        if not found:
            return applied
        view = View(store)
        for _raw_id, fields in found:
            if not wanted(fields):
                continue
            try:
                ev = parse(fields)
                if ev.id in seen:
                    continue  # a redelivery: applied once already
                change = await processor.decide(ev, view)
            except (Poison, NotYet):
                continue
            try:
                await store.apply(change)
            except Refused:
                view.forget()
                continue
            view.lay(change)
            seen.add(ev.id)
            applied += 1
        start = "(" + _s(found[-1][0])
