"""From an event to the ledger's change: read what the rules need (through a `View` that also sees the
changes decided earlier in the same batch), let the rules decide, and describe the whole write as one
`Change` for the store's script, guarded by what it was decided from.

Posting ids name what they are about, so a booking is paid once, settled once and carried once however
many events speak of it (a verdict and the completion job may both say a session completed: the first
settles it, the second changes nothing).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import rules
from .intake import TYPES, Incoming, Poison, utc_text
from .paydates import ZONE
from .rules import BookingMoney, Decision, Entry, Outcome, Policy, RuleError
from .store import Change, LedgerStore, Posting


class NotYet(Exception):
    """The event depends on one not applied yet (another consumer has it, or it failed): retry later."""


VERDICT_OUTCOMES = {
    "completed": Outcome.COMPLETED,
    "ended_early": Outcome.ENDED_EARLY,
    "client_no_show": Outcome.CLIENT_NO_SHOW,
    "practitioner_no_show": Outcome.PRACTITIONER_NO_SHOW,
    "both_no_show": Outcome.BOTH_NO_SHOW,
}
INTERRUPTED = "interrupted"
MAX_CARRIES = 50  # a booking's money carried along this many free reschedules at most, when going back along them
_BOOKING_FIELDS = ("booking_id", "rescheduled_from", "rescheduled_to", "new_booking_id")  # fields naming bookings
_HANDLERS = {t: "_" + t.replace(".", "_") for t in TYPES}  # event type -> the Processor method that decides it


@dataclass
class View:
    """Records and balances as the store has them, with the batch's earlier decisions laid over them."""

    store: LedgerStore
    records: dict[str, dict[str, str]] = field(default_factory=dict)
    balances: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    strings: dict[str, str | None] = field(default_factory=dict)
    seq: int | None = None  # the number of postings, once read (ledger.plan numbers the entries from it)

    async def prefetch(self, keys: list[str], *, events: list[str] | None = None) -> set[str]:
        """Read these records (those not in the view yet) and, in the same command, which of `events` the
        ledger applied already (returned)."""
        missing = [k for k in dict.fromkeys(keys) if k not in self.records]
        applied, found = await self.store.read(events or [], missing)
        for k, h in zip(missing, found, strict=True):
            self.records[k] = h
        return applied

    async def record(self, key: str) -> dict[str, str]:
        if key not in self.records:
            self.records[key] = await self.store.hash(key)
        return self.records[key]

    async def balance(self, currency: str, account: str) -> tuple[int, str]:
        k = (currency, account)
        if k not in self.balances:
            self.balances[k] = await self.store.balance(currency, account)
        return self.balances[k]

    async def string(self, key: str) -> str | None:
        if key not in self.strings:
            raw = await self.store.redis.get(key)
            self.strings[key] = None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
        return self.strings[key]

    async def read_balances(self, wanted: Iterable[tuple[str, str]]) -> None:
        """Read these balances (those not in the view yet), and the number of postings if not known yet."""
        missing = [k for k in wanted if k not in self.balances]
        if missing or self.seq is None:
            found, seq = await self.store.balances_read(missing, count=self.seq is None)
            self.balances.update(found)
            self.seq = seq if seq is not None else self.seq

    def lay(self, change: Change, *, balances: bool = True) -> None:
        """Assume the change is written (what later decisions in the batch are made from); its balances too
        unless the caller keeps them (the consumer's plan does, from the balances before the batch)."""
        for key, value in change.strings:
            self.strings[key] = value
        for key, values in change.sets:
            self.records.setdefault(key, {}).update(values)
        if not balances:
            return
        for posting in change.postings:
            for e in posting.entries:
                k = (posting.currency, e.account)
                if k in self.balances:
                    moved = self.balances[k][0] + e.amount
                    self.balances[k] = (moved, str(moved))

    def forget(self) -> None:
        self.records.clear()
        self.balances.clear()
        self.strings.clear()
        self.seq = None


