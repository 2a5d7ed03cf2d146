"""The ledger against an auditor: random sequences of bookings (with and without codes), cancellations,
completions, no-shows, interruptions and free reschedules, complaints upheld and rejected, payouts and the
bank's answers, refunds and the payment gateway's answers go through the event stream and the real
consumer on a real Redis. A model of our own, written from the business rules and not from the ledger's
code, rebuilds every balance from the requests and the replies; after every step the two agree, every
posting sums to zero, no account that must not go negative does, the money clients paid is all accounted
for, every dinar owed to a client is one refund against its booking, and a fresh replay of the stream
gives the same balances.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger.consumer import replay
from ledger.processor import Processor
from ledger.store import LedgerStore
from session_server.events import EVENTS_STREAM, Event

from .ledger_support import POLICY, T0, at, created, make_consumer, publish, transition, verdict

COMMISSION = 50_000
MINIMUM = 100_000
CLIENTS = ("c1", "c2", "c3")
PRACTITIONERS = ("p1", "p2")
# The money accounts may go below zero only where money enters or leaves: the outside world, and the
# platform's funded discounts (a cost).
MAY_BE_NEGATIVE = ("world:",)


@dataclass
class Booking:
    bid: str
    pid: str
    cid: str
    total: int
    share: int
    platform: int
    discount: int
    platform_funded: bool
    referrer: str | None
    credit: int
    starts: int
    state: str = "paid"  # paid | interrupted | settled | carried
    earned: int = 0
    complained: bool = False
    paid_for: str = ""  # a free reschedule's: the booking the client paid for (its refunds return that payment)

    @property
    def payment(self) -> str:
        return self.paid_for or self.bid


@dataclass
class Auditor:
    """Expected balances, from the business rules (docs/ledger.md), kept apart from the ledger's code."""

    balances: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    paid_in: int = 0
    refunds: list[tuple[str, str, int]] = field(default_factory=list)  # (client, booking, amount) owed, one each

    def move(self, source: str, target: str, amount: int) -> None:
        assert amount >= 0
        self.balances[source] -= amount
        self.balances[target] += amount

    def settle(self, b: Booking, refund: int, earned: int, session_held: bool) -> None:
        escrow = f"booking:{b.bid}:escrow"
        self.move(escrow, f"client:{b.cid}:refund_payable", refund)
        if refund:
            self.refunds.append((b.cid, b.payment, refund))
        self.move(escrow, f"practitioner:{b.pid}:available", earned)
        rest = b.total - refund - earned
        credit = min(b.credit, rest) if session_held and b.referrer else 0
        if credit:
            self.move(escrow, f"referral:{b.referrer}:credits", credit)
        self.move(escrow, "platform:revenue", rest - credit)
        if session_held and b.platform_funded:
            self.move("platform:discounts", "platform:revenue", b.discount)
        b.state, b.earned = "settled", earned

    def nonzero(self) -> dict[str, int]:
        return {k: v for k, v in self.balances.items() if v}


