"""The room service: who may enter a room, joining, leaving, coming back, chat, presence ticks, media.

It knows no socket. A connection reaches it through a `Link` (send a message, close with a code) and
is a `Member` of its room here; the socket edge (`ws.py`) does the handshake, decodes frames into typed
messages, and writes. Time comes from the app's clock (`ctx.clock`), so a test can run a room at any
instant. Other features follow rooms through `RoomObserver`s (`observer.py`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import redis.exceptions

from signaling import messages as m
from signaling.bus import RoomBus, envelope
from signaling.media import MediaBridge
from signaling.presence import Entry, Liveness, Timings, connection_liveness, expired, ping_due
from signaling.ratelimit import TokenBucket

from ..auth import Identity, Permission, TokenExpired
from ..bookings.model import Booking, load_booking
from ..clock import Clock
from ..errors import DomainError, RateLimited
from ..events import Event
from ..settings import IceServer, Settings
from ..turn import turn_server
from . import rules
from .media_bridge import MEDIA_NODE
from .observer import (
    ConnectionChanged,
    ParticipantJoined,
    ParticipantLeft,
    ProblemReported,
    RoomObserver,
    TechnicalEnd,
)
from .store import ChatRecord, RoomStore

log = logging.getLogger(__name__)

HISTORY_ON_JOIN = 50
RESUME_MAX = 5000
# Chat bytes per frame of history: `joined` or `chat.history` stays well within the frame limit with the rest
HISTORY_PAGE_BYTES = 32 * 1024
TOKEN_RENEW_AHEAD_S = 120  # a connection's token is renewed this long before it expires
_BOOKING_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


class Link(Protocol):
    """One connection as the room service sees it. The socket edge implements it over a WebSocket and a
    bounded outbox; a test implements it over a list."""

    @property
    def close_code(self) -> int | None:
        """The code it closes (or closed) with; None while it is open."""
        ...

    def send(self, text: str) -> None:
        """Queue one encoded message for the peer; never waits (a reader too slow is disconnected)."""
        ...

    def close(self, code: int) -> None:
        """Send what is queued, then close with `code`."""
        ...

    def abort(self, code: int) -> None:
        """Close with `code` now, dropping what is queued: the peer cannot keep up."""
        ...


@dataclass(frozen=True, slots=True)
class Admission:
    """A caller let into a room: what `join` needs. The socket slot is held from here on."""

    identity: Identity
    booking: Booking
    window: rules.Window
    conn_id: str


class Member:
    """One joined connection: its identity in the room, its presence entry and its liveness.

    Until `joined` is sent, what the room says is held back (bounded like the outbox), so that the
    participant reads `joined` first and no chat message twice."""

    def __init__(self, link: Link, admission: Admission, *, queue_size: int, settings: Settings,
                 now: float) -> None:
        self.link = link
        self.conn_id = admission.conn_id
        self.room_id = admission.booking.id
        self.identity = admission.identity
        self.participant_id = admission.identity.sub
        self.role = admission.identity.role
        self.booking = admission.booking
        self.window = admission.window
        self.receives_health_data = rules.receives_health_data(self.role)
        self.entry: dict[str, Any] = {}
        self.state = "connected"
        self.exit_reason = "dropped"
        self.last_heard = now  # monotonic seconds
        self.last_ping = now
        self.chat_bucket = TokenBucket(settings.chat_rate_per_s, settings.chat_burst)
        self._ready = False
        self._pending: list[tuple[int | None, str]] = []
        self._queue_size = queue_size
        self._chat_cursor = 0

    @property
    def close_code(self) -> int | None:
        return self.link.close_code

    def send(self, message: m.ServerMessage) -> None:
        self.deliver(m.encode(message))

    def deliver(self, text: str) -> None:
        if not self._ready:
            self._hold(None, text)
            return
        self.link.send(text)

    def deliver_chat(self, seq: int, text: str) -> None:
        if not self._ready:
            self._hold(seq, text)
            return
        if seq <= self._chat_cursor:
            return  # already sent with the history
        self._chat_cursor = seq
        self.link.send(text)

    def _hold(self, seq: int | None, text: str) -> None:
        if len(self._pending) >= self._queue_size:
            log.warning("room %s: a participant reads too slowly; disconnecting", self.room_id)
            self.link.abort(m.CLOSE_SLOW_CONSUMER)
            return
        self._pending.append((seq, text))

    def go_live(self, first: list[str], chat_cursor: int) -> None:
        """Send `joined` (and its history pages), then whatever arrived while they were being built, without
        chat repeats."""
        self._chat_cursor = chat_cursor
        self._ready = True
        for frame in first:
            self.link.send(frame)
        pending, self._pending = self._pending, []
        for seq, text in pending:
            if seq is None:
                self.link.send(text)
            else:
                self.deliver_chat(seq, text)

    def close_soon(self, code: int, reason: str) -> None:
        """Finish sending what is queued, then close with `code`."""
        if self.link.close_code is not None:
            return
        if code == m.CLOSE_REPLACED:
            self.exit_reason = "replaced"
        self.link.close(code)

    def participant(self) -> m.Participant:
        return participant_of(self.participant_id, self.entry)


def history_pages(messages: list[m.ChatMessage], page_bytes: int) -> list[list[m.ChatMessage]]:
    """The messages in order, cut into pages of at most `page_bytes` of encoded messages each (a message
    larger than that alone on its page); always at least one page, empty when there is no history."""
    pages: list[list[m.ChatMessage]] = [[]]
    size = 0
    for message in messages:
        n = len(m.encode(message).encode())
        if pages[-1] and size + n > page_bytes:
            pages.append([])
            size = 0
        pages[-1].append(message)
        size += n
    return pages


def participant_of(pid: str, e: dict[str, Any]) -> m.Participant:
    return m.Participant(id=pid, name=str(e.get("name", "")), role=str(e.get("role", "")),
                         state=str(e.get("state", "connected")), audio=bool(e.get("audio", True)),
                         video=bool(e.get("video", True)), audio_only=bool(e.get("audio_only", False)),
                         camera=bool(e.get("camera", True)), microphone=bool(e.get("microphone", True)),
                         joined_at=int(e.get("joined_at", 0)))


def _b(message: m.ServerMessage) -> dict[str, Any]:
    return m.to_builtins(message)


class RoomService:
    def __init__(self, *, settings: Settings, store: RoomStore, bus: RoomBus, bridge: MediaBridge,
                 ids: m.IdSource, node_id: str, clock: Clock, connections_gauge: Any = None,
                 chat_messages: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.bridge = bridge
        self.ids = ids
        self.node_id = node_id
        self.clock = clock
        self.timings = Timings(settings.heartbeat_interval_s, settings.heartbeat_timeout_s)
        self._gauge = connections_gauge
        self._chat_messages = chat_messages  # a counter by outcome: stored, duplicate, or the refusal's code
        self._observers: list[RoomObserver] = []
        # After a Redis outage no process could prove itself alive: none is judged lost before this
        # (monotonic seconds), one liveness period after this process could write again.
        self._store_lost = False
        self._judge_nodes_from = 0.0
        self._unrecorded: list[Member] = []  # connections that closed while Redis could not record it
        # whether a practitioner is suspended now (the bookings feature knows; the app wires it in)
        self.practitioner_suspended: Callable[[str], Awaitable[bool]] | None = None
        # a new token for the same identity, for `ttl_s` seconds (the app's token authority; wired in)
        self.renew_token: Callable[[Identity, int], tuple[str, Identity]] | None = None

    def observe(self, observer: RoomObserver) -> None:
        """Tell `observer` what happens in this node's rooms from now on (see observer.py)."""
        self._observers.append(observer)

    async def tell(self, room_id: str, participant_id: str, message: m.ServerMessage) -> None:
        """Send `message` to one participant of the room, on whichever node their socket is."""
        await self.store.publish(room_id, envelope(_b(message), to=participant_id))

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def _event(self, kind: str, body: dict[str, Any]) -> Event:
        return Event(kind, body, time=datetime.fromtimestamp(self.clock.now(), UTC))

    async def _tell(self, what: str, call: Callable[[RoomObserver], Awaitable[None]], room_id: str) -> None:
        for observer in list(self._observers):
            try:
                await call(observer)
            except Exception:
                log.exception("room %s: an observer failed on %s", room_id, what)

    # --- entering ---------------------------------------------------------------------------------

    async def admit(self, identity: Identity, booking_id: str) -> Admission:
        """Let `identity` into the room of `booking_id` now, or refuse (a DomainError, nothing held)."""
        if not booking_id or len(booking_id) > 128 or not set(booking_id) <= _BOOKING_ID:
            raise rules.RoomNotFound("there is no room for this booking")
        booking = await load_booking(self.store.redis, booking_id)
        win = (rules.window(booking, self.settings.room_open_before_s, self.settings.room_grace_after_s)
               if booking is not None else None)
        suspended = (booking is not None and self.practitioner_suspended is not None
                     and await self.practitioner_suspended(booking.practitioner_id))
        rules.admit(identity, booking, win, self.clock.now(), practitioner_suspended=suspended)
        assert booking is not None and win is not None
        conn_id = uuid.uuid4().hex
        cap = self.settings.ws_max_connections_per_user
        if not await self.store.claim_socket(identity.sub, booking_id, conn_id, cap, self._slot_ttl_ms):
            raise rules.TooManyConnections(f"at most {cap} connections per user")
        return Admission(identity, booking, win, conn_id)

    @property
    def _slot_ttl_ms(self) -> int:
        return int(self.timings.node_ttl_s * 1000)

    async def join(self, link: Link, admission: Admission, join: m.Join) -> Member:
        """Enter the room: presence, attendance and events written, the others told, `joined` sent."""
        conn = Member(link, admission, queue_size=self.settings.ws_send_queue, settings=self.settings,
                      now=self.clock.monotonic())
        at = self.now_ms()
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
            joined_event=self._event("room.joined", {"booking_id": booking.id, "participant_id": pid,
                                                     "role": conn.role.value, "at": at,
                                                     "practitioner_id": booking.practitioner_id,
                                                     "client_id": booking.client_id}),
            started_event=self._event("session.started", {"booking_id": booking.id,
                                                          "practitioner_id": booking.practitioner_id,
                                                          "client_id": booking.client_id, "at": at}),
            fresh_notice=envelope(_b(m.ParticipantJoined(id=self.ids(), participant=me)), skip=pid,
                                  replace=replace),
            resume_notice=envelope(_b(m.ParticipantJoined(id=self.ids(), participant=me, resumed=True)),
                                   skip=pid, replace=replace),
            started_notice=envelope(_b(m.SessionStarted(id=self.ids(), at=at))))
        log.info("room %s: the %s joined (%s) on node %s", conn.room_id, conn.role.value,
                 "fresh" if result.fresh else "resumed", self.node_id[:8])
        joined = ParticipantJoined(booking, pid, conn.role.value, not result.fresh, at)
        await self._tell("participant_joined", lambda o: o.participant_joined(joined), conn.room_id)
        if result.newly_started:
            await self._tell("session_started", lambda o: o.session_started(booking, at), conn.room_id)
        await self._welcome(conn, join, result.started_at)
        return conn

    async def _welcome(self, conn: Member, join: m.Join, started_at: int | None) -> None:
        presence = await self.store.presence(conn.room_id)
        participants = [participant_of(p, e) for p, e in sorted(presence.items(), key=lambda i: i[0])]
        if not conn.receives_health_data:  # support and admins: a client's name is not theirs to see
            participants = [msgspec.structs.replace(p, name="") if p.role == "client" else p
                            for p in participants]
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
        s, booking = self.settings, conn.booking
        joined = m.Joined(
            id=self.ids(), ref=join.id, v=m.PROTOCOL_VERSION,
            room=m.RoomInfo(id=conn.room_id,
                            state=rules.room_state(e.get("role", "") for e in presence.values()).value,
                            opens_at=conn.window.opens_at, closes_at=conn.window.closes_at,
                            starts_at=booking.starts_at, ends_at=booking.ends_at, started_at=started_at),
            you=conn.participant(), participants=participants,
            ice_servers=[i.as_json() for i in self._ice_servers(conn)],
            chat=[], chat_seq=seq_now, media_mode=self.bridge.mode,
            heartbeat_interval_s=s.heartbeat_interval_s,
            limits={"chat_max_bytes": s.chat_max_bytes, "chat_rate_per_s": s.chat_rate_per_s,
                    "chat_burst": s.chat_burst, "max_frame_bytes": m.MAX_FRAME_BYTES})
        pages = history_pages([self._chat_message(r) for r in history], HISTORY_PAGE_BYTES)
        joined.chat, joined.chat_more = pages[0], len(pages) > 1
        frames = [m.encode(joined)]
        frames += [m.encode(m.ChatHistory(id=self.ids(), chat=page, more=n < len(pages) - 1))
                   for n, page in enumerate(pages) if n > 0]
        frames += await self._ongoing(conn)
        conn.go_live(frames, cursor)

    async def _ongoing(self, conn: Member) -> list[str]:
        """What the observers say is going on in the room (an outage the others were told of), for a member
        coming in: only what the room's push channel would have brought them, and nothing an observer that
        fails cannot say."""
        if not conn.receives_health_data:
            return []
        frames: list[str] = []
        for observer in list(self._observers):
            try:
                said = await observer.ongoing(conn.booking, conn.participant_id, conn.role.value)
            except Exception:
                log.exception("room %s: an observer failed on ongoing", conn.room_id)
                continue
            for message in said:
                if isinstance(message, dict) and isinstance(message.get("type"), str):
                    frames.append(json.dumps({**message, "id": self.ids()}, separators=(",", ":"),
                                             ensure_ascii=False))
        return frames

    def _ice_servers(self, conn: Member) -> tuple[IceServer, ...]:
        """The configured STUN/TURN servers, plus this participant's own time-limited TURN credentials."""
        s = self.settings
        if not s.turn_secret:
            return s.ice_servers
        return (*s.ice_servers, turn_server(s.turn_urls, s.turn_secret, conn.participant_id,
                                            now=int(self.clock.now()), valid_until=conn.window.closes_at,
                                            ttl_s=s.turn_ttl_s))

    def _chat_message(self, r: ChatRecord) -> m.ChatMessage:
        return m.ChatMessage(id=f"c{r.seq}", seq=r.seq, time=r.time,
                             sender={"id": r.sender, "name": r.name, "role": r.role}, text=r.text,
                             ref=r.ref)

    async def open_chat(self, room_id: str, record: dict[str, Any]) -> tuple[int, str]:
        """For the bus: a stored record as the encoded chat.message for this room's parties."""
        r = await self.store.open_record(room_id, record)
        self.store.saw_seq(room_id, r.seq)
        return r.seq, m.encode(self._chat_message(r))

    # --- what a member says -----------------------------------------------------------------------

    def heard(self, conn: Member) -> float:
        """The member's connection carried something: it is alive (monotonic seconds, returned)."""
        conn.last_heard = self.clock.monotonic()
        return conn.last_heard

    async def spoke(self, conn: Member) -> None:
        """A member shown reconnecting sent a message: shown connected to the others again."""
        if conn.state == "reconnecting":
            await self._back(conn)

    async def on_message(self, conn: Member, msg: m.ClientMessage) -> None:
        """Act on one message from a member; a refusal is raised as a DomainError (nothing changed)."""
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
                    raise rules.NotYourPeer("media goes only to the other party of this booking")
                await self.bridge.signal(room, pid, peer, msg)
                if isinstance(msg, m.Offer) and conn.entry.get("audio_only"):
                    # a new media connection starts with video both ways: keep the participant's choice
                    await self.bridge.audio_only(room, pid, True)
            case m.MediaState():
                if bool(conn.entry.get("audio_only")) != msg.audio_only and conn.receives_health_data:
                    await self.bridge.audio_only(room, pid, msg.audio_only)
                conn.entry = {**conn.entry, "audio": msg.audio, "video": msg.video,
                              "audio_only": msg.audio_only, "camera": msg.camera, "microphone": msg.microphone}
                await self.store.update(room, pid, conn.conn_id, conn.entry, envelope(
                    _b(m.ParticipantUpdated(id=self.ids(), participant=conn.participant())), skip=pid))
            case m.Quality():
                await self.bridge.quality(room, pid, msg)
            case m.ProblemReport():
                report = ProblemReported(conn.booking, pid, conn.role.value, msg.kind)
                await self._tell("problem_reported", lambda o: o.problem_reported(report), room)
                log.info("room %s: the %s reported a %s problem", room, conn.role.value, msg.kind)
                conn.send(m.Ack(id=self.ids(), ref=msg.id))
            case m.EndTechnical():
                if conn.role.value != "practitioner":
                    raise rules.NotThePractitioner("only the practitioner can end the session this way")
                end = TechnicalEnd(conn.booking, pid, self.now_ms())
                log.info("room %s: the practitioner ended the session for a technical problem", room)
                conn.send(m.Ack(id=self.ids(), ref=msg.id))  # before the room closes on the verdict
                await self._tell("technical_end", lambda o: o.technical_end(end), room)
            case m.Leave():
                conn.exit_reason = "leave"
                conn.close_soon(m.CLOSE_NORMAL, "left")
            case m.Join():
                raise rules.AlreadyJoined("this socket has already joined")

    def refresh_token(self, conn: Member, identity: Identity, msg: m.TokenRefresh) -> None:
        """The connection goes on under a new token of the same user and role (verified by the edge)."""
        if identity.sub != conn.participant_id or identity.role is not conn.role:
            raise rules.TokenMismatch("the new token is for another user or role")
        identity.require(Permission.ROOMS_JOIN)
        conn.identity = identity
        conn.send(m.TokenRefreshed(id=self.ids(), ref=msg.id, expires_at=identity.expires_at))

    def _require_party(self, conn: Member) -> None:
        if not conn.receives_health_data:
            raise rules.NotAParty("only the booking's client and practitioner may do this")

    async def _chat(self, conn: Member, msg: m.ChatSend) -> None:
        try:
            duplicate = await self._store_chat(conn, msg)
        except DomainError as exc:
            self._count_chat(exc.code)
            raise
        except Exception:
            self._count_chat("error")  # the data store did not answer, or a defect: the edge says which
            raise
        self._count_chat("duplicate" if duplicate else "stored")

    def _count_chat(self, outcome: str) -> None:
        if self._chat_messages is not None:
            self._chat_messages.labels(outcome).inc()

    async def _store_chat(self, conn: Member, msg: m.ChatSend) -> bool:
        self._require_party(conn)
        conn.identity.require(Permission.CHAT_SEND)
        size = len(msg.text.encode())
        if size > self.settings.chat_max_bytes:
            raise rules.MessageTooLarge(f"a chat message holds at most {self.settings.chat_max_bytes} bytes")
        if not conn.chat_bucket.take(self.clock.monotonic()):
            raise RateLimited("too many chat messages; wait a moment",
                              retry_after_s=conn.chat_bucket.retry_after())
        expire_at = (conn.window.closes_at + self.settings.chat_retention_days * 86400) * 1000
        seq, duplicate, _ = await self.store.append_chat(
            conn.room_id, sender=conn.participant_id, role=conn.role.value, name=conn.identity.name,
            ref=msg.id, text=msg.text, expire_at_ms=expire_at)
        conn.send(m.ChatAck(id=self.ids(), ref=msg.id, seq=seq, duplicate=duplicate))
        return duplicate

    # --- presence ---------------------------------------------------------------------------------

    async def _back(self, conn: Member) -> None:
        # written first: a write that fails (Redis away) leaves the member as it was, to try again later
        entry = {**conn.entry, "state": "connected", "deadline": 0}
        await self.store.update(conn.room_id, conn.participant_id, conn.conn_id, entry, envelope(
            _b(m.ParticipantJoined(id=self.ids(), participant=participant_of(conn.participant_id, entry),
                                   resumed=True)),
            skip=conn.participant_id))
        conn.state, conn.entry = "connected", entry
        back = ConnectionChanged(conn.room_id, conn.participant_id, conn.role.value, False, self.now_ms())
        await self._tell("connection_changed", lambda o: o.connection_changed(back), conn.room_id)

    async def _reconnecting(self, conn: Member, deadline_ms: int) -> None:
        entry = {**conn.entry, "state": "reconnecting", "deadline": deadline_ms, "since": self.now_ms()}
        await self.store.update(conn.room_id, conn.participant_id, conn.conn_id, entry, envelope(
            _b(m.ParticipantReconnecting(id=self.ids(), participant_id=conn.participant_id)),
            skip=conn.participant_id))
        conn.state, conn.entry = "reconnecting", entry
        lost = ConnectionChanged(conn.room_id, conn.participant_id, conn.role.value, True, self.now_ms())
        await self._tell("connection_changed", lambda o: o.connection_changed(lost), conn.room_id)

    async def leave(self, room_id: str, pid: str, conn_id: str, role: str, reason: str, *,
                    expect_state: str = "", last_seen_ms: int | None = None) -> bool:
        at = self.now_ms()
        result = await self.store.leave(
            room_id, pid, conn_id, role, reason,
            envelope(_b(m.ParticipantLeft(id=self.ids(), participant_id=pid, reason=reason))),
            self._event("room.left", {"booking_id": room_id, "participant_id": pid, "role": role,
                                      "reason": reason, "at": at}),
            expect_state=expect_state, last_seen_ms=last_seen_ms)
        if not result.done:
            return False
        log.info("room %s: a participant left (%s)", room_id, reason)
        await self.bridge.participant_left(room_id, pid)
        left = ParticipantLeft(room_id, pid, role, reason, at)
        await self._tell("participant_left", lambda o: o.participant_left(left), room_id)
        if result.room_emptied:
            await self._tell("room_ended", lambda o: o.room_ended(room_id, reason, at), room_id)
        return True

    async def closed(self, conn: Member) -> None:
        """The member's connection has ended: it left, timed out, was replaced, or may come back."""
        if self.bus.remove(conn):
            self.store.forget(conn.room_id)
        if self._gauge is not None:
            self._gauge.dec()
        if not self.bus.ready:
            # this node does not hear its rooms (Redis lost the subscription): what it would publish now
            # reaches nobody, so it is written once the node listens again (the housekeeping)
            self._unrecorded.append(conn)
            return
        try:
            await self._record_closed(conn)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            # Redis is away (the outage is logged once, elsewhere): the others learn it once it is back,
            # from the housekeeping, rather than seeing a participant present for ever
            self._unrecorded.append(conn)
        except Exception:
            log.exception("room %s: could not record that a socket closed", conn.room_id)

    async def _record_closed(self, conn: Member) -> None:
        await self.store.release_socket(conn.participant_id, conn.room_id, conn.conn_id)
        if conn.exit_reason in ("leave", "timeout", "room_closed"):
            await self.leave(conn.room_id, conn.participant_id, conn.conn_id, conn.role.value, conn.exit_reason)
        elif conn.exit_reason != "replaced":
            await self._reconnecting(conn, self.now_ms() + int(self.settings.heartbeat_timeout_s * 1000))

    async def _record_unrecorded(self) -> None:
        pending, self._unrecorded = self._unrecorded, []
        for n, conn in enumerate(pending):
            try:
                await self._record_closed(conn)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                self._unrecorded = pending[n:] + self._unrecorded
                raise
            except Exception:
                log.exception("room %s: could not record that a socket closed", conn.room_id)

    # --- the node's clock -------------------------------------------------------------------------

    def members(self) -> list[Member]:
        out = []
        for c in self.bus.connections():
            assert isinstance(c, Member)
            out.append(c)
        return out

    async def tick(self) -> None:
        """One turn of the node's clock: its heartbeat, then its housekeeping (the app runs them apart)."""
        await self.heartbeat()
        await self.housekeeping()

    async def heartbeat(self) -> None:
        """Once per tick: ping and judge this node's members, renew their tokens, end their windows.

        It needs no Redis to go on: a Redis outage is the server's, not its clients', so its pings keep
        going out and the answers keep counting while Redis is away (the presence writes it cannot make,
        such as a member now silent, are made at a later tick). It runs apart from `housekeeping`, whose
        Redis calls would otherwise hold it up for their timeouts."""
        mono, wall = self.clock.monotonic(), self.clock.now()
        silent: list[tuple[Member, int]] = []
        for c in self.members():
            if c.close_code is not None:
                continue
            if wall >= c.window.closes_at:
                self._close_room(c, "session_over", "the session's time is over")
                continue
            if self.renew_token is not None and wall >= c.identity.expires_at - TOKEN_RENEW_AHEAD_S:
                # The server renews the token of a connection its booking still admits (LiveKit does the
                # same): the room's window and the booking decide how long one stays, never a link's token.
                ttl_s = max(60, c.window.closes_at - int(wall) + TOKEN_RENEW_AHEAD_S)
                try:
                    token, c.identity = self.renew_token(c.identity, ttl_s)
                    c.send(m.TokenRefreshed(id=self.ids(), ref="", expires_at=c.identity.expires_at, token=token))
                except DomainError:
                    pass  # an identity the authority no longer mints for: its token runs out as below
            if wall >= c.identity.expires_at:
                # without a renewer (or a token refused at renewal) the page refreshes its token before
                # this (token.refresh); one that did not comes back with a new token, so the others are
                # shown it reconnecting, not gone
                expired_ = TokenExpired("the access token has expired; join again with a new one")
                c.send(m.Error(id=self.ids(), code=expired_.code, message=expired_.message))
                c.close_soon(m.CLOSE_UNAUTHENTICATED, "token expired")
                continue
            if ping_due(self.timings, c.last_ping, mono):
                c.last_ping = mono
                c.send(m.ServerPing(id=self.ids()))
            live = connection_liveness(self.timings, c.last_heard, mono)
            if live is Liveness.GONE:
                c.exit_reason = "timeout"
                c.close_soon(m.CLOSE_HEARTBEAT_TIMEOUT, "no heartbeat")
            elif live is Liveness.RECONNECTING and c.state == "connected":
                silent.append((c, self.now_ms() + int((self.timings.timeout_s - (mono - c.last_heard)) * 1000)))
        for c, deadline in silent:
            try:
                await self._reconnecting(c, deadline)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                return  # Redis is away (the outage is logged once, elsewhere): shown at a later tick

    async def housekeeping(self) -> None:
        """Once per tick: prove this node alive, keep its sockets counted, re-check its rooms' bookings,
        sweep the participants of dead nodes and the silent ones."""
        try:
            await self.store.node_alive(self.node_id, self._slot_ttl_ms)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            self._store_lost = True
            raise
        if self._store_lost:
            self._store_lost = False
            self._judge_nodes_from = self.clock.monotonic() + self.timings.node_ttl_s
        if self.bus.ready:  # told once this node hears its rooms again: a notice before that is lost
            await self._record_unrecorded()
        await self.store.refresh_sockets(
            [(c.participant_id, c.room_id, c.conn_id) for c in self.bus.connections()], self._slot_ttl_ms)
        await self.recheck_bookings()
        await self.sweep()

    async def sweep(self) -> None:
        for room_id in await self.store.live_rooms():
            presence = await self.store.presence(room_id)
            entries = [Entry(pid, str(e.get("conn")), str(e.get("node")), str(e.get("state")),
                             int(e.get("deadline") or 0)) for pid, e in presence.items()]
            alive = await self.store.live_nodes({e.node for e in entries})
            if self.clock.monotonic() < self._judge_nodes_from:
                # Redis is just back: the other processes' liveness keys may have run out while none could
                # write; they get one period to write them again before their participants are lost
                alive = alive | {e.node for e in entries}
            for e, reason in expired(entries, alive, self.now_ms()):
                await self.leave(room_id, e.participant_id, e.conn, str(presence[e.participant_id]["role"]),
                                 reason, expect_state=e.state,
                                 last_seen_ms=int(presence[e.participant_id].get("since") or 0) or None)

    async def media_node_lost(self, room_id: str) -> str | None:
        """The server node that ran the room's media, if it stopped proving itself alive (its liveness
        key expired) and no other node has taken the media over since."""
        raw = await self.store.redis.get(MEDIA_NODE.format(room_id))
        if raw is None:
            return None
        node = raw.decode() if isinstance(raw, bytes) else str(raw)
        return None if await self.store.live_nodes({node}) else node

    # --- the end of a booking's right to its room ------------------------------------------------

    def _close_room(self, c: Member, code: str, reason: str) -> None:
        c.exit_reason = "room_closed"
        c.send(m.RoomClosing(id=self.ids(), reason=reason, code=code))
        c.close_soon(m.CLOSE_ROOM_CLOSED, "room closed")

    def end_booking(self, booking_id: str, code: str, reason: str) -> int:
        """The booking lost its room (cancelled, ...): close this node's members of it; how many."""
        ended = 0
        for c in self.members():
            if c.room_id == booking_id and c.close_code is None:
                self._close_room(c, code, reason)
                ended += 1
        return ended

    def end_session(self, booking_id: str, verdict: str, attribution: str | None) -> int:
        """The session's verdict is written: tell this node's members of it (`outage`, state `ended`,
        before `room.closing`), then close them; how many."""
        ended = 0
        notice = m.encode(m.Outage(id=self.ids(), state="ended", verdict=verdict, side=attribution))
        for c in self.members():
            if c.room_id == booking_id and c.close_code is None:
                c.deliver(notice)
                self._close_room(c, "session_ended", "the session is over")
                ended += 1
        return ended

    def end_practitioner(self, practitioner_id: str, code: str, reason: str) -> int:
        """Every booking of the practitioner lost its room (suspended): close this node's members."""
        ended = 0
        for c in self.members():
            if c.booking.practitioner_id == practitioner_id and c.close_code is None:
                self._close_room(c, code, reason)
                ended += 1
        return ended

    async def recheck_bookings(self) -> None:
        """The backstop for a missed event or a join that raced a change: every room of this node whose
        booking lost its right to it (its status, its practitioner's suspension, its window) is closed at
        the next tick, with the code that says why."""
        suspended: dict[str, bool] = {}
        now = self.clock.now()
        for room_id in list(self.bus.rooms):
            booking = await load_booking(self.store.redis, room_id)
            win = (rules.window(booking, self.settings.room_open_before_s, self.settings.room_grace_after_s)
                   if booking is not None else None)
            if booking is not None and self.practitioner_suspended is not None:
                pid = booking.practitioner_id
                if pid not in suspended:
                    suspended[pid] = await self.practitioner_suspended(pid)
            held = booking is not None and suspended.get(booking.practitioner_id, False)
            why = rules.ended(booking, win, now, practitioner_suspended=held)
            if why is not None:
                self.end_booking(room_id, *why)

    def close_all(self) -> None:
        """Stopping: close every member (1001); their participants may come back on another node."""
        for c in self.members():
            c.exit_reason = "shutdown"
            c.close_soon(m.CLOSE_GOING_AWAY, "server restarting")
