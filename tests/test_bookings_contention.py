"""Contention through real HTTP against the real server: no slot is ever sold twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

import httpx
import redis.asyncio as aioredis

from .bookings_support import events, every_day, first_slot, iso, make_practitioner
from .conftest import LiveServer, auth

Token = Callable[..., str]


async def test_two_hundred_clients_racing_for_one_slot_make_exactly_one_booking_and_one_event(
        live_server: LiveServer, token: Token, redis_client: aioredis.Redis) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=live_server.url, limits=limits, timeout=30) as http:
        await make_practitioner(http, "p1", weekly=every_day())
        tokens = [token("client", f"c{i}") for i in range(200)]
        slot = await first_slot(http, "p1", auth(tokens[0]))
        gate = asyncio.Event()

        async def attempt(tok: str) -> httpx.Response:
            await gate.wait()
            return await http.post("/v1/bookings", headers=auth(tok),
                                   json={"practitioner_id": "p1", "starts_at": slot["starts_at"]})

        tasks = [asyncio.create_task(attempt(t)) for t in tokens]
        await asyncio.sleep(0)
        gate.set()
        responses = await asyncio.gather(*tasks)
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 199}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"slot_taken"}
    assert all(r.headers["content-type"] == "application/problem+json" for r in responses if r.status_code == 409)
    winner = next(r.json() for r in responses if r.status_code == 201)
    created = await events(redis_client, "booking.created")
    assert [e.body["booking_id"] for e in created] == [winner["id"]]
    assert await redis_client.zcard("ss:bookings") == 1


async def test_one_client_booking_two_overlapping_slots_at_once_gets_only_one(
        live_server: LiveServer, token: Token, redis_client: aioredis.Redis) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        await make_practitioner(http, "p1", weekly=every_day())
        await make_practitioner(http, "p2", weekly=every_day(), session_minutes=60)
        c = auth(token("client", "c1"))
        results: Counter[int] = Counter()
        span = {"from": iso(time.time()), "to": iso(time.time() + 86400)}
        for round_ in range(5):
            p1 = (await http.get("/v1/practitioners/p1/slots", headers=c, params=span)).json()["slots"]
            p2 = (await http.get("/v1/practitioners/p2/slots", headers=c, params=span)).json()["slots"]
            # a 50-minute slot of p1 and a 60-minute slot of p2 that overlap (which ones depends on the hour)
            s1, s2 = next((a["starts_at"], b["starts_at"]) for a in p1 for b in p2
                          if b["starts_at"] < a["ends_at"] and b["ends_at"] > a["starts_at"])
            r1, r2 = await asyncio.gather(
                http.post("/v1/bookings", headers=c, json={"practitioner_id": "p1", "starts_at": s1}),
                http.post("/v1/bookings", headers=c, json={"practitioner_id": "p2", "starts_at": s2}))
            assert sorted([r1.status_code, r2.status_code]) == [201, 409], (round_, r1.text, r2.text)
            loser = r1 if r1.status_code == 409 else r2
            assert loser.json()["code"] == "client_overlap"
            results[r1.status_code] += 1
            # free the time again for the next round
            winner = r1 if r1.status_code == 201 else r2
            cancel = await http.post(f"/v1/bookings/{winner.json()['id']}/cancel", headers=c,
                                     json={"reason": "next round"})
            assert cancel.status_code == 200
    assert len(await events(redis_client, "booking.created")) == 5


async def test_a_booking_sent_again_after_its_reply_was_lost_is_the_same_booking_not_a_conflict(
        live_server: LiveServer, token: Token, redis_client: aioredis.Redis) -> None:
    """redis-py sends a command again when the connection fails after sending it: the client must get
    the booking it made, not a conflict with itself, and the practitioner one booking, not two."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        await make_practitioner(http, "p1", weekly=every_day())
        slot = await first_slot(http, "p1", auth(token("client", "c1")))
        service = live_server.app.state.ctx.bookings
        p = await service.store.require_practitioner("p1")
        now = int(time.time())
        starts_at = int(datetime.fromisoformat(slot["starts_at"]).timestamp())
        booking, event = service.prepare_booking(p, None, client_id="c1", starts_at=starts_at,
                                                 expected_total=None, now=now)
        await service.store.book(booking, p, event, now)
        await service.store.book(booking, p, event, now)  # the same call again, as after a lost reply
        mine = await http.get("/v1/bookings", headers=auth(token("client", "c1")))
        other = await http.post("/v1/bookings", headers=auth(token("client", "c2")),
                                json={"practitioner_id": "p1", "starts_at": slot["starts_at"]})
    assert [b["id"] for b in mine.json()["bookings"]] == [booking.id]
    assert [e.body["booking_id"] for e in await events(redis_client, "booking.created")] == [booking.id]
    assert other.status_code == 409 and other.json()["code"] == "slot_taken"
