"""The room service without a socket: a fake connection, real Redis, and a clock the test moves.

Each test builds the service as the rooms feature does (store, bus, relay bridge) on a `ManualClock`, so
that the room's window, reconnection deadlines and the chat rate are judged at instants the test chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from files.keyring import KeyRing
from session_server.auth import Identity, Role, TokenAuthority
from session_server.bookings.model import Booking
from session_server.clock import ManualClock
from session_server.errors import RateLimited
from session_server.events import EVENTS_STREAM
from session_server.rooms import rules
from session_server.rooms.observer import BaseRoomObserver, ParticipantJoined, ParticipantLeft
from session_server.rooms.service import Member, RoomService
from session_server.rooms.store import PUSH_PATTERN, RoomStore
from signaling import messages as m
from signaling.bus import RoomBus
from signaling.media import RelayBridge

from .conftest import MASTER_KEYS, make_settings
from .rooms_support import CLIENT, FAST, PRACTITIONER, write_booking
from .support import eventually

OPEN_BEFORE_S = 600
GRACE_AFTER_S = 900


class FakeLink:
    """A connection as the service sees it: what it was sent (decoded) and how it was closed."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.close_code: int | None = None

    def send(self, text: str) -> None:
        if self.close_code is None:
            self.sent.append(json.loads(text))

    def close(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code

    def abort(self, code: int) -> None:
        self.close(code)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [msg for msg in self.sent if msg.get("type") == kind]


class Recorder(BaseRoomObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    async def session_started(self, booking: Booking, at_ms: int) -> None:
        self.seen.append(("session_started", (booking.id, at_ms)))

    async def participant_joined(self, joined: ParticipantJoined) -> None:
        self.seen.append(("joined", (joined.participant_id, joined.resumed)))

    async def participant_left(self, left: ParticipantLeft) -> None:
        self.seen.append(("left", (left.participant_id, left.reason)))

    async def room_ended(self, room_id: str, reason: str, at_ms: int) -> None:
        self.seen.append(("room_ended", (room_id, reason)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.seen]


@dataclass
class Room:
    service: RoomService
    clock: ManualClock
    booking: Booking
    observer: Recorder
    identities: dict[str, Identity]

    async def enter(self, who: str, *, last_seq: int | None = None) -> tuple[FakeLink, Member]:
        admission = await self.service.admit(self.identities[who], self.booking.id)
        link = FakeLink()
        member = await self.service.join(link, admission, m.Join(id=f"j-{who}", v=1, last_seq=last_seq))
        return link, member

    async def presence(self) -> dict[str, dict[str, Any]]:
        return await self.service.store.presence(self.booking.id)


@contextlib.asynccontextmanager
async def room_service(tmp_path: Path, redis_url: str, redis: aioredis.Redis,
                       **overrides: Any) -> AsyncIterator[Room]:
    booking = await write_booking(redis_url, starts_in_s=3600)
    clock = ManualClock(booking.starts_at)  # the session's start unless a test moves it
    settings = make_settings(tmp_path, redis_url, **{**FAST, "room_open_before_s": OPEN_BEFORE_S,
                                                     "room_grace_after_s": GRACE_AFTER_S, **overrides})
    ids = m.IdSource()
    store = RoomStore(redis, KeyRing(MASTER_KEYS, "k1"), clock)
    refs: list[RoomService] = []

    async def open_chat(room_id: str, record: dict[str, Any]) -> tuple[int, str]:
        return await refs[0].open_chat(room_id, record)

    bus = RoomBus(open_chat, ids)
    service = RoomService(settings=settings, store=store, bus=bus, bridge=RelayBridge(store.publish, ids),
                          ids=ids, node_id="node-a", clock=clock)
    refs.append(service)
    observer = Recorder()
    service.observe(observer)
    # tokens that outlive every instant these tests set (a connection ends when its token expires)
    authority = TokenAuthority({"test": "s" * 64}, max_ttl_s=86400)
    identities = {who: authority.verify(authority.mint(sub=sub, name=who, role=role, ttl_s=86400)[0])
                  for who, sub, role in (("client", CLIENT, Role.CLIENT),
                                         ("practitioner", PRACTITIONER, Role.PRACTITIONER),
                                         ("support", "agent-1", Role.SUPPORT))}
    listener = aioredis.Redis.from_url(redis_url)
    ready = asyncio.Event()
    tasks = [asyncio.create_task(bus.run(listener, (store.bus_pattern, PUSH_PATTERN), ready.set)),
             asyncio.create_task(store.run_appender())]
    try:
        await asyncio.wait_for(ready.wait(), 5)
        await store.node_alive("node-a", 60_000)
        yield Room(service, clock, booking, observer, identities)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listener.aclose()


@pytest.fixture
async def room(tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[Room]:
    async with room_service(tmp_path, redis_url, redis_client) as r:
        yield r


async def events_of(redis: aioredis.Redis, kind: str) -> list[dict[str, Any]]:
    out = []
    for _, fields in await redis.xrange(EVENTS_STREAM):
        if fields[b"type"].decode() == kind:
            out.append(json.loads(fields[b"body"]))
    return out


def arrived(link: FakeLink, kind: str, where: Callable[[dict[str, Any]], bool] = lambda m: True
            ) -> Callable[[], Any]:
    async def check() -> Any:
        return next((msg for msg in link.of_type(kind) if where(msg)), None)
    return check


# --- the room's window -------------------------------------------------------------------------------

async def test_the_room_refuses_before_it_opens_admits_while_open_and_refuses_once_closed(room: Room) -> None:
    opens_at = room.booking.starts_at - OPEN_BEFORE_S
    closes_at = room.booking.ends_at + GRACE_AFTER_S
    client = room.identities["client"]

    room.clock.set(opens_at - 1)
    with pytest.raises(rules.RoomNotOpenYet) as early:
        await room.service.admit(client, room.booking.id)
    assert early.value.code == "room_not_open"
    assert early.value.extra["opens_at"] == opens_at

    room.clock.set(opens_at)
    admitted = await room.service.admit(client, room.booking.id)
    assert admitted.window == rules.Window(opens_at, closes_at)

    room.clock.set(closes_at - 1)
    await room.service.admit(client, room.booking.id)

    room.clock.set(closes_at)
    with pytest.raises(rules.RoomClosed) as late:
        await room.service.admit(client, room.booking.id)
    assert late.value.code == "room_closed"


async def test_a_stranger_and_an_unknown_room_are_refused_with_their_codes(room: Room) -> None:
    authority = TokenAuthority({"test": "s" * 64}, max_ttl_s=3600)
    stranger = authority.verify(authority.mint(sub="client-2", name="x", role=Role.CLIENT, ttl_s=60)[0])
    with pytest.raises(rules.NotAParty) as refused:
        await room.service.admit(stranger, room.booking.id)
    assert refused.value.code == "not_a_party"
    with pytest.raises(rules.RoomNotFound) as missing:
        await room.service.admit(room.identities["client"], "no-such-booking")
    assert missing.value.code == "room_not_found"


async def test_when_the_window_closes_the_tick_closes_the_room_and_everyone_leaves(
        room: Room, redis_client: aioredis.Redis) -> None:
    link, member = await room.enter("client")
    room.clock.set(room.booking.ends_at + GRACE_AFTER_S - 1)
    room.service.heard(member)  # the participant kept talking all session long
    await room.service.tick()
    assert link.close_code is None

    room.clock.advance(1)
    room.service.heard(member)
    await room.service.tick()
    assert link.of_type("room.closing")
    assert link.close_code == m.CLOSE_ROOM_CLOSED
    await room.service.closed(member)  # what the edge does once the socket has closed
    assert await room.presence() == {}
    assert ("left", (CLIENT, "room_closed")) in room.observer.seen
    assert room.observer.seen[-1] == ("room_ended", (room.booking.id, "room_closed"))
    left = await events_of(redis_client, "room.left")
    assert [(e["participant_id"], e["reason"]) for e in left] == [(CLIENT, "room_closed")]
    assert left[0]["at"] == (room.booking.ends_at + GRACE_AFTER_S) * 1000


# --- joining and leaving -----------------------------------------------------------------------------

async def test_joining_sends_joined_first_and_both_parties_start_the_session_once(
        room: Room, redis_client: aioredis.Redis) -> None:
    c_link, _ = await room.enter("client")
    first = c_link.sent[0]
    assert first["type"] == "joined" and first["ref"] == "j-client"
    assert first["room"]["state"] == "waiting_for_practitioner"
    assert first["you"]["id"] == CLIENT and first["you"]["joined_at"] == room.booking.starts_at * 1000

    room.clock.advance(30)
    p_link, _ = await room.enter("practitioner")
    assert p_link.sent[0]["room"]["state"] == "in_session"
    assert p_link.sent[0]["room"]["started_at"] == (room.booking.starts_at + 30) * 1000
    await eventually(arrived(c_link, "participant.joined", lambda msg: msg["participant"]["id"] == PRACTITIONER),
                     what="the client hears that the practitioner joined")
    await eventually(arrived(c_link, "session.started"), what="the client hears the session start")

    started = await events_of(redis_client, "session.started")
    assert [e["at"] for e in started] == [(room.booking.starts_at + 30) * 1000]
    assert room.observer.seen[:3] == [("joined", (CLIENT, False)), ("joined", (PRACTITIONER, False)),
                                      ("session_started", (room.booking.id, (room.booking.starts_at + 30) * 1000))]


async def test_leave_closes_normally_and_the_participant_is_gone_for_the_others(
        room: Room, redis_client: aioredis.Redis) -> None:
    c_link, client = await room.enter("client")
    p_link, _ = await room.enter("practitioner")
    await room.service.on_message(client, m.Leave(id="bye"))
    assert c_link.close_code == m.CLOSE_NORMAL
    await room.service.closed(client)

    assert list(await room.presence()) == [PRACTITIONER]
    await eventually(arrived(p_link, "participant.left", lambda msg: msg["participant_id"] == CLIENT),
                     what="the practitioner hears that the client left")
    assert p_link.of_type("participant.left")[0]["reason"] == "leave"
    assert room.observer.seen[-1] == ("left", (CLIENT, "leave"))  # the room is not empty: no end
    assert [e["reason"] for e in await events_of(redis_client, "room.left")] == ["leave"]


async def test_a_staff_member_in_the_room_may_not_chat_or_signal(room: Room) -> None:
    _, agent = await room.enter("support")
    with pytest.raises(rules.NotAParty):
        await room.service.on_message(agent, m.ChatSend(id="c1", text="hello"))
    with pytest.raises(rules.NotAParty):
        await room.service.on_message(agent, m.Offer(id="o1", sdp="v=0"))
    with pytest.raises(rules.AlreadyJoined):
        await room.service.on_message(agent, m.Join(id="j2", v=1))


# --- coming back -------------------------------------------------------------------------------------

async def test_a_dropped_participant_is_reconnecting_until_its_deadline_and_may_resume_before_it(
        room: Room) -> None:
    _, client = await room.enter("client")
    p_link, _ = await room.enter("practitioner")
    await room.service.on_message(client, m.ChatSend(id="c1", text="first"))
    await room.service.on_message(client, m.ChatSend(id="c2", text="second"))

    await room.service.closed(client)  # the socket dropped without a leave
    entry = (await room.presence())[CLIENT]
    timeout_s = room.service.settings.heartbeat_timeout_s
    timeout_ms = int(timeout_s * 1000)
    assert entry["state"] == "reconnecting"
    assert entry["deadline"] == room.booking.starts_at * 1000 + timeout_ms
    await eventually(arrived(p_link, "participant.reconnecting"), what="the practitioner sees the drop")

    room.clock.advance(timeout_s - 0.5)
    await room.service.sweep()
    assert CLIENT in await room.presence()

    again, _ = await room.enter("client", last_seq=1)
    joined = again.sent[0]
    assert joined["type"] == "joined"
    assert [c["text"] for c in joined["chat"]] == ["second"]  # only what came after the last one read
    assert joined["chat_seq"] == 2
    assert (await room.presence())[CLIENT]["state"] == "connected"
    await eventually(arrived(p_link, "participant.joined", lambda msg: msg.get("resumed") is True),
                     what="the practitioner sees the client back")
    assert ("joined", (CLIENT, True)) in room.observer.seen


async def test_a_reconnecting_participant_is_gone_once_its_deadline_passes(room: Room) -> None:
    _, client = await room.enter("client")
    await room.service.closed(client)
    room.clock.advance(room.service.settings.heartbeat_timeout_s)
    await room.service.sweep()
    assert await room.presence() == {}
    assert room.observer.seen[-2:] == [("left", (CLIENT, "timeout")), ("room_ended", (room.booking.id, "timeout"))]


async def test_a_silent_connection_is_shown_reconnecting_then_closed_by_the_tick(room: Room) -> None:
    c_link, client = await room.enter("client")
    t = room.service.timings
    room.clock.advance(t.silence_reconnecting_s)
    await room.service.tick()
    assert c_link.of_type("ping")
    assert (await room.presence())[CLIENT]["state"] == "reconnecting"

    room.service.heard(client)
    await room.service.spoke(client)
    assert (await room.presence())[CLIENT]["state"] == "connected"

    room.clock.advance(t.timeout_s)
    await room.service.tick()
    assert c_link.close_code == m.CLOSE_HEARTBEAT_TIMEOUT


# --- chat ----------------------------------------------------------------------------------------------

async def test_chat_is_acknowledged_to_the_sender_and_delivered_to_the_other_party(room: Room) -> None:
    c_link, client = await room.enter("client")
    p_link, _ = await room.enter("practitioner")
    await room.service.on_message(client, m.ChatSend(id="hello-1", text="hello"))
    [ack] = c_link.of_type("chat.ack")
    assert (ack["ref"], ack["seq"], ack.get("duplicate", False)) == ("hello-1", 1, False)
    got = await eventually(arrived(p_link, "chat.message"), what="the practitioner receives the chat")
    assert got["text"] == "hello" and got["seq"] == 1 and got["sender"]["id"] == CLIENT
    assert got["time"] == room.booking.starts_at * 1000
    assert not c_link.of_type("chat.message")  # no echo to the sender

    await room.service.on_message(client, m.ChatSend(id="hello-1", text="hello"))
    assert c_link.of_type("chat.ack")[-1]["duplicate"] is True


async def test_chat_beyond_the_burst_is_rate_limited_until_the_clock_moves_on(room: Room) -> None:
    _, client = await room.enter("client")
    s = room.service.settings
    for i in range(s.chat_burst):
        await room.service.on_message(client, m.ChatSend(id=f"m{i}", text="x"))
    with pytest.raises(RateLimited) as limited:
        await room.service.on_message(client, m.ChatSend(id="over", text="x"))
    assert limited.value.code == "rate_limited"
    assert limited.value.extra["retry_after_s"] == pytest.approx(1 / s.chat_rate_per_s)

    room.clock.advance(1 / s.chat_rate_per_s)
    await room.service.on_message(client, m.ChatSend(id="over", text="x"))


async def test_a_chat_message_over_the_size_limit_is_refused(room: Room) -> None:
    _, client = await room.enter("client")
    with pytest.raises(rules.MessageTooLarge) as refused:
        too_big = "x" * (room.service.settings.chat_max_bytes + 1)
        await room.service.on_message(client, m.ChatSend(id="big", text=too_big))
    assert refused.value.code == "message_too_large"
