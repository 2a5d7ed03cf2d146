"""Outages while a session runs, on the app's clock, through the real edges: both pages are told when media
between the parties is down past the threshold (and when it is back), the verdict is written once when the room
gives up or closes, a client who never comes is a no-show, the practitioner can end a broken session, and
several processes deciding at the same moment write one verdict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from session_server.auth import Role
from session_server.bookings.model import BookingStatus, load_booking
from session_server.clock import ManualClock
from session_server.context import AppContext
from session_server.events import Event, add_to
from session_server.outages.service import OutageService
from session_server.outages.store import LIVE, OutageStore
from signaling import messages as m

from .bookings_support import events
from .conftest import LiveServer, make_settings
from .rooms_support import CLIENT, PRACTITIONER, Peer, joined, room_server, write_booking
from .support import eventually

T0 = int(datetime(2031, 3, 3, 9, 0, tzinfo=UTC).timestamp())
LENGTH_S = 50 * 60
# Thresholds short enough to step through, heartbeats long enough that the clock's jumps do not look like
# dead sockets (the sockets answer in real time; the server's clock moves only when the test moves it).
SETTINGS: dict[str, Any] = {
    "media_mode": "sfu", "heartbeat_interval_s": 300, "heartbeat_timeout_s": 3600,
    "outage_notify_s": 20, "outage_interrupt_s": 60, "outage_giveup_s": 120, "outage_no_show_s": 900,
    "outage_check_interval_s": 0.05, "room_open_before_s": 600, "room_grace_after_s": 300,
    "media_announce_addresses": ("127.0.0.1",),
}


@pytest.fixture
async def live(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[LiveServer, ManualClock]]:
    clock = ManualClock(T0 - 300)
    async with room_server(tmp_path, redis_url, clock=clock, **SETTINGS) as server:
        yield server, clock


def _token(server: LiveServer, role: Role, sub: str) -> str:
    ctx: AppContext = server.app.state.ctx
    tok, _ = ctx.tokens.mint(sub=sub, name=sub, role=role, ttl_s=3 * 3600)
    return tok


async def _booking(redis_url: str, booking_id: str, clock: ManualClock) -> None:
    await write_booking(redis_url, booking_id, starts_in_s=T0 - int(clock.now()) + 0, length_s=LENGTH_S)
    # write_booking counts from the machine's time: put the booking at T0 on the server's clock
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.hset(f"ss:booking:{booking_id}", mapping={"starts_at": T0, "ends_at": T0 + LENGTH_S})
    finally:
        await r.aclose()


async def _media(redis: aioredis.Redis, booking_id: str, pid: str, state: str, at_s: float,
                 reason: str | None = None) -> None:
    """What the media server writes when a participant's media changes state (rooms/media_bridge.py)."""
    pipe = redis.pipeline(transaction=False)
    add_to(pipe, Event("media.state_changed", {"booking_id": booking_id, "participant_id": pid, "state": state,
                                               "reason": reason, "node_id": "n1", "at": int(at_s * 1000)},
                       time=datetime.fromtimestamp(at_s, UTC)))
    await pipe.execute()


async def _both_in(server: LiveServer, redis: aioredis.Redis, booking_id: str, clock: ManualClock
                   ) -> tuple[Peer, Peer]:
    client, _ = await joined(server, booking_id, _token(server, Role.CLIENT, CLIENT))
    practitioner, _ = await joined(server, booking_id, _token(server, Role.PRACTITIONER, PRACTITIONER))
    for pid in (CLIENT, PRACTITIONER):
        await _media(redis, booking_id, pid, "connected", clock.now())
    store = OutageStore(redis)

    async def both_connected() -> bool:
        return len([e for e in await store.timeline(booking_id) if e.state == "connected"]) == 2

    # the timeline follows the stream a moment later: the clock moves on only once it has caught up
    await eventually(both_connected, what="both parties' media on the timeline")
    return client, practitioner


def _outages(server: LiveServer) -> OutageService:
    ctx: AppContext = server.app.state.ctx
    service: OutageService = ctx.outages
    return service


async def _nobody_told_at(server: LiveServer, booking_id: str, clock: ManualClock, peers: tuple[Peer, ...]) -> None:
    """Nothing reaches the pages at the clock's instant. The watch's own look at that instant (the one every
    process's watch takes) has run to its end and claimed nothing to tell: the pages are told only by the
    process that claims it. Each page's socket then answers a ping, and has received no `outage`."""
    assert await _outages(server).check(booking_id, int(clock.now() * 1000)) is None
    assert await _outages(server).store.told(booking_id) == ""
    for n, peer in enumerate(peers):
        await peer.send({"type": "ping", "id": f"quiet-{n}"})
        await peer.expect("pong", lambda msg, ref=f"quiet-{n}": msg.get("ref") == ref)
        assert not peer.of_type("outage"), peer.received


