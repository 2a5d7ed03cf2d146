"""The room WebSocket edge: handshake, decode, authorise the connection, write. The room itself is the
`RoomService`'s (service.py); this module only carries its messages over a socket.

Each socket gets a bounded outbox drained by one writer task: a reader too slow to keep up fills it
and is disconnected (4008) instead of growing the server's memory. Every message is authorised
against the sender's role in this room when it arrives (by the service), not only when the socket
opened. A socket's tasks (its handler, its writer, its closer) are children of the app's task
supervisor, so the one shutdown path drains, cancels and awaits them with everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import redis.exceptions
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.utils import ClientDisconnected

from signaling import messages as m
from signaling.ratelimit import TokenBucket

from ..auth import TokenAuthority, TokenMissing
from ..errors import DomainError, Forbidden, Gone, NotFound, RateLimited, Unauthenticated, Unavailable
from ..settings import Settings
from ..tasks import TaskSupervisor
from ..ws_handshake import HandshakePolicy
from . import rules
from .service import Member, RoomService

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 1.0
# how long a slow reader's close (4008) waits behind what it has not read yet before it is let go
SLOW_CLOSE_WAIT_S = 10.0
FLOOD_FACTOR = 10  # all messages together may come this many times faster than chat alone


def close_code_for(exc: DomainError) -> int:
    if isinstance(exc, Unauthenticated):
        return m.CLOSE_UNAUTHENTICATED
    if isinstance(exc, rules.RoomNotOpenYet):
        return m.CLOSE_NOT_OPEN_YET
    if isinstance(exc, Gone):
        return m.CLOSE_ROOM_CLOSED
    if isinstance(exc, NotFound):
        return m.CLOSE_NOT_FOUND
    if isinstance(exc, Forbidden):
        return m.CLOSE_FORBIDDEN
    if isinstance(exc, rules.TooManyConnections):
        return m.CLOSE_TOO_MANY
    return m.CLOSE_BAD_HANDSHAKE


class SocketLink:
    """A `Link` over one WebSocket: a bounded outbox, one writer, and a close that waits for neither.

    The slow-reader rule (docs/protocol.md): a reader is too slow when its outbox fills
    (`ws_send_queue` messages) or when one write waits `ws_send_timeout_s` for the transport to take it,
    which it does only while the reader takes what was sent before. At the rates the protocol allows the
    second comes first: a reader that stalls is found within seconds, long before the heartbeat or the
    HTTP server's keep-alive would notice. It is then served no more (what is queued is dropped, the
    others are told at once) and its close, 4008, waits behind what is already in flight, so that a
    reader that comes back to life reads why it was closed; one that never does is let go."""

    def __init__(self, ws: WebSocket, *, room_id: str, conn_id: str, queue_size: int,
                 tasks: TaskSupervisor, send_timeout_s: float = 10.0) -> None:
        self.ws = ws
        self.room_id = room_id
        self.conn_id = conn_id
        self._tasks = tasks
        self._send_timeout_s = send_timeout_s
        self._close_code: int | None = None
        self._close_wait_s = CLOSE_WAIT_S
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.handler: asyncio.Task[Any] | None = None
        self.kicked = False

    @property
    def close_code(self) -> int | None:
        return self._close_code

    def start(self) -> None:
        self._writer = self._tasks.start(f"ws-writer-{self.conn_id[:8]}", self._write())

    async def _write(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    break
                # The transport takes a frame at once unless its buffer is over the high-water mark, which
                # it leaves only when the reader takes what the kernel holds for it: a write that waits
                # this long is a reader that stalled.
                async with asyncio.timeout(self._send_timeout_s):
                    await self.ws.send_text(item)
        except TimeoutError:
            self._stalled()
            return
        except (WebSocketDisconnect, OSError, RuntimeError, ClientDisconnected):
            return  # the peer is gone; the reader sees the disconnect and cleans up
        await self._close_socket()

    def _stalled(self) -> None:
        log.warning("room %s: a participant took nothing for %.0f s; disconnecting (4008)", self.room_id,
                    self._send_timeout_s)
        if self._close_code is None:
            self.abort(m.CLOSE_SLOW_CONSUMER)
            return
        # it was closing already (a timeout, the room's end) and its close waits behind what it does not
        # read: close it as a slow one, and stop waiting for a close handshake it cannot answer
        self._close_wait_s = SLOW_CLOSE_WAIT_S
        if self._closer is None:
            self._start_closer()
        if self.handler is not None and not self.handler.done():
            self.kicked = True
            self.handler.cancel()

    async def _close_socket(self) -> None:
        # A close waits for the transport like any write: behind what a stalled reader has not taken.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(self._close_code or m.CLOSE_NORMAL), self._close_wait_s)

    def _start_closer(self) -> None:
        coro: Coroutine[Any, Any, None] = self._close_socket()
        if self._tasks.stopping:
            # the app is draining: this socket's handler awaits its closer (finish) and the drain
            # awaits the handler, so the closer still ends on the one shutdown path
            self._closer = asyncio.create_task(coro, name=f"ws-closer-{self.conn_id[:8]}")
        else:
            self._closer = self._tasks.start(f"ws-closer-{self.conn_id[:8]}", coro)

    def send(self, text: str) -> None:
        if self._close_code is not None:
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("room %s: a participant reads too slowly; disconnecting (4008)", self.room_id)
            self.abort(m.CLOSE_SLOW_CONSUMER)

    def abort(self, code: int) -> None:
        if self._close_code is not None:
            return
        self._close_code = code
        if code == m.CLOSE_SLOW_CONSUMER:
            self._close_wait_s = SLOW_CLOSE_WAIT_S
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()  # what is queued is dropped; a write in flight waits for writability
        self._start_closer()
        # A reader this slow is served no more: its handler stops now (the others are told), rather than
        # after a close handshake that its full buffers cannot carry yet.
        if self.handler is not None and not self.handler.done():
            self.kicked = True
            self.handler.cancel()

    def close(self, code: int) -> None:
        if self._close_code is not None:
            return
        self._close_code = code
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            if self._writer is not None:
                self._writer.cancel()
            self._start_closer()

    async def finish(self) -> None:
        for task in (self._writer, self._closer):
            if task is not None and not task.done():
                if task is self._writer and self._close_code is None:
                    task.cancel()
                # the writer may still stall and start the closer: wait for as long as either may take
                wait = self._send_timeout_s + self._close_wait_s if task is self._writer else self._close_wait_s
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, wait + CLOSE_WAIT_S)
        closer = self._closer
        if closer is not None and not closer.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(closer, self._close_wait_s + CLOSE_WAIT_S)


class RoomSockets:
    """/v1/rooms/{booking_id}/ws: every room socket of this node, from handshake to close."""

    def __init__(self, service: RoomService, *, settings: Settings, tokens: TokenAuthority,
                 tasks: TaskSupervisor) -> None:
        self.service = service
        self.settings = settings
        self.tokens = tokens
        self.tasks = tasks
        self.ids = service.ids
        self.handshake = HandshakePolicy(settings.origins)
        self._sockets: set[asyncio.Task[None]] = set()

    async def handle(self, ws: WebSocket) -> None:
        booking_id = str(ws.path_params.get("booking_id", ""))
        offered: list[str] = list(ws.scope.get("subprotocols") or [])
        if not await self.handshake.admit(ws, "room"):
            return
        if offered and m.SUBPROTOCOL not in offered:
            await ws.close(m.CLOSE_BAD_HANDSHAKE)
            return
        if self.tasks.stopping:
            await ws.close(m.CLOSE_GOING_AWAY)
            return
        header_token = next((p[len(m.TOKEN_SUBPROTOCOL_PREFIX):] for p in offered
                             if p.startswith(m.TOKEN_SUBPROTOCOL_PREFIX)), None)
        await ws.accept(subprotocol=m.SUBPROTOCOL if offered else None)
        task = self.tasks.start(f"ws-room-{booking_id[:32]}", self._run(ws, booking_id, header_token))
        self._sockets.add(task)
        task.add_done_callback(self._sockets.discard)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the server cancels this request: the socket's task went with it
            # the supervisor cancelled the socket's task at shutdown; this request just ends

    async def drain(self) -> None:
        """Stopping: close every socket with 1001 (their participants may come back on another node),
        then give them a moment to finish their close handshakes; the supervisor cancels the rest."""
        self.service.close_all()
        if self._sockets:
            await asyncio.wait(list(self._sockets), timeout=3 * CLOSE_WAIT_S)

    async def _run(self, ws: WebSocket, booking_id: str, header_token: str | None) -> None:
        task = asyncio.current_task()
        link: SocketLink | None = None
        member: Member | None = None
        try:
            opened = await self._open(ws, booking_id, header_token)
            if opened is not None:
                link, member = opened
                await self._serve(link, member)
        except WebSocketDisconnect:
            pass
        except asyncio.CancelledError:
            if link is None or not link.kicked or task is None:
                raise
            task.uncancel()
        finally:
            if member is not None:
                await self.service.closed(member)
            if link is not None:
                await link.finish()

    async def _refuse(self, ws: WebSocket, code: str, message: str, close: int, ref: str | None,
                      retry_after_s: float | None = None, reason: str | None = None) -> None:
        with contextlib.suppress(Exception):
            await ws.send_text(m.encode(m.Error(id=self.ids(), code=code, message=message, ref=ref,
                                                retry_after_s=retry_after_s, reason=reason)))
            # the close frame's reason says it too, for a client that reads only the close
            await asyncio.wait_for(ws.close(close, reason or code), CLOSE_WAIT_S)

    def _error(self, exc: DomainError, ref: str | None = None) -> m.Error:
        return m.Error(id=self.ids(), code=exc.code, message=exc.message, ref=ref)

    async def _open(self, ws: WebSocket, booking_id: str,
                    header_token: str | None) -> tuple[SocketLink, Member] | None:
        try:
            first = await asyncio.wait_for(ws.receive(), JOIN_TIMEOUT_S)
        except TimeoutError:
            late = rules.JoinTimeout("send `join` first")
            await self._refuse(ws, late.code, late.message, m.CLOSE_HEARTBEAT_TIMEOUT, None)
            return None
        if first["type"] == "websocket.disconnect":
            return None
        text = first.get("text")
        ref = None
        try:
            if text is None or len(text) > m.MAX_FRAME_BYTES:
                raise m.ProtocolError("invalid_message", "send `join` as a JSON text message first")
            msg = m.decode(text)
            ref = msg.id
            if not isinstance(msg, m.Join):
                raise m.ProtocolError("join_first", "the first message must be `join`", ref)
            if msg.v != m.PROTOCOL_VERSION:
                raise m.ProtocolError("unsupported_version", "this server speaks protocol v1", ref)
        except m.ProtocolError as exc:
            await self._refuse(ws, exc.code, exc.message, m.CLOSE_BAD_HANDSHAKE, exc.ref)
            return None
        try:
            token = msg.token or header_token
            if not token:
                raise TokenMissing("send the access token in the subprotocol header or in `join`")
            identity = self.tokens.verify(token)
            admission = await self.service.admit(identity, booking_id)
        except DomainError as exc:
            log.info("room %s: join refused (%s)", booking_id[:128], exc.code)
            retry = None
            if isinstance(exc, rules.RoomNotOpenYet):
                # by the server's clock, so that a page whose clock is off still comes back on time
                retry = max(0.0, round(float(exc.extra["opens_at"]) - self.service.clock.now(), 3))
            why = exc.extra.get("reason") if isinstance(exc, rules.RoomClosed) else None
            await self._refuse(ws, exc.code, exc.message, close_code_for(exc), ref, retry,
                               str(why) if why is not None else None)
            return None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            # Redis is away (the outage is logged once, elsewhere): nothing was held; join again later
            down = Unavailable("the server's data store did not answer; join again shortly")
            await self._refuse(ws, down.code, down.message, m.CLOSE_TRY_AGAIN_LATER, ref, 1.0)
            return None
        link = SocketLink(ws, room_id=booking_id, conn_id=admission.conn_id,
                          queue_size=self.settings.ws_send_queue, tasks=self.tasks,
                          send_timeout_s=self.settings.ws_send_timeout_s)
        link.start()
        try:
            member = await self.service.join(link, admission, msg)
        except Exception:
            await link.finish()
            raise
        link.handler = asyncio.current_task()
        return link, member

    async def _serve(self, link: SocketLink, member: Member) -> None:
        ws = link.ws
        s = self.settings
        flood = TokenBucket(s.chat_rate_per_s * FLOOD_FACTOR, s.chat_burst * FLOOD_FACTOR)
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            heard = self.service.heard(member)
            if link.close_code is not None:
                continue  # closing: read until the peer's close arrives, act on nothing
            text = frame.get("text")
            if text is None:
                member.send(self._error(rules.BinaryNotSupported("send JSON text messages")))
                continue
            if len(text) > m.MAX_FRAME_BYTES // 4 and len(text.encode()) > m.MAX_FRAME_BYTES:
                member.close_soon(m.CLOSE_TOO_BIG, "message too big")
                continue
            if not flood.take(heard):
                log.info("room %s: the %s floods; disconnecting", member.room_id, member.role.value)
                member.send(self._error(rules.Flood("too many messages")))
                member.close_soon(m.CLOSE_TOO_MANY, "too many messages")
                continue
            ref = None
            try:
                await self.service.spoke(member)
                msg = m.decode(text)
                ref = msg.id
                if isinstance(msg, m.TokenRefresh):
                    self.service.refresh_token(member, self.tokens.verify(msg.token), msg)
                    continue
                await self.service.on_message(member, msg)
            except m.ProtocolError as exc:
                member.send(m.Error(id=self.ids(), code=exc.code, message=exc.message, ref=exc.ref))
            except RateLimited as exc:
                member.send(m.Error(id=self.ids(), code=exc.code, message=exc.message, ref=ref,
                                    retry_after_s=round(float(exc.extra.get("retry_after_s", 1.0)), 3)))
            except DomainError as exc:
                member.send(self._error(exc, ref))
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                # Redis is away (the outage is logged once, elsewhere): nothing was acknowledged, the socket
                # stays, and the page sends again after the pause; a chat resent with its id is not doubled.
                down = Unavailable("the server's data store did not answer; send it again shortly")
                member.send(m.Error(id=self.ids(), code=down.code, message=down.message, ref=ref,
                                    retry_after_s=1.0))
