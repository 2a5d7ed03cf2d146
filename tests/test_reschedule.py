"""A session interrupted by a technical problem is rescheduled free of charge: the verdict makes an offer,
the client picks a new time (a free slot or one the practitioner proposed), the new booking is linked both
ways and costs nothing more, and the offer is used once. Bad choices are refused and change nothing. All
through the HTTP edge and the events stream, on the app's ManualClock, against real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from session_server.app import create_app
from session_server.auth import Role
from session_server.bookings.model import BookingStatus
from session_server.clock import ManualClock
from session_server.events import EVENTS_STREAM
from session_server.redis_client import blocking_client
from session_server.reschedule.consumer import GROUP, VerdictConsumer
from session_server.tasks import TaskSupervisor

from .bookings_support import events, every_day, iso, make_practitioner
from .conftest import make_settings, running
from .reschedule_support import (
    CID,
    PID,
    Server,
    event_count,
    interrupted_booking,
    reschedule_server,
    seed_practitioner,
    write_verdict,
)
from .support import eventually

DAY = 86400


@pytest.fixture
async def s(tmp_path: Path, redis_url: str) -> AsyncIterator[Server]:
    async with reschedule_server(tmp_path, redis_url) as server:
        await seed_practitioner(server)
        yield server


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


async def _choose(s: Server, booking_id: str, starts_at: str, headers: dict[str, str] | None = None) -> Any:
    return await s.http.post(f"/v1/bookings/{booking_id}/reschedule", headers=headers or s.client,
                             json={"starts_at": starts_at})


async def _snapshot(s: Server) -> tuple[int, int, list[str]]:
    """What a refused choice must leave as it was: the bookings' and sessions' events, the client's bookings
    and their states. (Other features write their own events meanwhile: the ledger's payout calendar, which
    the clock's jumps wake, announces its dates.)"""
    r = await s.http.get("/v1/bookings", headers=s.client)
    about = [e for e in await events(s.redis) if e.type.startswith(("booking.", "session."))]
    return (len(about), len(r.json()["bookings"]), sorted(f"{b['id']}:{b['status']}" for b in r.json()["bookings"]))


# --- the offer ------------------------------------------------------------------------------------


async def test_an_interrupted_verdict_offers_a_free_reschedule_once_and_tells_both(s: Server) -> None:
    booking = await interrupted_booking(s)
    offer = await s.offer(booking["id"])
    assert offer is not None
    assert offer["status"] == "open" and offer["reason"] == "verdict"
    assert offer["attribution"] == "client_connection"
    assert _epoch(offer["expires_at"]) - _epoch(offer["offered_at"]) == 14 * DAY
    assert offer["original_starts_at"] == booking["starts_at"]
    await s.wait_notified("reschedule.offered", Role.CLIENT, CID)
    await s.wait_notified("reschedule.offered", Role.PRACTITIONER, PID)
    # the same verdict delivered again (at-least-once) and a second verdict: still one offer
    await write_verdict(s.redis, booking, at=s.clock.now())
    await eventually(lambda: _group_caught_up(s), what="the offers consumer to read the second verdict")
    assert await event_count(s.redis, "booking.reschedule_offered") == 1
    offered = (await events(s.redis, "booking.reschedule_offered"))[0]
    assert offered.body["booking_id"] == booking["id"] and offered.body["window_days"] == 14


async def _group_caught_up(s: Server) -> bool:
    last = await s.redis.xrevrange("ss:events", count=1)
    groups = await s.redis.xinfo_groups("ss:events")
    return any(g["name"] == b"reschedule.offers" and g["last-delivered-id"] == last[0][0] and g["pending"] == 0
               for g in groups)


@pytest.mark.parametrize(("verdict", "attribution"), [("ended_early", "client"), ("client_no_show", ""),
                                                      ("completed", "")])
async def test_verdicts_that_are_not_a_technical_interruption_offer_nothing(
        s: Server, verdict: str, attribution: str) -> None:
    slot = (await s.slots())[0]
    booking = await s.book(slot["starts_at"])
    s.clock.set(_epoch(booking["ends_at"]) + 60)
    await write_verdict(s.redis, booking, verdict=verdict, attribution=attribution, at=s.clock.now())
    await eventually(lambda: _group_caught_up(s), what="the offers consumer to read the verdict")
    assert await s.offer(booking["id"]) is None
    assert await event_count(s.redis, "booking.reschedule_offered") == 0


async def test_a_verdict_written_while_no_server_ran_is_offered_when_one_starts(tmp_path: Path, redis_url: str
                                                                                ) -> None:
    async with reschedule_server(tmp_path, redis_url) as first:
        await seed_practitioner(first)
        booking = await first.book((await first.slots())[0]["starts_at"])
    # every process is down when the session's verdict is written
    client = aioredis.Redis.from_url(redis_url)
    try:
        await write_verdict(client, booking, attribution="platform", at=_epoch(booking["starts_at"]) + 600)
    finally:
        await client.aclose()
    clock = ManualClock(_epoch(booking["starts_at"]) + 900)
    app = create_app(make_settings(tmp_path, redis_url), clock=clock)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                               base_url="http://127.0.0.1") as http:
        s = Server(clock, http, app)
        offer = await eventually(lambda: s.offer(booking["id"]), what="the offer after the restart")
        assert offer["attribution"] == "platform"
        # the offer runs from the verdict, not from when it was read
        assert offer["offered_at"] == iso(_epoch(booking["starts_at"]) + 600)


