"""Two tabs (or more) choose the new time of one interrupted session at the same moment, through real HTTP
to a served app: exactly one new booking exists, every other tab is told the offer was used, and the
stream holds one reschedule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from session_server.app import create_app
from session_server.clock import ManualClock

from .bookings_support import events
from .conftest import LiveServer, make_settings
from .reschedule_support import CID, T0, Server, interrupted_booking, seed_practitioner


@pytest.mark.parametrize(("tabs", "same_slot"), [(2, True), (2, False), (8, False)])
async def test_tabs_racing_to_choose_make_exactly_one_new_booking(tmp_path: Path, redis_url: str, tabs: int,
                                                                  same_slot: bool) -> None:
    clock = ManualClock(T0)
    server = LiveServer(create_app(make_settings(tmp_path, redis_url), clock=clock))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            s = Server(clock, http, server.app)
            await seed_practitioner(s)
            booking = await interrupted_booking(s)
            slots = (await s.offer_slots(booking["id"]))["slots"]
            picks = [slots[0 if same_slot else i]["starts_at"] for i in range(tabs)]
            # one connection per tab, all sent together
            tab_clients = [httpx.AsyncClient(base_url=server.url) for _ in range(tabs)]
            try:
                answers = await asyncio.gather(*(
                    c.post(f"/v1/bookings/{booking['id']}/reschedule", headers=s.client, json={"starts_at": p})
                    for c, p in zip(tab_clients, picks, strict=True)))
            finally:
                await asyncio.gather(*(c.aclose() for c in tab_clients))
            codes = sorted((r.status_code, r.json().get("code", "")) for r in answers)
            assert codes == [(201, ""), *[(409, "offer_used")] * (tabs - 1)], codes
            won = next(r.json()["booking"] for r in answers if r.status_code == 201)
            mine = (await http.get("/v1/bookings", headers=s.client)).json()["bookings"]
            assert [b["id"] for b in mine if b.get("rescheduled_from") == booking["id"]] == [won["id"]]
            assert [b["status"] for b in mine if b["id"] != booking["id"]] == ["confirmed"]
            assert (await s.booking(booking["id"]))["rescheduled_to"] == won["id"]
            assert len(await events(s.redis, "booking.rescheduled")) == 1
            assert len([e for e in await events(s.redis, "booking.created")
                        if e.body.get("rescheduled_from")]) == 1
            assert all(b["client_id"] == CID for b in mine)
    finally:
        await server.stop()