def _day(time: datetime) -> tuple[str, int]:
    """The local (Africa/Algiers) day an instant counts in, and its ordinal."""
    return _day_of_minute(int(time.timestamp()) // 60)


@functools.lru_cache(maxsize=1024)
def _day_of_minute(minute: int) -> tuple[str, int]:
    local = datetime.fromtimestamp(minute * 60, ZONE).date()  # zones move by whole minutes
    return local.isoformat(), local.toordinal()


def _rev(record: dict[str, str]) -> tuple[str, str]:
    """The guard value of a record's revision and the next one."""
    current = record.get("rev", "")
    return current, str(int(current or "0") + 1)


def money_of(bid: str, r: dict[str, str]) -> BookingMoney:
    return BookingMoney(booking_id=bid, practitioner_id=r["practitioner_id"], client_id=r["client_id"],
                        currency=r["currency"], client_total=int(r["client_total"]),
                        practitioner_share=int(r["practitioner_share"]), platform_share=int(r["platform_share"]),
                        discount=int(r.get("discount", "0")), funder=rules.Funder(r.get("funder", "none")),
                        referrer_id=r.get("referrer_id", ""), referrer_credit=int(r.get("referrer_credit", "0")),
                        starts_at=int(r.get("starts_at", "0")), ends_at=int(r.get("ends_at", "0")))


def money_fields(m: BookingMoney) -> dict[str, str]:
    return {"booking_id": m.booking_id, "practitioner_id": m.practitioner_id, "client_id": m.client_id,
            "currency": m.currency, "client_total": str(m.client_total),
            "practitioner_share": str(m.practitioner_share), "platform_share": str(m.platform_share),
            "discount": str(m.discount), "funder": m.funder.value, "referrer_id": m.referrer_id,
            "referrer_credit": str(m.referrer_credit), "starts_at": str(m.starts_at), "ends_at": str(m.ends_at)}


def stable_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class Processor:
    def __init__(self, store: LedgerStore, policy: Policy, *, payout_minimum: int) -> None:
        self.store = store
        self.policy = policy
        self.payout_minimum = payout_minimum

    def prefetch_keys(self, ev: Incoming) -> list[str]:
        b = ev.body
        keys = [self.store.booking_key(v) for k in _BOOKING_FIELDS if type(v := b.get(k)) is str]
        if type(cid := b.get("complaint_id")) is str:
            keys.append(self.store.complaint_key(cid))
        if type(rid := b.get("refund_id")) is str:
            keys.append(self.store.refund_key(rid))
        return keys

    def _posting(self, ev: Incoming, pid: str, kind: str, currency: str, entries: list[Entry],
                 booking_id: str = "", corrects: str = "") -> list[Posting]:
        if not entries:
            return []
        rules.check_balanced(entries)
        day, ordinal = _day(ev.time)
        return [Posting(id=pid, kind=kind, currency=currency, time=ev.iso_time, day=day, ordinal=ordinal,
                        entries=tuple(entries), booking_id=booking_id, ref=ev.id, corrects=corrects)]

    async def decide(self, ev: Incoming, view: View) -> Change:
        """The change for one event; raises Poison (never applicable) or NotYet (retry later)."""
        try:
            handler = getattr(self, _HANDLERS[ev.type])
            change: Change = await handler(ev, view)
        except RuleError as exc:
            raise Poison(f"{ev.type}: {exc}") from None
        except (KeyError, ValueError, TypeError) as exc:
            if isinstance(exc, Poison):
                raise
            raise Poison(f"{ev.type}: malformed ({type(exc).__name__}: {exc})") from None
        change.event = ev.id
        return change

    # --- codes and bookings ---

    async def _code_created(self, ev: Incoming, view: View) -> Change:
        kind = ev.text("kind")
        return Change(strings=[(self.store.key("code", ev.text("code")), kind)])

    async def _booking_created(self, ev: Incoming, view: View) -> Change:
        bid = ev.text("booking_id")
        key = self.store.booking_key(bid)
        record = await view.record(key)
        total = ev.amount("client_total")
        if total == 0 and ("rescheduled_from" in ev.body or record):
            # a free reschedule's booking (it names the original's shares, not what was paid for it): its
            # money comes with booking.rescheduled, before or after this event
            return Change()
        if record:
            raise Poison(f"booking.created: booking {bid} was paid already")
        code = ev.text("code", required=False)
        kind = ev.text("code_kind", required=False) or (
            await view.string(self.store.key("code", code)) if code else None)
        discount = ev.amount("discount", 0)
        money = BookingMoney(
            booking_id=bid, practitioner_id=ev.text("practitioner_id"), client_id=ev.text("client_id"),
            currency=ev.text("currency"), client_total=total, practitioner_share=ev.amount("practitioner_share"),
            platform_share=ev.amount("platform_share"), discount=discount, funder=rules.funder_of(kind, discount),
            referrer_id=ev.text("referrer_id", required=False), referrer_credit=ev.amount("referrer_credit", 0),
            starts_at=ev.instant("starts_at"), ends_at=ev.instant("ends_at"))
        return Change(
            postings=self._posting(ev, f"pay:{bid}", "payment", money.currency, rules.payment(money), bid),
            guards=[(key, "rev", "")],
            sets=[(key, {**money_fields(money), "state": "paid", "rev": "1", "paid_at": ev.iso_time})],
            members=[(self.store.key("practitioners", money.currency), money.practitioner_id)])

    async def _booking(self, view: View, bid: str) -> tuple[str, dict[str, str]]:
        key = self.store.booking_key(bid)
        record = await view.record(key)
        if not record:
            raise NotYet(f"booking {bid} is not in the ledger yet")
        return key, record

    async def _settle(self, ev: Incoming, view: View, bid: str, outcome: Outcome) -> Change:
        key, record = await self._booking(view, bid)
        if record.get("state") not in ("paid", INTERRUPTED):
            return Change()  # settled or carried already: the first word on a booking's money stands
        money = money_of(bid, record)
        s = rules.settle(money, outcome, self.policy)
        rev, nxt = _rev(record)
        change = Change(
            postings=self._posting(ev, f"settle:{bid}", outcome.value, money.currency, s.entries, bid),
            guards=[(key, "rev", rev)],
            sets=[(key, {"state": "settled", "outcome": outcome.value, "earned": str(s.earned),
                         "refund": str(s.refund), "settled_at": ev.iso_time, "rev": nxt})])
        paid_for = await self._paid_booking(view, bid, record)
        return self._refund(change, ev, f"settle:{bid}", money.client_id, paid_for, money.currency, s.refund,
                            outcome.value)

    async def _paid_booking(self, view: View, bid: str, record: dict[str, str]) -> str:
        """The booking the client paid for: this one, or for a free reschedule the booking first paid for (its
        record says so; for one carried before records said it, found by going back along `carried_from`)."""
        for _hop in range(MAX_CARRIES):
            if record.get("paid_booking"):
                return record["paid_booking"]
            if not record.get("carried_from"):
                return bid
            bid = record["carried_from"]
            record = await view.record(self.store.booking_key(bid))
        return bid

    def _refund(self, change: Change, ev: Incoming, posting_id: str, client_id: str, booking_id: str,
                currency: str, amount: int, reason: str, complaint_id: str = "") -> Change:
        """What the posting `posting_id` owes the client becomes a refund, in the same change: its record,
        its place among the refunds to hand to the payment gateway, and the `refund.created` event. One per
        posting (its id is made from the posting's), against `booking_id`, the booking the client paid for
        (a free reschedule's is the booking first paid for: its record says which, `paid_booking`)."""
        if amount <= 0:
            return change
        rid = stable_id("refund", posting_id)
        change.sets.append((self.store.refund_key(rid), {
            "refund_id": rid, "client_id": client_id, "booking_id": booking_id, "complaint_id": complaint_id,
            "amount": str(amount), "currency": currency, "reason": reason, "status": "owed",
            "created_at": ev.iso_time, "posting": posting_id}))
        for key in (self.store.key("refunds"), self.store.key("refunds", "due"),
                    self.store.key("client", client_id, "refunds")):
            change.scores.append((key, ev.epoch, rid))
        change.events.append(event_fields("refund.created", {
            "refund_id": rid, "client_id": client_id, "booking_id": booking_id, "complaint_id": complaint_id or None,
            "amount": amount, "currency": currency, "reason": reason}, ev.time, stable_id(rid, "created")))
        return change

    async def _booking_cancelled(self, ev: Incoming, view: View) -> Change:
        bid = ev.text("booking_id")
        _key, record = await self._booking(view, bid)
        starts_at = ev.instant("starts_at") if "starts_at" in ev.body else int(record.get("starts_at", "0"))
        outcome = rules.cancellation_outcome(ev.text("by"), starts_at, ev.epoch, self.policy)
        return await self._settle(ev, view, bid, outcome)

    async def _booking_completed(self, ev: Incoming, view: View) -> Change:
        return await self._settle(ev, view, ev.text("booking_id"), Outcome.COMPLETED)

    async def _session_verdict(self, ev: Incoming, view: View) -> Change:
        bid, verdict = ev.text("booking_id"), ev.text("verdict")
        if verdict == INTERRUPTED:
            key, record = await self._booking(view, bid)
            if record.get("state") != "paid":
                return Change()
            rev, nxt = _rev(record)
            # the money waits in escrow for the free reschedule, and is earned when that session completes
            return Change(guards=[(key, "rev", rev)], sets=[(key, {"state": INTERRUPTED, "rev": nxt})])
        if verdict not in VERDICT_OUTCOMES:
            raise Poison(f"session.verdict: unknown verdict {verdict!r}")
        return await self._settle(ev, view, bid, VERDICT_OUTCOMES[verdict])

    async def _booking_rescheduled(self, ev: Incoming, view: View) -> Change:
        if "rescheduled_from" in ev.body or "rescheduled_to" in ev.body:
            old, new = ev.text("rescheduled_from"), ev.text("rescheduled_to")
        else:
            old, new = ev.text("booking_id"), ev.text("new_booking_id", "rescheduled_to")
        if old == new:
            raise Poison("booking.rescheduled: a booking cannot be rescheduled to itself")
        old_key, record = await self._booking(view, old)
        if record.get("state") not in ("paid", INTERRUPTED):
            return Change()  # its money went somewhere already
        new_key = self.store.booking_key(new)
        target = await view.record(new_key)
        if target and (target.get("carried_from") or int(target.get("client_total", "0"))):
            raise Poison(f"booking.rescheduled: booking {new} has money of its own")
        money = money_of(old, record)
        carried = BookingMoney(
            booking_id=new, practitioner_id=money.practitioner_id, client_id=money.client_id,
            currency=money.currency, client_total=money.client_total, practitioner_share=money.practitioner_share,
            platform_share=money.platform_share, discount=money.discount, funder=money.funder,
            referrer_id=money.referrer_id, referrer_credit=money.referrer_credit,
            starts_at=ev.instant("starts_at") if "starts_at" in ev.body else int(target.get("starts_at", "0")),
            ends_at=ev.instant("ends_at") if "ends_at" in ev.body else int(target.get("ends_at", "0")))
        old_rev, old_next = _rev(record)
        new_rev, new_next = _rev(target)
        return Change(
            postings=self._posting(ev, f"carry:{old}", "carried", money.currency, rules.carry(money, new), old),
            guards=[(old_key, "rev", old_rev), (new_key, "rev", new_rev)],
            sets=[(old_key, {"state": "carried", "carried_to": new, "rev": old_next}),
                  (new_key, {**money_fields(carried), "state": "paid", "carried_from": old, "rev": new_next,
                             "paid_at": ev.iso_time, "paid_booking": await self._paid_booking(view, old, record)})])

    # --- complaints ---

    async def _complaint_filed(self, ev: Incoming, view: View) -> Change:
        cid, bid = ev.text("complaint_id"), ev.text("booking_id")
        _bkey, record = await self._booking(view, bid)
        if record.get("state") != "settled":
            raise NotYet(f"booking {bid} is not settled yet")
        ckey = self.store.complaint_key(cid)
        complaint = await view.record(ckey)
        if complaint.get("held"):
            return Change()
        pid, currency = record["practitioner_id"], record["currency"]
        balance, raw = await view.balance(currency, rules.available(pid))
        entries = rules.hold(pid, int(record.get("earned", "0")), balance)
        amount = entries[1].amount if entries else 0
        return Change(
            postings=self._posting(ev, f"hold:{cid}", "complaint_hold", currency, entries, bid),
            guards=[(self.store.balances_key(currency), rules.available(pid), raw)],
            sets=[(ckey, {"held": str(amount), "currency": currency, "hold_posting": f"hold:{cid}",
                          "held_at": ev.iso_time})])

    async def _complaint_resolved(self, ev: Incoming, view: View) -> Change:
        cid = ev.text("complaint_id")
        ckey = self.store.complaint_key(cid)
        complaint = await view.record(ckey)
        if "held" not in complaint:
            raise NotYet(f"complaint {cid} has no hold yet")
        if complaint.get("resolution_posting"):
            return Change()
        decision = Decision(ev.text("decision"))
        refund = ev.body.get("refund_minor")
        if refund is not None and (type(refund) is not int or refund < 0):
            raise Poison("complaint.resolved: refund_minor must be a non-negative integer")
        bid = complaint.get("booking_id", "") or ev.text("booking_id")
        _bkey, record = await self._booking(view, bid)
        entries = rules.resolve(record["practitioner_id"], record["client_id"], int(complaint["held"]), decision,
                                refund)
        owed = sum(e.amount for e in entries if e.account == rules.refund_payable(record["client_id"]))
        change = Change(
            postings=self._posting(ev, f"resolve:{cid}", f"complaint_{decision.value}", complaint["currency"],
                                   entries, bid),
            sets=[(ckey, {"resolution_posting": f"resolve:{cid}"})])
        paid_for = await self._paid_booking(view, bid, record)
        return self._refund(change, ev, f"resolve:{cid}", record["client_id"], paid_for, complaint["currency"], owed,
                            "complaint_upheld", cid)

    # --- payouts ---

    async def _payout_run(self, ev: Incoming, view: View) -> Change:
        sunday, date, currency = ev.text("sunday"), ev.text("date"), ev.text("currency")
        pids = await self.store.practitioners(currency)
        found = {pid: await view.balance(currency, rules.available(pid)) for pid in pids}
        decided = rules.payouts({pid: b for pid, (b, _raw) in found.items()}, self.payout_minimum)
        change = Change()
        for pid, amount in decided.items():
            posting_id = f"payout:{pid}:{sunday}"
            payout_id = stable_id(posting_id)
            change.postings += self._posting(ev, posting_id, "payout", currency, rules.payout_sent(pid, amount))
            change.guards.append((self.store.balances_key(currency), rules.available(pid), found[pid][1]))
            change.sets.append((self.store.payout_key(payout_id), {
                "payout_id": payout_id, "practitioner_id": pid, "amount": str(amount), "currency": currency,
                "sunday": sunday, "date": date, "status": "in_transit", "created_at": ev.iso_time}))
            change.scores.append((self.store.key("payouts", sunday), amount, payout_id))
            change.events.append(event_fields("payout.created", {
                "payout_id": payout_id, "practitioner_id": pid, "amount": amount, "currency": currency,
                "sunday": sunday, "date": date}, ev.time, stable_id(payout_id, "created")))
        return change

    async def _payout_answer(self, ev: Incoming, view: View, ok: bool) -> Change:
        payout_id = ev.text("payout_id")
        payout = await view.record(self.store.payout_key(payout_id))
        if not payout:
            raise NotYet(f"payout {payout_id} is not in the ledger yet")
        pid, amount = payout["practitioner_id"], int(payout["amount"])
        return Change(postings=self._posting(ev, f"payout-answer:{payout_id}", "payout_paid" if ok else "payout_failed",
                                             payout["currency"], rules.payout_answered(pid, amount, ok)))

    async def _payout_paid(self, ev: Incoming, view: View) -> Change:
        return await self._payout_answer(ev, view, True)

    async def _payout_failed(self, ev: Incoming, view: View) -> Change:
        return await self._payout_answer(ev, view, False)

    # --- refunds ---

    async def _refund_paid(self, ev: Incoming, view: View) -> Change:
        """The payment gateway made a refund: the client's money leaves what the platform owes them."""
        rid = ev.text("refund_id")
        key = self.store.refund_key(rid)
        refund = await view.record(key)
        if not refund:
            raise NotYet(f"refund {rid} is not in the ledger yet")
        if refund.get("paid_posting"):
            return Change()
        client_id, amount = refund["client_id"], int(refund["amount"])
        return Change(postings=self._posting(ev, f"refund-paid:{rid}", "refund_paid", refund["currency"],
                                             rules.refund_made(client_id, amount), refund.get("booking_id", "")),
                      sets=[(key, {"paid_posting": f"refund-paid:{rid}"})])


def event_fields(type_: str, body: dict[str, Any], time: datetime, event_id: str) -> list[str]:
    """Stream fields of an event the ledger writes (the server's format: id, type, v, time, body)."""
    return [event_id, type_, "1", utc_text(time),
            json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)]