async def _status(redis: aioredis.Redis, booking_id: str) -> str:
    b = await load_booking(redis, booking_id)
    assert b is not None
    return b.status.value


async def test_media_down_past_the_threshold_tells_both_pages_and_the_give_up_writes_one_verdict(
        live: tuple[LiveServer, ManualClock], redis_url: str, redis_client: aioredis.Redis) -> None:
    server, clock = live
    await _booking(redis_url, "b-cut", clock)
    clock.set(T0)
    client, practitioner = await _both_in(server, redis_client, "b-cut", clock)
    clock.set(T0 + 600)
    # the SFU reports the client's media stopped after 5 s of silence: it stopped at T0 + 600
    await _media(redis_client, "b-cut", CLIENT, "media_stopped", T0 + 605, "no RTP")
    store = OutageStore(redis_client)

    async def stopped_on_timeline() -> bool:
        return any(e.state == "media_stopped" for e in await store.timeline("b-cut"))

    # the watch knows of the outage (without it, "nobody is told" would prove nothing)
    await eventually(stopped_on_timeline, what="the client's media stopped, on the timeline")
    clock.set(T0 + 615)  # 10 s into the outage: nobody is told yet
    await _nobody_told_at(server, "b-cut", clock, (client, practitioner))
    clock.set(T0 + 620)
    for peer in (client, practitioner):
        told = await peer.expect("outage")
        assert told["state"] == "ongoing" and told["since"] == (T0 + 600) * 1000
        assert told["side"] == "client_connection"
    # the media comes back: both are told it is over, and the session goes on
    await _media(redis_client, "b-cut", CLIENT, "connected", T0 + 640)
    clock.set(T0 + 641)
    for peer in (client, practitioner):
        await peer.expect("outage", lambda msg: msg["state"] == "resolved")
    assert await _status(redis_client, "b-cut") == "in_session"
    # it stops again, for good this time: at the give-up the verdict is written and the room closes
    await _media(redis_client, "b-cut", CLIENT, "media_stopped", T0 + 905, "no RTP")
    clock.set(T0 + 960)
    await client.expect("outage", lambda msg: msg["state"] == "ongoing" and msg["since"] == (T0 + 900) * 1000)
    assert await _status(redis_client, "b-cut") == "in_session"
    clock.set(T0 + 1020)  # 120 s: the room gives up
    for peer in (client, practitioner):
        ended = await peer.expect("outage", lambda msg: msg["state"] == "ended")
        assert ended["verdict"] == "interrupted" and ended["side"] == "client_connection"
        await peer.expect("room.closing")
        assert await peer.closed() == m.CLOSE_ROOM_CLOSED
    assert await _status(redis_client, "b-cut") == "interrupted"
    verdicts = await events(redis_client, "session.verdict")
    assert len(verdicts) == 1
    body = verdicts[0].body
    assert (body["verdict"], body["attribution"], body["trigger"]) == ("interrupted", "client_connection", "gave_up")
    # 600 s before the first outage, 640 -> 900 after it: 860 s of media
    assert (body["net_minutes"], body["scheduled_minutes"]) == (14, 50)
    assert (body["from"], body["to"], body["client_total"], body["currency"]) == ("in_session", "interrupted",
                                                                               350_000, "DZD")
    moved = await events(redis_client, "booking.interrupted")
    assert [(e.body["booking_id"], e.body["attribution"]) for e in moved] == [("b-cut", "client_connection")]
    assert await redis_client.zscore(LIVE, "b-cut") is None

    # the contract with the free reschedule: this verdict is what makes the offer
    async def offered() -> list[Event]:
        return await events(redis_client, "booking.reschedule_offered")

    (offer,) = await eventually(offered, what="the free reschedule offered from the verdict")
    assert (offer.body["booking_id"], offer.body["reason"], offer.body["attribution"]) == (
        "b-cut", "verdict", "client_connection")


