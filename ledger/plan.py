"""A batch's writes worked out by the consumer, for the store's compare-and-set script.

The store's batch script (`store.APPLY_LUA`) takes a batch of changes and, in Lua, checks each against what
the ones before it left and builds what it writes (balances, entries with the balance after each, records):
exact whatever else is happening, and costly per event. Most batches need none of that care: no event in
them was applied before, and nothing they were decided from has moved since it was read. For those, the
consumer works out every value the batch writes here, from the balances and the postings count it read,
checking what the script would check (balanced postings, no forbidden negative, a posting id made once,
each guard against what the batch's earlier changes set or else against Redis). `store.WRITE_LUA` then
checks, in a few commands over the whole batch, that nothing it was worked out from has moved (its events
not applied, the postings count, every balance and guarded field as read, no posting id taken) and writes it,
one command per key. If anything moved, or if the plan cannot be made (a change the script would refuse,
an event twice), the batch goes to `APPLY_LUA`, which decides each change again against what Redis holds.
Either way Redis ends as `APPLY_LUA` alone would leave it (tests/test_ledger_plan.py compares the two).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgspec

from .rules import account_class, has_history, may_go_negative
from .store import Change

Balances = Mapping[tuple[str, str], tuple[int, str]]  # (currency, account) -> balance, its text ("" if none)

_text = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Plan:
    args: list[Any]  # the flat array WRITE_LUA reads
    posted: list[int]  # each change's new postings
    after: dict[tuple[str, str], tuple[int, str]]  # the balances the batch moved, as it leaves them
    seq: int  # the number of postings once it is written


class Unplanned(Exception):
    """The batch cannot be worked out here: the per-change script decides it."""


def accounts(changes: Iterable[Change]) -> set[tuple[str, str]]:
    """The (currency, account) pairs the changes' postings move: the balances a plan starts from."""
    return {(p.currency, e.account) for c in changes for p in c.postings for e in p.entries}


def make(changes: Sequence[Change], prefix: str, before: Balances, seq: int) -> Plan | None:
    """The plan of these changes, from `before` (every balance they move, as Redis holds it) and `seq` (the
    number of postings Redis holds); None if the per-change script must decide them."""
    try:
        return _make(changes, prefix + ":", before, seq)
    except Unplanned:
        return None


def _make(changes: Sequence[Change], p_: str, before: Balances, seq0: int) -> Plan:
    balances_at = p_ + "balances:"
    events: list[str] = []
    expect: dict[str, dict[str, str]] = {}  # key -> field -> its text before the batch ("" for none)
    records: dict[str, dict[str, str]] = {}  # what the batch's changes set, merged per key
    moved: dict[tuple[str, str], int] = {}  # (currency, account) -> balance, once the batch moved it
    postings: list[str] = []  # key, JSON, ...
    ids: list[str] = []
    lists: dict[str, list[str]] = {}
    daily: dict[tuple[str, str], int] = {}  # (daily key, account) -> net change
    days: dict[str, dict[str, int]] = {}
    strings: list[str] = []
    members: dict[str, list[str]] = {}
    scores: list[Any] = []
    news: list[str] = []
    dead: list[Any] = []  # each dead letter's field count, then its fields
    ndead = 0
    posted: list[int] = []
    seen: set[str] = set()
    made: set[str] = set()
    seq = seq0

    def expected(key: str, name: str, text: str) -> None:
        if expect.setdefault(key, {}).setdefault(name, text) != text:
            raise Unplanned
    for change in changes:
        event = change.event
        if event:
            if event in seen:
                raise Unplanned
            seen.add(event)
            events.append(event)
        for key, name, value in change.guards:
            if key.startswith(balances_at):
                k = (key[len(balances_at):], name)
                if k in moved:
                    if str(moved[k]) != value:
                        raise Unplanned
                    continue
            elif name in records.get(key, ()):
                if records[key][name] != value:
                    raise Unplanned
                continue
            expected(key, name, value)
        for posting in change.postings:
            pid = posting.id
            if pid in made or sum([e.amount for e in posting.entries]) != 0:
                raise Unplanned
            made.add(pid)
            seq += 1
            currency = posting.currency
            postings += (p_ + "posting:" + pid, posting.json())
            ids.append(pid)
            daily_key = p_ + "daily:" + currency + ":" + posting.day
            days.setdefault(p_ + "days:" + currency, {})[posting.day] = posting.ordinal
            head = ""
            for e in posting.entries:
                account, amount = e.account, e.amount
                k = (currency, account)
                balance = moved.get(k)
                if balance is None:
                    balance = before[k][0]
                balance += amount
                if balance < 0 and not may_go_negative(account):
                    raise Unplanned
                moved[k] = balance
                if has_history(account):
                    if not head:
                        head = (f'{{"seq":{seq},"posting":{_json(pid)},"kind":{_json(posting.kind)},"amount":')
                        tail = f',"time":{_json(posting.time)},"booking_id":{_json(posting.booking_id)}}}'
                    lists.setdefault(p_ + "entries:" + currency + ":" + account, []).append(
                        f'{head}{amount},"balance":{balance}{tail}')
                dk = (daily_key, account)
                daily[dk] = daily.get(dk, 0) + amount
        for key, values in change.sets:
            if values:
                records.setdefault(key, {}).update(values)
        for key, value in change.strings:
            strings += (key, value)
        for key, member in change.members:
            members.setdefault(key, []).append(member)
        for score in change.scores:
            scores += score
        for fields in change.events:
            if len(fields) != 5:
                raise ValueError("an event is written with 5 fields: id, type, v, time, body")
            news += fields
        if change.dead:
            dead += (len(change.dead), *change.dead)
            ndead += 1
        posted.append(len(change.postings))

    for (currency, account) in moved:
        expected(balances_at + currency, account, before[(currency, account)][1])
    args: list[Any] = [len(events), *events, seq0, len(expect)]
    for key, texts in expect.items():
        args += (key, len(texts), *texts, *texts.values())
    args += (len(ids), *postings, len(ids), *ids)
    by_currency: dict[str, list[str]] = {}
    for (currency, account), balance in moved.items():
        by_currency.setdefault(currency, []).extend((account, str(balance)))
    _groups(args, {balances_at + c: fv for c, fv in by_currency.items()})
    _groups(args, lists)
    by_class: dict[tuple[str, str], int] = {}
    for (key, account), amount in daily.items():
        kc = (key, account_class(account))
        by_class[kc] = by_class.get(kc, 0) + amount
    args.append(len(by_class))
    for (key, name), amount in by_class.items():
        args += (key, name, str(amount))
    args.append(sum(len(d) for d in days.values()))
    for key, found in days.items():
        for day, ordinal in found.items():
            args += (key, ordinal, day)
    _groups(args, {key: list(chain.from_iterable(values.items())) for key, values in records.items()})
    args += (len(strings) // 2, *strings)
    _groups(args, members)
    args += (len(scores) // 3, *scores, len(news) // 5, *news, ndead, *dead)
    return Plan(args, posted, {k: (v, str(v)) for k, v in moved.items()}, seq)


def _json(text: str) -> str:
    """A JSON string as the per-change script's cjson writes it (which also escapes `/` and DEL), so that an
    entry reads the same byte for byte whichever script wrote it."""
    return _text(text).decode().replace("/", "\\/").replace("\x7f", "\\u007f")


def _groups(args: list[Any], groups: Mapping[str, list[Any]]) -> None:
    """Per key, its items: the number of keys, then each key, its item count and its items."""
    args.append(len(groups))
    for key, items in groups.items():
        args += (key, len(items), *items)