# --- choosing a free slot ---------------------------------------------------------------------------


async def test_the_client_picks_a_free_slot_and_gets_a_linked_booking_at_no_extra_cost(s: Server) -> None:
    booking = await interrupted_booking(s)
    found = await s.offer_slots(booking["id"])
    assert found["slots"], "the practitioner has free time within the offer"
    assert all(_epoch(x["starts_at"]) < _epoch(found["expires_at"]) for x in found["slots"])
    pick = found["slots"][3]["starts_at"]
    r = await _choose(s, booking["id"], pick)
    assert r.status_code == 201, r.text
    new = r.json()["booking"]
    assert new["starts_at"] == pick and new["status"] == "confirmed"
    assert new["price"]["client_total"] == 0
    assert new["price"]["practitioner_share"] == booking["price"]["practitioner_share"]
    assert new["rescheduled_from"] == booking["id"]
    assert r.json()["offer"]["status"] == "accepted" and r.json()["offer"]["new_booking_id"] == new["id"]
    original = await s.booking(booking["id"])
    assert original["status"] == "rescheduled" and original["rescheduled_to"] == new["id"]
    assert (await s.booking(new["id"]))["rescheduled_from"] == booking["id"]
    # the events: the new booking's creation, as bookings write it, and the reschedule with the amounts
    created = [e for e in await events(s.redis, "booking.created") if e.body["booking_id"] == new["id"]]
    assert len(created) == 1
    assert created[0].body["client_total"] == 0 and created[0].body["rescheduled_from"] == booking["id"]
    (moved,) = await events(s.redis, "booking.rescheduled")
    assert moved.body["booking_id"] == booking["id"] and moved.body["new_booking_id"] == new["id"]
    assert moved.body["client_total"] == 0
    assert moved.body["carried_over"]["client_total"] == booking["price"]["client_total"]
    assert moved.body["choice"] == "slot" and moved.body["starts_at"] == pick
    # both are told; the new time is now held: nobody else can book it
    await s.wait_notified("reschedule.accepted", Role.CLIENT, CID)
    await s.wait_notified("reschedule.accepted", Role.PRACTITIONER, PID)
    r = await s.http.post("/v1/bookings", headers=s.headers(Role.CLIENT, "c2"),
                          json={"practitioner_id": PID, "starts_at": pick})
    assert r.status_code == 409 and r.json()["code"] == "slot_taken"


async def test_an_offer_is_used_once_a_second_choice_or_an_old_link_makes_no_second_booking(s: Server) -> None:
    booking = await interrupted_booking(s)
    slots = (await s.offer_slots(booking["id"]))["slots"]
    assert (await _choose(s, booking["id"], slots[0]["starts_at"])).status_code == 201
    before = await _snapshot(s)
    for pick in (slots[0]["starts_at"], slots[5]["starts_at"]):
        r = await _choose(s, booking["id"], pick)
        assert r.status_code == 409 and r.json()["code"] == "offer_used", r.text
        assert r.json()["new_booking_id"]
    assert await _snapshot(s) == before
    assert (await s.offer_slots(booking["id"]))["slots"] == []


