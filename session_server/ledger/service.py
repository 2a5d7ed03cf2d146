"""The ledger's services for the HTTP edge: complaints, the bank's and the payment gateway's answers, payout
dates and the views (a practitioner's statement, refunds, the platform's revenue and liabilities per day)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ledger import paydates, rules
from ledger.payouts import PayoutCalendar
from ledger.processor import event_fields
from ledger.store import LedgerStore

from ..bookings.errors import BookingNotFound
from ..bookings.model import load_booking
from ..clock import Clock
from .errors import (
    ComplaintNotFound,
    ComplaintWindowClosed,
    NotAnEstimatedHoliday,
    RefundNotFound,
    SessionNotSettled,
)
from .store import ComplaintStore, ComplaintText

DAY_S = 86400
STATEMENT_ACCOUNTS = ("available", "held", "in_transit", "paid")
RECORDS_PAGE = 500  # complaints or refunds read at once while looking for those of one status


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _event_id() -> str:
    return uuid.uuid4().hex


async def _with_status(page: Callable[[int, int], Awaitable[list[dict[str, str]]]], status: str | None,
                       limit: int) -> list[dict[str, str]]:
    """Up to `limit` records with this status (any if None), in the order `page(start, count)` reads them:
    page by page until that many are found, so that one waiting long is not lost behind newer ones of
    another status."""
    found: list[dict[str, str]] = []
    start, count = 0, max(limit, RECORDS_PAGE)
    while len(found) < limit:
        records = await page(start, count)
        found += [r for r in records if r and (status is None or r.get("status") == status)]
        if len(records) < count:
            break
        start += count
    return found[:limit]


@dataclass
class LedgerService:
    store: LedgerStore
    complaints: ComplaintStore
    text: ComplaintText
    clock: Clock
    currency: str
    complaint_window_days: int
    payout_minimum: int  # minor units: a smaller available balance waits for a later payout

    @property
    def calendar(self) -> PayoutCalendar:
        return PayoutCalendar(self.store)

    # --- complaints ---

    async def file_complaint(self, booking_id: str, client_id: str, reason: str, text: str | None) -> dict[str, Any]:
        now = int(self.clock.now())
        booking = await load_booking(self.store.redis, booking_id)
        if booking is None or booking.party(client_id, "client") is None:
            raise BookingNotFound()
        record = await self.store.hash(self.store.booking_key(booking_id))
        if record.get("state") != "settled":
            raise SessionNotSettled("this session's payment is not settled yet; a complaint comes after the session")
        ends_at = int(record.get("ends_at", "0"))
        if now > ends_at + self.complaint_window_days * DAY_S:
            raise ComplaintWindowClosed(
                f"complaints are taken for {self.complaint_window_days} days after the session")
        cid = uuid.uuid4().hex
        fields = {"complaint_id": cid, "booking_id": booking_id, "client_id": client_id,
                  "practitioner_id": record["practitioner_id"], "reason": reason, "status": "open",
                  "filed_at": str(now), "has_text": "1" if text else "0", "shared": "0"}
        if text:
            fields.update(self.text.seal(cid, text))
        event = event_fields("complaint.filed", {"complaint_id": cid, "booking_id": booking_id,
                                                 "client_id": client_id,
                                                 "practitioner_id": record["practitioner_id"], "reason": reason,
                                                 "has_text": bool(text)},
                             datetime.fromtimestamp(now, UTC), _event_id())
        await self.complaints.file(fields, record["practitioner_id"], now, event)
        return await self.complaint(cid)

    async def complaint(self, cid: str) -> dict[str, Any]:
        record = await self.store.hash(self.store.complaint_key(cid))
        if not record:
            raise ComplaintNotFound("no such complaint")
        return record

    def complaint_view(self, record: dict[str, Any], *, with_text: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": record["complaint_id"], "booking_id": record["booking_id"], "client_id": record["client_id"],
            "practitioner_id": record["practitioner_id"], "reason": record["reason"], "status": record["status"],
            "filed_at": _iso(int(record["filed_at"])),
            "held_minor": int(record["held"]) if "held" in record else None,
            "currency": record.get("currency", self.currency),
            "refund_minor": int(record["refund"]) if "refund" in record else None,
            "resolved_at": record.get("resolved_at"), "has_text": record.get("has_text") == "1",
            "shared_with_practitioner": record.get("shared") == "1"}
        out["text"] = self.text.open(record["complaint_id"], record) if with_text else None
        return out

    async def complaint_list(self, practitioner_id: str | None, status: str | None, limit: int, *,
                             oldest_first: bool = False, client_id: str | None = None) -> list[dict[str, Any]]:
        """Up to `limit` complaints with this status (any if None), the newest first (or the oldest: a queue),
        every one's, a practitioner's or a client's: read page by page until that many are found, so that a
        complaint waiting long is not lost behind newer ones decided since."""
        async def page(start: int, count: int) -> list[dict[str, str]]:
            ids = await self.complaints.complaint_ids(practitioner_id, start, count, oldest_first=oldest_first,
                                                      client_id=client_id)
            return await self.store.hashes([self.store.complaint_key(i) for i in ids])

        return await _with_status(page, status, limit)

    async def resolve(self, cid: str, decision: str, refund: int | None, by: str) -> dict[str, Any]:
        record = await self.complaint(cid)
        now = self.clock.now()
        event = event_fields("complaint.resolved", {"complaint_id": cid, "booking_id": record["booking_id"],
                                                    "client_id": record["client_id"],
                                                    "practitioner_id": record["practitioner_id"],
                                                    "decision": decision, "by": by},
                             datetime.fromtimestamp(now, UTC), _event_id())
        await self.complaints.resolve(cid, decision, refund, by, _iso(now), event)
        return await self.complaint(cid)

    async def share(self, cid: str, by: str) -> dict[str, Any]:
        record = await self.complaint(cid)
        event = event_fields("complaint.shared", {"complaint_id": cid, "booking_id": record["booking_id"],
                                                  "practitioner_id": record["practitioner_id"], "by": by},
                             datetime.fromtimestamp(self.clock.now(), UTC), _event_id())
        await self.complaints.share(cid, event)
        return await self.complaint(cid)

    # --- payouts ---

    async def answer_payout(self, payout_id: str, ok: bool, reason: str) -> dict[str, str]:
        now = self.clock.now()
        payout = await self.store.hash(self.store.payout_key(payout_id))
        status = "paid" if ok else "failed"
        body = {"payout_id": payout_id, "practitioner_id": payout.get("practitioner_id"),
                "amount": int(payout.get("amount", "0")), "currency": payout.get("currency"),
                "sunday": payout.get("sunday")}
        if not ok:
            body["reason"] = reason
        event = event_fields(f"payout.{status}", body, datetime.fromtimestamp(now, UTC), _event_id())
        await self.complaints.answer(payout_id, status, reason, _iso(now), event)
        return await self.store.hash(self.store.payout_key(payout_id))

    # --- refunds ---

    async def refund(self, refund_id: str) -> dict[str, str]:
        record = await self.store.hash(self.store.refund_key(refund_id))
        if not record:
            raise RefundNotFound("no such refund")
        return record

    async def refunds(self, client_id: str | None, status: str | None, limit: int) -> list[dict[str, str]]:
        """Up to `limit` refunds with this status (any if None), the newest first: every client's or one's."""

        async def page(start: int, count: int) -> list[dict[str, str]]:
            return await self.store.refunds(client_id=client_id, start=start, count=count)

        return await _with_status(page, status, limit)

    async def answer_refund(self, refund_id: str, ok: bool, reason: str, attempt: int) -> dict[str, str]:
        now = self.clock.now()
        refund = await self.refund(refund_id)
        status = "paid" if ok else "failed"
        body: dict[str, Any] = {"refund_id": refund_id, "client_id": refund["client_id"],
                                "booking_id": refund["booking_id"], "amount": int(refund["amount"]),
                                "currency": refund["currency"]}
        if not ok:
            body["reason"] = reason
        event = event_fields(f"refund.{status}", body, datetime.fromtimestamp(now, UTC), _event_id())
        await self.complaints.answer_refund(refund_id, status, reason, _iso(now), event, attempt, int(now))
        return await self.refund(refund_id)

    async def retry_refund(self, refund_id: str, by: str) -> dict[str, str]:
        now = self.clock.now()
        refund = await self.refund(refund_id)
        event = event_fields("refund.retried", {"refund_id": refund_id, "client_id": refund["client_id"],
                                                "booking_id": refund["booking_id"], "amount": int(refund["amount"]),
                                                "currency": refund["currency"], "by": by},
                             datetime.fromtimestamp(now, UTC), _event_id())
        await self.complaints.retry_refund(refund_id, int(now), by, event)
        return await self.refund(refund_id)

    async def payouts(self, sunday: str) -> list[dict[str, str]]:
        return await self.store.payouts_of(sunday)

    async def payout_dates(self, year: int) -> list[dict[str, Any]]:
        cal = await self.calendar.calendar([year, year + 1])
        announced = await self.calendar.announced()
        out = []
        for sunday in paydates.sundays(date(year, 1, 1), date(year, 12, 31)):
            computed = paydates.payout_date(sunday, cal)
            holiday = cal.days.get(sunday)
            out.append({"sunday": sunday.isoformat(), "date": announced.get(sunday, computed).isoformat(),
                        "announced": sunday in announced, "computed": computed.isoformat(),
                        "holiday": holiday.name if holiday else None,
                        "holiday_names": dict(holiday.names) if holiday else None,
                        "estimated": bool(holiday and holiday.estimated)})
        return out

    async def correct_holiday(self, estimated: date, actual: date, move_announced: bool, by: str) -> dict[str, Any]:
        cal = await self.calendar.calendar([estimated.year])
        known = cal.days.get(estimated)
        fixes = await self.store.holiday_fixes()
        if (known is None or not known.estimated) and estimated.isoformat() not in fixes:
            raise NotAnEstimatedHoliday(f"{estimated} is not an estimated holiday in Algeria")
        moved, kept = await self.calendar.correct(estimated, actual, move_announced=move_announced, by=by,
                                                  now=self.clock.now())
        return {"estimated": estimated.isoformat(), "date": actual.isoformat(),
                "moved": [{"sunday": s.isoformat(), "from": d.isoformat(), "to": n.isoformat()} for s, d, n in moved],
                "kept": [{"sunday": s.isoformat(), "announced": d.isoformat(), "computed": n.isoformat()}
                         for s, d, n in kept]}

    # --- views ---

    async def statement(self, pid: str) -> dict[str, Any]:
        balances = {}
        entries: list[dict[str, Any]] = []
        raw = await self.store.redis.hmget(self.store.balances_key(self.currency),
                                           [f"practitioner:{pid}:{a}" for a in STATEMENT_ACCOUNTS])
        for name, value in zip(STATEMENT_ACCOUNTS, raw, strict=True):
            balances[name] = int(value) if value is not None else 0
            for e in await self.store.entries(self.currency, f"practitioner:{pid}:{name}"):
                entries.append({"seq": e["seq"], "time": e["time"], "posting_id": e["posting"], "kind": e["kind"],
                                "account": name, "amount_minor": e["amount"], "balance_minor": e["balance"],
                                "booking_id": e["booking_id"] or None})
        entries.sort(key=lambda e: (e.pop("seq"), STATEMENT_ACCOUNTS.index(e["account"])))
        day, announced = await self.next_payout_date()
        return {"practitioner_id": pid, "currency": self.currency, "available_minor": balances["available"],
                "held_minor": balances["held"], "in_transit_minor": balances["in_transit"],
                "paid_minor": balances["paid"], "next_payout_date": day.isoformat(),
                "next_payout_date_announced": announced, "payout_minimum_minor": self.payout_minimum,
                "entries": entries}

    async def next_payout_date(self) -> tuple[date, bool]:
        """The date of the next payout run that has not started (whether it is announced): this week's, or
        the next week's once this week's date has passed or its run has begun (what is earned after the run
        waits for the next one)."""
        today = paydates.local_date(self.clock.now())
        sunday = paydates.sunday_of(today)
        while True:  # a run begins on or after its week's payout date, so the next week's has not begun
            day, announced = await self.calendar.date_of(sunday)
            started = await self.store.redis.exists(self.store.key("payout_run", sunday.isoformat(), self.currency))
            if day >= today and not started:
                return day, announced
            sunday += timedelta(weeks=1)

    @staticmethod
    def statement_csv(statement: dict[str, Any]) -> str:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(("time", "kind", "booking_id", "account", "amount_minor", "balance_minor", "currency",
                    "posting_id"))
        for e in statement["entries"]:
            w.writerow((e["time"], e["kind"], e["booking_id"] or "", e["account"], e["amount_minor"],
                        e["balance_minor"], statement["currency"], e["posting_id"]))
        return out.getvalue()

    async def revenue(self, start: date | None, end: date | None) -> list[dict[str, Any]]:
        """Per local day: the platform's revenue and costs that day, and what it owes at the day's end."""
        running: dict[str, int] = {}
        days = []
        for day, changes in await self.store.daily(self.currency):
            for k, v in changes.items():
                running[k] = running.get(k, 0) + v
            d = date.fromisoformat(day)
            if (start and d < start) or (end and d > end):
                continue
            days.append({
                "date": day, "currency": self.currency,
                "client_payments_minor": -changes.get(rules.WORLD_PAYMENTS, 0),
                "revenue_minor": changes.get(rules.PLATFORM_REVENUE, 0),
                "discounts_funded_minor": -changes.get(rules.PLATFORM_DISCOUNTS, 0),
                "liabilities": {
                    "escrow_minor": running.get("booking:escrow", 0),
                    "practitioners_available_minor": running.get("practitioner:available", 0),
                    "practitioners_held_minor": running.get("practitioner:held", 0),
                    "payouts_in_transit_minor": running.get("practitioner:in_transit", 0),
                    "refunds_payable_minor": running.get("client:refund_payable", 0),
                    "referral_credits_minor": running.get("referral:credits", 0),
                },
                "paid_out_total_minor": running.get("practitioner:paid", 0),
                "refunded_total_minor": running.get("client:refunded", 0)})
        return days
