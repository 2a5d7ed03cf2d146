"""Refunds through the real server: a client cancels, the ledger owes them the money and makes a refund
against the booking they paid for, the refund job hands it to the payment gateway in a refund file, the
gateway cannot make it, an admin sends it again, the gateway makes it, and the platform owes the client
nothing more. The job's crash between handing a batch over and marking it sent hands the same batch again."""

from __future__ import annotations

import contextlib
import csv
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from ledger.consumer import LedgerConsumer
from ledger.processor import event_fields
from ledger.refunds import CsvRefundExporter, RefundJob
from session_server.app import create_app
from session_server.events import EVENTS_STREAM, Event
from session_server.ledger.store import ComplaintStore

from .bookings_support import every_day, first_slot, make_practitioner
from .conftest import LiveServer, api_key_auth, auth, make_settings, metrics_auth
from .ledger_support import T0, at, created, iso, make_consumer, publish, transition, verdict
from .support import eventually


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def _events(redis: aioredis.Redis, type_: str) -> list[dict[str, Any]]:
    found: Any = await redis.xrange(EVENTS_STREAM)
    return [json.loads(f[b"body"]) for _id, f in found if f[b"type"] == type_.encode()]


async def test_a_cancelled_booking_is_refunded_through_the_gateway_and_a_failed_refund_is_sent_again(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, token: Callable[..., str]) -> None:
    refund_dir = tmp_path / "refund-files"
    server = LiveServer(create_app(make_settings(tmp_path, redis_url, ledger_payout_check_interval_s=0.05,
                                                 ledger_refund_dir=refund_dir)))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            await make_practitioner(http, "p1", price=300_000, weekly=every_day())

            def h(role: str, sub: str) -> dict[str, str]:
                return auth(token(role, sub))

            c1, admin = h("client", "c1"), h("admin", "a1")
            slot = await first_slot(http, "p1", c1)
            r = await http.post("/v1/bookings", headers=c1, json={"practitioner_id": "p1",
                                                                  "starts_at": slot["starts_at"]})
            assert r.status_code == 201, r.text
            booking = r.json()
            r = await http.post(f"/v1/bookings/{booking['id']}/cancel", headers=c1, json={"reason": "cannot come"})
            assert r.status_code == 200, r.text
            total = booking["price"]["client_total"]
            late = datetime.fromisoformat(booking["starts_at"]).timestamp() - time.time() < 86400
            owed = total // 2 if late else total  # the default policy: all of it a day ahead, half later

            async def sent() -> list[dict[str, Any]] | None:
                r = await http.get("/v1/ledger/refunds", headers=c1)
                assert r.status_code == 200, r.text
                found: list[dict[str, Any]] = r.json()["refunds"]
                return found if found and found[0]["status"] == "sent" else None

            [refund] = await eventually(sent, what="the refund handed to the gateway")
            assert (refund["booking_id"], refund["amount_minor"], refund["currency"], refund["reason"],
                    refund["attempt"], refund["complaint_id"]) == (
                booking["id"], owed, "DZD", "cancelled_late" if late else "cancelled_in_time", 1, None)
            rid = refund["refund_id"]
            # the gateway is told what it needs to return the payment: not who the client is, nor why
            [first_file] = sorted(refund_dir.glob("refunds-*.csv"))
            assert _rows(first_file) == [{"refund_id": rid, "attempt": "1", "booking_id": booking["id"],
                                          "amount_minor": str(owed), "amount": f"{owed // 100}.{owed % 100:02d}",
                                          "currency": "DZD"}]

            # who may see and answer it: the client their own, an admin all; nobody else
            assert (await http.get("/v1/ledger/refunds", headers=h("client", "c2"))).json() == {"refunds": []}
            r = await http.get("/v1/ledger/refunds", headers=h("practitioner", "p1"))
            assert r.status_code == 403 and r.json()["code"] == "wrong_role"
            r = await http.post(f"/v1/ledger/refunds/{rid}/answer", headers=c1, json={"status": "paid", "attempt": 1})
            assert r.status_code == 403
            r = await http.get("/v1/ledger/refunds", headers=admin, params={"client_id": "c1", "status": "sent"})
            assert [x["refund_id"] for x in r.json()["refunds"]] == [rid]

            # bad input gets a clear refusal and changes nothing
            before = (await http.get("/v1/ledger/refunds", headers=admin)).json()
            length = await redis_client.xlen(EVENTS_STREAM)
            for bad in ("0" * 31, "g" * 32, "0" * 32):
                r = await http.post(f"/v1/ledger/refunds/{bad}/answer", headers=admin,
                                    json={"status": "paid", "attempt": 1})
                assert r.status_code == 404 and r.json()["code"] == "refund_not_found", bad
            for body in ({"status": "maybe", "attempt": 1}, {"status": "paid"},  # an answer names its hand-over
                         {"status": "paid", "attempt": 1, "reason": "why would a refund made have one"},
                         {"status": "paid", "attempt": 0}, {"status": "failed", "attempt": 1, "surprise": 1}):
                r = await http.post(f"/v1/ledger/refunds/{rid}/answer", headers=admin, json=body)
                assert r.status_code == 422 and r.json()["code"] == "invalid_input", body
            paid_1 = {"status": "paid", "attempt": 1}
            r = await http.post(f"/v1/ledger/refunds/{rid}/answer?x=1", headers=admin, json=paid_1)
            assert r.status_code == 422 and r.json()["code"] == "invalid_input"
            r = await http.post(f"/v1/ledger/refunds/{rid}/answer", headers=admin,
                                json={"status": "paid", "attempt": 2})
            assert r.status_code == 409 and r.json()["code"] == "refund_not_sent"  # no second hand-over yet
            r = await http.post(f"/v1/ledger/refunds/{rid}/retry", headers=admin)
            assert r.status_code == 409 and r.json()["code"] == "refund_not_failed"
            r = await http.post(f"/v1/ledger/refunds/{rid}/retry", headers=admin, json={"now": True})
            assert r.status_code == 422 and r.json()["code"] == "invalid_input"
            assert (await http.get("/v1/ledger/refunds", headers=admin)).json() == before
            assert await redis_client.xlen(EVENTS_STREAM) == length

            # the gateway could not make it: nothing moves, the platform still owes it
            r = await http.post(f"/v1/ledger/refunds/{rid}/answer", headers=api_key_auth(),
                                json={"status": "failed", "reason": "card expired", "attempt": 1})
            assert r.status_code == 200, r.text
            assert (r.json()["status"], r.json()["answer_reason"]) == ("failed", "card expired")
            r = await http.post(f"/v1/ledger/refunds/{rid}/answer", headers=admin, json=paid_1)
            assert r.status_code == 409 and r.json()["code"] == "refund_answered"

            async def liabilities() -> dict[str, Any]:
                r = await http.get("/v1/ledger/revenue", headers=admin)
                day: dict[str, Any] = r.json()["days"][-1]
                return day

            day = await liabilities()
            assert (day["liabilities"]["refunds_payable_minor"], day["refunded_total_minor"]) == (owed, 0)

            # the operators' metrics: one refund waits for an admin, none to be handed over
            async def waiting(due: int, failed: int) -> str | None:
                text = (await http.get("/metrics", headers=metrics_auth())).text
                return text if (f'ledger_refunds_waiting{{for="due"}} {due}.0' in text
                                and f'ledger_refunds_waiting{{for="failed"}} {failed}.0' in text) else None

            await eventually(lambda: waiting(0, 1), what="one failed refund in the metrics")

            # an admin sends it again: the next batch hands it over in a file of its own
            r = await http.post(f"/v1/ledger/refunds/{rid}/retry", headers=admin)
            assert r.status_code == 200 and r.json()["status"] in ("owed", "sending", "sent")

            async def sent_again() -> dict[str, Any] | None:
                r = await http.get("/v1/ledger/refunds", headers=c1)
                found: dict[str, Any] = r.json()["refunds"][0]
                return found if found["status"] == "sent" and found["attempt"] == 2 else None

            await eventually(sent_again, what="the refund handed over a second time")
            metrics = await eventually(lambda: waiting(0, 0), what="no refund waiting in the metrics")
            assert "ledger_refunds_handed_over_total 2.0" in metrics
            [second_file] = [f for f in refund_dir.glob("refunds-*.csv") if f != first_file]
            assert [(row["refund_id"], row["attempt"]) for row in _rows(second_file)] == [(rid, "2")]
            # a late answer for the first hand-over is refused: it would speak of the second
            r = await http.post(f"/v1/ledger/refunds/{rid}/answer", headers=admin,
                                json={"status": "failed", "reason": "late news", "attempt": 1})
            assert r.status_code == 409 and r.json()["code"] == "refund_attempt_stale"

            # the gateway made it: the money is back with the client, the platform owes nothing more
            r = await http.post(f"/v1/ledger/refunds/{rid}/answer", headers=admin,
                                json={"status": "paid", "attempt": 2})
            assert r.status_code == 200 and r.json()["status"] == "paid"

            async def refunded() -> dict[str, Any] | None:
                day = await liabilities()
                return day if day["refunded_total_minor"] == owed else None

            day = await eventually(refunded, what="the refund made in the ledger")
            assert day["liabilities"]["refunds_payable_minor"] == 0

            # every step is an event, and the client was told of each (never the gateway's reason)
            assert [e["refund_id"] for e in await _events(redis_client, "refund.sent")] == [rid, rid]
            assert [e["reason"] for e in await _events(redis_client, "refund.failed")] == ["card expired"]
            assert [e["by"] for e in await _events(redis_client, "refund.retried")] == ["a1"]

            async def told() -> list[str] | None:
                r = await http.get("/v1/notifications", headers=c1)
                kinds = [n["kind"] for n in r.json()["notifications"] if n["kind"].startswith("refund.")]
                return kinds if len(kinds) == 3 else None

            assert await eventually(told, what="the client's refund notices") == [
                "refund.paid", "refund.failed", "refund.owed"]
            r = await http.get("/v1/notifications", headers=c1)
            assert "card expired" not in r.text
    finally:
        await server.stop()