async def test_a_page_that_comes_back_or_comes_in_during_an_outage_is_told_of_it_right_after_joined(
        live: tuple[LiveServer, ManualClock], redis_url: str, redis_client: aioredis.Redis) -> None:
    server, clock = live
    await _booking(redis_url, "b-back", clock)
    clock.set(T0)
    client, practitioner = await _both_in(server, redis_client, "b-back", clock)
    clock.set(T0 + 600)
    await _media(redis_client, "b-back", CLIENT, "media_stopped", T0 + 605, "no RTP")
    clock.set(T0 + 620)
    told = await practitioner.expect("outage", lambda msg: msg["state"] == "ongoing")
    await client.expect("outage", lambda msg: msg["state"] == "ongoing")
    shown = {k: told[k] for k in ("state", "since", "side", "gives_up_at")}
    assert shown == {"state": "ongoing", "since": (T0 + 600) * 1000, "side": "client_connection",
                     "gives_up_at": (T0 + 720) * 1000}

    # the client's network drops and the page comes back (a resume): the outage is its first news
    client.abort()
    client, welcome = await joined(server, "b-back", _token(server, Role.CLIENT, CLIENT), last_seq=0)
    again = await client.expect("outage")
    assert client.received.index(again) == client.received.index(welcome) + 1
    assert {k: again[k] for k in shown} == shown and again["id"] != told["id"]
    # the practitioner leaves and enters again (a fresh join): told the same
    await practitioner.send({"type": "leave"})
    await practitioner.closed()
    practitioner, welcome = await joined(server, "b-back", _token(server, Role.PRACTITIONER, PRACTITIONER))
    again = await practitioner.expect("outage")
    assert practitioner.received.index(again) == practitioner.received.index(welcome) + 1
    assert {k: again[k] for k in shown} == shown

    # the media is back: the pages are told, and a page coming back from now on hears of no outage
    await _media(redis_client, "b-back", CLIENT, "connected", T0 + 640)
    clock.set(T0 + 641)
    for peer in (client, practitioner):
        await peer.expect("outage", lambda msg: msg["state"] == "resolved")
    client.abort()
    client, welcome = await joined(server, "b-back", _token(server, Role.CLIENT, CLIENT), last_seq=0)
    await client.send({"type": "ping", "id": "p1"})
    await client.expect("pong", lambda msg: msg.get("ref") == "p1")
    assert not client.of_type("outage"), client.received
    assert await _status(redis_client, "b-back") == "in_session"


