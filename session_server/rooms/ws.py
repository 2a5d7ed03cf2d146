"""The room WebSocket edge: handshake, join, one typed message at a time, presence and leaving.

Each socket gets a bounded outbox drained by one writer task: a reader too slow to keep up fills it
and is disconnected (4008) instead of growing the server's memory. Every message is authorised
against the sender's role in this room when it arrives, not only when the socket opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.utils import ClientDisconnected

from signaling import messages as m
from signaling.bus import RoomBus, envelope
from signaling.media import MediaBridge
from signaling.presence import Entry, Liveness, Timings, connection_liveness, expired
from signaling.ratelimit import TokenBucket

from ..auth import Identity, Permission, TokenAuthority
from ..bookings.model import Booking, load_booking
from ..errors import DomainError, Forbidden, Gone, InvalidInput, NotFound, Unauthenticated
from ..events import Event
from ..settings import Settings
from . import rules
from .store import ChatRecord, RoomStore, now_ms

log = logging.getLogger(__name__)

HISTORY_ON_JOIN = 50
RESUME_MAX = 5000
JOIN_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 1.0
FLOOD_FACTOR = 10  # all messages together may come this many times faster than chat alone
_BOOKING_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")

SessionStartedHook = Callable[[Booking], Awaitable[None]]
ProblemHook = Callable[[Booking, str, str, str], Awaitable[None]]


class TooManyConnections(DomainError):
    status, code, title = 429, "too_many_connections", "Too many connections"


class RateLimited(DomainError):
    status, code, title = 429, "rate_limited", "Rate limited"


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
    if isinstance(exc, TooManyConnections):
        return m.CLOSE_TOO_MANY
    return m.CLOSE_BAD_HANDSHAKE


class Connection:
    """One joined socket: its identity in the room, its outbox and its liveness."""

    def __init__(self, ws: WebSocket, *, room_id: str, identity: Identity, booking: Booking,
                 window: rules.Window, queue_size: int, settings: Settings) -> None:
        self.ws = ws
        self.conn_id = uuid.uuid4().hex
        self.room_id = room_id
        self.identity = identity
        self.participant_id = identity.sub
        self.role = identity.role
        self.booking = booking
        self.window = window
        self.receives_health_data = rules.receives_health_data(identity.role)
        self.entry: dict[str, Any] = {}
        self.state = "connected"
        self.exit_reason = "dropped"
        self.close_code: int | None = None
        self.last_heard = time.monotonic()
        self.last_ping = self.last_heard
        self.chat_bucket = TokenBucket(settings.chat_rate_per_s, settings.chat_burst)
        self.flood_bucket = TokenBucket(settings.chat_rate_per_s * FLOOD_FACTOR,
                                        settings.chat_burst * FLOOD_FACTOR)
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(queue_size)
        self._ready = False
        self._pending: list[tuple[int | None, str]] = []
        self._queue_size = queue_size
        self._chat_cursor = 0
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.handler: asyncio.Task[Any] | None = None
        self.kicked = False

    # --- outgoing ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name=f"ws-writer-{self.conn_id[:8]}")

    async def _write(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    break
                await self.ws.send_text(item)
        except (WebSocketDisconnect, OSError, RuntimeError, ClientDisconnected):
            return  # the peer is gone; the reader sees the disconnect and cleans up
        await self._close_socket()

    async def _close_socket(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(self.close_code or m.CLOSE_NORMAL), CLOSE_WAIT_S)

    def send(self, message: m.ServerMessage) -> None:
        self.deliver(m.encode(message))

    def deliver(self, text: str) -> None:
        if not self._ready:
            self._buffer(None, text)
            return
        self._put(text)

    def deliver_chat(self, seq: int, text: str) -> None:
        if not self._ready:
            self._buffer(seq, text)
            return
        if seq <= self._chat_cursor:
            return  # already sent with the history
        self._chat_cursor = seq
        self._put(text)

    def _buffer(self, seq: int | None, text: str) -> None:
        if len(self._pending) >= self._queue_size:
            self._overflow()
            return
        self._pending.append((seq, text))

    def _put(self, text: str) -> None:
        if self.close_code is not None:
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self._overflow()

    def go_live(self, first: str, chat_cursor: int) -> None:
        """Send `joined`, then whatever arrived while it was being built, without chat repeats."""
        self._chat_cursor = chat_cursor
        self._ready = True
        self._put(first)
        pending, self._pending = self._pending, []
        for seq, text in pending:
            if seq is None:
                self._put(text)
            else:
                self.deliver_chat(seq, text)

    def _overflow(self) -> None:
        if self.close_code is not None:
            return
        log.warning("room %s: a participant reads too slowly; disconnecting", self.room_id)
        self.close_code = m.CLOSE_SLOW_CONSUMER
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close_socket())
        # A reader this slow will not read our close frame either: stop serving it now rather than
        # wait for a close handshake that its full buffers cannot carry.
        if self.handler is not None and not self.handler.done():
            self.kicked = True
            self.handler.cancel()

    def close_soon(self, code: int, reason: str) -> None:
        """Finish sending what is queued, then close with `code`."""
        if self.close_code is not None:
            return
        self.close_code = code
        if code == m.CLOSE_REPLACED:
            self.exit_reason = "replaced"
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            if self._writer is not None:
                self._writer.cancel()
            self._closer = asyncio.create_task(self._close_socket())

    async def finish(self) -> None:
        for task in (self._writer, self._closer):
            if task is not None and not task.done():
                if task is self._writer and self.close_code is None:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, CLOSE_WAIT_S)

    def participant(self) -> m.Participant:
        return participant_of(self.participant_id, self.entry)


def participant_of(pid: str, e: dict[str, Any]) -> m.Participant:
    return m.Participant(id=pid, name=str(e.get("name", "")), role=str(e.get("role", "")),
                         state=str(e.get("state", "connected")), audio=bool(e.get("audio", True)),
                         video=bool(e.get("video", True)), audio_only=bool(e.get("audio_only", False)),
                         joined_at=int(e.get("joined_at", 0)))


def _b(message: m.ServerMessage) -> dict[str, Any]:
    return m.to_builtins(message)


@dataclass
class Hooks:
    # Called after `session.started` is written (the booking itself follows it through the events stream).
    on_session_started: SessionStartedHook | None = None
    # The outage issue wires the "report a technical problem" button here.
    on_problem_reported: ProblemHook | None = None


class RoomService:
    def __init__(self, *, settings: Settings, store: RoomStore, bus: RoomBus, bridge: MediaBridge,
                 tokens: TokenAuthority, ids: m.IdSource, node_id: str, hooks: Hooks,
                 connections_gauge: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.bridge = bridge
        self.tokens = tokens
        self.ids = ids
        self.node_id = node_id
        self.hooks = hooks
        self.timings = Timings(settings.heartbeat_interval_s, settings.heartbeat_timeout_s)
        self.origins = frozenset(o.rstrip("/") for o in settings.origins)
        self._gauge = connections_gauge
        self._handlers: set[asyncio.Task[Any]] = set()

    # --- the socket's life ------------------------------------------------------------------------

    async def handle(self, ws: WebSocket) -> None:
        booking_id = str(ws.path_params.get("booking_id", ""))
        origin = ws.headers.get("origin")
        offered: list[str] = list(ws.scope.get("subprotocols") or [])
        if origin is not None and origin.rstrip("/") not in self.origins:
            log.info("room socket refused: origin not allowed")
            await ws.close(m.CLOSE_FORBIDDEN)
            return
        if offered and m.SUBPROTOCOL not in offered:
            await ws.close(m.CLOSE_BAD_HANDSHAKE)
            return
        header_token = next((p[len(m.TOKEN_SUBPROTOCOL_PREFIX):] for p in offered
                             if p.startswith(m.TOKEN_SUBPROTOCOL_PREFIX)), None)
        await ws.accept(subprotocol=m.SUBPROTOCOL if offered else None)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        conn: Connection | None = None
        try:
            conn = await self._open(ws, booking_id, header_token)
            if conn is not None:
                conn.handler = task
                await self._serve(conn)
        except WebSocketDisconnect:
            pass
        except asyncio.CancelledError:
            if conn is None or not conn.kicked or task is None:
                raise
            task.uncancel()
        finally:
            if conn is not None:
                await self._closed(conn)
            if task is not None:
                self._handlers.discard(task)

    async def _refuse(self, ws: WebSocket, code: str, message: str, close: int, ref: str | None) -> None:
        with contextlib.suppress(Exception):
            await ws.send_text(m.encode(m.Error(id=self.ids(), code=code, message=message, ref=ref)))
            await asyncio.wait_for(ws.close(close), CLOSE_WAIT_S)

    async def _open(self, ws: WebSocket, booking_id: str, header_token: str | None) -> Connection | None:
        try:
            first = await asyncio.wait_for(ws.receive(), JOIN_TIMEOUT_S)
        except TimeoutError:
            await self._refuse(ws, "join_timeout", "send `join` first", m.CLOSE_HEARTBEAT_TIMEOUT, None)
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
                raise Unauthenticated("send the access token in the subprotocol header or in `join`",
                                      code="token_missing")
            identity = self.tokens.verify(token)
            if not booking_id or len(booking_id) > 128 or not set(booking_id) <= _BOOKING_ID:
                raise NotFound("there is no room for this booking", code="room_not_found")
            booking = await load_booking(self.store.redis, booking_id)
            win = (rules.window(booking, self.settings.room_open_before_s, self.settings.room_grace_after_s)
                   if booking is not None else None)
            rules.admit(identity, booking, win, time.time())
            assert booking is not None and win is not None
            conn_id = uuid.uuid4().hex
            cap = self.settings.ws_max_connections_per_user
            if not await self.store.claim_socket(identity.sub, booking_id, conn_id, cap, self._slot_ttl_ms):
                raise TooManyConnections(f"at most {cap} connections per user")
        except DomainError as exc:
            log.info("room %s: join refused (%s)", booking_id[:128], exc.code)
            await self._refuse(ws, exc.code, exc.message, close_code_for(exc), ref)
            return None
        conn = Connection(ws, room_id=booking_id, identity=identity, booking=booking, window=win,
                          queue_size=self.settings.ws_send_queue, settings=self.settings)
        conn.conn_id = conn_id
        conn.start()
        await self._join(conn, msg)
        return conn

    @property
    def _slot_ttl_ms(self) -> int:
        return int(self.timings.node_ttl_s * 1000)

    async def _join(self, conn: Connection, join: m.Join) -> None:
        at = now_ms()
        booking, pid = conn.booking, conn.participant_id
        conn.entry = {"conn": conn.conn_id, "node": self.node_id, "role": conn.role.value,
                      "name": conn.identity.name, "state": "connected", "deadline": 0, "since": at,
                      "joined_at": at, "audio": True, "video": not join.audio_only,
                      "audio_only": join.audio_only}
        me = conn.participant()
        replace = {"pid": pid, "keep": conn.conn_id}
        self.bus.add(conn)
        if self._gauge is not None:
            self._gauge.inc()
        result = await self.store.join(
            conn.room_id, pid, conn.entry, practitioner_id=booking.practitioner_id,
            client_id=booking.client_id,
            joined_event=Event("room.joined", {"booking_id": booking.id, "participant_id": pid,
                                               "role": conn.role.value, "at": at,
                                               "practitioner_id": booking.practitioner_id,
                                               "client_id": booking.client_id}),
            started_event=Event("session.started", {"booking_id": booking.id,
                                                    "practitioner_id": booking.practitioner_id,
                                                    "client_id": booking.client_id, "at": at}),
            fresh_notice=envelope(_b(m.ParticipantJoined(id=self.ids(), participant=me)), skip=pid,
                                  replace=replace),
            resume_notice=envelope(_b(m.ParticipantJoined(id=self.ids(), participant=me, resumed=True)),
                                   skip=pid, replace=replace),
            started_notice=envelope(_b(m.SessionStarted(id=self.ids(), at=at))))
        log.info("room %s: the %s joined (%s) on node %s", conn.room_id, conn.role.value,
                 "fresh" if result.fresh else "resumed", self.node_id[:8])
        if result.newly_started and self.hooks.on_session_started is not None:
            try:
                await self.hooks.on_session_started(booking)
            except Exception:
                log.exception("room %s: the session-started hook failed", conn.room_id)
        presence = await self.store.presence(conn.room_id)
        participants = [participant_of(p, e) for p, e in sorted(presence.items(), key=lambda i: i[0])]
        history: list[ChatRecord] = []
        cursor = 0
        seq_now = 0
        if conn.receives_health_data:
            if join.last_seq is not None:
                history = await self.store.chat_after(conn.room_id, join.last_seq, RESUME_MAX)
                cursor = join.last_seq
            else:
                history = await self.store.chat_recent(conn.room_id, HISTORY_ON_JOIN)
            seq_now = await self.store.chat_seq(conn.room_id)
            if history:
                cursor = max(cursor, history[-1].seq)
        s = self.settings
        joined = m.Joined(
            id=self.ids(), ref=join.id, v=m.PROTOCOL_VERSION,
            room=m.RoomInfo(id=conn.room_id,
                            state=rules.room_state(e.get("role", "") for e in presence.values()).value,
                            opens_at=conn.window.opens_at, closes_at=conn.window.closes_at,
                            starts_at=booking.starts_at, ends_at=booking.ends_at,
                            started_at=result.started_at),
            you=me, participants=participants, ice_servers=[i.as_json() for i in s.ice_servers],
            chat=[self._chat_message(r) for r in history], chat_seq=seq_now, media_mode=self.bridge.mode,
            heartbeat_interval_s=s.heartbeat_interval_s,
            limits={"chat_max_bytes": s.chat_max_bytes, "chat_rate_per_s": s.chat_rate_per_s,
                    "chat_burst": s.chat_burst, "max_frame_bytes": m.MAX_FRAME_BYTES})
        conn.go_live(m.encode(joined), cursor)

    def _chat_message(self, r: ChatRecord) -> m.ChatMessage:
        return m.ChatMessage(id=f"c{r.seq}", seq=r.seq, time=r.time,
                             sender={"id": r.sender, "name": r.name, "role": r.role}, text=r.text,
                             ref=r.ref)

    async def open_chat(self, room_id: str, record: dict[str, Any]) -> tuple[int, str]:
        """For the bus: a stored record as the encoded chat.message for this room's parties."""
        r = await self.store.open_record(room_id, record)
        self.store.saw_seq(room_id, r.seq)
        return r.seq, m.encode(self._chat_message(r))

    async def _serve(self, conn: Connection) -> None:
        ws = conn.ws
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            conn.last_heard = time.monotonic()
            if conn.close_code is not None:
                continue  # closing: read until the peer's close arrives, act on nothing
            text = frame.get("text")
            if text is None:
                conn.send(m.Error(id=self.ids(), code="binary_not_supported",
                                  message="send JSON text messages"))
                continue
            if len(text) > m.MAX_FRAME_BYTES // 4 and len(text.encode()) > m.MAX_FRAME_BYTES:
                conn.close_soon(m.CLOSE_TOO_BIG, "message too big")
                continue
            if not conn.flood_bucket.take(conn.last_heard):
                log.info("room %s: the %s floods; disconnecting", conn.room_id, conn.role.value)
                conn.send(m.Error(id=self.ids(), code="flood", message="too many messages"))
                conn.close_soon(m.CLOSE_TOO_MANY, "too many messages")
                continue
            if conn.state == "reconnecting":
                await self._back(conn)
            ref = None
            try:
                msg = m.decode(text)
                ref = msg.id
                await self._on_message(conn, msg)
            except m.ProtocolError as exc:
                conn.send(m.Error(id=self.ids(), code=exc.code, message=exc.message, ref=exc.ref))
            except RateLimited as exc:
                conn.send(m.Error(id=self.ids(), code=exc.code, message=exc.message, ref=ref,
                                  retry_after_s=round(float(exc.extra.get("retry_after_s", 1.0)), 3)))
            except DomainError as exc:
                conn.send(m.Error(id=self.ids(), code=exc.code, message=exc.message, ref=ref))

    async def _on_message(self, conn: Connection, msg: m.ClientMessage) -> None:
        room, pid = conn.room_id, conn.participant_id
        match msg:
            case m.Ping():
                conn.send(m.ServerPong(id=self.ids(), ref=msg.id))
            case m.Pong():
                pass
            case m.ChatSend():
                await self._chat(conn, msg)
            case m.ChatReceived():
                self._require_party(conn)
                await self.store.publish(room, envelope(
                    _b(m.ChatDelivered(id=self.ids(), seq=msg.seq, by=pid)), audience="parties", skip=pid))
            case m.Typing():
                self._require_party(conn)
                await self.store.publish(room, envelope(
                    _b(m.TypingNotice(id=self.ids(), participant_id=pid, active=msg.active)),
                    audience="parties", skip=pid))
            case m.Offer() | m.Answer() | m.Candidate():
                self._require_party(conn)
                peer = rules.media_peer(conn.role, conn.booking)
                if peer is None or (msg.to is not None and msg.to != peer):
                    raise Forbidden("media goes only to the other party of this booking",
                                    code="not_your_peer")
                await self.bridge.signal(room, pid, peer, msg)
            case m.MediaState():
                conn.entry = {**conn.entry, "audio": msg.audio, "video": msg.video,
                              "audio_only": msg.audio_only}
                await self.store.update(room, pid, conn.conn_id, conn.entry, envelope(
                    _b(m.ParticipantUpdated(id=self.ids(), participant=conn.participant())), skip=pid))
            case m.Quality():
                await self.bridge.quality(room, pid, msg)
            case m.ProblemReport():
                if self.hooks.on_problem_reported is not None:
                    await self.hooks.on_problem_reported(conn.booking, pid, conn.role.value, msg.kind)
                log.info("room %s: the %s reported a %s problem", room, conn.role.value, msg.kind)
                conn.send(m.Ack(id=self.ids(), ref=msg.id))
            case m.Leave():
                conn.exit_reason = "leave"
                conn.close_soon(m.CLOSE_NORMAL, "left")
            case m.Join():
                raise InvalidInput("this socket has already joined", code="already_joined")

    def _require_party(self, conn: Connection) -> None:
        if not conn.receives_health_data:
            raise Forbidden("only the booking's client and practitioner may do this", code="not_a_party")

    async def _chat(self, conn: Connection, msg: m.ChatSend) -> None:
        self._require_party(conn)
        conn.identity.require(Permission.CHAT_SEND)
        size = len(msg.text.encode())
        if size > self.settings.chat_max_bytes:
            raise InvalidInput(f"a chat message holds at most {self.settings.chat_max_bytes} bytes",
                               code="message_too_large")
        if not conn.chat_bucket.take(time.monotonic()):
            raise RateLimited("too many chat messages; wait a moment",
                              retry_after_s=conn.chat_bucket.retry_after())
        expire_at = (conn.window.closes_at + self.settings.chat_retention_days * 86400) * 1000
        seq, duplicate, _ = await self.store.append_chat(
            conn.room_id, sender=conn.participant_id, role=conn.role.value, name=conn.identity.name,
            ref=msg.id, text=msg.text, expire_at_ms=expire_at)
        conn.send(m.ChatAck(id=self.ids(), ref=msg.id, seq=seq, duplicate=duplicate))

    async def _back(self, conn: Connection) -> None:
        """A silent connection spoke again: shown connected to the others again."""
        conn.state = "connected"
        conn.entry = {**conn.entry, "state": "connected", "deadline": 0}
        await self.store.update(conn.room_id, conn.participant_id, conn.conn_id, conn.entry, envelope(
            _b(m.ParticipantJoined(id=self.ids(), participant=conn.participant(), resumed=True)),
            skip=conn.participant_id))

    async def _reconnecting(self, conn: Connection, deadline_ms: int) -> None:
        conn.state = "reconnecting"
        conn.entry = {**conn.entry, "state": "reconnecting", "deadline": deadline_ms, "since": now_ms()}
        await self.store.update(conn.room_id, conn.participant_id, conn.conn_id, conn.entry, envelope(
            _b(m.ParticipantReconnecting(id=self.ids(), participant_id=conn.participant_id)),
            skip=conn.participant_id))

    async def leave(self, room_id: str, pid: str, conn_id: str, role: str, reason: str, *,
                    expect_state: str = "", last_seen_ms: int | None = None) -> bool:
        done = await self.store.leave(
            room_id, pid, conn_id, role, reason,
            envelope(_b(m.ParticipantLeft(id=self.ids(), participant_id=pid, reason=reason))),
            Event("room.left", {"booking_id": room_id, "participant_id": pid, "role": role,
                                "reason": reason, "at": now_ms()}),
            expect_state=expect_state, last_seen_ms=last_seen_ms)
        if done:
            log.info("room %s: a participant left (%s)", room_id, reason)
            await self.bridge.participant_left(room_id, pid)
        return done

    async def _closed(self, conn: Connection) -> None:
        if self.bus.remove(conn):
            self.store.forget(conn.room_id)
        if self._gauge is not None:
            self._gauge.dec()
        try:
            await self.store.release_socket(conn.participant_id, conn.room_id, conn.conn_id)
            if conn.exit_reason in ("leave", "timeout", "room_closed"):
                await self.leave(conn.room_id, conn.participant_id, conn.conn_id, conn.role.value,
                                 conn.exit_reason)
            elif conn.exit_reason != "replaced":
                await self._reconnecting(conn, now_ms() + int(self.settings.heartbeat_timeout_s * 1000))
        except Exception:
            log.exception("room %s: could not record that a socket closed", conn.room_id)
        finally:
            await conn.finish()

    # --- the node's clock -------------------------------------------------------------------------

    async def tick(self) -> None:
        """Once per tick: prove this node alive, ping and judge its sockets, sweep the dead."""
        await self.store.node_alive(self.node_id, self._slot_ttl_ms)
        await self.store.refresh_sockets(
            [(c.participant_id, c.room_id, c.conn_id) for c in self.bus.connections()], self._slot_ttl_ms)
        mono, wall = time.monotonic(), time.time()
        for c in self.bus.connections():
            assert isinstance(c, Connection)
            if c.close_code is not None:
                continue
            if wall >= c.window.closes_at:
                c.exit_reason = "room_closed"
                c.send(m.RoomClosing(id=self.ids(), reason="the session's time is over"))
                c.close_soon(m.CLOSE_ROOM_CLOSED, "room closed")
                continue
            if mono - c.last_ping >= self.timings.interval_s:
                c.last_ping = mono
                c.send(m.ServerPing(id=self.ids()))
            live = connection_liveness(self.timings, c.last_heard, mono)
            if live is Liveness.GONE:
                c.exit_reason = "timeout"
                c.close_soon(m.CLOSE_HEARTBEAT_TIMEOUT, "no heartbeat")
            elif live is Liveness.RECONNECTING and c.state == "connected":
                deadline = now_ms() + int((self.timings.timeout_s - (mono - c.last_heard)) * 1000)
                await self._reconnecting(c, deadline)
        await self.sweep()

    async def sweep(self) -> None:
        for room_id in await self.store.live_rooms():
            presence = await self.store.presence(room_id)
            entries = [Entry(pid, str(e.get("conn")), str(e.get("node")), str(e.get("state")),
                             int(e.get("deadline") or 0)) for pid, e in presence.items()]
            alive = await self.store.live_nodes({e.node for e in entries})
            for e, reason in expired(entries, alive, now_ms()):
                await self.leave(room_id, e.participant_id, e.conn, str(presence[e.participant_id]["role"]),
                                 reason, expect_state=e.state,
                                 last_seen_ms=int(presence[e.participant_id].get("since") or 0) or None)

    async def drain(self) -> None:
        """Stopping: close every socket (1001); their participants may come back on another node."""
        for c in self.bus.connections():
            assert isinstance(c, Connection)
            c.exit_reason = "shutdown"
            c.close_soon(m.CLOSE_GOING_AWAY, "server restarting")
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=3 * CLOSE_WAIT_S)

