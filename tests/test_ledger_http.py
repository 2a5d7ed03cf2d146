"""The ledger through the real server: a client books with a practitioner's code, the session completes,
the client complains, an admin rejects it, Sunday's payout runs, and the practitioner's statement and the
bank's transfer file show every amount exactly."""

from __future__ import annotations

import csv
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ledger import paydates
from session_server.app import create_app
from session_server.auth import Role, TokenAuthority
from session_server.bookings.jobs import COMPLETION_GRACE_S
from session_server.clock import ManualClock
from session_server.events import EVENTS_STREAM, Event
from session_server.settings import Settings

from .bookings_support import every_day, first_slot, make_practitioner
from .complaint_support import complaints_filed
from .conftest import API_KEY_ID, API_SECRET, LiveServer, api_key_auth, auth, make_settings
from .ledger_support import publish
from .support import eventually

T_FILED = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())


def _ledger_settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path, redis_url, ledger_payout_check_interval_s=0.05, ledger_claim_idle_ms=200,
                         ledger_payout_dir=tmp_path / "transfers")


async def _statement(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    r = await http.get("/v1/ledger/practitioners/p1/statement", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_book_with_a_code_complete_complain_reject_and_get_paid_on_sunday(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    clock = ManualClock(time.time())
    authority = TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=3600, clock=clock.now)

    def h(role: str, sub: str) -> dict[str, str]:
        """A token valid at the app's clock's present (which the test moves days ahead)."""
        return auth(authority.mint(sub=sub, name=sub, role=Role(role), ttl_s=3600)[0])

    server = LiveServer(create_app(_ledger_settings(tmp_path, redis_url), clock=clock))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            await make_practitioner(http, "p1", price=300_000, weekly=every_day())
            p1, c1 = h("practitioner", "p1"), h("client", "c1")
            r = await http.post("/v1/practitioners/p1/codes", headers=p1, json={"code": "CARE", "amount_minor": 20_000})
            assert r.status_code == 201, r.text
            slot = await first_slot(http, "p1", c1)
            r = await http.post("/v1/bookings", headers=c1, json={"practitioner_id": "p1",
                                                                  "starts_at": slot["starts_at"], "code": "CARE"})
            assert r.status_code == 201, r.text
            booking = r.json()
            assert booking["price"]["practitioner_share"] == 280_000 and booking["price"]["client_total"] == 330_000
            bid = booking["id"]
            starts = int(datetime.fromisoformat(booking["starts_at"]).timestamp())
            ends = int(datetime.fromisoformat(booking["ends_at"]).timestamp())

            # a complaint before the session is over has nothing to hold yet
            r = await http.post(f"/v1/bookings/{bid}/complaints", headers=c1, json={"reason": "conduct"})
            assert r.status_code == 409 and r.json()["code"] == "session_not_settled"

            # both join: the rooms' events; then the session's verdict completes it after its end and grace
            clock.set(starts)
            await publish(redis_client, Event("session.started", {"booking_id": bid, "practitioner_id": "p1",
                                                                  "client_id": "c1", "at": starts * 1000},
                                              time=datetime.fromtimestamp(starts, UTC)))
            # what the session's verdict is judged on (docs/outages.md): both in the room, their media connected
            for pid, role in (("c1", "client"), ("p1", "practitioner")):
                await publish(redis_client, Event("room.joined", {
                    "booking_id": bid, "participant_id": pid, "role": role, "at": starts * 1000,
                    "practitioner_id": "p1", "client_id": "c1"}, time=datetime.fromtimestamp(starts, UTC)))
                await publish(redis_client, Event("media.state_changed", {
                    "booking_id": bid, "participant_id": pid, "state": "connected", "reason": None,
                    "node_id": "n1", "at": starts * 1000}, time=datetime.fromtimestamp(starts, UTC)))

            async def in_session() -> bool:
                r = await http.get(f"/v1/bookings/{bid}", headers=h("admin", "a1"))
                return r.json()["status"] == "in_session"

            await eventually(in_session, what="the booking in session")
            clock.set(ends + COMPLETION_GRACE_S + 1)
            p1, c1, admin = h("practitioner", "p1"), h("client", "c1"), h("admin", "a1")

            async def earned() -> dict[str, Any] | None:
                s = await _statement(http, p1)
                return s if s["available_minor"] == 280_000 else None

            s = await eventually(earned, what="the practitioner's share earned")
            assert [(e["kind"], e["account"], e["amount_minor"], e["booking_id"]) for e in s["entries"]] == [
                ("completed", "available", 280_000, bid)]

            # the client complains: the share is held at once, the practitioner sees the hold, not the words
            text = "The practitioner answered the phone twice during the session."
            r = await http.post(f"/v1/bookings/{bid}/complaints", headers=c1,
                                json={"reason": "conduct", "text": text})
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            assert r.json()["text"] == text
            raw = await redis_client.hgetall(f"ledger:complaint:{cid}")
            assert text.encode() not in b"".join(v for v in raw.values())  # encrypted at rest
            r = await http.post(f"/v1/bookings/{bid}/complaints", headers=c1, json={"reason": "other"})
            assert r.status_code == 409 and r.json()["code"] == "already_complained"
            r = await http.post(f"/v1/bookings/{bid}/complaints", headers=h("client", "c2"),
                                json={"reason": "other"})
            assert r.status_code == 404 and r.json()["code"] == "booking_not_found"

            async def held() -> dict[str, Any] | None:
                s = await _statement(http, p1)
                return s if s["held_minor"] == 280_000 else None

            s = await eventually(held, what="the hold")
            assert s["available_minor"] == 0
            r = await http.get(f"/v1/complaints/{cid}", headers=p1)
            assert r.status_code == 200 and r.json()["held_minor"] == 280_000 and r.json()["text"] is None
            queue = (await http.get("/v1/complaints", headers=admin, params={"status": "open"})).json()["complaints"]
            assert [c["id"] for c in queue] == [cid]
            assert (await http.get(f"/v1/complaints/{cid}", headers=admin)).json()["text"] == text

            r = await http.post(f"/v1/complaints/{cid}/resolve", headers=admin, json={"decision": "rejected"})
            assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
            r = await http.post(f"/v1/complaints/{cid}/resolve", headers=admin, json={"decision": "upheld"})
            assert r.status_code == 409 and r.json()["code"] == "already_resolved"

            async def released() -> dict[str, Any] | None:
                s = await _statement(http, p1)
                return s if s["available_minor"] == 280_000 and s["held_minor"] == 0 else None

            await eventually(released, what="the hold released")

            # Sunday in Algiers (or the working day after it if it is a holiday): the payout runs
            today = paydates.local_date(clock.now())
            sunday = paydates.sunday_of(today) + timedelta(weeks=1)
            dates = (await http.get("/v1/ledger/payout-dates", headers=p1,
                                    params={"year": sunday.year})).json()["payout_dates"]
            pay_day = datetime.fromisoformat(next(d["date"] for d in dates if d["sunday"] == sunday.isoformat()))
            clock.set(pay_day.replace(hour=9, tzinfo=paydates.ZONE).timestamp())
            p1, admin = h("practitioner", "p1"), h("admin", "a1")

            async def in_transit() -> dict[str, Any] | None:
                s = await _statement(http, p1)
                return s if s["in_transit_minor"] == 280_000 else None

            s = await eventually(in_transit, what="the payout")
            assert s["available_minor"] == 0
            assert [(e["kind"], e["account"], e["amount_minor"]) for e in s["entries"]] == [
                ("completed", "available", 280_000),
                ("complaint_hold", "available", -280_000), ("complaint_hold", "held", 280_000),
                ("complaint_rejected", "available", 280_000), ("complaint_rejected", "held", -280_000),
                ("payout", "available", -280_000), ("payout", "in_transit", 280_000)]
            # a filter the statement does not have is refused, not ignored (the whole statement is not a month's)
            for path in ("statement", "statement.csv"):
                r = await http.get(f"/v1/ledger/practitioners/p1/{path}", headers=p1, params={"month": "13-2026"})
                assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text
            r = await http.get("/v1/ledger/practitioners/p1/statement.csv", headers=p1)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(r.text.splitlines()))
            assert [int(row["amount_minor"]) for row in rows] == [280_000, -280_000, 280_000, 280_000, -280_000,
                                                                  -280_000, 280_000]

            transfer = tmp_path / "transfers" / f"payouts-{sunday.isoformat()}.csv"

            async def exported() -> list[dict[str, str]] | None:
                return list(csv.DictReader(transfer.open())) if transfer.exists() else None

            lines = await eventually(exported, what="the transfer file")
            assert [(x["practitioner_id"], x["amount_minor"], x["amount"], x["currency"]) for x in lines] == [
                ("p1", "280000", "2800.00", "DZD")]

            # the bank answers: failed, the money is back in the balance; a second answer is refused
            payout_id = lines[0]["payout_id"]
            r = await http.post(f"/v1/ledger/payouts/{payout_id}/answer", headers=api_key_auth(),
                                json={"status": "failed", "reason": "account closed"})
            assert r.status_code == 200 and r.json()["status"] == "failed", r.text
            r = await http.post(f"/v1/ledger/payouts/{payout_id}/answer", headers=api_key_auth(),
                                json={"status": "paid"})
            assert r.status_code == 409 and r.json()["code"] == "payout_answered"

            async def returned() -> dict[str, Any] | None:
                s = await _statement(http, p1)
                return s if s["available_minor"] == 280_000 and s["in_transit_minor"] == 0 else None

            await eventually(returned, what="the failed payout's money back")

            # the practitioner was told of each step of her money: sent, then refused and back in her balance
            async def told() -> list[tuple[str, int]] | None:
                r = await http.get("/v1/notifications", headers=p1)
                found = [(n["kind"], n["data"]["amount_minor"]) for n in r.json()["notifications"]
                         if n["kind"].startswith("payout.")]
                return found if len(found) == 2 else None

            assert await eventually(told, what="the payout's notices") == [("payout.failed", 280_000),
                                                                           ("payout.sent", 280_000)]
            day = (await http.get("/v1/ledger/revenue", headers=admin)).json()["days"]
            assert sum(d["revenue_minor"] for d in day) == 50_000
            assert day[-1]["liabilities"]["practitioners_available_minor"] == 280_000
            runs = [f for _id, f in await redis_client.xrange(EVENTS_STREAM) if f[b"type"] == b"payout.run"]
            assert len({f[b"body"] for f in runs}) == len(runs)  # one run per week
    finally:
        await server.stop()


async def test_the_queue_of_one_status_is_not_cut_by_newer_complaints_of_another(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    """Three complaints, the two newest decided: the one still open is found however small the limit (the
    list was cut to `limit` before it was filtered, which hid the complaints that had waited longest)."""
    # (the ledger's consumer apart: these complaints have no booking in the ledger to hold money from)
    server = LiveServer(create_app(make_settings(tmp_path, redis_url, ledger_in_process=False)))
    await server.start()
    try:
        await complaints_filed(server, redis_client, {f"{n:032x}": 1000 for n in range(3)}, since=T_FILED)
        admin = {"Authorization": "Bearer " + server.app.state.ctx.tokens.mint(
            sub="a1", name="a1", role=Role.ADMIN, ttl_s=600)[0]}
        async with httpx.AsyncClient(base_url=server.url) as http:
            for n in (1, 2):
                r = await http.post(f"/v1/complaints/{n:032x}/resolve", headers=admin, json={"decision": "rejected"})
                assert r.status_code == 200, r.text
            r = await http.get("/v1/complaints", headers=admin, params={"status": "open", "limit": 1})
            assert [c["id"] for c in r.json()["complaints"]] == [f"{0:032x}"]
            r = await http.get("/v1/complaints", headers=admin, params={"status": "rejected", "limit": 5})
            assert [c["id"] for c in r.json()["complaints"]] == [f"{2:032x}", f"{1:032x}"]  # the newest first
            r = await http.get("/v1/complaints", headers=admin, params={"limit": 2})
            assert [c["id"] for c in r.json()["complaints"]] == [f"{2:032x}", f"{1:032x}"]
            # a queue: those waiting longest first
            r = await http.get("/v1/complaints", headers=admin, params={"order": "oldest", "limit": 2})
            assert [c["id"] for c in r.json()["complaints"]] == [f"{0:032x}", f"{1:032x}"]
            r = await http.get("/v1/complaints", headers=admin, params={"order": "first"})
            assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    finally:
        await server.stop()


async def test_a_client_lists_their_own_complaints_including_those_filed_before_clients_had_an_index(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    """A client's complaints come from an index of their own (not from reading everyone's). A deployment whose
    complaints were filed before that index existed gets them indexed once, when the server starts."""
    settings = make_settings(tmp_path, redis_url, ledger_in_process=False)
    server = LiveServer(create_app(settings))
    await server.start()
    filed = {"c1": [f"{n:032x}" for n in (1, 3, 4)], "c2": [f"{n:032x}" for n in (2, 5)]}
    try:
        svc = server.app.state.ctx.ledger
        for client_id, cids in filed.items():
            for cid in cids:
                at = T_FILED + int(cid, 16)
                await svc.complaints.file({"complaint_id": cid, "booking_id": "b" + cid[1:], "client_id": client_id,
                                           "practitioner_id": "p1", "reason": "conduct", "status": "open",
                                           "filed_at": str(at), "has_text": "0"},
                                          "p1", at, ["e" + cid, "complaint.filed", "1", "2026-12-01T00:00:00Z", "{}"])
    finally:
        await server.stop()
    # as a deployment from before the index left them
    await redis_client.delete("ledger:client:c1:complaints", "ledger:client:c2:complaints",
                              "ledger:complaints:client_indexed")
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        tokens = server.app.state.ctx.tokens

        def h(role: Role, sub: str) -> dict[str, str]:
            return {"Authorization": "Bearer " + tokens.mint(sub=sub, name=sub, role=role, ttl_s=600)[0]}

        async with httpx.AsyncClient(base_url=server.url) as http:
            async def own(client_id: str, **params: Any) -> list[str]:
                r = await http.get("/v1/complaints", headers=h(Role.CLIENT, client_id), params=params)
                assert r.status_code == 200, r.text
                return [c["id"] for c in r.json()["complaints"]]

            assert await own("c1") == list(reversed(filed["c1"]))  # the newest first
            assert await own("c1", limit=2) == [filed["c1"][2], filed["c1"][1]]
            assert await own("c1", order="oldest", limit=1) == [filed["c1"][0]]
            assert await own("c2") == list(reversed(filed["c2"]))
            assert await own("c3") == []
            r = await http.post(f"/v1/complaints/{filed['c1'][1]}/resolve", headers=h(Role.ADMIN, "a1"),
                                json={"decision": "rejected"})
            assert r.status_code == 409  # (nothing held: these complaints have no money in the ledger)
            await redis_client.hset(f"ledger:complaint:{filed['c1'][1]}", mapping={"held": "0", "currency": "DZD"})
            r = await http.post(f"/v1/complaints/{filed['c1'][1]}/resolve", headers=h(Role.ADMIN, "a1"),
                                json={"decision": "rejected"})
            assert r.status_code == 200, r.text
            assert await own("c1", status="rejected") == [filed["c1"][1]]
            assert await own("c1", status="open") == [filed["c1"][2], filed["c1"][0]]

            # a complaint filed meanwhile by a process from before the index (a rolling deploy): the index job,
            # which runs every few seconds in every process, puts it in
            late = f"{9:032x}"
            await redis_client.hset(f"ledger:complaint:{late}", mapping={
                "complaint_id": late, "booking_id": "b9", "client_id": "c1", "practitioner_id": "p1",
                "reason": "conduct", "status": "open", "filed_at": str(T_FILED + 9), "has_text": "0"})
            await redis_client.zadd("ledger:complaints", {late: T_FILED + 9})
            assert late not in await own("c1")
            assert await server.app.state.ctx.ledger.complaints.index_clients() >= 1
            assert await own("c1", limit=1) == [late]
    finally:
        await server.stop()


@pytest.mark.parametrize(("path", "own"), [
    ("/statement?lang=fr", ["/static/statement/i18n.js", "/static/statement/statement.css",
                            "/static/statement/statement.js"]),
    ("/admin?lang=ar", ["/static/admin/admin.css", "/static/admin/admin.js", "/static/admin/i18n.js"]),
])
async def test_the_ledger_pages_are_served_with_a_policy_that_allows_only_their_own_files(
        client: httpx.AsyncClient, path: str, own: list[str]) -> None:
    r = await client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"
    files = re.findall(r'(?:src|href)="(/static/[\w/.]+)"', r.text)
    assert sorted(files) == sorted(["/static/common/page.js", "/static/common/chart.js", *own])
    for name in files:
        assert (await client.get(name)).status_code == 200, name


async def test_the_statement_names_the_next_payout_that_has_not_run_and_the_minimum_it_pays(
        tmp_path: Path, redis_url: str) -> None:
    """Saturday: tomorrow. Sunday, once that week's run has begun: the next Sunday (what is earned after the
    run waits for it). The day before a Sunday that is a public holiday: the first working day after it."""
    algiers = paydates.ZONE
    clock = ManualClock(datetime(2026, 12, 5, 12, 0, tzinfo=algiers).timestamp())  # a Saturday
    authority = TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=3600, clock=clock.now)
    server = LiveServer(create_app(_ledger_settings(tmp_path, redis_url), clock=clock))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            async def next_payout() -> tuple[str, int]:
                p1 = auth(authority.mint(sub="p1", name="p1", role=Role.PRACTITIONER, ttl_s=3600)[0])
                s = await _statement(http, p1)
                return s["next_payout_date"], s["payout_minimum_minor"]

            assert await next_payout() == ("2026-12-06", 100_000)
            clock.set(datetime(2026, 12, 6, 9, 0, tzinfo=algiers).timestamp())  # Sunday: the week's run begins

            async def after_the_run() -> bool:
                return (await next_payout())[0] == "2026-12-13"

            await eventually(after_the_run, what="the next Sunday once this Sunday's run has begun")
            clock.set(datetime(2026, 10, 31, 12, 0, tzinfo=algiers).timestamp())  # Sunday 1 November is a holiday
            assert (await next_payout())[0] == "2026-11-02"
    finally:
        await server.stop()
