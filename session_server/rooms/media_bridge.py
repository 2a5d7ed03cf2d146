"""`SfuBridge`: the `sfu` media mode. Offers are answered by this node's SFU (`media.MediaServer`).

A participant's offer goes to `MediaServer.handle_offer`; the answer goes back to that participant only,
through the room bus like every other notice. Candidates go to `add_candidate`, a participant who leaves
is `remove_participant`-ed. What the SFU reports (media states, quality) is pushed to the room, and the
latest quality report per participant is kept in Redis for support (metadata only: no media, no SDP).

Placement: one node runs a room's media. The first offer claims the room for its node
(`SET ... NX`); the claim passes to another node only when the owner's liveness key has expired.
A participant's socket may be on any node: an offer, candidate or departure that reaches a node that
does not run the room's media is forwarded over pub/sub to the node that does, which answers through
the room bus (every node delivers it to the participant's socket). If the owner is alive but nobody
listens on its channel, the offer is refused with the typed error `media_elsewhere`.

Redis layout (room id = booking id):
  ss:room:{id}:media_node   string with a TTL  the node id that runs the room's media
  ss:room:{id}:quality      hash with a TTL    participant id -> JSON {quality, up, down,
                                               suggest_audio_only, at}: the latest report
  ss:events                 stream             media.state_changed on every media state change;
                                               media.quality_changed when a participant's verdict
                                               differs from the one stored (docs/events.md)
  ss:node:{node}:media      pub/sub channel    work forwarded to the node that runs a room's media:
                                               JSON {k: offer|candidate|left|audio_only, room,
                                               sender, ...}
                            (ss:db{n}:node:{node}:media when the data lives in Redis database n > 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from media.config import IceServer as MediaIceServer
from media.config import MediaConfig
from media.errors import MediaError
from media.events import MediaEvent, MediaStateChanged, QualityReport
from media.quality import DirectionStats
from media.server import MediaServer, TaskStarter
from signaling import messages as m
from signaling.bus import envelope
from signaling.media import Publish, Signal

from ..clock import Clock, SystemClock
from ..events import EVENTS_STREAM, LUA_XADD_EVENT, Event, add_to, lua_args
from ..settings import Settings
from .store import NODE

log = logging.getLogger(__name__)

MEDIA_NODE = "ss:room:{}:media_node"
QUALITY = "ss:room:{}:quality"
MEDIA_NODE_TTL_S = 24 * 3600
QUALITY_TTL_S = 7 * 24 * 3600
# Every quality report, for the support board's charts of the last minutes (network figures only).
QUALITY_SAMPLES = "ss:quality"
QUALITY_SAMPLES_MAXLEN = 200_000
EVENT_QUEUE = 10_000
MEDIA_ELSEWHERE = "media_elsewhere"
INBOX = "ss:{}node:{}:media"  # namespace ("" or "db<n>:"), node id

# Claim the room's media for ARGV[1]: free, already ours, or held by a node whose liveness key is gone.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if (not owner) or owner == ARGV[1] or redis.call('EXISTS', ARGV[3] .. owner) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return ARGV[1]
end
return owner
"""
# Store a participant's latest quality report and append it to the samples stream (support's charts);
# record the verdict as an event when it differs from the stored one (or none was stored). KEYS: quality
# hash, stream, samples stream. ARGV: 1 participant, 2 record JSON, 3 TTL (s), 4 verdict, 5-9 the event
# (whose body names no previous verdict: the script adds it), 10 the room, 11 the report's time (ms).
_QUALITY = LUA_XADD_EVENT + f"""
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '{QUALITY_SAMPLES_MAXLEN}', '*', 'b', ARGV[10], 'p', ARGV[1],
  'r', ARGV[2], 'at', ARGV[11])
local before = prev and cjson.decode(prev).quality or nil
if before == ARGV[4] then return 0 end
local body = cjson.decode(ARGV[9])
body.previous = before or cjson.null
ARGV[9] = cjson.encode(body)
xadd_event(KEYS[2], 5)
return 1
"""
# Give the claim up only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _summary(d: DirectionStats) -> dict[str, Any]:
    """One direction's figures for the event, rounded: what a verdict was made of."""
    return {"rtt_ms": None if d.rtt_ms is None else round(d.rtt_ms, 1), "loss": round(d.loss, 4),
            "jitter_ms": round(d.jitter_ms, 1), "bitrate_bps": int(d.bitrate_bps),
            "receiving": d.receiving}


