"""The socket's edges on a live server: bad input, heartbeats, floods, slow readers, caps, pushes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from .rooms_support import (
    CLIENT,
    PRACTITIONER,
    StallingPeer,
    connect_peer,
    joined,
    room_server,
    whole_history,
    write_booking,
)


async def test_bad_messages_get_typed_errors_and_the_socket_stays_usable(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        bad = [
            ("not json", "invalid_json", None),
            ("[1, 2]", "invalid_message", None),
            ('{"id": "a1"}', "invalid_message", "a1"),
            ('{"type": "teleport", "id": "a2"}', "unknown_type", "a2"),
            ('{"type": "chat.send", "id": "a3"}', "invalid_message", "a3"),
            ('{"type": "chat.send", "id": "a4", "text": 5}', "invalid_message", "a4"),
            ('{"type": "typing", "id": "a5", "active": true, "extra": 1}', "invalid_message", "a5"),
            ('{"type": "join", "id": "a6"}', "already_joined", "a6"),
            ('{"type": "chat.received", "id": "a7", "seq": -1}', "invalid_message", "a7"),
        ]
        for raw, code, ref in bad:
            before = len(client.of_type("error"))
            await client.send_raw(raw)
            await client.expect("error", after=0, where=lambda m, n=before: len(client.of_type("error")) > n)
            err = client.of_type("error")[-1]
            assert (err["code"], err.get("ref")) == (code, ref), raw
        await client.send_raw(b"\x00binary")
        assert (await client.expect("error", lambda m: m["code"] == "binary_not_supported"))
        await client.send({"type": "chat.send", "text": "still talking"})
        await prac.expect("chat.message", lambda m: m["text"] == "still talking")
        await client.close()
        await prac.close()


async def test_a_frame_over_64_kib_closes_that_socket_with_1009_and_the_room_carries_on(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        await client.send({"type": "chat.send", "text": "x" * (65 * 1024)})
        assert await client.closed() == 1009
        await prac.expect("participant.reconnecting")
        again, _ = await joined(server, "b1", token("client", CLIENT))
        await prac.send({"type": "chat.send", "text": "welcome back"})
        await again.expect("chat.message", lambda m: m["text"] == "welcome back")
        await again.close()
        await prac.close()


async def test_a_flood_closes_the_flooder_with_4429(tmp_path: Path, redis_url: str,
                                                   token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url, chat_rate_per_s=1.0, chat_burst=2) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        for _ in range(60):
            try:
                await client.send({"type": "ping"})
            except Exception:
                break
        assert await client.closed() == 4429
        assert (await client.expect("error", lambda m: m["code"] == "flood"))
        await prac.send({"type": "ping"})
        await prac.expect("pong")
        await prac.close()


async def test_a_silent_participant_is_shown_reconnecting_then_gone(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        client, _ = await joined(server, "b1", token("client", CLIENT))
        client.auto_pong = False
        # the websocket library answers protocol pings itself; only our JSON pings go unanswered
        await prac.expect("participant.reconnecting", lambda m: m["participant_id"] == CLIENT)
        left = await prac.expect("participant.left", lambda m: m["participant_id"] == CLIENT)
        assert left["reason"] == "timeout"
        assert await client.closed() == 4408
        await prac.close()


async def test_a_dropped_socket_is_reconnecting_and_then_gone_if_it_does_not_come_back(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        client, _ = await joined(server, "b1", token("client", CLIENT))
        client.abort()
        await prac.expect("participant.reconnecting", lambda m: m["participant_id"] == CLIENT)
        left = await prac.expect("participant.left", lambda m: m["participant_id"] == CLIENT)
        assert left["reason"] == "timeout"
        later, lj = await joined(server, "b1", token("practitioner", PRACTITIONER))
        assert [p["id"] for p in lj["participants"]] == [PRACTITIONER]
        await later.close()


@pytest.mark.served_loop  # when a write waits is the transport's to say: the served loop's
async def test_a_reader_that_stops_reading_is_disconnected_with_4008_and_the_other_party_told(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    """At the protocol's own rates and queue, with heartbeats at their defaults: a participant whose page
    stops reading (but still says it is alive) is found by the slow-reader rule, not by a heartbeat or the
    HTTP server's keep-alive; the other party is told, the stalled page reads 4008 when it reads again, and
    coming back with `last_seq` it gets every message it missed."""
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url, heartbeat_interval_s=10.0, heartbeat_timeout_s=30.0,
                           ws_send_timeout_s=1.0) as server:
        prac, welcome = await joined(server, "b1", token("practitioner", PRACTITIONER))
        limits = welcome["limits"]
        assert (limits["chat_max_bytes"], limits["chat_rate_per_s"], limits["chat_burst"]) == (4000, 5.0, 20)
        stalled = await StallingPeer.connect(server, "b1", token("client", CLIENT))
        await stalled.send({"type": "join", "v": 1})
        await stalled.read_until("joined")
        text = "y" * limits["chat_max_bytes"]
        acknowledged: list[int] = []
        # from here on the client reads nothing; the practitioner chats as fast as the server lets it
        for n in range(1000):
            if prac.of_type("participant.reconnecting"):
                break
            await stalled.send({"type": "ping"})  # still alive: the heartbeat has no reason to act
            while True:
                mark = len(prac.received)
                await prac.send({"type": "chat.send", "id": f"m{n}", "text": text})
                answer = await prac.reply(f"m{n}", after=mark)
                if answer["type"] == "chat.ack":
                    break
                assert answer["code"] == "rate_limited", answer
                await asyncio.sleep(answer["retry_after_s"])  # the wait the server asks for
            acknowledged.append(answer["seq"])
        gone = await prac.expect("participant.reconnecting")
        assert gone["participant_id"] == CLIENT
        assert await stalled.read_until_closed() == 4008
        stalled.close()
        await prac.send({"type": "ping", "id": "still-served"})
        assert (await prac.reply("still-served"))["type"] == "pong"

        back, again = await joined(server, "b1", token("client", CLIENT), last_seq=0)
        history = await whole_history(back, again)
        assert [c["seq"] for c in history] == acknowledged
        await back.close()
        await prac.close()


async def test_connections_per_user_are_capped(tmp_path: Path, redis_url: str,
                                               token: Callable[..., str]) -> None:
    for i in range(3):
        await write_booking(redis_url, f"r{i}")
    async with room_server(tmp_path, redis_url, ws_max_connections_per_user=2) as server:
        a, _ = await joined(server, "r0", token("client", CLIENT))
        b, _ = await joined(server, "r1", token("client", CLIENT))
        c = await connect_peer(server, "r2", token("client", CLIENT))
        assert (await c.expect("error"))["code"] == "too_many_connections"
        assert await c.closed() == 4429
        await a.close()
        await b.close()


async def test_document_pushes_reach_the_parties_and_never_support(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        support, _ = await joined(server, "b1", token("support", "agent-7"))
        r = aioredis.Redis.from_url(redis_url)
        await r.publish("ss:room:b1:push", json.dumps(
            {"type": "document.shared", "document": {"id": "d1", "name": "exercise.pdf"}}))
        await r.publish("ss:room:b1:push", "not json")
        await r.aclose()
        shared = await client.expect("document.shared")
        assert shared["document"]["id"] == "d1" and shared["id"]
        await support.send({"type": "ping"})
        await support.expect("pong")
        assert not support.of_type("document.shared")
        await client.close()
        await support.close()


async def test_media_state_and_problem_reports_are_acknowledged_and_shown(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        await client.send({"type": "media.state", "audio": False, "video": True, "audio_only": False})
        updated = await prac.expect("participant.updated")
        assert updated["participant"]["id"] == CLIENT and updated["participant"]["audio"] is False
        await client.send({"type": "quality", "rtt_ms": 12.5, "packets_lost": 0})
        await client.send({"type": "problem.report", "id": "p1", "kind": "video"})
        assert (await client.expect("ack"))["ref"] == "p1"
        await client.close()
        await prac.close()
