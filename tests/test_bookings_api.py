"""Bookings through the HTTP API on real Redis: practitioners, availability, slots, quotes, bookings, events."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from session_server.bookings.api import AvailabilityIn
from session_server.bookings.model import BookingStatus
from session_server.bookings.rules import BOOKING_TRANSITIONS
from session_server.context import AppContext
from session_server.errors import Conflict
from session_server.settings import Settings

from .bookings_support import (
    assert_daily_windows,
    events,
    every_day,
    first_slot,
    iso,
    local_day,
    make_practitioner,
    settled,
)
from .conftest import api_key_auth, auth

Token = Callable[..., str]


async def test_a_new_practitioner_awaits_review_and_only_an_active_one_is_bookable(
        client: httpx.AsyncClient, token: Token, redis_client: aioredis.Redis) -> None:
    await make_practitioner(client, "p1", activate=False, weekly=every_day())
    c = auth(token("client", "c1"))
    for admin in (api_key_auth(), auth(token("admin", "a1"))):  # the platform's backend, or an admin
        r = await client.get("/v1/practitioners/p1", headers=admin)
        assert r.json()["status"] == "pending_review"
    assert (await client.get("/v1/practitioners/p1", headers=c)).status_code == 404
    assert (await client.get("/v1/practitioners", headers=c)).json() == {"practitioners": []}
    # nor through any other route, to a client (even one whose id is the practitioner's)
    day = {"from": iso(time.time()), "to": iso(time.time() + 86400)}
    for who in (c, auth(token("client", "p1"))):
        for path, params in (("/v1/practitioners/p1/availability", None), ("/v1/quotes", P1),
                             ("/v1/practitioners/p1/slots", day)):
            r = await client.get(path, headers=who, params=params)
            assert r.status_code == 404 and r.json()["code"] == "practitioner_not_found", (path, r.text)
    for path, params in (("/v1/quotes", {**P1, "code": "ANYCODE"}),
                         ("/v1/practitioners/p1/slots", {**day, "code": "ANYCODE"})):  # a code tells nothing
        r = await client.get(path, headers=c, params=params)
        assert r.status_code == 404 and r.json()["code"] == "practitioner_not_found", (path, r.text)
    assert (await client.get("/v1/practitioners/p1/availability", headers=auth(token("practitioner", "p1")))
            ).status_code == 200
    r = await client.post("/v1/bookings", headers=c, json={"practitioner_id": "p1",
                                                           "starts_at": iso(time.time() + 7200)})
    assert r.status_code == 409 and r.json()["code"] == "not_bookable"
    r = await client.post("/v1/practitioners/p1/status", headers=api_key_auth(), json={"status": "active"})
    assert r.json()["status"] == "active"
    r = await client.post("/v1/practitioners/p1/status", headers=api_key_auth(), json={"status": "active"})
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    assert [e.type for e in await events(redis_client)] == [
        "practitioner.created", "availability.published", "practitioner.activated"]
    slot = await first_slot(client, "p1", c)
    assert slot["price"]["client_total"] == 200_000 + 50_000


async def test_defaults_are_fifty_minutes_dzd_and_africa_algiers(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/practitioners", headers=api_key_auth(), json={
        "id": "p9", "display_name": "A", "specialty": "speech_therapist", "price_minor": 1000})
    assert r.status_code == 201
    assert {k: r.json()[k] for k in ("session_minutes", "currency", "timezone", "status")} == {
        "session_minutes": 50, "currency": "DZD", "timezone": "Africa/Algiers", "status": "pending_review"}


async def test_a_client_books_a_slot_at_the_quoted_price_and_the_practitioner_sees_it(
        client: httpx.AsyncClient, token: Token, redis_client: aioredis.Redis) -> None:
    await make_practitioner(client, "p1", weekly=every_day())
    c = auth(token("client", "c1"))
    slot = await first_slot(client, "p1", c)
    assert slot["price"] == {"currency": "DZD", "practitioner_price": 200_000, "commission": 50_000,
                             "discount": 0, "practitioner_share": 200_000, "platform_share": 50_000,
                             "client_total": 250_000, "code": None, "code_kind": None, "referrer_credit": 0}
    r = await client.post("/v1/bookings", headers=c, json={
        "practitioner_id": "p1", "starts_at": slot["starts_at"], "expected_total": 250_000})
    assert r.status_code == 201, r.text
    booking = r.json()
    assert booking["status"] == "confirmed" and booking["ends_at"] == slot["ends_at"]
    assert booking["price"]["client_total"] == 250_000
    created = await events(redis_client, "booking.created")
    assert len(created) == 1 and created[0].body["booking_id"] == booking["id"]
    assert created[0].body["client_total"] == 250_000
    mine = await client.get("/v1/bookings", headers=auth(token("practitioner", "p1")))
    assert [b["id"] for b in mine.json()["bookings"]] == [booking["id"]]
    # the booked slot is no longer offered
    again = await first_slot(client, "p1", c)
    assert again["starts_at"] != slot["starts_at"]
    r = await client.post("/v1/bookings", headers=auth(token("client", "c2")),
                          json={**P1, "starts_at": slot["starts_at"]})
    assert r.status_code == 409 and r.json()["code"] == "slot_taken"
    assert len(await events(redis_client, "booking.created")) == 1


async def test_a_price_change_applies_to_new_bookings_only(client: httpx.AsyncClient, token: Token) -> None:
    await make_practitioner(client, "p1", weekly=every_day())
    c, p = auth(token("client", "c1")), auth(token("practitioner", "p1"))
    slot = await first_slot(client, "p1", c)
    r = await client.post("/v1/bookings", headers=c, json={**P1, "starts_at": slot["starts_at"]})
    booking_id = r.json()["id"]
    r = await client.put("/v1/practitioners/p1/price", headers=p, json={"price_minor": 400_000})
    assert r.status_code == 200 and r.json()["price_minor"] == 400_000
    assert (await client.put("/v1/practitioners/p1/price", headers=auth(token("practitioner", "p2")),
                             json={"price_minor": 1})).status_code == 403
    r = await client.get(f"/v1/bookings/{booking_id}", headers=c)
    assert r.json()["price"]["client_total"] == 250_000
    slot = await first_slot(client, "p1", c)
    assert slot["price"]["client_total"] == 450_000
    # quoted the new price, a client books at once (the server read the old price just before the change)
    r = await client.post("/v1/bookings", headers=auth(token("client", "c3")), json={
        "practitioner_id": "p1", "starts_at": slot["starts_at"], "expected_total": 450_000})
    assert r.status_code == 201 and r.json()["price"]["client_total"] == 450_000
    r = await client.post("/v1/bookings", headers=auth(token("client", "c2")), json={
        "practitioner_id": "p1", "starts_at": slot["starts_at"], "expected_total": 250_000})
    assert r.status_code == 409 and r.json()["code"] == "price_changed"
    assert r.json()["quote"]["client_total"] == 450_000


async def test_either_party_cancels_with_a_reason_and_the_slot_is_free_again(
        client: httpx.AsyncClient, token: Token, redis_client: aioredis.Redis) -> None:
    await make_practitioner(client, "p1", weekly=every_day())
    c, p = auth(token("client", "c1")), auth(token("practitioner", "p1"))
    slot = await first_slot(client, "p1", c)
    for who, headers in (("client", c), ("practitioner", p)):
        r = await client.post("/v1/bookings", headers=c, json={"practitioner_id": "p1",
                                                               "starts_at": slot["starts_at"]})
        assert r.status_code == 201, r.text
        bid = r.json()["id"]
        reason = "travel\r\nback on Monday" if who == "client" else "ظرف طارئ\u200f (urgent)"  # marks are fine
        r = await client.post(f"/v1/bookings/{bid}/cancel", headers=headers, json={"reason": reason})
        assert r.status_code == 200
        assert r.json()["status"] == "cancelled"
        assert r.json()["cancellation"] == {"reason": reason, "by": who}
        r = await client.post(f"/v1/bookings/{bid}/cancel", headers=headers, json={"reason": "again"})
        assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    cancelled = await events(redis_client, "booking.cancelled")
    assert [e.body["by"] for e in cancelled] == ["client", "practitioner"]
    assert cancelled[0].body["from"] == "confirmed" and cancelled[0].body["to"] == "cancelled"
    r = await client.post("/v1/bookings/nope/cancel", headers=c, json={"reason": "x"})
    assert r.status_code == 404


async def test_clients_see_their_own_admins_all_and_support_only_metadata(
        client: httpx.AsyncClient, token: Token) -> None:
    await make_practitioner(client, "p1", weekly=every_day())
    c1, c2 = auth(token("client", "c1")), auth(token("client", "c2"))
    slot = await first_slot(client, "p1", c1)
    bid = (await client.post("/v1/bookings", headers=c1, json={"practitioner_id": "p1",
                                                               "starts_at": slot["starts_at"]})).json()["id"]
    assert (await client.get(f"/v1/bookings/{bid}", headers=c2)).status_code == 404
    assert (await client.get("/v1/bookings", headers=c2)).json() == {"bookings": []}
    assert (await client.get("/v1/bookings", headers=auth(token("practitioner", "p2")))).json() == {"bookings": []}
    admin = (await client.get("/v1/bookings", headers=auth(token("admin", "a1")))).json()["bookings"]
    assert [b["id"] for b in admin] == [bid] and "price" in admin[0]
    support = (await client.get(f"/v1/bookings/{bid}", headers=auth(token("support", "s1")))).json()
    assert set(support) == {"id", "practitioner_id", "client_id", "starts_at", "ends_at", "status", "created_at"}
    r = await client.post("/v1/bookings", headers=auth(token("support", "s1")),
                          json={**P1, "starts_at": slot["starts_at"]})
    assert r.status_code == 403

    # an id names a person in one role: a client whose id is the practitioner's is not that practitioner
    impostor = auth(token("client", "p1"))
    assert (await client.get(f"/v1/bookings/{bid}", headers=impostor)).status_code == 404
    assert (await client.get(f"/v1/bookings/{bid}/documents", headers=impostor)).status_code == 404
    r = await client.post(f"/v1/bookings/{bid}/cancel", headers=impostor, json={"reason": "not mine"})
    assert r.status_code == 404 and r.json()["code"] == "booking_not_found"
    assert (await client.get(f"/v1/bookings/{bid}", headers=c1)).json()["status"] == "confirmed"
    assert (await client.get(f"/v1/bookings/{bid}", headers=auth(token("practitioner", "p1")))).status_code == 200


async def test_codes_discount_the_right_share_and_refuse_clearly(client: httpx.AsyncClient, token: Token,
                                                                 redis_client: aioredis.Redis) -> None:
    await make_practitioner(client, "p1", weekly=every_day())
    p = auth(token("practitioner", "p1"))
    r = await client.post("/v1/practitioners/p1/codes", headers=p, json={"code": "HALF", "percent": 50, "max_uses": 1})
    assert r.status_code == 201, r.text
    r = await client.post("/v1/codes", headers=api_key_auth(), json={
        "code": "PROMO", "kind": "promotion", "amount_minor": 50_000})  # the whole commission, no more
    assert r.status_code == 201
    r = await client.post("/v1/codes", headers=api_key_auth(), json={
        "code": "FRIEND", "kind": "referral", "referrer_id": "c9", "amount_minor": 10_000,
        "referrer_credit_minor": 5_000})
    assert r.status_code == 201
    c1 = auth(token("client", "c1"))
    q = (await client.get("/v1/quotes", headers=c1, params={"practitioner_id": "p1", "code": "HALF"})).json()
    assert (q["practitioner_share"], q["platform_share"], q["client_total"]) == (100_000, 50_000, 150_000)
    q = (await client.get("/v1/quotes", headers=c1, params={"practitioner_id": "p1", "code": "PROMO"})).json()
    assert (q["discount"], q["practitioner_share"], q["platform_share"]) == (50_000, 200_000, 0)
    slot = await first_slot(client, "p1", c1)
    r = await client.post("/v1/bookings", headers=c1, json={**P1, "starts_at": slot["starts_at"],
                                                            "code": "HALF", "expected_total": 150_000})
    assert r.status_code == 201, r.text
    assert r.json()["price"] == {"currency": "DZD", "client_total": 150_000, "practitioner_share": 100_000,
                                 "platform_share": 50_000, "discount": 100_000, "code": "HALF"}
    c2 = auth(token("client", "c2"))
    slot = await first_slot(client, "p1", c2)
    r = await client.post("/v1/bookings", headers=c2, json={**P1, "starts_at": slot["starts_at"],
                                                            "code": "HALF"})
    assert r.status_code == 422 and r.json()["code"] == "code_used_up"
    r = await client.post("/v1/bookings", headers=c2, json={**P1, "starts_at": slot["starts_at"],
                                                            "code": "NOPE"})
    assert r.status_code == 422 and r.json()["code"] == "code_unknown"
    r = await client.post("/v1/bookings", headers=auth(token("client", "c9")), json={
        "practitioner_id": "p1", "starts_at": slot["starts_at"], "code": "FRIEND"})
    assert r.status_code == 422 and r.json()["code"] == "code_not_applicable"
    r = await client.post("/v1/bookings", headers=c2, json={**P1, "starts_at": slot["starts_at"],
                                                            "code": "FRIEND"})
    assert r.status_code == 201
    created = (await events(redis_client, "booking.created"))[-1]
    assert (created.body["referrer_id"], created.body["referrer_credit"]) == ("c9", 5_000)
    slot = await first_slot(client, "p1", c2)
    r = await client.post("/v1/bookings", headers=c2, json={**P1, "starts_at": slot["starts_at"],
                                                            "code": "FRIEND"})
    assert r.status_code == 422 and r.json()["code"] == "code_already_used"
    # the quote and the slots say so before the client tries to book, for that client only
    r = await client.get("/v1/quotes", headers=c2, params={**P1, "code": "FRIEND"})
    assert r.status_code == 422 and r.json()["code"] == "code_already_used"
    r = await client.get(SLOTS, headers=c2, params={"from": iso(time.time()), "to": iso(time.time() + 86400),
                                                    "code": "FRIEND"})
    assert r.status_code == 422 and r.json()["code"] == "code_already_used"
    r = await client.get("/v1/quotes", headers=auth(token("client", "c3")), params={**P1, "code": "FRIEND"})
    assert r.status_code == 200 and r.json()["discount"] > 0


async def _book_direct(ctx: AppContext, n: int, starts_at: int) -> str:
    booking = await ctx.bookings.book(client_id=f"tc{n}", practitioner_id="p1", starts_at=starts_at,
                                      code=None, expected_total=None, now=int(time.time()))
    return booking.id


def _shortest_paths() -> dict[BookingStatus, list[BookingStatus]]:
    """For every status, the shortest run of transitions that leads a confirmed booking there."""
    paths: dict[BookingStatus, list[BookingStatus]] = {BookingStatus.CONFIRMED: []}
    frontier = [BookingStatus.CONFIRMED]
    while frontier:
        current = frontier.pop(0)
        for to in sorted(BOOKING_TRANSITIONS[current]):
            if to not in paths:
                paths[to] = [*paths[current], to]
                frontier.append(to)
    return paths


PATHS = _shortest_paths()


def test_every_booking_status_can_be_reached_from_a_confirmed_booking() -> None:
    assert set(PATHS) == set(BookingStatus)


async def test_every_transition_through_the_store_is_atomic_with_its_event_or_refused_with_409(
        client: httpx.AsyncClient, app: Starlette, redis_client: aioredis.Redis, token: Token) -> None:
    ctx: AppContext = app.state.ctx
    await make_practitioner(client, "p1", weekly=every_day())
    now = time.time()
    r = await client.get("/v1/practitioners/p1/slots", headers=auth(token("client", "x")),
                         params={"from": iso(now), "to": iso(now + 7 * 86400)})
    starts = [int(datetime.fromisoformat(s["starts_at"]).timestamp()) for s in r.json()["slots"]]
    for n, (current, to) in enumerate(itertools.product(list(BookingStatus), repeat=2)):
        bid = await _book_direct(ctx, n, starts[n])
        for step in PATHS[current]:
            await ctx.bookings.store.transition(bid, step, f"booking.{step.value}", {}, int(time.time()))
        before = await redis_client.xlen("ss:events")
        if to in BOOKING_TRANSITIONS[current]:
            previous = await ctx.bookings.store.transition(bid, to, f"booking.{to.value}", {"note": 1},
                                                           int(time.time()))
            assert previous.status is current
            booking = await ctx.bookings.store.booking(bid)
            assert booking is not None and booking.status is to
            last = (await events(redis_client))[-1]
            assert (last.type, last.body["from"], last.body["to"], last.body["note"]) == (
                f"booking.{to.value}", current.value, to.value, 1)
            assert await redis_client.xlen("ss:events") == before + 1
        else:
            with pytest.raises(Conflict):
                await ctx.bookings.store.transition(bid, to, f"booking.{to.value}", {}, int(time.time()))
            booking = await ctx.bookings.store.booking(bid)
            assert booking is not None and booking.status is current
            assert await redis_client.xlen("ss:events") == before


async def test_a_cancelled_booking_frees_its_time_for_the_same_client_elsewhere(
        client: httpx.AsyncClient, token: Token) -> None:
    await make_practitioner(client, "p1", weekly=every_day())
    await make_practitioner(client, "p2", weekly=every_day())
    c = auth(token("client", "c1"))
    slot = await first_slot(client, "p1", c)
    bid = (await client.post("/v1/bookings", headers=c, json={"practitioner_id": "p1",
                                                              "starts_at": slot["starts_at"]})).json()["id"]
    r = await client.post("/v1/bookings", headers=c, json={"practitioner_id": "p2", "starts_at": slot["starts_at"]})
    assert r.status_code == 409 and r.json()["code"] == "client_overlap"
    await client.post(f"/v1/bookings/{bid}/cancel", headers=c, json={"reason": "changed my mind"})
    r = await client.post("/v1/bookings", headers=c, json={"practitioner_id": "p2", "starts_at": slot["starts_at"]})
    assert r.status_code == 201


async def test_availability_comes_back_as_utc_windows_and_blocked_days_have_no_slots(
        client: httpx.AsyncClient, token: Token, settings: Settings) -> None:
    blocked = local_day(3)
    before = time.time()
    body = await make_practitioner(client, "p1", weekly=every_day("09:00", "12:00"),
                                   exceptions=[{"date": blocked, "blocked": True}])
    published = (before, time.time())
    assert body["timezone"] == "Africa/Algiers"
    assert_daily_windows(body["windows"], "08:00", "11:00", published=published,
                         horizon_days=settings.booking_horizon_days)
    assert not any(w["start"].startswith(blocked) for w in body["windows"])
    r = await client.get(SLOTS, headers=auth(token("client", "c1")),
                         params={"from": f"{blocked}T00:00:00Z", "to": f"{blocked}T23:59:00Z"})
    assert r.status_code == 200 and r.json()["slots"] == []


# --- bad input: a 4xx problem document, and nothing written -----------------------------------------

SLOTS = "/v1/practitioners/p1/slots"
P1 = {"practitioner_id": "p1"}


def _bad_cases() -> list[tuple[str, str, str, dict[str, Any] | None, dict[str, str] | None, int]]:
    far = local_day(40)
    return [
        # (name, method, path, json, params, status)
        ("malformed date", "GET", SLOTS, None, {"from": "yesterday", "to": "2026-01-01T00:00Z"}, 422),
        ("impossible date", "GET", SLOTS, None,
         {"from": "2026-02-30T00:00:00Z", "to": "2026-03-02T00:00:00Z"}, 422),
        ("naive date", "GET", SLOTS, None, {"from": "2026-02-01T00:00:00", "to": "2026-03-02T00:00:00"}, 422),
        ("end before start", "GET", SLOTS, None,
         {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, 422),
        ("ten-year range", "GET", SLOTS, None,
         {"from": "2026-01-01T00:00:00Z", "to": "2036-01-01T00:00:00Z"}, 422),
        ("unknown practitioner slots", "GET", "/v1/practitioners/nobody/slots", None,
         {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}, 404),
        ("unknown query field", "GET", SLOTS, None,
         {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "colour": "red"}, 422),
        ("booking off the grid", "POST", "/v1/bookings", {**P1, "starts_at": "@slot+7min"}, None, 422),
        ("booking outside availability", "POST", "/v1/bookings", {**P1, "starts_at": "@night"}, None, 422),
        ("booking too soon", "POST", "/v1/bookings", {**P1, "starts_at": "@now"}, None, 422),
        ("booking in the past", "POST", "/v1/bookings", {**P1, "starts_at": "2020-01-01T10:00:00Z"}, None, 422),
        ("booking beyond horizon", "POST", "/v1/bookings", {**P1, "starts_at": f"{far}T10:00:00Z"}, None, 422),
        ("booking unknown practitioner", "POST", "/v1/bookings",
         {"practitioner_id": "ghost", "starts_at": "@slot"}, None, 404),
        ("booking unknown field", "POST", "/v1/bookings", {**P1, "starts_at": "@slot", "price": 1}, None, 422),
        ("booking at a bare number", "POST", "/v1/bookings", {**P1, "starts_at": 1795680000}, None, 422),
        ("booking at a number in a string", "POST", "/v1/bookings", {**P1, "starts_at": "1795680000"}, None, 422),
        ("booking with a price as a string", "POST", "/v1/bookings",
         {**P1, "starts_at": "@slot", "expected_total": "250000"}, None, 422),
        ("price as a boolean", "PUT", "/v1/practitioners/p1/price", {"price_minor": True}, None, 422),
        ("price as a string", "PUT", "/v1/practitioners/p1/price", {"price_minor": "150000"}, None, 422),
        ("price as a float", "PUT", "/v1/practitioners/p1/price", {"price_minor": 150000.0}, None, 422),
        ("booking year 10000", "POST", "/v1/bookings", {**P1, "starts_at": "10000-01-01T00:00:00Z"}, None, 422),
        ("negative price", "POST", "/v1/practitioners", {"id": "p5", "display_name": "x", "specialty": "dietitian",
                                                         "price_minor": -1}, None, 422),
        ("absurd price", "POST", "/v1/practitioners", {"id": "p5", "display_name": "x", "specialty": "dietitian",
                                                       "price_minor": 10**12}, None, 422),
        ("unknown specialty", "POST", "/v1/practitioners", {"id": "p5", "display_name": "x", "specialty": "astrologer",
                                                            "price_minor": 1}, None, 422),
        ("unknown zone", "POST", "/v1/practitioners", {"id": "p5", "display_name": "x", "specialty": "dietitian",
                                                       "price_minor": 1, "timezone": "Mars/Olympus"}, None, 422),
        ("practitioner in another currency", "POST", "/v1/practitioners",
         {"id": "p5", "display_name": "x", "specialty": "dietitian", "price_minor": 5000, "currency": "EUR"},
         None, 422),
        ("practitioner id with a colon", "POST", "/v1/practitioners", {"id": "p1:windows", "display_name": "x",
                                                                       "specialty": "dietitian", "price_minor": 1},
         None, 422),
        ("unknown practitioner field", "POST", "/v1/practitioners", {"id": "p5", "display_name": "x",
                                                                     "specialty": "dietitian", "price_minor": 1,
                                                                     "rating": 5}, None, 422),
        ("duplicate practitioner", "POST", "/v1/practitioners", {"id": "p1", "display_name": "x",
                                                                 "specialty": "dietitian", "price_minor": 1},
         None, 409),
        ("window ends before start", "PUT", "/v1/practitioners/p1/availability",
         {"weekly": [{"day": "monday", "start": "12:00", "end": "09:00"}]}, None, 422),
        ("window 25:00", "PUT", "/v1/practitioners/p1/availability",
         {"weekly": [{"day": "monday", "start": "09:00", "end": "25:00"}]}, None, 422),
        ("exception beyond horizon", "PUT", "/v1/practitioners/p1/availability",
         {"exceptions": [{"date": far, "blocked": True}]}, None, 422),
        ("a day both blocked and open", "PUT", "/v1/practitioners/p1/availability",
         {"exceptions": [{"date": local_day(2), "blocked": True},
                         {"date": local_day(2), "start": "10:00", "end": "12:00"}]}, None, 422),
        ("impossible exception date", "PUT", "/v1/practitioners/p1/availability",
         {"exceptions": [{"date": "2026-02-30", "blocked": True}]}, None, 422),
        # a body lost on the way (a client bug, a proxy) must not withdraw every window
        ("empty body on availability", "PUT", "/v1/practitioners/p1/availability", None, None, 422),
        ("unknown weekday", "PUT", "/v1/practitioners/p1/availability",
         {"weekly": [{"day": "someday", "start": "09:00", "end": "10:00"}]}, None, 422),
        ("negative new price", "PUT", "/v1/practitioners/p1/price", {"price_minor": -5}, None, 422),
        ("cancel without reason", "POST", "/v1/bookings/@booking/cancel", {}, None, 422),
        ("cancel reason with a control character", "POST", "/v1/bookings/@booking/cancel",
         {"reason": "late\u0000"}, None, 422),
        ("cancel reason with a bidi override", "POST", "/v1/bookings/@booking/cancel",
         {"reason": "\u202egnp.exe"}, None, 422),
        ("display name with an escape", "POST", "/v1/practitioners", {"id": "p5", "display_name": "Dr\u001b[31m",
                                                                      "specialty": "dietitian", "price_minor": 1},
         None, 422),
        ("code both fixed and percent", "POST", "/v1/practitioners/p1/codes",
         {"code": "BOTH", "amount_minor": 10, "percent": 5}, None, 422),
        ("code already expired", "POST", "/v1/practitioners/p1/codes",
         {"code": "OLD", "amount_minor": 10, "expires_at": "2020-01-01T00:00:00Z"}, None, 422),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=[c[0] for c in _bad_cases()])
async def test_bad_input_gets_a_problem_document_and_writes_nothing(
        client: httpx.AsyncClient, token: Token, redis_client: aioredis.Redis,
        case: tuple[str, str, str, dict[str, Any] | None, dict[str, str] | None, int]) -> None:
    name, method, path, body, params, status = case
    await make_practitioner(client, "p1", weekly=every_day("09:00", "17:00"))
    c = auth(token("client", "c1"))
    slot = await first_slot(client, "p1", c)
    bid = (await client.post("/v1/bookings", headers=c, json={"practitioner_id": "p1",
                                                              "starts_at": slot["starts_at"]})).json()["id"]
    other = await first_slot(client, "p1", c)
    start = datetime.fromisoformat(other["starts_at"]).timestamp()
    subst = {"@slot+7min": iso(start + 420), "@slot": other["starts_at"], "@now": iso(time.time() + 60),
             "@night": other["starts_at"][:11] + "23:10:00Z"}
    if body and isinstance(body.get("starts_at"), str) and body["starts_at"] in subst:
        body = {**body, "starts_at": subst[body["starts_at"]]}
    path = path.replace("@booking", bid)
    headers = api_key_auth() if path.startswith("/v1/practitioners") and method != "GET" and "codes" not in path \
        and "price" not in path and "availability" not in path else (
        auth(token("practitioner", "p1")) if method != "GET" and path.startswith("/v1/practitioners")
        else c)
    await settled(redis_client)
    before_keys = sorted(await redis_client.keys("*"))
    before_stream = await redis_client.xlen("ss:events")
    before_p1 = await redis_client.hgetall("ss:practitioner:p1")
    r = await client.request(method, path, json=body, params=params, headers=headers)
    assert r.status_code == status, (name, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == status and problem["code"] and problem["detail"]
    assert await redis_client.xlen("ss:events") == before_stream
    assert sorted(await redis_client.keys("*")) == before_keys
    assert await redis_client.hgetall("ss:practitioner:p1") == before_p1


async def test_a_practitioner_who_moves_time_zone_keeps_their_local_hours(
        client: httpx.AsyncClient, token: Token, settings: Settings) -> None:
    # Weekly hours are entered in the practitioner's zone: 09:00-12:00 in Algiers (UTC+1) is 08:00 UTC; after
    # a move to Tokyo (UTC+9, no daylight saving) the same published hours are 00:00 UTC. The last window
    # may be cut short by the horizon, counted from the (re)publication.
    before = time.time()
    await make_practitioner(client, "mover", weekly=every_day("09:00", "12:00"))
    published = (before, time.time())
    headers = auth(token("client", "c-mover"))

    async def windows() -> list[dict[str, str]]:
        r = await client.get("/v1/practitioners/mover/availability", headers=headers)
        assert r.status_code == 200, r.text
        found: list[dict[str, str]] = r.json()["windows"]
        return found

    assert_daily_windows(await windows(), "08:00", "11:00", published=published,
                         horizon_days=settings.booking_horizon_days)
    before = time.time()
    r = await client.patch("/v1/practitioners/mover", headers=api_key_auth(), json={"timezone": "Asia/Tokyo"})
    published = (before, time.time())
    assert r.status_code == 200, r.text
    assert r.json()["timezone"] == "Asia/Tokyo"
    assert_daily_windows(await windows(), "00:00", "03:00", published=published,
                         horizon_days=settings.booking_horizon_days)
    r = await client.get("/v1/practitioners/mover/availability", headers=headers)
    assert r.json()["availability"]["weekly"][0]["start"] == "09:00"  # what they entered is unchanged


async def test_a_round_the_clock_slot_stays_listed_and_bookable_when_availability_is_published_again_a_day_later(
        client: httpx.AsyncClient, app: Starlette, token: Token) -> None:
    # Each day's grid starts at that day's local midnight: 1,440 minutes is not a multiple of 50, so a grid
    # running on from the publication day would put every later day's slots elsewhere after each new
    # publication, and a slot a client was shown would be refused.
    ctx: AppContext = app.state.ctx
    zone = ZoneInfo("Africa/Algiers")
    await make_practitioner(client, "p1", weekly=every_day(), timezone="Africa/Algiers")
    c1, c2 = auth(token("client", "c1")), auth(token("client", "c2"))
    day = datetime.fromisoformat(local_day(3)).replace(tzinfo=zone)
    day_range = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}

    async def listed() -> list[str]:
        r = await client.get(SLOTS, headers=c1, params=day_range)
        assert r.status_code == 200, r.text
        return [s["starts_at"] for s in r.json()["slots"]]

    shown = await listed()
    assert shown[0] == iso(day.timestamp())  # local midnight
    # 22:30 local: the last that ends by midnight
    assert len(shown) == 28 and shown[-1] == iso(day.timestamp() + 27 * 3000)
    r = await client.post("/v1/bookings", headers=c1, json={**P1, "starts_at": shown[-1]})
    assert r.status_code == 201, r.text
    # published again as if tomorrow (the HTTP route reads the real clock, so through the service)
    p = await ctx.bookings.store.require_practitioner("p1")
    raw = p.availability
    await ctx.bookings.publish(p, AvailabilityIn.model_validate(raw).spec(), raw, int(time.time()) + 86400)
    assert await listed() == shown[:-1]
    r = await client.post("/v1/bookings", headers=c2, json={**P1, "starts_at": shown[13]})
    assert r.status_code == 201, r.text
    assert await listed() == shown[:13] + shown[14:-1]


async def test_a_listed_slot_leaves_five_minutes_to_book_it_and_a_slot_within_the_lead_time_is_refused(
        client: httpx.AsyncClient, app: Starlette, token: Token, redis_client: aioredis.Redis) -> None:
    ctx: AppContext = app.state.ctx
    await make_practitioner(client, "p1", weekly=every_day())
    c1 = auth(token("client", "c1"))
    asked_at = int(time.time())
    r = await client.get(SLOTS, headers=c1, params={"from": iso(asked_at), "to": iso(asked_at + 86400)})
    first = int(datetime.fromisoformat(r.json()["slots"][0]["starts_at"]).timestamp())
    # at least the hour's lead time and five minutes ahead (how far beyond depends on the grid, which
    # restarts at each local midnight)
    assert asked_at + 3600 + 300 <= first
    # the same slot, asked about at chosen instants (the HTTP route reads the real clock): listed while five
    # minutes are left before its lead time runs out, hidden after, and still bookable until the lead time
    p = await ctx.bookings.store.require_practitioner("p1")

    async def listed_at(now: int) -> bool:
        return first in [s.starts_at for s in await ctx.bookings.free_slots(p, first - 60, first + 60, now)]

    assert await listed_at(first - 3600 - 300)
    assert not await listed_at(first - 3600 - 299)
    await settled(redis_client)
    before_keys, before_stream = sorted(await redis_client.keys("*")), await redis_client.xlen("ss:events")
    r = await client.post("/v1/bookings", headers=c1, json={**P1, "starts_at": iso(time.time() + 1800)})
    assert r.status_code == 422 and r.json()["code"] == "too_soon", r.text
    assert sorted(await redis_client.keys("*")) == before_keys
    assert await redis_client.xlen("ss:events") == before_stream
    booked = await ctx.bookings.book(client_id="c1", practitioner_id="p1", starts_at=first, code=None,
                                     expected_total=None, now=first - 3600)
    assert booked.starts_at == first


async def test_a_move_of_time_zone_is_not_refused_for_an_exception_day_already_past(
        client: httpx.AsyncClient, app: Starlette, token: Token) -> None:
    ctx: AppContext = app.state.ctx
    await make_practitioner(client, "mover", weekly=every_day("09:00", "12:00"))
    p = await ctx.bookings.store.require_practitioner("mover")
    # published two days ago, with a blocked day that was then tomorrow and is now yesterday
    then = int(time.time()) - 2 * 86400
    blocked = (datetime.fromtimestamp(then, ZoneInfo("Africa/Algiers")) + timedelta(days=1)).date().isoformat()
    upcoming = local_day(3)
    raw = {"weekly": [{"day": d, "start": "09:00", "end": "12:00"} for d in
                      ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")],
           "exceptions": [{"date": blocked, "blocked": True}, {"date": upcoming, "blocked": True}]}
    await ctx.bookings.publish(p, AvailabilityIn.model_validate(raw).spec(), raw, then)
    r = await client.patch("/v1/practitioners/mover", headers=api_key_auth(), json={"timezone": "Asia/Tokyo"})
    assert r.status_code == 200, r.text
    r = await client.get("/v1/practitioners/mover/availability", headers=auth(token("client", "c1")))
    # the past day is history and is dropped; the coming one still blocks its day
    assert [e["date"] for e in r.json()["availability"]["exceptions"]] == [upcoming]


async def test_a_cancelled_booking_gives_its_code_use_back(client: httpx.AsyncClient, token: Token) -> None:
    await make_practitioner(client, "p1", weekly=every_day())
    p = auth(token("practitioner", "p1"))
    r = await client.post("/v1/practitioners/p1/codes", headers=p, json={"code": "ONCE", "percent": 50, "max_uses": 1})
    assert r.status_code == 201, r.text
    r = await client.post("/v1/codes", headers=api_key_auth(), json={
        "code": "FRIEND", "kind": "referral", "referrer_id": "c9", "amount_minor": 10_000})
    assert r.status_code == 201, r.text
    c1, c2 = auth(token("client", "c1")), auth(token("client", "c2"))

    async def book(headers: dict[str, str], code: str) -> httpx.Response:
        slot = await first_slot(client, "p1", headers)
        return await client.post("/v1/bookings", headers=headers, json={**P1, "starts_at": slot["starts_at"],
                                                                         "code": code})

    once, friend = await book(c1, "ONCE"), await book(c1, "FRIEND")
    assert once.status_code == 201 and friend.status_code == 201
    assert (await book(c2, "ONCE")).json()["code"] == "code_used_up"
    assert (await book(c1, "FRIEND")).json()["code"] == "code_already_used"
    for b in (once, friend):
        r = await client.post(f"/v1/bookings/{b.json()['id']}/cancel", headers=c1, json={"reason": "plans changed"})
        assert r.status_code == 200, r.text
    # the sessions were never had: the single use and the once-per-client use are there to use again
    again = await book(c2, "ONCE")
    assert again.status_code == 201 and again.json()["price"]["discount"] == 100_000
    assert (await book(c1, "FRIEND")).status_code == 201
    assert (await book(c1, "ONCE")).json()["code"] == "code_used_up"


async def test_the_platforms_backend_reads_and_cancels_with_its_api_key(client: httpx.AsyncClient,
                                                                        token: Token) -> None:
    await make_practitioner(client, "p1", weekly=every_day())
    await make_practitioner(client, "p2", weekly=every_day(), activate=False)
    c1 = auth(token("client", "c1"))
    slot = await first_slot(client, "p1", c1)
    bid = (await client.post("/v1/bookings", headers=c1, json={**P1, "starts_at": slot["starts_at"]})).json()["id"]
    key = api_key_auth()
    r = await client.get("/v1/practitioners", headers=key)
    assert r.status_code == 200 and {p["id"]: p["status"] for p in r.json()["practitioners"]} == {
        "p1": "active", "p2": "pending_review"}
    assert (await client.get("/v1/practitioners/p2", headers=key)).status_code == 200
    assert [b["id"] for b in (await client.get("/v1/bookings", headers=key)).json()["bookings"]] == [bid]
    assert "price" in (await client.get(f"/v1/bookings/{bid}", headers=key)).json()
    r = await client.post(f"/v1/bookings/{bid}/cancel", headers=key, json={"reason": "duplicate payment"})
    assert r.status_code == 200 and r.json()["cancellation"] == {"reason": "duplicate payment", "by": "admin"}
    bad = {"Authorization": "Basic " + base64.b64encode(b"bench:wrong").decode()}
    assert (await client.get("/v1/bookings", headers=bad)).status_code == 401


async def test_profile_changes_are_events_only_when_something_changed_and_never_carry_a_name(
        client: httpx.AsyncClient, token: Token, redis_client: aioredis.Redis) -> None:
    await make_practitioner(client, "p1", price=200_000)
    p1 = auth(token("practitioner", "p1"))
    before = await redis_client.xlen("ss:events")
    r = await client.patch("/v1/practitioners/p1", headers=api_key_auth(),
                           json={"display_name": "Practitioner p1", "session_minutes": 50})
    assert r.status_code == 200 and r.json()["display_name"] == "Practitioner p1"
    r = await client.put("/v1/practitioners/p1/price", headers=p1, json={"price_minor": 200_000})
    assert r.status_code == 200
    assert await redis_client.xlen("ss:events") == before  # nothing changed, nothing recorded
    r = await client.patch("/v1/practitioners/p1", headers=api_key_auth(),
                           json={"display_name": "د. سلمى", "session_minutes": 45})
    assert r.status_code == 200 and r.json()["session_minutes"] == 45
    updated = (await events(redis_client, "practitioner.updated"))[-1]
    assert updated.body == {"practitioner_id": "p1", "fields": ["display_name", "session_minutes"],
                            "changes": {"session_minutes": 45}}
    r = await client.patch("/v1/practitioners/p1", headers=api_key_auth(), json={"price_minor": 1})
    assert r.status_code == 422  # the price has its own route and event
    r = await client.put("/v1/practitioners/p1/price", headers=p1, json={"price_minor": 250_000})
    changed = (await events(redis_client, "practitioner.price_changed"))[-1]
    assert (changed.body["previous_price_minor"], changed.body["price_minor"]) == (200_000, 250_000)