class ServerAnswer(msgspec.Struct, tag="answer", tag_field="type", omit_defaults=True):
    id: str
    sdp: str
    from_: str = msgspec.field(default="server", name="from")
    ref: str | None = None


class MediaStatus(msgspec.Struct, tag="media.status", tag_field="type", omit_defaults=True):
    id: str
    participant_id: str
    state: str
    reason: str = ""


class QualityNotice(msgspec.Struct, tag="quality", tag_field="type"):
    id: str
    participant_id: str
    quality: str
    up: dict[str, Any]
    down: dict[str, Any]
    suggest_audio_only: bool
    at: float


def announce_addresses(settings: Settings) -> tuple[str, ...]:
    """The addresses the SFU binds for its ICE candidates: the setting; else the private side of the NAT
    map; else, when the server listens on a loopback address, 127.0.0.1. Only this machine's browsers can
    reach such a server, and aioice leaves loopback out of the interfaces it would otherwise announce (no
    candidate at all on a machine or container with nothing else). An empty tuple lets aioice announce
    the interfaces."""
    if settings.media_announce_addresses:
        return tuple(settings.media_announce_addresses)
    if settings.media_nat_map:
        return tuple(private for private, _ in settings.media_nat_map)
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    return ("127.0.0.1",) if loopback else ()


def media_config(settings: Settings) -> MediaConfig:
    return MediaConfig(
        announce_addresses=announce_addresses(settings),
        nat_map=settings.media_nat_map,
        ice_servers=tuple(MediaIceServer(tuple(i.urls), i.username, i.credential) for i in settings.ice_servers),
        consent_timeout_s=settings.media_consent_timeout_s,
        media_silence_timeout_s=settings.media_silence_timeout_s,
        connect_timeout_s=settings.media_connect_timeout_s,
    )