async def test_bad_choices_are_refused_with_their_code_and_change_nothing(s: Server) -> None:
    booking = await interrupted_booking(s)
    found = await s.offer_slots(booking["id"])
    slot = found["slots"][0]
    # another client takes a slot the page listed a moment ago
    await s.book(found["slots"][1]["starts_at"], headers=s.headers(Role.CLIENT, "c2"))
    before = await _snapshot(s)
    now = int(s.clock.now())
    cases = [
        (found["slots"][1]["starts_at"], s.client, 409, "slot_taken"),
        (iso(_epoch(slot["starts_at"]) + 17 * 60), s.client, 422, "not_a_slot"),  # off the practitioner's grid
        (iso(now + 15 * DAY), s.client, 422, "outside_offer"),
        (iso(now + 600), s.client, 422, "too_soon"),
        (slot["starts_at"], s.practitioner, 403, "wrong_party"),
        (slot["starts_at"], s.headers(Role.CLIENT, "c2"), 404, "offer_not_found"),
        (slot["starts_at"], s.headers(Role.SUPPORT, "s1"), 403, "permission_denied"),
        (slot["starts_at"], s.admin, 403, "wrong_party"),
    ]
    for starts_at, headers, status, code in cases:
        r = await _choose(s, booking["id"], starts_at, headers)
        assert (r.status_code, r.json()["code"]) == (status, code), (code, r.text)
    r = await _choose(s, "no-such-booking", slot["starts_at"])
    assert (r.status_code, r.json()["code"]) == (404, "offer_not_found")
    assert await _snapshot(s) == before


async def test_a_choice_after_the_offer_expired_is_refused_and_support_is_flagged(s: Server) -> None:
    booking = await interrupted_booking(s)
    offer = await s.offer(booking["id"])
    assert offer is not None
    slot = (await s.offer_slots(booking["id"]))["slots"][-1]
    # two days before the end: both are told it expires soon, once
    s.clock.set(_epoch(offer["expires_at"]) - 2 * DAY + 1)
    await eventually(lambda: event_count(s.redis, "booking.reschedule_offer_expiring"),
                     what="the expiring-soon event")
    await s.wait_notified("reschedule.expiring", Role.CLIENT, CID)
    await s.wait_notified("reschedule.expiring", Role.PRACTITIONER, PID)
    s.clock.set(_epoch(offer["expires_at"]))
    (expired,) = await eventually(lambda: events(s.redis, "booking.reschedule_offer_expired"),
                                  what="the offer to expire")
    assert expired.body["needs_support"] is True and expired.body["booking_id"] == booking["id"]
    assert await event_count(s.redis, "booking.reschedule_offer_expiring") == 1
    r = await s.http.get("/v1/reschedule-offers", headers=s.headers(Role.SUPPORT, "s1"),
                         params={"status": "expired"})
    assert r.status_code == 200
    assert [(o["booking_id"], o["needs_support"]) for o in r.json()["offers"]] == [(booking["id"], True)]
    await s.wait_notified("reschedule.expired", Role.CLIENT, CID)
    before = await _snapshot(s)
    r = await _choose(s, booking["id"], slot["starts_at"])
    assert (r.status_code, r.json()["code"]) == (409, "offer_expired")
    assert await _snapshot(s) == before
    r = await s.http.get("/v1/reschedule-offers", headers=s.client)
    assert (r.status_code, r.json()["code"]) == (403, "wrong_role")


# --- the practitioner proposes --------------------------------------------------------------------


