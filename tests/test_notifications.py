"""Notifications: stored per user, pushed over the per-user WebSocket, for bookings and waiting clients."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import redis.asyncio as aioredis
import websockets

from session_server.events import Event
from session_server.notifications.rules import notifications_for

from .bookings_support import every_day, first_slot, local_day, make_practitioner, settled
from .conftest import API_KEY_ID, API_SECRET, LiveServer, api_key_auth, auth
from .rooms_support import CLIENT, PRACTITIONER, joined, room_server, write_booking
from .support import eventually

Token = Callable[..., str]


async def _unread(http: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await http.get("/v1/notifications", headers=headers, params={"unread": "true"})
    assert r.status_code == 200
    items: list[dict[str, Any]] = r.json()["notifications"]
    return items


async def test_a_practitioner_is_told_at_once_of_a_new_booking_over_the_websocket_and_in_the_list(
        live_server: LiveServer, token: Token) -> None:
    p_tok = token("practitioner", "p1")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        await make_practitioner(http, "p1", weekly=every_day())
        await eventually(lambda: _unread(http, auth(p_tok)), what="the activation notice")
        ws = await websockets.connect(f"{live_server.ws_url}/v1/notifications/ws",
                                      subprotocols=["notifications.v1", f"bearer.{p_tok}"])  # type: ignore[list-item]
        try:
            assert ws.subprotocol == "notifications.v1"
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello" and hello["user_id"] == "p1"
            c = auth(token("client", "c1"))
            slot = await first_slot(http, "p1", c)
            booking = (await http.post("/v1/bookings", headers=c, json={
                "practitioner_id": "p1", "starts_at": slot["starts_at"]})).json()
            pushed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert pushed["type"] == "notification"
            assert pushed["notification"]["kind"] == "booking.created"
            assert pushed["notification"]["data"]["booking_id"] == booking["id"]
            await http.post(f"/v1/bookings/{booking['id']}/cancel", headers=c, json={"reason": "sick"})
            pushed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert pushed["notification"]["kind"] == "booking.cancelled"
            assert pushed["notification"]["data"]["by"] == "client"
            assert "sick" not in json.dumps(pushed)  # the reason stays in the booking
        finally:
            await ws.close()
        unread = await _unread(http, auth(p_tok))
        assert [n["kind"] for n in unread] == ["booking.cancelled", "booking.created", "account.activated"]
        # the client cancelled: they are not told of their own act, only that their money is coming back
        # (all of it at least a day ahead, half of it later: the default policy)
        notices = await eventually(lambda: _unread(http, c), what="the client's refund notice")
        total = booking["price"]["client_total"]
        late = datetime.fromisoformat(booking["starts_at"]).timestamp() - time.time() < 86400
        assert [(n["kind"], n["data"]["booking_id"], n["data"]["amount_minor"], n["data"]["reason"])
                for n in notices] == [("refund.owed", booking["id"], total // 2 if late else total,
                                       "cancelled_late" if late else "cancelled_in_time")]
        r = await http.post("/v1/notifications/read", headers=auth(p_tok), json={"ids": [unread[0]["id"]]})
        assert r.json() == {"marked": 1, "unread_count": 2}
        r = await http.post("/v1/notifications/read", headers=auth(p_tok), json={"all": True})
        assert r.json()["unread_count"] == 0
        everything = (await http.get("/v1/notifications", headers=auth(p_tok))).json()
        assert all(n["read"] for n in everything["notifications"]) and len(everything["notifications"]) == 3


async def test_the_websocket_accepts_the_token_as_first_message_and_refuses_a_bad_one(
        live_server: LiveServer, token: Token) -> None:
    async with websockets.connect(f"{live_server.ws_url}/v1/notifications/ws") as ws:
        await ws.send(json.dumps({"type": "auth", "token": token("client", "c1")}))
        assert json.loads(await ws.recv())["type"] == "hello"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
    async with websockets.connect(f"{live_server.ws_url}/v1/notifications/ws") as ws:
        await ws.send(json.dumps({"type": "auth", "token": "nonsense"}))
        assert json.loads(await ws.recv())["code"] == "token_malformed"
        await ws.wait_closed()
        assert ws.close_code == 4401
    async with websockets.connect(f"{live_server.ws_url}/v1/notifications/ws") as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["code"] == "unauthenticated"
        await ws.wait_closed()
        assert ws.close_code == 4401


def _expired_token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "c1", "name": "c1", "role": "client", "iat": now - 7200, "exp": now - 3600},
                      API_SECRET, algorithm="HS256", headers={"kid": API_KEY_ID})


def _tampered(tok: str) -> str:
    header, payload, signature = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "role": "admin"}).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


async def test_a_refused_token_is_told_with_its_code_whichever_way_it_came(
        live_server: LiveServer, token: Token) -> None:
    """An expired or forged token gets a typed `error` (the HTTP routes' code) and close 4401, in the
    subprotocol header as in the `auth` message; a refused handshake would be a bare HTTP 403 that says
    nothing, and a client could not tell an expired token (mint a new one) from a bad one."""
    url = f"{live_server.ws_url}/v1/notifications/ws"
    for bad, code in ((_expired_token(), "token_expired"), (_tampered(token("client", "c1")), "token_signature")):
        async with websockets.connect(url, subprotocols=["notifications.v1", f"bearer.{bad}"]  # type: ignore[list-item]
                                      ) as ws:
            refusal = json.loads(await ws.recv())
            assert refusal["type"] == "error" and refusal["code"] == code and refusal["message"]
            await ws.wait_closed()
            assert ws.close_code == 4401
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": bad}))
            assert json.loads(await ws.recv())["code"] == code
            await ws.wait_closed()
            assert ws.close_code == 4401


async def test_a_client_waiting_for_a_full_practitioner_is_told_when_slots_appear(
        live_server: LiveServer, token: Token, redis_client: aioredis.Redis) -> None:
    c, p = auth(token("client", "c1")), auth(token("practitioner", "p1"))
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        await make_practitioner(http, "p1", weekly=[])
        r = await http.post("/v1/practitioners/p1/interest", headers=c)
        assert r.status_code == 201
        r = await http.post("/v1/practitioners/p1/interest", headers=c)
        assert r.status_code == 200 and r.json()["already_registered"]

        async def waiting_notice() -> list[dict[str, Any]]:
            return [n for n in await _unread(http, p) if n["kind"] == "clients.waiting"]

        assert len(await eventually(waiting_notice, what="the practitioner to learn a client waits")) == 1

        async def slots_notice() -> list[dict[str, Any]]:
            return [n for n in await _unread(http, c) if n["kind"] == "slots.available"]

        # half an hour cannot hold a 50-minute session: no slot appeared, nobody is told, the client still waits
        r = await http.put("/v1/practitioners/p1/availability", headers=p,
                           json={"exceptions": [{"date": local_day(2), "start": "10:00", "end": "10:30"}]})
        assert r.status_code == 200 and r.json()["waiting_clients"] == 1
        await settled(redis_client)
        assert await slots_notice() == []
        r = await http.put("/v1/practitioners/p1/availability", headers=p,
                           json={"exceptions": [{"date": local_day(2), "start": "10:00", "end": "12:00"}]})
        assert r.status_code == 200 and r.json()["waiting_clients"] == 1

        found = await eventually(slots_notice, what="the waiting client to be told")
        assert found[0]["data"] == {"practitioner_id": "p1"}
        r = await http.post("/v1/practitioners/p1/interest", headers=c)
        assert r.status_code == 409 and r.json()["code"] == "slots_available"
        r = await http.put("/v1/practitioners/p1/availability", headers=api_key_auth(),
                           json={"exceptions": [{"date": local_day(3), "start": "10:00", "end": "12:00"}]})
        assert r.status_code == 200 and r.json()["waiting_clients"] == 0
        await settled(redis_client)
        assert len(await slots_notice()) == 1  # told once: the waiting list was emptied


async def test_pushes_follow_the_users_sockets_as_they_come_and_go(live_server: LiveServer, token: Token) -> None:
    p_tok, c = token("practitioner", "p1"), auth(token("client", "c1"))
    url = f"{live_server.ws_url}/v1/notifications/ws"

    async def connect() -> websockets.ClientConnection:
        ws = await websockets.connect(url, subprotocols=["notifications.v1", f"bearer.{p_tok}"])  # type: ignore[list-item]
        assert json.loads(await ws.recv())["type"] == "hello"
        return ws

    async def book(http: httpx.AsyncClient) -> str:
        slot = await first_slot(http, "p1", c)
        r = await http.post("/v1/bookings", headers=c, json={"practitioner_id": "p1", "starts_at": slot["starts_at"]})
        assert r.status_code == 201, r.text
        booking_id: str = r.json()["id"]
        return booking_id

    async def pushed_booking(ws: websockets.ClientConnection) -> str:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message["type"] == "notification" and message["notification"]["kind"] == "booking.created"
        booking_id: str = message["notification"]["data"]["booking_id"]
        return booking_id

    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        await make_practitioner(http, "p1", weekly=every_day())
        await eventually(lambda: _unread(http, auth(p_tok)), what="the activation notice")
        first, second = await connect(), await connect()
        await first.close()  # the user keeps one socket: pushes go on reaching it
        booked = await book(http)
        assert await pushed_booking(second) == booked
        await second.close()  # no socket left
        again = await connect()  # and back
        try:
            booked = await book(http)
            assert await pushed_booking(again) == booked
        finally:
            await again.close()


async def test_a_practitioner_not_in_the_room_is_told_once_that_their_client_is_waiting_there(
        tmp_path: Path, redis_url: str, token: Token) -> None:
    await write_booking(redis_url)
    p_tok, c_tok = token("practitioner", PRACTITIONER), token("client", CLIENT)
    async with room_server(tmp_path, redis_url) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        ws = await websockets.connect(f"{server.ws_url}/v1/notifications/ws",
                                      subprotocols=["notifications.v1", f"bearer.{p_tok}"])  # type: ignore[list-item]
        try:
            assert json.loads(await ws.recv())["type"] == "hello"
            client, _ = await joined(server, "b1", c_tok)
            pushed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert pushed["notification"]["kind"] == "room.waiting"
            assert pushed["notification"]["data"] == {"booking_id": "b1", "waiting": "client"}
            # the client steps out and comes back: no second ping for the same booking
            await client.send({"type": "leave"})
            await client.closed()
            client, _ = await joined(server, "b1", c_tok)
            # the practitioner comes in: the client, already there, is not told the practitioner is waiting
            prac, _ = await joined(server, "b1", p_tok)
            await client.expect("session.started")
            r = aioredis.Redis.from_url(redis_url)
            try:
                await settled(r)
            finally:
                await r.aclose()
            await prac.close()
            await client.close()
        finally:
            await ws.close()
        unread = await _unread(http, auth(p_tok))
        assert [n["kind"] for n in unread] == ["room.waiting"]
        assert await _unread(http, auth(c_tok)) == []


def test_who_is_told_that_the_other_party_waits_in_the_room() -> None:
    def joined_by(role: str) -> Event:
        return Event("room.joined", {"booking_id": "b9", "participant_id": "x", "role": role, "at": 0,
                                     "practitioner_id": "p", "client_id": "c"})

    (note,) = notifications_for(joined_by("client"))
    assert (note.user_id, note.kind, note.data) == ("p", "room.waiting", {"booking_id": "b9", "waiting": "client"})
    (note,) = notifications_for(joined_by("practitioner"))
    assert (note.user_id, note.data["waiting"]) == ("c", "practitioner")
    assert notifications_for(joined_by("client"), present={"p"}) == []  # already there
    assert notifications_for(joined_by("support")) == []  # staff are not a party
    # one notification per booking and person, whichever join made it
    assert notifications_for(joined_by("client"))[0].id == notifications_for(joined_by("client"))[0].id


async def test_an_event_without_what_its_notification_needs_does_not_hold_back_the_others(
        live_server: LiveServer, token: Token, redis_client: aioredis.Redis) -> None:
    """A complaint event without its ids, written with a good one in the same instant (so read in one batch):
    the good one is notified, the bad one skipped (left pending, it stopped the consumer each time it was
    claimed again, and the events read with it)."""
    from .ledger_support import publish

    await publish(redis_client,
                  Event("complaint.filed", {"booking_id": "b0"}),
                  Event("complaint.filed", {"complaint_id": "k1", "booking_id": "b1", "client_id": "c1",
                                            "practitioner_id": "p1", "reason": "conduct", "has_text": False}))
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        told = await eventually(lambda: _unread(http, auth(token("client", "c1"))), timeout=15,
                                what="the good complaint's notice")
        assert [(n["kind"], n["data"]["complaint_id"]) for n in told] == [("complaint.filed", "k1")]