class LedgerMachine(RuleBasedStateMachine):
    redis_url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = aioredis.Redis.from_url(self.redis_url)
        self.run(self.redis.flushdb())
        # batches of two: most steps' events go through the catch-up path, decided a batch ahead
        self.consumer = make_consumer(self.redis, minimum=MINIMUM, batch=2)
        self.audit = Auditor()
        self.bookings: dict[str, Booking] = {}
        self.events: list[Event] = []
        self.complaints: dict[str, tuple[str, int]] = {}  # complaint id -> (booking id, held)
        self.open_complaints: list[str] = []
        self.payouts: list[dict[str, str]] = []
        self.refunds_made: set[str] = set()
        self.ids = itertools.count(1)
        self.now = T0
        self.postings_checked = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()

    def send(self, *events: Event) -> None:
        self.now += 60
        self.events.extend(events)
        self.run(publish(self.redis, *events))
        self.run(self._drain())

    async def _drain(self) -> None:
        await self.consumer.ensure_group()
        while await self.consumer.read_once(block=False):
            pass
        pending = await self.redis.xpending(EVENTS_STREAM, "ledger")
        assert pending["pending"] == 0, "an event was left unapplied"

    def open_bookings(self, *states: str) -> list[str]:
        return sorted(b.bid for b in self.bookings.values() if b.state in states)

    @initialize()
    def codes(self) -> None:
        self.send(Event("code.created", {"code": "CARE", "kind": "practitioner", "owner_id": "p1"}, time=at(self.now)),
                  Event("code.created", {"code": "PROMO", "kind": "promotion", "owner_id": None}, time=at(self.now)),
                  Event("code.created", {"code": "FRIEND", "kind": "referral", "owner_id": "c9"}, time=at(self.now)))

    # --- requests ---

    @rule(pid=st.sampled_from(PRACTITIONERS), cid=st.sampled_from(CLIENTS),
          price=st.integers(1, 8).map(lambda n: n * 50_000),
          code=st.sampled_from([None, "CARE", "PROMO", "FRIEND"]), discount=st.integers(0, 60_000),
          days=st.integers(0, 5))
    def book(self, pid: str, cid: str, price: int, code: str | None, discount: int, days: int) -> None:
        bid = f"b{next(self.ids)}"
        share, platform, credit, referrer = price, COMMISSION, 0, None
        if code == "CARE" and pid == "p1":
            discount = min(discount, price)
            share -= discount
        elif code in ("PROMO", "FRIEND"):
            discount = min(discount, COMMISSION)
            platform -= discount
            if code == "FRIEND":
                referrer, credit = "c9", min(5_000, platform)
        else:
            code, discount = None, 0
        starts = self.now + days * 86400 + 7200
        b = Booking(bid, pid, cid, share + platform, share, platform, discount, code in ("PROMO", "FRIEND"),
                    referrer, credit, starts)
        self.bookings[bid] = b
        self.audit.move("world:payments", f"booking:{bid}:escrow", b.total)
        self.audit.paid_in += b.total
        self.send(created(bid, pid=pid, cid=cid, share=share, platform=platform, discount=discount, code=code,
                          referrer=referrer, credit=credit, starts=starts, now=self.now))

    @precondition(lambda self: self.open_bookings("paid"))
    @rule(data=st.data(), how=st.sampled_from(["booking.completed", "completed", "ended_early"]))
    def complete(self, data: st.DataObject, how: str) -> None:
        b = self.bookings[data.draw(st.sampled_from(self.open_bookings("paid")))]
        self.audit.settle(b, 0, b.share, True)
        ev = (transition(b.bid, "completed", pid=b.pid, cid=b.cid, now=self.now, automatic=True)
              if how == "booking.completed" else verdict(b.bid, how, now=self.now))
        self.send(ev)

    @precondition(lambda self: self.open_bookings("paid"))
    @rule(data=st.data(), by=st.sampled_from(["client", "practitioner", "admin"]), hours=st.integers(0, 72))
    def cancel(self, data: st.DataObject, by: str, hours: int) -> None:
        b = self.bookings[data.draw(st.sampled_from(self.open_bookings("paid")))]
        when = b.starts - hours * 3600
        if by == "client" and hours < 24:  # late: half back, half the practitioner's share earned
            refund = b.total // 2
            self.audit.settle(b, refund, min(b.share // 2, b.total - refund), False)
        else:
            self.audit.settle(b, b.total, 0, False)
        self.send(transition(b.bid, "cancelled", pid=b.pid, cid=b.cid, now=when, by=by, reason="r",
                             starts_at=at(b.starts).isoformat().replace("+00:00", "Z")))

    @precondition(lambda self: self.open_bookings("paid"))
    @rule(data=st.data(), what=st.sampled_from(["client_no_show", "practitioner_no_show", "both_no_show"]))
    def no_show(self, data: st.DataObject, what: str) -> None:
        b = self.bookings[data.draw(st.sampled_from(self.open_bookings("paid")))]
        if what == "client_no_show":
            self.audit.settle(b, 0, b.share, False)
        else:
            self.audit.settle(b, b.total, 0, False)
        self.send(verdict(b.bid, what, now=self.now))

    @precondition(lambda self: self.open_bookings("paid"))
    @rule(data=st.data())
    def interrupt(self, data: st.DataObject) -> None:
        b = self.bookings[data.draw(st.sampled_from(self.open_bookings("paid")))]
        b.state = "interrupted"  # nothing moves: the money waits for the reschedule
        self.send(verdict(b.bid, "interrupted", now=self.now))

    @precondition(lambda self: self.open_bookings("interrupted"))
    @rule(data=st.data(), spelling=st.booleans(), created_first=st.booleans())
    def reschedule(self, data: st.DataObject, spelling: bool, created_first: bool) -> None:
        old = self.bookings[data.draw(st.sampled_from(self.open_bookings("interrupted")))]
        new = f"b{next(self.ids)}"
        starts = self.now + 86400
        self.audit.move(f"booking:{old.bid}:escrow", f"booking:{new}:escrow", old.total)
        old.state = "carried"
        self.bookings[new] = Booking(new, old.pid, old.cid, old.total, old.share, old.platform, old.discount,
                                     old.platform_funded, old.referrer, old.credit, starts, paid_for=old.payment)
        body: dict[str, Any] = ({"rescheduled_from": old.bid, "rescheduled_to": new} if spelling else
                                {"booking_id": old.bid, "new_booking_id": new})
        body.update({"client_total": 0, "practitioner_share": old.share, "platform_share": old.platform})
        moved = Event("booking.rescheduled", body, time=at(self.now))
        free = created(new, pid=old.pid, cid=old.cid, share=0, platform=0, starts=starts, now=self.now)
        self.send(*((free, moved) if created_first else (moved, free)))

    @precondition(lambda self: any(b.state == "settled" and not b.complained for b in self.bookings.values()))
    @rule(data=st.data())
    def complain(self, data: st.DataObject) -> None:
        b = self.bookings[data.draw(st.sampled_from(sorted(
            x.bid for x in self.bookings.values() if x.state == "settled" and not x.complained)))]
        b.complained = True
        cid = f"k{next(self.ids)}"
        available = self.audit.balances[f"practitioner:{b.pid}:available"]
        held = min(b.earned, available)
        self.audit.move(f"practitioner:{b.pid}:available", f"practitioner:{b.pid}:held", held)
        self.send(Event("complaint.filed", {"complaint_id": cid, "booking_id": b.bid, "client_id": b.cid,
                                            "practitioner_id": b.pid, "reason": "conduct", "has_text": False},
                        time=at(self.now)))
        # the reply: what the ledger says it held
        reply = self.run(self.consumer.store.hash(self.consumer.store.complaint_key(cid)))
        assert int(reply["held"]) == held
        self.complaints[cid] = (b.bid, held)
        self.open_complaints.append(cid)

    @precondition(lambda self: self.open_complaints)
    @rule(data=st.data(), upheld=st.booleans(), part=st.sampled_from([None, 0, 1, 2]))
    def resolve(self, data: st.DataObject, upheld: bool, part: int | None) -> None:
        cid = data.draw(st.sampled_from(self.open_complaints))
        self.open_complaints.remove(cid)
        bid, held = self.complaints[cid]
        b = self.bookings[bid]
        refund = (held if part is None else held * part // 2) if upheld else 0
        self.audit.move(f"practitioner:{b.pid}:held", f"client:{b.cid}:refund_payable", refund)
        self.audit.move(f"practitioner:{b.pid}:held", f"practitioner:{b.pid}:available", held - refund)
        if refund:
            self.audit.refunds.append((b.cid, b.payment, refund))
        self.send(Event("complaint.resolved", {"complaint_id": cid, "booking_id": bid, "client_id": b.cid,
                                               "practitioner_id": b.pid, "decision": "upheld" if upheld else "rejected",
                                               "refund_minor": refund, "held": held}, time=at(self.now)))

    @rule()
    def payout_run(self) -> None:
        sunday = f"2026-{next(self.ids):05d}"  # a week of its own
        expected = {}
        for pid in PRACTITIONERS:
            amount = self.audit.balances[f"practitioner:{pid}:available"]
            if amount >= MINIMUM:
                expected[pid] = amount
                self.audit.move(f"practitioner:{pid}:available", f"practitioner:{pid}:in_transit", amount)
        run = Event("payout.run", {"sunday": sunday, "date": sunday, "currency": "DZD"}, time=at(self.now))
        self.send(run)
        self.send(run)  # delivered twice: paid once
        made = self.run(self.consumer.store.payouts_of(sunday))
        assert {p["practitioner_id"]: int(p["amount"]) for p in made} == expected
        self.payouts += made

    @precondition(lambda self: self.payouts)
    @rule(data=st.data(), ok=st.booleans())
    def bank_answers(self, data: st.DataObject, ok: bool) -> None:
        p = self.payouts.pop(data.draw(st.integers(0, len(self.payouts) - 1)))
        pid, amount = p["practitioner_id"], int(p["amount"])
        self.audit.move(f"practitioner:{pid}:in_transit", f"practitioner:{pid}:{'paid' if ok else 'available'}",
                        amount)
        self.send(Event("payout.paid" if ok else "payout.failed", {"payout_id": p["payout_id"]}, time=at(self.now)))

    def ledger_refunds(self) -> list[dict[str, str]]:
        return self.run(self.consumer.store.refunds(count=10_000))

    @precondition(lambda self: len(self.refunds_made) < len(self.audit.refunds))
    @rule(data=st.data(), ok=st.booleans())
    def gateway_answers(self, data: st.DataObject, ok: bool) -> None:
        """The payment gateway made a refund (the money leaves what the platform owes), or could not (nothing
        moves: it stays owed)."""
        r = data.draw(st.sampled_from([r for r in self.ledger_refunds() if r["refund_id"] not in self.refunds_made]))
        if ok:
            self.audit.move(f"client:{r['client_id']}:refund_payable", f"client:{r['client_id']}:refunded",
                            int(r["amount"]))
            self.refunds_made.add(r["refund_id"])
        self.send(Event("refund.paid" if ok else "refund.failed",
                        {"refund_id": r["refund_id"], "client_id": r["client_id"], "booking_id": r["booking_id"],
                         "amount": int(r["amount"]), "currency": "DZD"}, time=at(self.now)))

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        self.send(data.draw(st.sampled_from(self.events)))  # the same event id again: nothing changes

    # --- after every step ---

    def ledger_balances(self, prefix: str = "ledger") -> dict[str, int]:
        found = self.run(LedgerStore(self.redis, prefix=prefix).balances("DZD"))
        return {k: v for k, v in found.items() if v}

    @invariant()
    def the_ledger_agrees_with_the_auditor(self) -> None:
        assert self.ledger_balances() == self.audit.nonzero()

    @invariant()
    def every_posting_sums_to_zero_and_no_account_goes_negative_that_must_not(self) -> None:
        postings = self.run(self.consumer.store.postings(self.postings_checked))
        for p in postings:
            assert sum(e[1] for e in p["entries"]) == 0, p
        self.postings_checked += len(postings)
        for account, balance in self.ledger_balances().items():
            assert balance >= 0 or account.startswith(MAY_BE_NEGATIVE) or account == "platform:discounts", account

    @invariant()
    def the_money_clients_paid_is_all_accounted_for(self) -> None:
        b = self.ledger_balances()
        assert -b.get("world:payments", 0) == self.audit.paid_in
        held_or_pending = sum(v for k, v in b.items() if k.endswith((":escrow", ":held", ":in_transit")))
        earned = sum(v for k, v in b.items() if k.endswith((":available", ":paid")))
        platform = b.get("platform:revenue", 0) + b.get("platform:discounts", 0)
        refunds = sum(v for k, v in b.items() if k.endswith((":refund_payable", ":refunded")))
        credits = sum(v for k, v in b.items() if k.endswith(":credits"))
        assert self.audit.paid_in == earned + platform + credits + refunds + held_or_pending

    @invariant()
    def every_dinar_owed_to_a_client_is_one_refund_against_its_booking(self) -> None:
        made = sorted((r["client_id"], r["booking_id"], int(r["amount"])) for r in self.ledger_refunds())
        assert made == sorted(self.audit.refunds)

    @invariant()
    def a_fresh_replay_gives_the_same_balances(self) -> None:
        prefix = f"replay{next(self.ids)}"
        fresh = LedgerStore(self.redis, prefix=prefix, events_stream=f"{prefix}:events")
        self.run(replay(fresh, Processor(fresh, POLICY, payout_minimum=MINIMUM), self.redis, EVENTS_STREAM))
        assert self.ledger_balances(prefix) == self.ledger_balances()
        keys = self.run(self.redis.keys(f"{prefix}:*"))
        if keys:
            self.run(self.redis.delete(*keys))


def test_the_ledger_keeps_every_dinar_through_random_histories(system_redis_url: str) -> None:
    LedgerMachine.redis_url = system_redis_url
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=20, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