async def test_the_practitioner_proposes_times_outside_their_hours_and_the_client_accepts_one(s: Server) -> None:
    booking = await interrupted_booking(s)
    day = (int(s.clock.now()) // DAY + 3) * DAY
    times = [iso(day + 19 * 3600), iso(day + 20 * 3600 + 15 * 60), iso(day + DAY + 7 * 3600)]  # evenings, early
    r = await s.http.put(f"/v1/bookings/{booking['id']}/reschedule-offer/proposals", headers=s.practitioner,
                         json={"times": times})
    assert r.status_code == 200, r.text
    assert [p["starts_at"] for p in r.json()["proposals"]] == times
    await s.wait_notified("reschedule.proposed", Role.CLIENT, CID)
    found = await s.offer_slots(booking["id"])
    assert [p["starts_at"] for p in found["proposals"]] == times
    # the client may not propose, and four times are too many
    r = await s.http.put(f"/v1/bookings/{booking['id']}/reschedule-offer/proposals", headers=s.client,
                         json={"times": times[:1]})
    assert (r.status_code, r.json()["code"]) == (403, "wrong_party")
    r = await s.http.put(f"/v1/bookings/{booking['id']}/reschedule-offer/proposals", headers=s.practitioner,
                         json={"times": [*times, iso(day + 2 * DAY)]})
    assert (r.status_code, r.json()["code"]) == (422, "invalid_input")
    # a time outside the hours that was not proposed is not a slot
    r = await _choose(s, booking["id"], iso(day + 21 * 3600))
    assert (r.status_code, r.json()["code"]) == (422, "not_a_slot")
    r = await _choose(s, booking["id"], times[1])
    assert r.status_code == 201, r.text
    assert r.json()["booking"]["starts_at"] == times[1]
    (moved,) = await events(s.redis, "booking.rescheduled")
    assert moved.body["choice"] == "proposal"
    # proposals after the offer was used are refused
    r = await s.http.put(f"/v1/bookings/{booking['id']}/reschedule-offer/proposals", headers=s.practitioner,
                         json={"times": times[:1]})
    assert (r.status_code, r.json()["code"]) == (409, "offer_used")


async def test_a_proposed_time_either_party_is_busy_at_is_refused(s: Server) -> None:
    booking = await interrupted_booking(s)
    taken = (await s.offer_slots(booking["id"]))["slots"][2]
    await s.book(taken["starts_at"], headers=s.headers(Role.CLIENT, "c2"))  # the practitioner is booked then
    r = await s.http.put(f"/v1/bookings/{booking['id']}/reschedule-offer/proposals", headers=s.practitioner,
                         json={"times": [iso(_epoch(taken["starts_at"]) + 600)]})
    assert (r.status_code, r.json()["code"]) == (409, "slot_taken")
    assert (await s.offer(booking["id"]) or {})["proposals"] == []
    # the client books a session with another practitioner; the proposal at that time cannot be taken
    await make_practitioner(s.http, "p2", weekly=every_day("08:00", "18:00"))
    elsewhere = _epoch(taken["starts_at"]) + DAY
    r = await s.http.post("/v1/bookings", headers=s.client, json={"practitioner_id": "p2", "starts_at": iso(elsewhere)})
    assert r.status_code == 201, r.text
    r = await s.http.put(f"/v1/bookings/{booking['id']}/reschedule-offer/proposals", headers=s.practitioner,
                         json={"times": [iso(elsewhere + 600)]})
    assert r.status_code == 200
    before = await _snapshot(s)
    r = await _choose(s, booking["id"], iso(elsewhere + 600))
    assert (r.status_code, r.json()["code"]) == (409, "client_overlap")
    assert await _snapshot(s) == before


# --- support's offer --------------------------------------------------------------------------------


async def test_support_offers_a_reschedule_for_a_problem_it_cannot_solve_during_the_session(s: Server) -> None:
    slot = (await s.slots())[0]
    booking = await s.book(slot["starts_at"])
    support = s.headers(Role.SUPPORT, "s1")
    r = await s.http.post(f"/v1/bookings/{booking['id']}/reschedule-offer", headers=support, json={})
    assert (r.status_code, r.json()["code"]) == (409, "not_reschedulable")  # not started: nothing to reschedule
    s.clock.set(_epoch(booking["starts_at"]) + 300)
    # both joined: the session started (as the bookings' consumer of `session.started` moves it)
    await s.ctx.bookings.store.transition(booking["id"], BookingStatus.IN_SESSION, "booking.in_session", {},
                                          int(s.clock.now()))
    for headers in (s.client, s.headers(Role.PRACTITIONER, "p-other")):
        r = await s.http.post(f"/v1/bookings/{booking['id']}/reschedule-offer", headers=headers, json={})
        assert r.status_code in (403, 404), r.text
    r = await s.http.post(f"/v1/bookings/{booking['id']}/reschedule-offer", headers=support,
                          json={"attribution": "platform", "problem_id": "pr-7"})
    assert r.status_code == 201, r.text
    assert r.json()["reason"] == "support" and r.json()["created"] is True
    assert (await s.booking(booking["id"]))["status"] == "interrupted"
    (interrupted,) = await events(s.redis, "booking.interrupted")
    assert interrupted.body["attribution"] == "platform" and interrupted.body["from"] == "in_session"
    (offered,) = await events(s.redis, "booking.reschedule_offered")
    assert offered.body["problem_id"] == "pr-7" and offered.body["offered_by"] == "s1"
    r = await s.http.post(f"/v1/bookings/{booking['id']}/reschedule-offer", headers=support, json={})
    assert r.status_code == 200 and r.json()["created"] is False
    assert await event_count(s.redis, "booking.reschedule_offered") == 1
    r = await _choose(s, booking["id"], (await s.offer_slots(booking["id"]))["slots"][0]["starts_at"])
    assert r.status_code == 201, r.text


async def test_the_api_document_lists_the_reschedule_routes(s: Server) -> None:
    r = await s.http.get("/openapi.json")
    paths = r.json()["paths"]
    for path in ("/v1/bookings/{bid}/reschedule-offer", "/v1/bookings/{bid}/reschedule-offer/slots",
                 "/v1/bookings/{bid}/reschedule-offer/proposals", "/v1/bookings/{bid}/reschedule",
                 "/v1/reschedule-offers", "/reschedule/{bid}"):
        assert path in paths, path
    page = await s.http.get("/reschedule/anything")
    assert page.status_code == 200 and "reschedule.js" in page.text
    assert page.headers["cache-control"] == "no-store"



async def test_processes_sharing_redis_remind_and_expire_an_offer_once(tmp_path: Path, redis_url: str) -> None:
    async with reschedule_server(tmp_path / "one", redis_url) as one, \
            reschedule_server(tmp_path / "two", redis_url) as two:
        await seed_practitioner(one)
        booking = await interrupted_booking(one)
        offer = await one.offer(booking["id"])
        assert offer is not None
        # both processes' jobs look at the same moment, past the reminder and past the end
        for at in (_epoch(offer["expires_at"]) - DAY, _epoch(offer["expires_at"])):
            await asyncio.gather(one.ctx.reschedule.remind_due(at), two.ctx.reschedule.remind_due(at),
                                 one.ctx.reschedule.expire_due(at), two.ctx.reschedule.expire_due(at))
        assert await event_count(one.redis, "booking.reschedule_offer_expiring") == 1
        assert await event_count(one.redis, "booking.reschedule_offer_expired") == 1
        r = await two.http.get(f"/v1/bookings/{booking['id']}/reschedule-offer", headers=two.client)
        assert r.json()["status"] == "expired" and r.json()["needs_support"] is True


async def test_a_verdict_a_dead_process_read_but_never_handled_is_claimed_and_offered(tmp_path: Path,
                                                                                      redis_url: str) -> None:
    async with reschedule_server(tmp_path, redis_url) as first:
        await seed_practitioner(first)
        booking = await first.book((await first.slots())[0]["starts_at"])
    client = aioredis.Redis.from_url(redis_url)
    try:
        await write_verdict(client, booking, attribution="practitioner_connection",
                            at=_epoch(booking["starts_at"]) + 600)
        # a process read the verdict, then died before handling it: the entry is pending for it
        await client.xreadgroup(GROUP, "dead-process", {"ss:events": ">"}, count=1000)
        pending = await client.xpending(EVENTS_STREAM, GROUP)
        assert pending["pending"] >= 1
        async with reschedule_server(tmp_path, redis_url) as s:
            assert await s.offer(booking["id"]) is None  # not new to the group, and not idle long enough yet
            survivor = VerdictConsumer(s.ctx.reschedule, claim_idle_ms=1)
            tasks = TaskSupervisor()  # as the lifespan owns the consumer: stopped by cancel-until-ended
            tasks.spawn("survivor", lambda: survivor.run(
                lambda: blocking_client(redis_url, s.ctx.settings, block_s=1.0), s.redis))
            try:
                offer = await eventually(lambda: s.offer(booking["id"]), what="the claimed verdict's offer")
            finally:
                await tasks.stop()
            assert offer["attribution"] == "practitioner_connection"
            assert await event_count(s.redis, "booking.reschedule_offered") == 1
    finally:
        await client.aclose()