class SfuBridge:
    """MediaBridge on this node's MediaServer. `start()`/`stop()` belong to the rooms feature."""

    mode = "sfu"

    def __init__(self, config: MediaConfig, *, redis: aioredis.Redis, publish: Publish, ids: m.IdSource,
                 node_id: str, namespace: str = "", registry: CollectorRegistry | None = None,
                 clock: Clock | None = None, tasks: TaskStarter | None = None) -> None:
        self._redis = redis
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._namespace = namespace
        self._publish = publish
        self._ids = ids
        self.node_id = node_id
        self._events: asyncio.Queue[MediaEvent] = asyncio.Queue(EVENT_QUEUE)
        self.media = MediaServer(config, registry=registry, on_event=self._on_event, tasks=tasks)
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._quality = redis.register_script(_QUALITY)

    async def start(self) -> None:
        await self.media.start()

    async def stop(self) -> None:
        rooms = list(self.media.rooms())
        await self.media.stop()
        for room_id in rooms:
            with contextlib.suppress(Exception):
                await self._release(keys=[MEDIA_NODE.format(room_id)], args=[self.node_id])

    # --- MediaBridge ------------------------------------------------------------------------------

    async def signal(self, room_id: str, sender: str, target: str, message: Signal) -> None:
        try:
            if isinstance(message, m.Offer):
                await self._offer(room_id, sender, message)
            elif isinstance(message, m.Candidate):
                c = message.candidate
                cand = None if c is None else {"candidate": c.candidate, "mid": c.sdp_mid,
                                               "mline": c.sdp_m_line_index}
                owner = None if self._local(room_id, sender) else await self._owner(room_id)
                if owner is not None and owner != self.node_id:
                    await self._forward(owner, {"k": "candidate", "room": room_id, "sender": sender,
                                                "id": message.id, "c": cand})
                else:
                    await self._candidate(room_id, sender, cand)
            else:
                # the server never offers, so there is nothing for a participant to answer
                await self._error(room_id, sender, "unexpected_answer",
                                  "in sfu mode the server answers; send offers only", message.id)
        except MediaError as exc:
            log.info("room %s: media refused a %s (%s)", room_id, type(message).__name__.lower(), exc.code)
            await self._error(room_id, sender, exc.code, f"the media server refused this ({exc.code})",
                              message.id)

    async def quality(self, room_id: str, sender: str, report: m.Quality) -> None:
        # the server measures both directions itself (QualityReport); the browser's view adds nothing
        return None

    async def participant_left(self, room_id: str, participant_id: str) -> None:
        if room_id not in self.media.rooms():
            owner = await self._owner(room_id)
            if owner is not None and owner != self.node_id:
                await self._forward(owner, {"k": "left", "room": room_id, "sender": participant_id})
                return
        await self._left(room_id, participant_id)

    async def audio_only(self, room_id: str, participant_id: str, on: bool) -> None:
        if not self._local(room_id, participant_id):
            owner = await self._owner(room_id)
            if owner is not None and owner != self.node_id:
                await self._forward(owner, {"k": "audio_only", "room": room_id, "sender": participant_id,
                                            "on": on})
                return
        self._audio_only(room_id, participant_id, on)

    def _audio_only(self, room_id: str, participant_id: str, on: bool) -> None:
        if not self._local(room_id, participant_id):
            return  # no media yet: the rooms service applies the choice again after the participant's offer
        self.media.set_audio_only(room_id, participant_id, on)
        self.media.hold_video(room_id, participant_id, on)

    async def _left(self, room_id: str, participant_id: str) -> None:
        await self.media.remove_participant(room_id, participant_id)
        if room_id not in self.media.rooms():
            await self._release(keys=[MEDIA_NODE.format(room_id)], args=[self.node_id])

    async def _candidate(self, room_id: str, sender: str, cand: dict[str, Any] | None) -> None:
        if cand is None:
            await self.media.add_candidate(room_id, sender, None)
        else:
            await self.media.add_candidate(room_id, sender, cand["candidate"], cand["mid"], cand["mline"])

    def _local(self, room_id: str, participant_id: str) -> bool:
        return participant_id in self.media.rooms().get(room_id, ())

    async def _owner(self, room_id: str) -> str | None:
        owner = await self._redis.get(MEDIA_NODE.format(room_id))
        return owner.decode() if isinstance(owner, bytes) else owner

    def inbox(self, node_id: str) -> str:
        return INBOX.format(self._namespace, node_id)

    async def _forward(self, owner: str, work: dict[str, Any]) -> int:
        listeners = int(await self._redis.publish(self.inbox(owner), json.dumps(work, separators=(",", ":"))))
        if not listeners:
            log.warning("room %s: the node running its media does not listen; %s dropped", work["room"],
                        work["k"])
        return listeners

    async def run_inbox(self, client: aioredis.Redis, on_ready: Callable[[], None] | None = None) -> None:
        """Serve what other nodes forward to this one, in arrival order, until cancelled."""
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.inbox(self.node_id))
            if on_ready is not None:
                on_ready()
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                try:
                    await self._serve_forwarded(json.loads(message["data"]))
                except Exception:
                    log.exception("dropped media work forwarded by another node")
        finally:
            await pubsub.aclose()

    async def _serve_forwarded(self, work: dict[str, Any]) -> None:
        room_id, sender, kind = str(work["room"]), str(work["sender"]), work["k"]
        ref = work.get("id")
        try:
            if kind == "offer":
                await self._answer(room_id, sender, str(work["sdp"]), ref)
            elif kind == "candidate":
                await self._candidate(room_id, sender, work.get("c"))
            elif kind == "left":
                await self._left(room_id, sender)
            elif kind == "audio_only":
                self._audio_only(room_id, sender, bool(work.get("on")))
        except MediaError as exc:
            log.info("room %s: media refused a forwarded %s (%s)", room_id, kind, exc.code)
            await self._error(room_id, sender, exc.code, f"the media server refused this ({exc.code})", ref)

    # --- offers -----------------------------------------------------------------------------------

    async def _offer(self, room_id: str, sender: str, offer: m.Offer) -> None:
        owner = await self._claim(keys=[MEDIA_NODE.format(room_id)],
                                  args=[self.node_id, MEDIA_NODE_TTL_S, NODE.format("")])
        owner = owner.decode() if isinstance(owner, bytes) else str(owner)
        if owner == self.node_id:
            await self._answer(room_id, sender, offer.sdp, offer.id)
            return
        if self._local(room_id, sender):
            # the room's media moved to another node: this node's connection for them is stale
            await self.media.remove_participant(room_id, sender)
        if not await self._forward(owner, {"k": "offer", "room": room_id, "sender": sender, "id": offer.id,
                                           "sdp": offer.sdp}):
            await self._error(room_id, sender, MEDIA_ELSEWHERE,
                              "this room's media runs on a server node that cannot be reached; retry", offer.id)

    async def _answer(self, room_id: str, sender: str, sdp: str, ref: str | None) -> None:
        answer = await self.media.handle_offer(room_id, sender, sdp)
        await self._publish(room_id, envelope(
            msgspec.to_builtins(ServerAnswer(id=self._ids(), sdp=answer, ref=ref)), to=sender))

    async def _error(self, room_id: str, to: str, code: str, message: str, ref: str | None) -> None:
        err = m.Error(id=self._ids(), code=code, message=message, ref=ref)
        await self._publish(room_id, envelope(m.to_builtins(err), to=to))

    # --- what the SFU reports ---------------------------------------------------------------------

    def _on_event(self, event: MediaEvent) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("media events pile up; one was dropped")

    async def run(self) -> None:
        """The node's loop that pushes the SFU's events to the rooms. The rooms feature spawns it on the
        task supervisor, which logs a failure and restarts it: the event that failed is dropped, the
        ones queued behind it wait in the queue and are pushed after the restart."""
        while True:
            event = await self._events.get()
            await self.record(event)

    def _event_time(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    async def record(self, event: MediaEvent) -> None:
        """Push what the SFU reported to the room, and record it: every media state change as an event,
        the latest quality report per participant for support, a change of verdict as an event."""
        if isinstance(event, MediaStateChanged):
            notice = MediaStatus(id=self._ids(), participant_id=event.participant_id, state=event.state.value,
                                 reason=event.reason)
            changed = Event("media.state_changed",
                            {"booking_id": event.room_id, "participant_id": event.participant_id,
                             "state": event.state.value, "reason": event.reason or None,
                             "node_id": self.node_id, "at": int(self._clock.now() * 1000)},
                            time=self._event_time())
            pipe = self._redis.pipeline(transaction=False)
            add_to(pipe, changed)
            await pipe.execute()
            await self._publish(event.room_id, envelope(msgspec.to_builtins(notice)))
            return
        assert isinstance(event, QualityReport)
        up, down = asdict(event.up), asdict(event.down)
        q = QualityNotice(id=self._ids(), participant_id=event.participant_id, quality=event.quality.value,
                          up=up, down=down, suggest_audio_only=event.suggest_audio_only, at=event.at)
        record = json.dumps({"quality": q.quality, "up": up, "down": down,
                             "suggest_audio_only": q.suggest_audio_only, "at": q.at}, separators=(",", ":"))
        verdict = Event("media.quality_changed",
                        {"booking_id": event.room_id, "participant_id": event.participant_id,
                         "quality": q.quality, "suggest_audio_only": q.suggest_audio_only,
                         "up": _summary(event.up), "down": _summary(event.down),
                         "at": int(self._clock.now() * 1000)},
                        time=self._event_time())
        await self._quality(keys=[QUALITY.format(event.room_id), EVENTS_STREAM, QUALITY_SAMPLES],
                            args=[event.participant_id, record, QUALITY_TTL_S, q.quality, *lua_args(verdict),
                                  event.room_id, int(event.at * 1000)])
        await self._publish(event.room_id, envelope(msgspec.to_builtins(q)))