async def test_a_client_who_never_joins_is_a_no_show_with_the_facts_the_ledger_needs(
        live: tuple[LiveServer, ManualClock], redis_url: str, redis_client: aioredis.Redis) -> None:
    server, clock = live
    await _booking(redis_url, "b-alone", clock)
    clock.set(T0 - 60)
    practitioner, _ = await joined(server, "b-alone", _token(server, Role.PRACTITIONER, PRACTITIONER))
    clock.set(T0 + 899)
    # the watch's own look at this instant, a second before the no-show threshold, writes no verdict
    assert await _outages(server).check("b-alone", (T0 + 899) * 1000) is None
    assert await _status(redis_client, "b-alone") == "confirmed"
    clock.set(T0 + 900)
    await eventually(lambda: _is(redis_client, "b-alone", "client_no_show"), what="the client's no-show")
    await practitioner.expect("room.closing")
    (verdict,) = await events(redis_client, "session.verdict")
    body = verdict.body
    assert body["verdict"] == "client_no_show" and body["attribution"] is None
    assert body["client_first_joined_at"] is None
    assert body["practitioner_first_joined_at"] == datetime.fromtimestamp(T0 - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (body["client_present_minutes"], body["net_minutes"], body["scheduled_minutes"]) == (0, 0, 50)
    assert {k: body[k] for k in ("booking_id", "client_id", "practitioner_id", "client_total", "practitioner_share",
                                 "platform_share", "discount")} == {
        "booking_id": "b-alone", "client_id": CLIENT, "practitioner_id": PRACTITIONER, "client_total": 350_000,
        "practitioner_share": 300_000, "platform_share": 50_000, "discount": 0}
    assert [e.body["to"] for e in await events(redis_client, "booking.client_no_show")] == ["client_no_show"]
    assert not await events(redis_client, "booking.interrupted")  # nothing to reschedule
    assert not await events(redis_client, "booking.reschedule_offered")


async def _is(redis: aioredis.Redis, booking_id: str, status: str) -> bool:
    return await _status(redis, booking_id) == status


async def test_the_practitioner_ends_a_broken_session_and_it_is_interrupted_once(
        live: tuple[LiveServer, ManualClock], redis_url: str, redis_client: aioredis.Redis) -> None:
    server, clock = live
    await _booking(redis_url, "b-end", clock)
    clock.set(T0)
    client, practitioner = await _both_in(server, redis_client, "b-end", clock)
    await eventually(lambda: _is(redis_client, "b-end", "in_session"), what="in session")
    await client.send({"type": "session.end_technical", "id": "x1"})
    refused = await client.expect("error")
    assert refused["code"] == "not_the_practitioner"
    clock.set(T0 + 300)
    await _media(redis_client, "b-end", PRACTITIONER, "reconnecting", T0 + 300, "peer connection failed")
    clock.set(T0 + 330)
    store = OutageStore(redis_client)

    async def recorded() -> bool:
        return any(e.state == "reconnecting" for e in await store.timeline("b-end"))

    await eventually(recorded, what="the practitioner's media outage on the timeline")
    await practitioner.send({"type": "session.end_technical", "id": "e1"})
    await practitioner.expect("ack", lambda msg: msg["ref"] == "e1")
    await practitioner.send({"type": "session.end_technical", "id": "e2"})  # pressed twice
    for peer in (client, practitioner):
        ended = await peer.expect("outage", lambda msg: msg["state"] == "ended")
        assert ended["verdict"] == "interrupted"
    (verdict,) = [e for e in await events(redis_client, "session.verdict")]
    assert (verdict.body["attribution"], verdict.body["trigger"]) == ("practitioner_connection", "practitioner")
    assert await _status(redis_client, "b-end") == "interrupted"


async def test_three_processes_deciding_the_same_verdict_at_once_write_it_once(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    from session_server.app import create_app
    from session_server.outages.rules import Entry, Kind

    from .conftest import running

    await write_booking(redis_url, "b-race", starts_in_s=-3 * 3600, length_s=LENGTH_S,
                        status=BookingStatus.IN_SESSION)
    booking = await load_booking(redis_client, "b-race")
    assert booking is not None
    # a week on: the completion job no longer looks this far back, so only the three calls below decide
    clock = ManualClock(booking.ends_at + 8 * 86400)
    quiet = {**SETTINGS, "outage_check_interval_s": 60}
    apps = [create_app(make_settings(tmp_path / str(i), redis_url, **quiet), clock=clock) for i in range(3)]
    async with running(apps[0]), running(apps[1]), running(apps[2]):
        services: list[OutageService] = [a.state.ctx.outages for a in apps]
        store = OutageStore(redis_client)
        for role in ("client", "practitioner"):
            await store.append("b-race", Entry(booking.starts_at * 1000, Kind.JOIN, role), booking.ends_at)
            await store.append("b-race", Entry(booking.starts_at * 1000, Kind.MEDIA, role, "connected"),
                               booking.ends_at)
        now = int(clock.now() * 1000)
        written = await asyncio.gather(*(s.check("b-race", now) for s in services for _ in range(3)))
        assert [w for w in written if w is not None] == ["completed"]
    assert len(await events(redis_client, "session.verdict")) == 1
    assert len(await events(redis_client, "booking.completed")) == 1
    assert await _status(redis_client, "b-race") == "completed"


async def test_a_verdict_missed_while_every_process_was_down_is_written_when_one_comes_back(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    from session_server.app import create_app
    from session_server.outages.rules import Entry, Kind

    from .conftest import running

    await write_booking(redis_url, "b-missed", starts_in_s=-3 * 3600, length_s=LENGTH_S,
                        status=BookingStatus.IN_SESSION)
    nobody = await write_booking(redis_url, "b-nobody", starts_in_s=-3 * 3600, length_s=LENGTH_S)
    await redis_client.zadd("ss:bookings", {"b-nobody": nobody.starts_at})  # the index a booking is made with
    booking = await load_booking(redis_client, "b-missed")
    assert booking is not None
    store = OutageStore(redis_client)
    # the session ran while a process was up: the client's media died at minute 10 and never came back
    for role in ("client", "practitioner"):
        await store.append("b-missed", Entry(booking.starts_at * 1000, Kind.JOIN, role), booking.ends_at)
        await store.append("b-missed", Entry(booking.starts_at * 1000, Kind.MEDIA, role, "connected"),
                           booking.ends_at)
    await store.append("b-missed", Entry((booking.starts_at + 600) * 1000, Kind.MEDIA, "client", "failed"),
                       booking.ends_at)
    # every process was down from then on; one starts hours later
    app = create_app(make_settings(tmp_path, redis_url, **SETTINGS))
    async with running(app):
        await eventually(lambda: _is(redis_client, "b-missed", "interrupted"), what="the missed verdict")
        ctx: AppContext = app.state.ctx
        # the completion job finds the booking nobody came to (no timeline at all)
        assert ctx.bookings.judge is not None
        await eventually(lambda: _job_judged(ctx, "b-nobody"), what="the no-show of a session nobody came to")
    (missed,) = [e for e in await events(redis_client, "session.verdict") if e.body["booking_id"] == "b-missed"]
    assert (missed.body["verdict"], missed.body["attribution"], missed.body["net_minutes"]) == (
        "interrupted", "client_connection", 10)
    assert await _status(redis_client, "b-nobody") == "both_no_show"


async def _job_judged(ctx: AppContext, booking_id: str) -> bool:
    from session_server.bookings.jobs import CompletionJob

    await CompletionJob(ctx.bookings.store, judge=ctx.bookings.judge).run_once()
    return await _is(ctx.redis, booking_id, "both_no_show")
