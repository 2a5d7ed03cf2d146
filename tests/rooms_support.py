"""Helpers for the room, chat and signaling tests: bookings written as the bookings store writes them,
live servers with room-friendly settings, and a WebSocket peer that keeps every message it receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from session_server.app import create_app
from session_server.bookings.model import BOOKING_KEY, Booking, BookingStatus
from session_server.clock import Clock
from signaling.messages import MAX_FRAME_BYTES

from .conftest import LiveServer, make_settings
from .support import free_port

PRACTITIONER = "prac-1"
CLIENT = "client-1"
# the signaling tests exercise the relay protocol; the SFU path has its own tests (media_mode "sfu")
FAST = {"heartbeat_interval_s": 0.3, "heartbeat_timeout_s": 1.5, "media_mode": "relay"}


async def write_booking(redis_url: str, booking_id: str = "b1", *, practitioner: str = PRACTITIONER,
                        client: str = CLIENT, starts_in_s: int = 60, length_s: int = 3600,
                        status: BookingStatus = BookingStatus.CONFIRMED) -> Booking:
    now = int(time.time())
    booking = Booking(id=booking_id, practitioner_id=practitioner, client_id=client,
                      starts_at=now + starts_in_s, ends_at=now + starts_in_s + length_s, status=status,
                      currency="DZD", client_total=350_000, practitioner_share=300_000,
                      platform_share=50_000, discount=0, code="", created_at=now - 86400,
                      timezone="Africa/Algiers")
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.hset(BOOKING_KEY.format(booking_id), mapping=booking.to_hash())  # type: ignore[misc]
    finally:
        await r.aclose()
    return booking


@contextlib.asynccontextmanager
async def room_server(tmp_path: Path, redis_url: str, *, clock: Clock | None = None,
                      **overrides: Any) -> AsyncIterator[LiveServer]:
    """A live server whose public URL is its own address, so that its pages pass the Origin check; on
    `clock` when given (the machine's otherwise)."""
    port = free_port()
    values = {**FAST, "port": port, "public_base_url": f"http://127.0.0.1:{port}", **overrides}
    settings = make_settings(tmp_path, redis_url, **values)
    server = LiveServer(create_app(settings, clock=clock))
    server.port = port
    server.config = uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="warning",
                                   ws_per_message_deflate=False, ws_max_size=MAX_FRAME_BYTES, lifespan="on")
    server.server = uvicorn.Server(server.config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Peer:
    """A WebSocket participant that records what it receives, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._reader = asyncio.create_task(self._read())
        self._changed = asyncio.Event()
        self.auto_pong = True

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                self.received.append(msg)
                if msg.get("type") == "ping" and self.auto_pong:
                    with contextlib.suppress(ConnectionClosed):
                        await self.ws.send(json.dumps({"type": "pong", "id": uuid.uuid4().hex[:12],
                                                       "ref": msg["id"]}))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            self.close_code = rcvd.code if rcvd is not None else 1006
            self._changed.set()

    async def send(self, message: dict[str, Any]) -> None:
        message.setdefault("id", uuid.uuid4().hex[:16])
        await self.ws.send(json.dumps(message))

    async def send_raw(self, raw: str | bytes) -> None:
        await self.ws.send(raw)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == kind]

    async def expect(self, kind: str, where: Callable[[dict[str, Any]], bool] = lambda m: True,
                     timeout: float = 5.0, after: int = 0) -> dict[str, Any]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            for m in self.received[after:]:
                if m.get("type") == kind and where(m):
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or (self.close_code is not None and self._reader.done()):
                seen = [m.get("type") for m in self.received[-20:]]
                raise AssertionError(f"no {kind!r} message arrived (close code {self.close_code}; "
                                     f"last types seen: {seen})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))

    async def reply(self, ref: str, timeout: float = 5.0, after: int = 0) -> dict[str, Any]:  # noqa: ASYNC109
        """The server's answer to the message with this id: an acknowledgment or an `error`."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.received[after:]:
                if m.get("ref") == ref and m.get("type") in ("chat.ack", "ack", "pong", "error"):
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or (self.close_code is not None and self._reader.done()):
                raise AssertionError(f"no answer to {ref!r} (close code {self.close_code})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))

    async def closed(self, timeout: float = 5.0) -> int:  # noqa: ASYNC109
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        assert self.close_code is not None
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 2)

    def abort(self) -> None:
        """Cut the TCP connection without a close handshake, as a dropped network does."""
        self.ws.transport.abort()


async def connect_peer(server: LiveServer, booking_id: str, token: str | None, *, via: str = "header",
                       origin: str | None = None, last_seq: int | None = None, join: bool = True,
                       extra_join: dict[str, Any] | None = None) -> Peer:
    protocols = ["session.v1"]
    if via == "header" and token is not None:
        protocols.append("bearer." + token)
    ws = await connect(f"{server.ws_url}/v1/rooms/{booking_id}/ws", subprotocols=protocols,  # type: ignore[arg-type]
                       origin=origin, max_size=None, compression=None, open_timeout=5)  # type: ignore[arg-type]
    peer = Peer(ws)
    if join:
        msg: dict[str, Any] = {"type": "join", "v": 1}
        if via == "message" and token is not None:
            msg["token"] = token
        if last_seq is not None:
            msg["last_seq"] = last_seq
        msg.update(extra_join or {})
        await peer.send(msg)
    return peer


async def joined(server: LiveServer, booking_id: str, token: str, **kw: Any) -> tuple[Peer, dict[str, Any]]:
    peer = await connect_peer(server, booking_id, token, **kw)
    msg = await peer.expect("joined")
    return peer, msg


async def whole_history(peer: Peer, welcome: dict[str, Any]) -> list[dict[str, Any]]:
    """Every chat message a resume brought: the welcome's, then its `chat.history` pages to the last."""
    history = list(welcome["chat"])
    if welcome.get("chat_more"):
        await peer.expect("chat.history", lambda page: not page["more"])
        for page in peer.of_type("chat.history"):
            history.extend(page["chat"])
    return history


class ServerProcess:
    """A real server process (`session_server.cli serve`) on 127.0.0.1, for multi-node tests."""

    def __init__(self, tmp_path: Path, redis_url: str, name: str, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log = tmp_path / f"{name}.log"
        self.env = process_env(redis_url, tmp_path / name, self.port, **settings)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        import sys

        import httpx

        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "session_server.cli", "serve", env=self.env,
                stdout=out, stderr=asyncio.subprocess.STDOUT)
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as http:
            while True:
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")
                try:
                    if (await http.get(self.url + "/readyz", timeout=1)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        else:
            await self.proc.wait()


def process_env(redis_url: str, data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    import base64
    import os

    from .conftest import API_KEY_ID, API_SECRET, MASTER_KEYS

    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVER_") and k != "REDIS_URL"}
    env.update({
        "REDIS_URL": redis_url,
        "SESSION_SERVER_HOST": "127.0.0.1",
        "SESSION_SERVER_PORT": str(port),
        "SESSION_SERVER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SESSION_SERVER_DATA_DIR": str(data_dir),
        "SESSION_SERVER_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
        "SESSION_SERVER_MASTER_KEYS": ",".join(f"{k}:{base64.b64encode(v).decode()}"
                                               for k, v in MASTER_KEYS.items()),
        "SESSION_SERVER_ACTIVE_MASTER_KEY_ID": "k1",
        "SESSION_SERVER_LOG_LEVEL": "warning",
        "SESSION_SERVER_MEDIA_MODE": "relay",
    })
    env.update({"SESSION_SERVER_" + k.upper(): v for k, v in settings.items()})
    return env


class StallingPeer:
    """A room participant on a raw TCP socket with a small receive buffer, which can stop reading for real:
    its kernel buffer fills, its window closes, and the server's writes wait, as for a frozen page or a
    choked downlink (a cancelled reader task is no such thing: its kernel still drains the socket)."""

    def __init__(self, sock: Any, protocol: Any) -> None:
        self.sock = sock
        self.protocol = protocol
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, server: LiveServer, booking_id: str, token: str, *,
                      receive_buffer: int = 4096) -> StallingPeer:
        import socket

        from websockets.client import ClientProtocol
        from websockets.http11 import Response
        from websockets.typing import Subprotocol
        from websockets.uri import parse_uri

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connecting: the window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        protocol = ClientProtocol(parse_uri(f"{server.ws_url}/v1/rooms/{booking_id}/ws"), max_size=None,
                                  subprotocols=[Subprotocol("session.v1"), Subprotocol("bearer." + token)])
        protocol.send_request(protocol.connect())
        peer = cls(sock, protocol)
        await peer._flush()
        while True:
            events = await peer._read_events()
            if any(isinstance(e, Response) for e in events):
                return peer

    async def _flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _read_events(self) -> list[Any]:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), 10)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        events = self.protocol.events_received()
        for e in events:
            if getattr(e, "opcode", None) is not None and e.opcode.name == "TEXT":
                self.received.append(json.loads(e.data))
        await self._flush()  # answers to pings and to a close
        if not data and not events:
            raise ConnectionError("the server closed the connection")
        return events

    async def send(self, message: dict[str, Any]) -> None:
        message.setdefault("id", uuid.uuid4().hex[:16])
        self.protocol.send_text(json.dumps(message).encode())
        await self._flush()

    async def read_until(self, kind: str) -> dict[str, Any]:
        while True:
            for m in self.received:
                if m.get("type") == kind:
                    return m
            await self._read_events()

    async def read_until_closed(self) -> int:
        """Read again: what the server had sent, then its close frame; its close code (1006 if none)."""
        from websockets.frames import Opcode

        while True:
            try:
                events = await self._read_events()
            except ConnectionError:
                return 1006
            for e in events:
                if getattr(e, "opcode", None) is Opcode.CLOSE:
                    rcvd = self.protocol.close_rcvd
                    return rcvd.code if rcvd is not None else 1005

    def close(self) -> None:
        self.sock.close()
