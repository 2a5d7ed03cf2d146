"""Rooms over a live server: who may enter, what each side sees, the events and attendance they leave."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from session_server.bookings.model import BookingStatus
from session_server.events import EVENTS_STREAM, Event

from .rooms_support import CLIENT, PRACTITIONER, connect_peer, joined, room_server, write_booking
from .support import eventually


async def _events(redis_url: str) -> list[Event]:
    r = aioredis.Redis.from_url(redis_url)
    try:
        return [Event.from_fields(f) for _, f in await r.xrange(EVENTS_STREAM)]
    finally:
        await r.aclose()


async def test_client_first_sees_practitioner_missing_and_practitioner_sees_who_waits(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, first = await joined(server, "b1", token("client", CLIENT, name="Amina"))
        assert first["room"]["state"] == "waiting_for_practitioner"
        assert [p["id"] for p in first["participants"]] == [CLIENT]
        prac, second = await joined(server, "b1", token("practitioner", PRACTITIONER, name="Dr Karim"),
                                    via="message")
        assert second["room"]["state"] == "in_session"
        waiting = {p["id"]: p for p in second["participants"]}
        assert waiting[CLIENT]["name"] == "Amina" and waiting[CLIENT]["state"] == "connected"
        seen = await client.expect("participant.joined")
        assert seen["participant"]["id"] == PRACTITIONER and seen["participant"]["role"] == "practitioner"
        await client.expect("session.started")
        await prac.expect("session.started")
        await client.send({"type": "leave"})
        assert await client.closed() == 1000
        left = await prac.expect("participant.left")
        assert left["participant_id"] == CLIENT and left["reason"] == "leave"
        await prac.close()


async def test_joins_leaves_and_session_start_are_recorded_as_events_and_attendance(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        await client.expect("session.started")
        await prac.send({"type": "leave"})
        await client.expect("participant.left")
        await client.send({"type": "leave"})
        await client.closed()

        async def settled() -> list[Event] | None:
            evs = await _events(redis_url)
            return evs if sum(e.type == "room.left" for e in evs) == 2 else None

        events = await eventually(settled, what="two room.left events")
        types = [e.type for e in events]
        assert types.count("room.joined") == 2 and types.count("session.started") == 1
        started = next(e for e in events if e.type == "session.started")
        assert started.body["booking_id"] == "b1" and started.body["client_id"] == CLIENT
        r = aioredis.Redis.from_url(redis_url)
        attendance = [json.loads(x) for x in await r.lrange("ss:room:b1:attendance", 0, -1)]
        await r.aclose()
        assert [(a["pid"], a["kind"]) for a in attendance] == [
            (CLIENT, "join"), (PRACTITIONER, "join"), (PRACTITIONER, "leave"), (CLIENT, "leave")]


async def test_strangers_other_parties_and_closed_rooms_are_refused_with_a_typed_error(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    await write_booking(redis_url, "early", starts_in_s=3 * 3600)
    await write_booking(redis_url, "over", starts_in_s=-7200, length_s=3000)
    await write_booking(redis_url, "cancelled", status=BookingStatus.CANCELLED)
    async with room_server(tmp_path, redis_url, room_grace_after_s=60) as server:
        cases = [
            ("b1", token("client", "someone-else"), "not_a_party", 4403),
            ("b1", token("practitioner", "other-prac"), "not_a_party", 4403),
            ("nope", token("client", CLIENT), "room_not_found", 4404),
            ("early", token("client", CLIENT), "room_not_open", 4425),
            ("over", token("client", CLIENT), "room_closed", 4410),
            ("cancelled", token("client", CLIENT), "room_closed", 4410),
            ("b1", token("client", CLIENT, ttl_s=1)[:-4] + "AAAA", "token_signature", 4401),
            ("b1", None, "token_missing", 4401),
            ("b1", token("client", CLIENT, grants=["bookings:read"]), "permission_denied", 4403),
        ]
        for booking_id, tok, code, close in cases:
            peer = await connect_peer(server, booking_id, tok)
            err = await peer.expect("error")
            assert err["code"] == code, (booking_id, err)
            assert await peer.closed() == close


async def test_an_expired_token_is_refused(tmp_path: Path, redis_url: str, authority) -> None:  # type: ignore[no-untyped-def]
    import time

    from session_server.auth import Role
    await write_booking(redis_url)
    tok, _ = authority.mint(sub=CLIENT, name="c", role=Role.CLIENT, ttl_s=60, now=time.time() - 3600)
    async with room_server(tmp_path, redis_url) as server:
        peer = await connect_peer(server, "b1", tok, via="message")
        assert (await peer.expect("error"))["code"] == "token_expired"
        assert await peer.closed() == 4401


async def test_support_is_visible_to_everyone_but_never_receives_chat(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        support, sj = await joined(server, "b1", token("support", "agent-7", name="Support"))
        assert sj["chat"] == []
        seen = await client.expect("participant.joined")
        assert seen["participant"] == {**seen["participant"], "id": "agent-7", "role": "support"}
        await client.send({"type": "chat.send", "text": "private words"})
        await client.expect("chat.ack")
        await support.send({"type": "chat.send", "text": "hello"})
        assert (await support.expect("error"))["code"] == "not_a_party"
        await support.send({"type": "offer", "sdp": "v=0"})
        assert (await support.expect("error", lambda m: m["code"] == "not_a_party", after=0))
        await support.send({"type": "ping"})
        await support.expect("pong")
        assert not support.of_type("chat.message")
        await client.close()
        await support.close()


async def test_a_second_connection_replaces_the_first_which_is_closed_with_4409(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        first, _ = await joined(server, "b1", token("client", CLIENT))
        second, j2 = await joined(server, "b1", token("client", CLIENT))
        assert await first.closed() == 4409
        assert [p["id"] for p in j2["participants"]] == [CLIENT, PRACTITIONER]
        await second.send({"type": "chat.send", "text": "still here"})
        await prac.expect("chat.message", lambda m: m["text"] == "still here")
        assert not prac.of_type("participant.left")
        await second.close()
        await prac.close()


async def test_origin_outside_the_allow_list_is_refused_at_the_handshake(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    from websockets.exceptions import InvalidStatus

    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url, allowed_origins=("https://app.example",)) as server:
        with pytest.raises(InvalidStatus) as info:
            await connect_peer(server, "b1", token("client", CLIENT), origin="https://evil.example")
        assert info.value.response.status_code == 403
        ok, _ = await joined(server, "b1", token("client", CLIENT), origin="https://app.example")
        await ok.close()


async def test_offers_answers_and_candidates_reach_only_the_other_party(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        await prac.send({"type": "offer", "sdp": "v=0 offer"})
        offer = await client.expect("offer")
        assert offer["from"] == PRACTITIONER and offer["sdp"] == "v=0 offer"
        await client.send({"type": "answer", "sdp": "v=0 answer", "to": PRACTITIONER})
        assert (await prac.expect("answer"))["from"] == CLIENT
        cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
        await client.send({"type": "candidate", "candidate": cand})
        assert (await prac.expect("candidate"))["candidate"]["candidate"] == cand["candidate"]
        await client.send({"type": "offer", "sdp": "v=0", "to": "agent-7"})
        assert (await client.expect("error"))["code"] == "not_your_peer"
        assert not client.of_type("offer")[1:] and not prac.of_type("offer")
        await client.close()
        await prac.close()


async def test_the_room_closes_at_the_end_of_its_grace_period(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, starts_in_s=-60, length_s=62)  # ends in about 2 s
    async with room_server(tmp_path, redis_url, room_grace_after_s=0) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        await client.expect("room.closing", timeout=10)
        assert await client.closed() == 4410
        assert await prac.closed() == 4410
        late = await connect_peer(server, "b1", token("client", CLIENT))
        assert (await late.expect("error"))["code"] == "room_closed"


async def test_logs_hold_no_token_chat_text_or_sdp(
        tmp_path: Path, redis_url: str, token: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await write_booking(redis_url)
    client_token = token("client", CLIENT, name="Amina Benali")
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", client_token)
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        await client.send({"type": "chat.send", "text": "my panic attacks came back"})
        await prac.expect("chat.message")
        await prac.send({"type": "offer", "sdp": "v=0 o=secret-session-description"})
        await client.expect("offer")
        await client.send_raw('{"type": "chat.send", "id": "z", "text": ["my panic attacks"]}')
        await client.expect("error")
        await client.close()
        await prac.close()
    # the test's own WebSocket client logs its frames at debug level: only the server's records count
    server_side = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    leaks = {r.name for r in server_side if "panic" in r.getMessage()}
    logged = "\n".join(r.getMessage() + str(r.args) for r in server_side)
    assert not leaks, leaks
    assert "joined" in logged  # the room does log, just not those
    # who meets whom is health data too: a room's log lines name roles, never the people
    for secret in (client_token, "panic attacks", "secret-session-description", "Amina Benali", CLIENT,
                   PRACTITIONER):
        assert secret not in logged, secret


async def test_the_booking_is_in_session_once_both_parties_are_present(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    from session_server.bookings.model import BookingStatus, load_booking

    await write_booking(redis_url)
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with room_server(tmp_path, redis_url) as server:
            client, _ = await joined(server, "b1", token("client", CLIENT))
            booking = await load_booking(r, "b1")
            assert booking is not None and booking.status == BookingStatus.CONFIRMED
            await joined(server, "b1", token("practitioner", PRACTITIONER))
            await client.expect("session.started")

            async def in_session() -> bool:
                b = await load_booking(r, "b1")
                return b is not None and b.status == BookingStatus.IN_SESSION

            await eventually(in_session, what="the booking to be in_session")
            types = [e.type for e in await _events(redis_url)]
            assert types.count("booking.in_session") == 1
    finally:
        await r.aclose()


async def test_a_session_start_read_by_a_process_that_died_still_puts_the_booking_in_session(
        tmp_path: Path, redis_url: str) -> None:
    # A process read `session.started` and died before the booking changed: the entry stays pending in
    # the bookings' consumer group, and a live process claims it once it has been idle long enough.
    from session_server.bookings.model import BookingStatus, load_booking
    from session_server.bookings.sessions import GROUP, SessionStartedConsumer
    from session_server.bookings.store import BookingStore
    from session_server.event_consumer import EventConsumer
    from session_server.events import EVENTS_STREAM, Event

    await write_booking(redis_url)
    r = aioredis.Redis.from_url(redis_url)
    try:
        dead = EventConsumer(r, r, group=GROUP, consumer="dead", handler=lambda e: asyncio.sleep(0))
        await dead.ensure_group()
        await r.xadd(EVENTS_STREAM, Event("session.started", {"booking_id": "b1", "practitioner_id": PRACTITIONER,
                                                               "client_id": CLIENT}).fields())
        read = await r.xreadgroup(GROUP, "dead", {EVENTS_STREAM: ">"}, count=10)  # ... and never acked
        assert read and len(read[0][1]) == 1
        live = SessionStartedConsumer(BookingStore(r))
        claimer = EventConsumer(r, r, group=GROUP, consumer=live.consumer, handler=live.handle, claim_idle_ms=0)
        assert await claimer.claim_abandoned() == 1
        booking = await load_booking(r, "b1")
        assert booking is not None and booking.status == BookingStatus.IN_SESSION
        assert await claimer.claim_abandoned() == 0  # acknowledged: handled once
        assert [e.type for e in await _events(redis_url)].count("booking.in_session") == 1
    finally:
        await r.aclose()


async def test_the_other_party_is_told_when_a_participant_has_no_camera_or_microphone_and_a_later_one_too(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER, name="Dr Karim"))
        client, _ = await joined(server, "b1", token("client", CLIENT, name="Amina"))
        await client.send({"type": "media.state", "audio": False, "video": False, "audio_only": False,
                           "camera": False, "microphone": False})
        told = await prac.expect("participant.updated")
        assert {k: told["participant"][k] for k in ("id", "audio", "video", "camera", "microphone")} == {
            "id": CLIENT, "audio": False, "video": False, "camera": False, "microphone": False}
        # an unknown device state is refused, and nothing changes
        await client.send({"type": "media.state", "audio": True, "video": True, "camera": "maybe", "id": "bad"})
        refused = await client.expect("error")
        assert refused["code"] == "invalid_message" and refused["ref"] == "bad"
        # someone joining later sees it in the participant list
        await prac.close()
        prac, seen = await joined(server, "b1", token("practitioner", PRACTITIONER, name="Dr Karim"))
        amina = next(p for p in seen["participants"] if p["id"] == CLIENT)
        assert amina["camera"] is False and amina["microphone"] is False
        await prac.close()
        await client.close()
