"""Every WebSocket route shares one handshake policy: a browser's Origin must be one of the allowed ones
(a client that is not a browser sends none); the rooms' and the notifications' sockets refuse the same
origins the same way (HTTP 403 before the socket is accepted)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .conftest import LiveServer
from .rooms_support import CLIENT, connect_peer, joined, room_server, write_booking

ALLOWED, EVIL = "https://app.example", "https://evil.example"


@pytest.fixture
async def server(tmp_path: Path, redis_url: str) -> AsyncIterator[LiveServer]:
    async with room_server(tmp_path, redis_url, allowed_origins=(ALLOWED,)) as live:
        yield live


async def _notifications_hello(server: LiveServer, token: str, origin: str | None) -> dict[str, object]:
    async with connect(f"{server.ws_url}/v1/notifications/ws", origin=origin,  # type: ignore[arg-type]
                       subprotocols=["notifications.v1", f"bearer.{token}"]) as ws:  # type: ignore[list-item]
        hello: dict[str, object] = json.loads(await ws.recv())
        return hello


async def test_every_socket_route_refuses_an_origin_that_is_not_allowed(
        server: LiveServer, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, "b1")
    tok = token("client", CLIENT)
    with pytest.raises(InvalidStatus) as notif:
        await _notifications_hello(server, tok, EVIL)
    assert notif.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as room:
        await connect_peer(server, "b1", tok, origin=EVIL)
    assert room.value.response.status_code == 403


async def test_every_socket_route_accepts_an_allowed_origin_and_a_client_without_one(
        server: LiveServer, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, "b1")
    tok = token("client", CLIENT)
    for origin in (ALLOWED, ALLOWED + "/", None):
        assert (await _notifications_hello(server, tok, origin))["type"] == "hello"
        peer, _ = await joined(server, "b1", tok, origin=origin)
        await peer.close()
