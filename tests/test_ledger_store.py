"""The ledger's write: one script call takes a batch of changes in order, and each is written whole or not at
all — a change refused in the middle of a batch (stale, unbalanced, taking an account below zero) leaves
no trace, while the ones before and after it are written and see each other's effects."""

from __future__ import annotations

import redis.asyncio as aioredis

from ledger.rules import Entry
from ledger.store import Change, LedgerStore, Posting, Refused


def _posting(pid: str, *entries: tuple[str, int]) -> Posting:
    return Posting(id=pid, kind="test", currency="DZD", time="2026-11-23T08:00:00Z", day="2026-11-23",
                   ordinal=739943, entries=tuple(Entry(a, n) for a, n in entries), booking_id="b1")


def _pay(event: str, pid: str, account: str, amount: int, *, guards: list[tuple[str, str, str]] | None = None,
         sets: list[tuple[str, dict[str, str]]] | None = None) -> Change:
    return Change(event=event, postings=[_posting(pid, ("world:payments", -amount), (account, amount))],
                  guards=guards or [], sets=sets or [])


async def test_a_refused_change_in_a_batch_writes_nothing_and_the_others_are_written(
        redis_client: aioredis.Redis) -> None:
    store = LedgerStore(redis_client)
    await redis_client.hset("ledger:booking:b1", mapping={"rev": "2"})
    results = await store.apply_many([
        _pay("e1", "p-1", "practitioner:p1:available", 100,
             sets=[("ledger:booking:b1", {"rev": "3", "state": "settled"})]),
        # decided from revision 2, which the change before it in the same call moved on: stale
        _pay("e2", "p-2", "practitioner:p1:available", 50, guards=[("ledger:booking:b1", "rev", "2")],
             sets=[("ledger:booking:b1", {"rev": "3", "state": "carried"})]),
        # decided from the balance the first change left: it holds
        Change(event="e3", postings=[_posting("p-3", ("practitioner:p1:available", -100),
                                              ("practitioner:p1:held", 100))],
               guards=[("ledger:balances:DZD", "practitioner:p1:available", "100")]),
        Change(event="e4", postings=[_posting("p-4", ("practitioner:p1:available", 5),
                                              ("platform:revenue", -4))]),  # unbalanced
        Change(event="e5", postings=[_posting("p-5", ("practitioner:p1:available", -1),
                                              ("practitioner:p1:paid", 1))]),  # below zero
        _pay("e1", "p-6", "practitioner:p1:available", 7),  # e1 again: applied already, in this call
        _pay("e7", "p-1", "practitioner:p1:available", 9),  # a posting id made already: not made twice
    ])
    assert results[0] == 1 and results[2] == 1 and results[5] == 0 and results[6] == 0
    assert [(r.status, r.detail) for r in results if isinstance(r, Refused)] == [
        ("stale", "ledger:booking:b1 rev"), ("unbalanced", "p-4"), ("negative", "practitioner:p1:available")]
    assert await store.balances("DZD") == {
        "world:payments": -100, "practitioner:p1:available": 0, "practitioner:p1:held": 100}
    assert await store.hash("ledger:booking:b1") == {"rev": "3", "state": "settled"}
    assert [p["id"] for p in await store.postings()] == ["p-1", "p-3"]
    assert await store.processed(["e1", "e2", "e3", "e4", "e5", "e7"]) == {"e1", "e3", "e7"}
    entries = await store.entries("DZD", "practitioner:p1:available")
    assert [(e["seq"], e["posting"], e["amount"], e["balance"]) for e in entries] == [
        (1, "p-1", 100, 100), (2, "p-3", -100, 0)]
    # the outside world keeps a balance, and its history is the postings: no entry list of its own
    assert await store.entries("DZD", "world:payments") == []

    # the refused ones, decided again from what is there now, are written
    again = await store.apply_many([
        _pay("e2", "p-2", "practitioner:p1:available", 50, guards=[("ledger:booking:b1", "rev", "3")]),
        Change(event="e5", postings=[_posting("p-5", ("practitioner:p1:available", -1),
                                              ("practitioner:p1:paid", 1))]),
        _pay("e8", "p-3", "practitioner:p1:available", 9),  # a posting id an earlier call made: not made twice
    ])
    assert again == [1, 1, 0]
    assert (await store.balances("DZD"))["practitioner:p1:available"] == 49
    assert [p["id"] for p in await store.postings()] == ["p-1", "p-3", "p-2", "p-5"]