class _CrashOnce:
    """An exporter whose first hand-over dies halfway (the process was killed): the file may or may not be there."""

    def __init__(self, directory: Path) -> None:
        self.real = CsvRefundExporter(directory)
        self.calls: list[tuple[str, list[str]]] = []

    def export(self, batch: str, refunds: Any) -> str:
        self.calls.append((batch, sorted(r["refund_id"] for r in refunds)))
        ref = self.real.export(batch, refunds)
        if len(self.calls) == 1:
            raise SystemExit("killed after writing the file, before marking it sent")
        return ref


async def _two_refunds_due(redis: aioredis.Redis) -> tuple[LedgerConsumer, list[str]]:
    """Two cancelled bookings, applied by a ledger consumer: two refunds due (their ids, sorted)."""
    consumer = make_consumer(redis)
    await publish(redis, created("b1", cid="c1"), created("b2", cid="c2"),
                  transition("b1", "cancelled", cid="c1", now=T0, by="practitioner"),
                  transition("b2", "cancelled", cid="c2", now=T0, by="admin"))
    await _drain(consumer)
    due = sorted(r["refund_id"] for r in await consumer.store.refunds())
    assert len(due) == 2
    return consumer, due


async def _drain(consumer: LedgerConsumer) -> None:
    await consumer.ensure_group()
    while await consumer.read_once(block=False):
        pass


