"""Chat over a live room: stored encrypted, history on join, exact resume, idempotent sends, limits."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from files.keyring import KeyRing, WrappedKey
from signaling.chatcrypto import RoomCipher

from .conftest import MASTER_KEYS
from .rooms_support import CLIENT, PRACTITIONER, joined, room_server, write_booking
from .support import eventually


async def test_chat_is_stored_encrypted_and_decrypts_only_at_its_own_sequence_number(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        await client.send({"type": "chat.send", "text": "I have trouble sleeping"})
        await client.send({"type": "chat.send", "text": "since March"})
        await client.expect("chat.ack", lambda m: m["seq"] == 2)
        await client.close()
    r = aioredis.Redis.from_url(redis_url)
    try:
        dump = b"".join([v for k in await r.keys("ss:room:b1:*") if await r.type(k) == b"zset"
                         for v in await r.zrange(k, 0, -1)])
        assert b"sleeping" not in dump and b"March" not in dump
        records = [json.loads(x) for x in await r.zrange("ss:room:b1:chat", 0, -1)]
        kid, _, blob = (await r.get("ss:room:b1:key")).decode().partition(":")
        ttl = await r.pttl("ss:room:b1:chat")
    finally:
        await r.aclose()
    ring = KeyRing(MASTER_KEYS, "k1")
    cipher = RoomCipher("b1", ring.unwrap(WrappedKey(kid, base64.b64decode(blob)), b"room-chat:b1"))
    first = base64.b64decode(records[0]["ct"])
    assert json.loads(cipher.open(1, first))["text"] == "I have trouble sleeping"
    try:
        cipher.open(2, first)
        raise AssertionError("a message moved to another position must not decrypt")
    except Exception as exc:
        assert type(exc).__name__ == "ChatDecryptError"
    assert 364 * 86400 * 1000 < ttl <= 366 * 86400 * 1000  # kept for the retention period


async def test_history_is_sent_on_join_and_sends_are_idempotent_by_message_id(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT, name="Amina"))
        for i in range(3):
            await client.send({"type": "chat.send", "id": f"m{i}", "text": f"hello {i}"})
        await client.send({"type": "chat.send", "id": "m1", "text": "hello 1"})
        dup = await client.expect("chat.ack", lambda m: m.get("duplicate") is True)
        assert dup["ref"] == "m1" and dup["seq"] == 2
        prac, pj = await joined(server, "b1", token("practitioner", PRACTITIONER))
        assert [(c["seq"], c["text"], c["sender"]["name"]) for c in pj["chat"]] == [
            (1, "hello 0", "Amina"), (2, "hello 1", "Amina"), (3, "hello 2", "Amina")]
        assert pj["chat_seq"] == 3
        await prac.send({"type": "chat.received", "seq": 3})
        assert (await client.expect("chat.delivered"))["by"] == PRACTITIONER
        assert not client.of_type("chat.message")  # a sender gets its sequence numbers in acks
        await client.close()
        await prac.close()


async def test_resume_after_a_cut_gets_exactly_the_missed_messages_once_in_order(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        for i in range(5):
            await prac.send({"type": "chat.send", "text": f"before {i}"})
        await client.expect("chat.message", lambda m: m["seq"] == 5)
        last_seen = max(m["seq"] for m in client.of_type("chat.message"))
        client.abort()
        await prac.expect("participant.reconnecting")
        for i in range(7):
            await prac.send({"type": "chat.send", "text": f"missed {i}"})
        await prac.expect("chat.ack", lambda m: m["seq"] == 12)
        back, resumed = await joined(server, "b1", token("client", CLIENT), last_seq=last_seen)
        assert [c["seq"] for c in resumed["chat"]] == list(range(6, 13))
        assert [c["text"] for c in resumed["chat"]] == [f"missed {i}" for i in range(7)]
        await prac.send({"type": "chat.send", "text": "after"})
        await back.expect("chat.message", lambda m: m["text"] == "after")
        assert [m["seq"] for m in back.of_type("chat.message")] == [13]
        rejoined = await prac.expect("participant.joined", lambda m: m.get("resumed") is True)
        assert rejoined["participant"]["id"] == CLIENT
        assert not prac.of_type("participant.left")
        await back.close()
        await prac.close()


async def test_oversized_and_too_fast_chat_gets_typed_errors_and_the_room_carries_on(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url, chat_max_bytes=100, chat_rate_per_s=1.0,
                           chat_burst=3) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        await client.send({"type": "chat.send", "id": "big", "text": "é" * 51})
        err = await client.expect("error")
        assert (err["code"], err["ref"]) == ("message_too_large", "big")
        for i in range(5):
            await client.send({"type": "chat.send", "id": f"f{i}", "text": "x"})
        limited = await client.expect("error", lambda m: m["code"] == "rate_limited")
        assert limited["retry_after_s"] > 0
        await prac.send({"type": "chat.send", "text": "fine"})
        await client.expect("chat.message", lambda m: m["text"] == "fine")
        assert len(client.of_type("chat.ack")) == 3
        await client.close()
        await prac.close()


async def test_typing_reaches_the_other_party(tmp_path: Path, redis_url: str,
                                              token: Callable[..., str]) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        await client.send({"type": "typing", "active": True})
        notice = await prac.expect("typing")
        assert notice == {**notice, "participant_id": CLIENT, "active": True}
        assert not client.of_type("typing")

        async def nothing_more() -> bool:
            return not client.of_type("typing")

        await eventually(nothing_more)
        await client.close()
        await prac.close()


async def test_bursts_in_two_rooms_reach_each_room_complete_in_order_and_nowhere_else(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    # Sends that arrive together are stored and published together, rooms mixed: each room must
    # still get exactly its own messages, numbered in order, with a repeated id stored once.
    await write_booking(redis_url, "b1")
    await write_booking(redis_url, "b2", practitioner="prac-2", client="client-2")
    async with room_server(tmp_path, redis_url, chat_rate_per_s=1000.0, chat_burst=1000) as server:
        c1, _ = await joined(server, "b1", token("client", CLIENT))
        p1, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        c2, _ = await joined(server, "b2", token("client", "client-2"))
        p2, _ = await joined(server, "b2", token("practitioner", "prac-2"))
        n = 40
        for i in range(n):  # no waiting for acks: the two rooms' sends interleave
            await c1.send({"type": "chat.send", "id": f"a{i}", "text": f"one {i}"})
            await c2.send({"type": "chat.send", "id": f"b{i}", "text": f"two {i}"})
        await c1.send({"type": "chat.send", "id": "a7", "text": "one 7"})
        dup = await c1.expect("chat.ack", lambda m: m.get("duplicate") is True)
        assert (dup["ref"], dup["seq"]) == ("a7", 8)
        await p1.expect("chat.message", lambda m: m["seq"] == n)
        await p2.expect("chat.message", lambda m: m["seq"] == n)
        assert [(m["seq"], m["text"], m["ref"]) for m in p1.of_type("chat.message")] == [
            (i + 1, f"one {i}", f"a{i}") for i in range(n)]
        assert [(m["seq"], m["text"], m["ref"]) for m in p2.of_type("chat.message")] == [
            (i + 1, f"two {i}", f"b{i}") for i in range(n)]
        await c2.expect("chat.ack", lambda m: m["seq"] == n)  # a socket's acks come in order
        assert [m["seq"] for m in c2.of_type("chat.ack")] == list(range(1, n + 1))
        for peer in (c1, p1, c2, p2):
            await peer.close()


async def test_a_long_resumed_history_comes_in_pages_within_the_frame_limit_then_live_chat_follows(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    """300 messages of 3,000 bytes (about 1 MB) missed: they arrive in order, once, in `joined` and
    `chat.history` frames each far below the 64 KiB frame limit, and only then does live chat come."""
    from websockets.asyncio.client import connect

    from signaling.messages import MAX_FRAME_BYTES

    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url, chat_rate_per_s=10_000.0, chat_burst=10_000) as server:
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        for i in range(300):
            await prac.send({"type": "chat.send", "id": f"m{i}", "text": f"{i:04d}" + "x" * 2996})
        await prac.expect("chat.ack", lambda m: m["seq"] == 300, timeout=30)

        # a raw socket, to see each frame as it is sent
        ws = await connect(f"{server.ws_url}/v1/rooms/b1/ws", compression=None, max_size=None,
                           subprotocols=["session.v1", "bearer." + token("client", CLIENT)])  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "join", "id": "j", "v": 1, "last_seq": 0}))
        frames: list[str] = []
        seqs: list[int] = []
        while True:
            raw = await ws.recv()
            assert isinstance(raw, str)
            msg = json.loads(raw)
            if msg["type"] in ("joined", "chat.history"):
                frames.append(raw)
                seqs += [c["seq"] for c in msg["chat"]]
                if not msg.get("chat_more" if msg["type"] == "joined" else "more"):
                    break
        assert seqs == list(range(1, 301))
        assert len(frames) > 10 and max(len(f.encode()) for f in frames) < MAX_FRAME_BYTES // 2
        await prac.send({"type": "chat.send", "id": "live", "text": "after the history"})
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == "chat.message":
                assert msg["seq"] == 301 and msg["text"] == "after the history"
                break
        await ws.close()
        await prac.close()
