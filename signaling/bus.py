"""Fan-out: every node hears every room's notices on Redis pub/sub and hands them to its own sockets.

Notices are JSON envelopes on `ss:room:{id}:bus`:
  {"k": "m", "m": <server message>, "aud": "all" | "parties", "to": pid | null, "skip": pid | null,
   "replace": {"pid": ..., "keep": conn} | absent}
  {"k": "c", "r": <stored chat record, still encrypted>}  (one room's record; older nodes send these)
Chat records of every room travel in batches on `ss:room:*:bus` (a literal "*", which no room id
holds), one batch per PUBLISH, in the order they were stored:
  {"k": "cs", "c": [[<room id>, <stored chat record, still encrypted>], ...]}
One subscription connection carries both channels, so a room's chat and its other notices still
arrive in the order Redis made the changes. Every node, the sender's included, delivers from its
subscription, so the path and the order are the same whether two participants share a node or not.
A chat message goes to the room's parties except its sender, who has its `chat.ack`. Chat records
travel encrypted; a node decrypts a record once, only if it holds a party of that room, and encodes
the message once for all of them.
Messages other features publish on `ss:room:{id}:push` go to the room's parties as they are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis

from .messages import IdSource

log = logging.getLogger(__name__)


class LocalConnection(Protocol):
    conn_id: str
    room_id: str
    participant_id: str
    receives_health_data: bool

    def deliver(self, text: str) -> None: ...

    def deliver_chat(self, seq: int, text: str) -> None: ...

    def close_soon(self, code: int, reason: str) -> None: ...


# Decrypts a chat record of a room and returns (seq, the encoded chat.message) for its parties.
ChatOpener = Callable[[str, dict[str, Any]], Awaitable[tuple[int, str]]]

CHAT_CHANNEL_ROOM = "*"  # the room part of the chat channel's name: no room id holds it
_decode_batch = msgspec.json.Decoder().decode


def envelope(message: dict[str, Any], *, audience: str = "all", to: str | None = None,
             skip: str | None = None, replace: dict[str, str] | None = None) -> str:
    env: dict[str, Any] = {"k": "m", "m": message, "aud": audience, "to": to, "skip": skip}
    if replace is not None:
        env["replace"] = replace
    return json.dumps(env, separators=(",", ":"), ensure_ascii=False)


def staff_view(message: dict[str, Any]) -> dict[str, Any]:
    """A room message as support staff and admins in the room see it: a client's name is not theirs to
    see (they know the client by role, and by a pseudonym on the support board)."""

    def hide(p: Any) -> Any:
        return {**p, "name": ""} if isinstance(p, dict) and p.get("role") == "client" else p

    out = message
    if isinstance(message.get("participant"), dict):
        out = {**out, "participant": hide(message["participant"])}
    if isinstance(message.get("participants"), list):
        out = {**out, "participants": [hide(p) for p in message["participants"]]}
    if isinstance(message.get("you"), dict):
        out = {**out, "you": hide(message["you"])}
    return out


class RoomBus:
    def __init__(self, open_chat: ChatOpener, ids: IdSource) -> None:
        self._open_chat = open_chat
        self._ids = ids
        self.rooms: dict[str, dict[str, LocalConnection]] = {}
        self.ready = False

    def add(self, conn: LocalConnection) -> None:
        self.rooms.setdefault(conn.room_id, {})[conn.conn_id] = conn

    def remove(self, conn: LocalConnection) -> bool:
        """Forget the connection; True when it was the room's last one on this node."""
        room = self.rooms.get(conn.room_id)
        if room is None:
            return True
        room.pop(conn.conn_id, None)
        if not room:
            del self.rooms[conn.room_id]
            return True
        return False

    def connections(self) -> list[LocalConnection]:
        return [c for room in self.rooms.values() for c in room.values()]

    async def run(self, client: aioredis.Redis, patterns: tuple[str, ...],
                  on_ready: Callable[[], None] | None = None) -> None:
        """Subscribe and dispatch until cancelled (the task supervisor restarts it after an error)."""
        pubsub = client.pubsub(ignore_subscribe_messages=False)
        try:
            await pubsub.psubscribe(*patterns)
            async for message in pubsub.listen():
                kind = message.get("type")
                if kind == "psubscribe":
                    if int(message["data"]) == len(patterns):
                        self.ready = True
                        if on_ready is not None:
                            on_ready()
                    continue
                if kind != "pmessage":
                    continue
                channel = message["channel"].decode()
                try:
                    await self._dispatch(channel, message["data"])
                except Exception:
                    # one bad notice must not stop the room's traffic
                    log.exception("dropped a notice on a room channel")
        finally:
            self.ready = False
            await pubsub.aclose()

    async def _dispatch(self, channel: str, data: bytes) -> None:
        _, _, rest = channel.partition(":room:")
        room_id, _, suffix = rest.rpartition(":")
        if room_id == CHAT_CHANNEL_ROOM:
            if self.rooms:
                await self._chat_batch(_decode_batch(data)["c"])
            return
        conns = self.rooms.get(room_id)
        if not conns:
            return
        if suffix == "push":
            self._push(conns, data)
            return
        env = json.loads(data)
        if env["k"] == "c":
            await self._chat(room_id, env["r"])
            return
        replace = env.get("replace")
        if replace is not None:
            for c in list(conns.values()):
                if c.participant_id == replace["pid"] and c.conn_id != replace["keep"]:
                    c.close_soon(4409, "replaced by a newer connection")
        parties_only = env.get("aud") == "parties"
        to, skip = env.get("to"), env.get("skip")
        text = json.dumps(env["m"], separators=(",", ":"), ensure_ascii=False)
        staff_text: str | None = None
        for c in list(conns.values()):
            if to is not None and c.participant_id != to:
                continue
            if skip is not None and c.participant_id == skip:
                continue
            if parties_only and not c.receives_health_data:
                continue
            if not c.receives_health_data:
                if staff_text is None:
                    staff_text = json.dumps(staff_view(env["m"]), separators=(",", ":"), ensure_ascii=False)
                c.deliver(staff_text)
                continue
            c.deliver(text)

    async def _chat_batch(self, items: list[list[Any]]) -> None:
        for room_id, record in items:
            if room_id not in self.rooms:
                continue
            try:
                await self._chat(room_id, record)
            except Exception:
                # one bad record must not stop the others
                log.exception("dropped a chat record of room %s", room_id)

    async def _chat(self, room_id: str, record: dict[str, Any]) -> None:
        conns = self.rooms.get(room_id)
        if not conns:
            return
        sender = record.get("from")
        # the sender learns the sequence number from its chat.ack: no echo of its own words
        if not any(c.receives_health_data and c.participant_id != sender for c in conns.values()):
            return
        seq, text = await self._open_chat(room_id, record)
        for c in list(conns.values()):
            if c.receives_health_data and c.participant_id != sender:
                c.deliver_chat(seq, text)

    def _push(self, conns: dict[str, LocalConnection], data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("ignored a room push that is not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            log.warning("ignored a room push without a type")
            return
        message.setdefault("id", self._ids())
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        for c in list(conns.values()):
            if c.receives_health_data:
                c.deliver(text)