async def test_a_refund_job_killed_mid_batch_hands_the_same_batch_again_and_never_a_refund_twice(
        tmp_path: Path, redis_client: aioredis.Redis) -> None:
    system_redis = redis_client
    consumer, due = await _two_refunds_due(redis_client)
    store = consumer.store
    exporter = _CrashOnce(tmp_path)
    job = RefundJob(store, exporter)
    with contextlib.suppress(SystemExit):
        await job.step(T0 + 60)
    # a refund made after the crash waits for the next batch: the one handed over is handed over whole again
    await publish(system_redis, created("b3", cid="c3"), transition("b3", "cancelled", cid="c3", now=T0, by="admin"))
    await _drain(consumer)
    assert sorted(await job.step(T0 + 120)) == due
    third = [r["refund_id"] for r in await store.refunds(client_id="c3")]
    assert await job.step(T0 + 180) == third
    assert await job.step(T0 + 240) == []  # nothing due
    batches = [b for b, _ids in exporter.calls]
    assert [ids for _b, ids in exporter.calls] == [sorted(due), sorted(due), third]
    assert batches[0] == batches[1] != batches[2]  # the same batch, under the same file name
    assert [exporter.real.path(b).exists() for b in dict.fromkeys(batches)] == [True, True]
    statuses = {r["refund_id"]: (r["status"], r.get("tries")) for r in await store.refunds()}
    assert statuses == {rid: ("sent", "1") for rid in [*due, *third]}
    assert len(await _events(system_redis, "refund.sent")) == 3  # one per refund, the retried batch's once


