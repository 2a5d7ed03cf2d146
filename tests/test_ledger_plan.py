"""The ledger's planned writes: the consumer works out a batch's writes from what it read, and a
compare-and-set script writes them only if nothing they were worked out from has moved. Redis then holds
exactly what the per-change script would have left; when something moved, nothing is written and the batch
is decided again, change by change."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from ledger import plan
from ledger.consumer import ConsumerConfig, LedgerConsumer, replay
from ledger.processor import Processor, View, stable_id
from ledger.rules import Entry
from ledger.store import Change, LedgerStore, Posting
from session_server.events import EVENTS_STREAM, Event

from .ledger_support import POLICY, T0, at, created, drain, publish, transition, verdict

DAY = 86400


def _history() -> list[Event]:
    """Every kind of event the ledger applies, in an order that makes later events depend on earlier ones
    in the same batch (and across batches), with a redelivery and a poison event among them."""
    settle_at = T0 + 4 * DAY
    paid_twice = created("b1")
    bad = created("bad")
    bad.body["practitioner_share"] = 1  # the shares do not add up: the dead letter
    events = [
        Event("code.created", {"code": "SPRING", "kind": "practitioner", "owner_id": "p1"}, time=at(T0)),
        Event("code.created", {"code": "PROMO", "kind": "promotion", "owner_id": None}, time=at(T0)),
        paid_twice,
        created("b2", cid="c2", share=280_000, discount=20_000, code="SPRING"),
        created("b3", cid="c3", share=300_000, platform=30_000, discount=20_000, code="PROMO"),
        created("b4", pid="p2", cid="c4", referrer="r1", credit=10_000),
        created("b5", pid="p2", cid="c5"), created("b6", cid="c6"), created("b7", pid="p2", cid="c7"),
        created("b8", cid="c8"), created("b9", pid="p3", cid="c9"), bad, paid_twice,
        transition("b1", "completed", now=settle_at),
        transition("b2", "completed", cid="c2", now=settle_at),
        verdict("b3", "ended_early", now=settle_at),
        verdict("b4", "completed", now=settle_at),
        transition("b4", "completed", pid="p2", cid="c4", now=settle_at),  # settled already: nothing
        transition("b5", "cancelled", pid="p2", cid="c5", by="client", now=T0),  # in time: all back
        transition("b6", "cancelled", cid="c6", by="client", now=T0 + 3 * DAY - 3600),  # late: half
        transition("b7", "cancelled", pid="p2", cid="c7", by="practitioner", now=T0),
        verdict("b8", "client_no_show", now=settle_at),
        verdict("b9", "interrupted", now=settle_at),
        Event("booking.rescheduled", {"rescheduled_from": "b9", "rescheduled_to": "r9", "client_total": 0},
              time=at(settle_at + 60)),
        created("r9", pid="p3", cid="c9", share=0, platform=0, now=settle_at + 60),
        transition("r9", "completed", pid="p3", cid="c9", now=settle_at + 7 * DAY),
        Event("complaint.filed", {"complaint_id": "k1", "booking_id": "b1", "client_id": "c1"},
              time=at(settle_at + 3600)),
        Event("complaint.filed", {"complaint_id": "k2", "booking_id": "b4", "client_id": "c4"},
              time=at(settle_at + 3600)),
        Event("complaint.resolved", {"complaint_id": "k1", "booking_id": "b1", "decision": "upheld",
                                     "refund_minor": 100_000}, time=at(settle_at + 7200)),
        Event("complaint.resolved", {"complaint_id": "k2", "booking_id": "b4", "decision": "rejected"},
              time=at(settle_at + 7200)),
        Event("payout.run", {"sunday": "2026-11-29", "date": "2026-11-29", "currency": "DZD"},
              time=at(T0 + 6 * DAY)),
        Event("payout.paid", {"payout_id": stable_id("payout:p1:2026-11-29")}, time=at(T0 + 7 * DAY)),
        Event("payout.failed", {"payout_id": stable_id("payout:p2:2026-11-29"), "reason": "closed"},
              time=at(T0 + 7 * DAY)),
        created("b10", cid="c10", now=T0 + 7 * DAY),
        transition("b10", "completed", cid="c10", now=T0 + 11 * DAY),
        # ids as JSON writes them with escapes
        created("b/11", pid="p/4", cid='c"11', now=T0 + 7 * DAY),
        transition("b/11", "completed", pid="p/4", cid='c"11', now=T0 + 11 * DAY),
    ]
    return events


def _consumer(redis: aioredis.Redis, prefix: str, *, planned: bool, batch: int, hows: list[str]) -> LedgerConsumer:
    store = LedgerStore(redis, prefix=prefix, events_stream=f"{prefix}:out")
    return LedgerConsumer(redis, store, Processor(store, POLICY, payout_minimum=100_000), stream=EVENTS_STREAM,
                          consumer="t", on_batch=hows.append,
                          config=ConsumerConfig(group=prefix, block_ms=10, claim_idle_ms=60_000, batch=batch,
                                                max_failures=2, plan=planned))


def _plain(raw: bytes) -> str:
    return raw.decode()  # postings and entries too: byte for byte, as JSON text


async def _state(redis: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """Every key the ledger wrote under `prefix`, by its name without the prefix, with what it holds."""
    out: dict[str, Any] = {}
    async for raw_key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw_key.decode()
        kind = (await redis.type(key)).decode()
        if kind == "string":
            value: Any = _plain(await redis.get(key))
        elif kind == "hash":
            value = {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}
        elif kind == "list":
            value = [_plain(v) for v in await redis.lrange(key, 0, -1)]
        elif kind == "set":
            value = sorted(v.decode() for v in await redis.smembers(key))
        elif kind == "zset":
            value = [(m.decode(), s) for m, s in await redis.zrange(key, 0, -1, withscores=True)]
        else:  # a stream: its entries' fields, in order (their ids are the time they were written)
            value = [{k.decode(): v.decode() for k, v in fields.items()} for _i, fields in await redis.xrange(key)]
        out[key[len(prefix) + 1:]] = value
    return out


@pytest.mark.parametrize("batch", [200, 5, 2])
async def test_planned_batches_leave_redis_exactly_as_the_per_change_script_does(
        redis_client: aioredis.Redis, batch: int) -> None:
    await publish(redis_client, *_history())
    per_change_hows: list[str] = []
    planned_hows: list[str] = []
    await drain(_consumer(redis_client, "per_change", planned=False, batch=batch, hows=per_change_hows))
    await drain(_consumer(redis_client, "planned", planned=True, batch=batch, hows=planned_hows))

    expected, got = await _state(redis_client, "per_change"), await _state(redis_client, "planned")
    assert got == expected
    # the history did happen: money moved, a payout went out, the poison event is in the dead letter
    assert int(got["balances:DZD"]["practitioner:p1:paid"]) > 0
    assert [d["reason"] for d in got["dead"]] == ["booking.created: the shares do not add up to the client's total"]
    # and the planned consumer wrote by plan, never finding that something had moved (nothing else writes)
    assert set(per_change_hows) == {"per_change"}
    assert "planned" in planned_hows and "moved" not in planned_hows


def _payment(event: str, posting_id: str, amount: int, *, guards: list[tuple[str, str, str]] | None = None) -> Change:
    entries = (Entry("world:payments", -amount), Entry("practitioner:p1:available", amount))
    return Change(event=event, guards=guards or [],
                  postings=[Posting(id=posting_id, kind="test", currency="DZD", time="2026-11-23T08:00:00Z",
                                    day="2026-11-23", ordinal=739943, entries=entries, booking_id="b1")],
                  sets=[("ledger:booking:b1", {"state": "settled", "rev": "2"})])


async def _apply_event(store: LedgerStore) -> None:
    await store.apply(Change(event="e1"))


async def _post(store: LedgerStore) -> None:
    paid = _payment("e9", "p-9", 5)
    paid.sets = []
    await store.apply(paid)


async def _move_balance(store: LedgerStore) -> None:
    await store.redis.hset(store.balances_key("DZD"), "practitioner:p1:available", "1")


async def _move_guarded_field(store: LedgerStore) -> None:
    await store.apply(Change(event="e9", sets=[("ledger:booking:b1", {"rev": "7"})]))


# what moves between the read and the write -> what the script says moved; and whether, read again, the
# batch can then be planned and written (not if its event was applied or its guard no longer holds)
MOVES = {
    "its event applied": (_apply_event, "e1", False),
    "a posting made": (_post, "postings", True),
    "a balance it moves": (_move_balance, "ledger:balances:DZD practitioner:p1:available", True),
    "a guarded field": (_move_guarded_field, "ledger:booking:b1 rev", False),
}


@pytest.mark.parametrize("what", sorted(MOVES))
async def test_a_plan_is_not_written_if_what_it_was_worked_out_from_moved(
        redis_client: aioredis.Redis, what: str) -> None:
    store = LedgerStore(redis_client)
    await redis_client.hset("ledger:booking:b1", mapping={"rev": "1"})
    changes = [_payment("e1", "p-1", 100, guards=[("ledger:booking:b1", "rev", "1")])]
    before, seq = await store.balances_read(sorted(plan.accounts(changes)), count=True)
    assert seq is not None
    made = plan.make(changes, "ledger", before, seq)
    assert made is not None and made.posted == [1]

    move, said, again = MOVES[what]
    await move(store)
    state = await _state(redis_client, "ledger")
    assert await store.write(made.args) == said
    assert await _state(redis_client, "ledger") == state  # nothing written

    if again:  # read again, worked out again, and written
        fresh, seq = await store.balances_read(sorted(plan.accounts(changes)), count=True)
        assert seq is not None
        remade = plan.make(changes, "ledger", fresh, seq)
        assert remade is not None and await store.write(remade.args) is None
        assert (await store.balances("DZD"))["practitioner:p1:available"] == 100 + int(
            fresh[("DZD", "practitioner:p1:available")][1])
        assert (await store.hash("ledger:booking:b1")) == {"state": "settled", "rev": "2"}


def test_a_batch_the_script_would_refuse_in_part_is_not_planned() -> None:
    """What the per-change script refuses change by change (and writes the rest), a plan does not try: the
    batch goes to that script whole."""
    zero = {("DZD", "world:payments"): (0, ""), ("DZD", "practitioner:p1:available"): (0, ""),
            ("DZD", "practitioner:p1:paid"): (0, "")}
    ok = _payment("e1", "p-1", 100)
    assert plan.make([ok], "ledger", zero, 0) is not None
    unbalanced = Change(event="e2", postings=[Posting(
        id="p-2", kind="test", currency="DZD", time="t", day="d", ordinal=1,
        entries=(Entry("world:payments", -5), Entry("practitioner:p1:available", 4)))])
    below_zero = Change(event="e3", postings=[Posting(
        id="p-3", kind="test", currency="DZD", time="t", day="d", ordinal=1,
        entries=(Entry("practitioner:p1:available", -101), Entry("practitioner:p1:paid", 101)))])
    stale = _payment("e4", "p-4", 1, guards=[("ledger:booking:b1", "rev", "1")])  # the first set it to 2
    for refused in ([ok, unbalanced], [ok, below_zero], [ok, stale], [ok, _payment("e1", "p-5", 1)],
                    [ok, _payment("e5", "p-1", 1)]):
        assert plan.make(refused, "ledger", zero, 0) is None
    # what the batch's earlier changes left is what later ones are checked against
    spends = Change(event="e6", postings=[Posting(
        id="p-6", kind="test", currency="DZD", time="t", day="d", ordinal=1,
        entries=(Entry("practitioner:p1:available", -100), Entry("practitioner:p1:paid", 100)))],
        guards=[("ledger:booking:b1", "rev", "2"), ("ledger:balances:DZD", "practitioner:p1:available", "100")])
    made = plan.make([ok, spends], "ledger", zero, 0)
    assert made is not None and made.after[("DZD", "practitioner:p1:available")] == (0, "0") and made.seq == 2


async def test_a_consumer_whose_batch_another_wrote_under_decides_it_again_and_no_dinar_is_lost(
        redis_client: aioredis.Redis) -> None:
    """Two consumers of one group: one works a batch out, the other writes its own batch in between (moving
    the outside world's balance both batches move); the first one's plan is refused as moved, its changes are
    decided again one by one, and the ledger ends as a clean replay of the stream."""
    await publish(redis_client, *[created(f"b{i}", cid=f"c{i}") for i in range(10)],
                  *[transition(f"b{i}", "completed", cid=f"c{i}", now=T0 + 4 * DAY) for i in range(10)])
    hows_a: list[str] = []
    hows_b: list[str] = []
    a = _consumer(redis_client, "ledger", planned=True, batch=5, hows=hows_a)
    b = LedgerConsumer(redis_client, a.store, a.processor, stream=EVENTS_STREAM, consumer="other",
                       on_batch=hows_b.append, config=a.config)
    await a.ensure_group()
    first = await a._read_new(block=False)
    worked_out = await a._prepare(first, View(a.store), set())
    assert worked_out.plan is not None
    await b.handle(await b._read_new(block=False))  # the other consumer writes b5..b9's payments first
    assert hows_b == ["planned"]
    assert await a._commit(worked_out) is False  # not as planned: what follows is decided afresh
    assert hows_a == ["moved"]
    await drain(a)
    await drain(b)

    replayed = LedgerStore(redis_client, prefix="replayed", events_stream="replayed:out")
    await replay(replayed, Processor(replayed, POLICY, payout_minimum=100_000), redis_client, EVENTS_STREAM)
    assert await a.store.balances("DZD") == await replayed.balances("DZD")
    assert (await a.store.balances("DZD"))["practitioner:p1:available"] == 10 * 300_000
    assert await redis_client.llen("ledger:postings") == 20


async def test_a_batch_past_what_one_command_takes_is_written_in_chunks_exactly_as_the_per_change_script_does(
        redis_client: aioredis.Redis) -> None:
    """A payout run pays each practitioner in one change: with 1,200 of them, every list the script writes
    (postings, balances, entries, records, processed marks) is longer than one command takes at once."""
    def changes(prefix: str) -> list[Change]:
        out = [Change(event=f"e{i}", postings=[Posting(
            id=f"pay-{i}", kind="test", currency="DZD", time="2026-11-23T08:00:00Z", day="2026-11-23",
            ordinal=739943, entries=(Entry("world:payments", -100 - i), Entry(f"practitioner:p{i}:available",
                                                                             100 + i)))],
            sets=[(f"{prefix}:booking:b{i}", {"state": "paid", "rev": "1"})],
            guards=[(f"{prefix}:booking:b{i}", "rev", "")]) for i in range(1200)]
        out.append(Change(event="run", postings=[Posting(
            id=f"payout-{i}", kind="payout", currency="DZD", time="2026-11-29T08:00:00Z", day="2026-11-29",
            ordinal=739949, entries=(Entry(f"practitioner:p{i}:available", -100 - i),
                                     Entry(f"practitioner:p{i}:in_transit", 100 + i))) for i in range(1200)],
            dead=["entry_id", "0-1", "reason", "a test"]))
        return out

    slow = LedgerStore(redis_client, prefix="one_by_one", events_stream="one_by_one:out")
    assert all(r == 1 for r in (await slow.apply_many(changes("one_by_one")))[:1200])
    fast = LedgerStore(redis_client, prefix="planned", events_stream="planned:out")
    batch = changes("planned")
    before, seq = await fast.balances_read(sorted(plan.accounts(batch)), count=True)
    assert seq is not None
    made = plan.make(batch, "planned", before, seq)
    assert made is not None and made.posted == [1] * 1200 + [1200]
    assert await fast.write(made.args) is None
    assert await _state(redis_client, "planned") == await _state(redis_client, "one_by_one")
    assert len((await _state(redis_client, "planned"))["postings"]) == 2400
