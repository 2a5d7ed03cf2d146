"""Helpers for the bookings and notifications tests: seed practitioners through the real API."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import redis.asyncio as aioredis

from session_server.events import EVENTS_STREAM, Event

from .conftest import api_key_auth
from .support import eventually

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def every_day(start: str = "00:00", end: str = "24:00") -> list[dict[str, str]]:
    return [{"day": d, "start": start, "end": end} for d in WEEKDAYS]


async def make_practitioner(client: httpx.AsyncClient, pid: str, *, price: int = 200_000, activate: bool = True,
                            weekly: list[dict[str, str]] | None = None, exceptions: list[dict[str, Any]] | None = None,
                            session_minutes: int = 50, timezone: str = "Africa/Algiers") -> dict[str, Any]:
    r = await client.post("/v1/practitioners", headers=api_key_auth(), json={
        "id": pid, "display_name": f"Practitioner {pid}", "specialty": "psychologist", "price_minor": price,
        "session_minutes": session_minutes, "timezone": timezone})
    assert r.status_code == 201, r.text
    if activate:
        r = await client.post(f"/v1/practitioners/{pid}/status", headers=api_key_auth(), json={"status": "active"})
        assert r.status_code == 200, r.text
    if weekly is not None or exceptions is not None:
        r = await client.put(f"/v1/practitioners/{pid}/availability", headers=api_key_auth(),
                             json={"weekly": weekly or [], "exceptions": exceptions or []})
        assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def window_from_now(hours_ahead: float = 2) -> tuple[str, str]:
    now = time.time()
    return iso(now), iso(now + hours_ahead * 3600)


def assert_daily_windows(windows: list[dict[str, str]], start: str, end: str, *,
                         published: tuple[float, float], horizon_days: int) -> None:
    """Every published window runs from `start` to `end` (UTC, HH:MM) on its day, except that the last one
    may be cut short by the horizon: the publication's time plus `horizon_days`, where the publication
    happened between the two instants of `published`. Where that cut falls depends on the time of day."""
    assert windows, "nothing was published"
    *whole, last = windows
    assert all(w["start"][10:] == f"T{start}:00Z" and w["end"][10:] == f"T{end}:00Z"
               and w["start"][:10] == w["end"][:10] for w in whole), whole
    assert last["start"][10:] == f"T{start}:00Z", last
    if last["end"] != f"{last['start'][:10]}T{end}:00Z":
        cut = datetime.fromisoformat(last["end"]).timestamp()
        horizon = horizon_days * 86400
        assert int(published[0]) + horizon <= cut <= int(published[1]) + horizon, (last, published)
        assert last["start"] < last["end"] < f"{last['start'][:10]}T{end}:00Z", last


def local_day(days_ahead: int, zone: str = "Africa/Algiers") -> str:
    return (datetime.now(ZoneInfo(zone)).date() + timedelta(days=days_ahead)).isoformat()


async def events(redis: aioredis.Redis, type_: str | None = None) -> list[Event]:
    found = [Event.from_fields(f) for _, f in await redis.xrange(EVENTS_STREAM)]
    return [e for e in found if type_ is None or e.type == type_]


async def first_slot(client: httpx.AsyncClient, pid: str, headers: dict[str, str], *, days: int = 3
                     ) -> dict[str, Any]:
    now = time.time()
    r = await client.get(f"/v1/practitioners/{pid}/slots", headers=headers,
                         params={"from": iso(now), "to": iso(now + days * 86400)})
    assert r.status_code == 200, r.text
    slots = r.json()["slots"]
    assert slots, "the practitioner has no slot"
    slot: dict[str, Any] = slots[0]
    return slot


async def settled(redis: aioredis.Redis) -> None:
    """Wait until the notifications consumer has handled every event in the stream."""

    async def done() -> bool:
        last = await redis.xrevrange(EVENTS_STREAM, count=1)
        if not last:
            return True
        groups = await redis.xinfo_groups(EVENTS_STREAM)
        return any(g["name"] == b"notifications" and g["last-delivered-id"] == last[0][0] and g["pending"] == 0
                   for g in groups)

    await eventually(done, what="the notifications consumer to catch up")