async def test_a_refund_answered_and_sent_again_while_its_batch_was_cut_short_is_not_in_two_files(
        tmp_path: Path, redis_client: aioredis.Redis) -> None:
    """The job died after writing a batch's file; the gateway read it anyway and could not make one of its
    refunds, which an admin sent again. The cut batch is handed over again without that refund, which goes
    in a batch of its own: the files the gateway is given never hold one refund twice."""
    consumer, (first, second) = await _two_refunds_due(redis_client)
    store = consumer.store
    exporter = _CrashOnce(tmp_path)
    job = RefundJob(store, exporter)
    with contextlib.suppress(SystemExit):
        await job.step(T0 + 60)
    desk = ComplaintStore(store)
    await desk.answer_refund(first, "failed", "card expired", iso(T0 + 70),
                             event_fields("refund.failed", {"refund_id": first}, at(T0 + 70), "x1"), attempt=1,
                             now=T0 + 70)
    await desk.retry_refund(first, T0 + 80, "a1",
                            event_fields("refund.retried", {"refund_id": first}, at(T0 + 80), "x2"))
    assert await job.step(T0 + 120) == [second]
    assert await job.step(T0 + 180) == [first]
    (cut, cut_ids), (again, again_ids), (own, own_ids) = exporter.calls
    assert (cut_ids, again_ids, own_ids) == ([first, second], [second], [first])
    assert cut == again != own
    files = {b: [row["refund_id"] for row in _rows(exporter.real.path(b))] for b in (cut, own)}
    assert files == {cut: [second], own: [first]}
    # the first was handed over twice (in the cut batch, which the gateway read, and on its own): two attempts
    statuses = {r["refund_id"]: (r["status"], r.get("tries")) for r in await store.refunds()}
    assert statuses == {first: ("sent", "2"), second: ("sent", "1")}


async def test_a_free_reschedule_cancelled_is_refunded_against_the_booking_the_client_paid_for(
        redis_client: aioredis.Redis) -> None:
    """The client paid for b1; a technical problem stopped it and it was held again as b2 (paid for by
    nothing: b1's money carried over), then b3; the practitioner cancelled b3. The refund returns b1's
    payment, the only one the gateway knows."""
    consumer = make_consumer(redis_client)
    moves = []
    for old, new in (("b1", "b2"), ("b2", "b3")):
        moves += [verdict(old, "interrupted", now=T0 + 100),
                  created(new, share=0, platform=0, now=T0 + 200),
                  Event("booking.rescheduled", {"booking_id": old, "new_booking_id": new}, time=at(T0 + 200))]
    await publish(redis_client, created("b1", share=300_000, platform=50_000), *moves)
    await _drain(consumer)
    assert await redis_client.hget("ledger:booking:b3", "paid_booking") == b"b1"
    # (and a ledger whose carried bookings were recorded before they said which booking was paid for: the
    # refund goes back along the carries)
    await redis_client.hdel("ledger:booking:b2", "paid_booking")
    await redis_client.hdel("ledger:booking:b3", "paid_booking")
    await publish(redis_client, transition("b3", "cancelled", now=T0 + 300, by="practitioner"))
    await _drain(consumer)
    assert [(r["booking_id"], r["amount"], r["reason"]) for r in await consumer.store.refunds()] == [
        ("b1", "350000", "cancelled_by_practitioner")]


class _Recording:
    def __init__(self, directory: Path) -> None:
        self.real = CsvRefundExporter(directory)
        self.calls: list[list[str]] = []

    def export(self, batch: str, refunds: Any) -> str:
        self.calls.append(sorted(r["refund_id"] for r in refunds))
        return self.real.export(batch, refunds)


async def test_a_batch_another_process_is_handing_over_is_left_to_it_until_its_lease_runs_out(
        tmp_path: Path, redis_client: aioredis.Redis) -> None:
    """Two processes run the refund job. One died while handing a batch over; the other does not hand the
    same batch over beside it (into files of its own) while the first one's lease lasts, and takes it over
    once the lease has run out."""
    consumer, due = await _two_refunds_due(redis_client)
    first = RefundJob(consumer.store, _CrashOnce(tmp_path / "first"))
    with contextlib.suppress(SystemExit):
        await first.step(T0 + 60)
    other = _Recording(tmp_path / "other")
    second = RefundJob(consumer.store, other)
    assert await second.step(T0 + 61) == [] and other.calls == []  # the first one's, for now
    await redis_client.hset("ledger:refund_sending", "until", "0")  # its lease ran out: it is gone
    assert sorted(await second.step(T0 + 120)) == due and other.calls == [due]
    statuses = {r["refund_id"]: (r["status"], r.get("tries")) for r in await consumer.store.refunds()}
    assert statuses == {rid: ("sent", "1") for rid in due}  # the same hand-over, finished by another
