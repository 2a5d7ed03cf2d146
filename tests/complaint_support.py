"""What the complaint and administration page tests share: a live server on a manual clock (tokens minted
valid at its present, which the tests move ahead), a session of 3,000.00 booked between p1 and c1, and that
session taking place and being settled by the ledger."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from session_server.app import create_app
from session_server.auth import Role, TokenAuthority
from session_server.bookings.jobs import COMPLETION_GRACE_S
from session_server.clock import ManualClock

from .bookings_support import every_day, first_slot, make_practitioner
from .conftest import API_KEY_ID, API_SECRET, LiveServer, auth, make_settings
from .ledger_support import session_took_place
from .support import eventually

PRICE = 300_000  # the practitioner's share of the session


@dataclass
class ManualServer:
    server: LiveServer
    clock: ManualClock
    authority: TokenAuthority

    def bearer(self, role: Role, sub: str) -> str:
        """A token valid at the server's present."""
        return self.authority.mint(sub=sub, name=sub, role=role, ttl_s=3600)[0]


@contextlib.asynccontextmanager
async def manual_server(tmp_path: Path, redis_url: str) -> AsyncIterator[ManualServer]:
    clock = ManualClock(time.time())
    authority = TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=3600, clock=clock.now)
    # (a payout minimum above what is earned here: whatever day the test runs, no Sunday payout takes the share)
    server = LiveServer(create_app(make_settings(tmp_path, redis_url, ledger_claim_idle_ms=200,
                                                 ledger_payout_minimum_minor=10**9), clock=clock))
    await server.start()
    try:
        yield ManualServer(server, clock, authority)
    finally:
        await server.stop()


async def book_a_session(http: httpx.AsyncClient, s: ManualServer) -> tuple[str, int, int]:
    """p1 (3,000.00 a session) booked by c1 at the first free slot: the booking's id, start and end."""
    await make_practitioner(http, "p1", price=PRICE, weekly=every_day())
    slot = await first_slot(http, "p1", auth(s.bearer(Role.CLIENT, "c1")))
    r = await http.post("/v1/bookings", headers=auth(s.bearer(Role.CLIENT, "c1")),
                        json={"practitioner_id": "p1", "starts_at": slot["starts_at"]})
    assert r.status_code == 201, r.text
    return (r.json()["id"], int(datetime.fromisoformat(r.json()["starts_at"]).timestamp()),
            int(datetime.fromisoformat(r.json()["ends_at"]).timestamp()))


async def statement(http: httpx.AsyncClient, s: ManualServer) -> dict[str, Any]:
    r = await http.get("/v1/ledger/practitioners/p1/statement", headers=auth(s.bearer(Role.PRACTITIONER, "p1")))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def the_session_takes_place(http: httpx.AsyncClient, redis_client: aioredis.Redis, s: ManualServer,
                                  booking: tuple[str, int, int]) -> None:
    """Both in the session with their media flowing, then past its end and grace: the ledger settles it and
    p1 earns the share."""
    bid, starts, ends = booking
    s.clock.set(starts)
    await session_took_place(redis_client, bid, starts)

    async def in_session() -> bool:
        r = await http.get(f"/v1/bookings/{bid}", headers=auth(s.bearer(Role.ADMIN, "a1")))
        return bool(r.json()["status"] == "in_session")

    await eventually(in_session, what="the booking in session")
    s.clock.set(ends + COMPLETION_GRACE_S + 1)

    async def earned() -> bool:
        return bool((await statement(http, s))["available_minor"] == PRICE)

    await eventually(earned, timeout=30, what="the session's share earned")


async def complaints_filed(server: LiveServer, redis_client: aioredis.Redis, held: dict[str, int | None],
                           *, since: int | None = None) -> None:
    """Complaints as the route files them (one per id in `held`, oldest first), each hold as the ledger's
    consumer adds it (None: not held yet)."""
    svc = server.app.state.ctx.ledger
    base = int(time.time()) - 3600 if since is None else since
    for n, (cid, amount) in enumerate(held.items()):
        await svc.complaints.file({"complaint_id": cid, "booking_id": f"b{n}", "client_id": f"c{n}",
                                   "practitioner_id": "p1", "reason": "practitioner_late", "status": "open",
                                   "filed_at": str(base + n), "has_text": "0"},
                                  "p1", base + n, ["e" + cid, "complaint.filed", "1", "2026-12-01T00:00:00Z", "{}"])
        if amount is not None:
            await redis_client.hset(f"ledger:complaint:{cid}", mapping={"held": str(amount), "currency": "DZD"})
