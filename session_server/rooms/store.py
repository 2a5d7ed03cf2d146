"""The rooms' Redis store: presence, attendance, the session start, encrypted chat, node liveness.

Every change that others must see is one Lua script that writes the change, appends its event (where
there is one) and PUBLISHes the notice on the room's bus channel, so a notice goes out if and only if
its change happened, and notices leave Redis in the order the changes were made.

Redis layout (room id = booking id):
  ss:room:{id}:presence     hash  participant id -> JSON {conn, node, role, name, state, deadline,
                                  since, joined_at, audio, video, audio_only, camera, microphone}
  ss:room:{id}:attendance   list  JSON {pid, role, kind: join|resume|leave, at (ms), reason}
  ss:room:{id}:started      string  epoch ms when both parties were first present
  ss:room:{id}:chat         zset  score seq -> JSON {seq, t, from, role, ref, ct (base64 AES-GCM)}
  ss:room:{id}:chat:seq     string  last sequence number given
  ss:room:{id}:chat:ids     hash  "{sender}:{client message id}" -> seq (makes sends idempotent)
  ss:room:{id}:key          string  "{master key id}:{base64 wrapped data key}"
  ss:room:{id}:bus          pub/sub channel: notices to every node (JSON envelopes, see signaling.bus);
                            ss:db{n}:room:{id}:bus when the data lives in Redis database n > 0,
                            because pub/sub channels are shared by all databases of a server
  ss:room:*:bus             pub/sub channel (a literal "*", which no room id holds, so the pattern
                            every node subscribes to matches it): the chat records of every room, a
                            batch per PUBLISH; ss:db{n}:room:*:bus likewise
  ss:room:{id}:push         pub/sub channel: other features' messages for the room's parties
  ss:rooms:live             set   room ids that have presence entries (what the sweepers visit)
  ss:node:{node}            string with a TTL: the node is alive while it exists
  ss:user:{sub}:conns       zset  "{room id}|{conn}" -> expiry (ms): a user's open sockets on every
                                  node, refreshed by their node's clock (the per-user cap)
The chat keys and the data key expire `chat_retention_days` after the room closes; losing the data
key makes the ciphertext unreadable (crypto-shredding).
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis

from files.keyring import KeyRing, WrappedKey
from signaling.chatcrypto import RoomCipher

from ..clock import Clock, SystemClock
from ..events import EVENTS_STREAM, LUA_XADD_EVENT, Event, lua_args

PRESENCE = "ss:room:{}:presence"
ATTENDANCE = "ss:room:{}:attendance"
STARTED = "ss:room:{}:started"
CHAT = "ss:room:{}:chat"
CHAT_SEQ = "ss:room:{}:chat:seq"
CHAT_IDS = "ss:room:{}:chat:ids"
DATA_KEY = "ss:room:{}:key"
BUS = "ss:{}room:{}:bus"  # namespace ("" or "db<n>:"), room id
CHAT_BUS = "ss:{}room:*:bus"  # namespace; "*" is no room id, so the room pattern matches it
PUSH = "ss:room:{}:push"
LIVE_ROOMS = "ss:rooms:live"
NODE = "ss:node:{}"
USER_CONNS = "ss:user:{}:conns"
BUS_PATTERN = "ss:{}room:*:bus"
PUSH_PATTERN = "ss:room:*:push"

_JOIN = LUA_XADD_EVENT + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
local fresh = 1
if old then fresh = 0 end
if fresh == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[8])
  xadd_event(KEYS[5], 13)
  redis.call('PUBLISH', ARGV[4], ARGV[10])
else
  redis.call('RPUSH', KEYS[2], ARGV[9])
  redis.call('PUBLISH', ARGV[4], ARGV[11])
end
local started = redis.call('GET', KEYS[4])
local newly = 0
if (not started) and redis.call('HEXISTS', KEYS[1], ARGV[6]) == 1
    and redis.call('HEXISTS', KEYS[1], ARGV[7]) == 1 then
  redis.call('SET', KEYS[4], ARGV[5])
  started = ARGV[5]
  newly = 1
  xadd_event(KEYS[5], 18)
  redis.call('PUBLISH', ARGV[4], ARGV[12])
end
return {fresh, tonumber(started or '0'), newly}
"""

# Changes one participant's entry only if it still belongs to the given connection (and state), so a
# stale node or an old socket can never remove or overwrite a newer connection's presence. Returns 0
# when nothing changed, 2 when a leave removed the room's last participant, 1 otherwise.
_CHANGE = LUA_XADD_EVENT + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local e = cjson.decode(cur)
if e['conn'] ~= ARGV[2] then return 0 end
if ARGV[4] ~= '' and e['state'] ~= ARGV[4] then return 0 end
local done = 1
if ARGV[3] == 'leave' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('RPUSH', KEYS[2], ARGV[9])
  xadd_event(KEYS[4], 10)
  if redis.call('HLEN', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[6])
    done = 2
  end
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return done
"""

# Appends a batch of chat messages, each at the sequence number the caller encrypted it for, and
# returns one result per message, comma-separated: its number; minus the first one's number for a
# repeated message id; or "busy:<current>" when another sender came first (the caller re-encrypts for
# the next number and retries). Message i has KEYS[3i-2..3i] (sequence, chat, ids) and ARGV[5i-3..5i+1]
# (seq, id, record, expiry, room id as JSON). The appended records go out in one PUBLISH on the chat
# channel, in order.
_CHAT = """
local out, notes = {}, {}
for i = 1, #KEYS / 3 do
  local k, a = 3 * (i - 1), 5 * (i - 1) + 1
  local seq = ARGV[a + 1]
  local existing = redis.call('HGET', KEYS[k + 3], ARGV[a + 2])
  if existing then
    out[i] = '-' .. existing
  else
    local cur = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
    if cur + 1 ~= tonumber(seq) then
      out[i] = 'busy:' .. cur
    else
      redis.call('SET', KEYS[k + 1], seq)
      redis.call('ZADD', KEYS[k + 2], seq, ARGV[a + 3])
      redis.call('HSET', KEYS[k + 3], ARGV[a + 2], seq)
      for j = 1, 3 do redis.call('PEXPIREAT', KEYS[k + j], ARGV[a + 4]) end
      out[i] = seq
      notes[#notes + 1] = '[' .. ARGV[a + 5] .. ',' .. ARGV[a + 3] .. ']'
    end
  end
end
if #notes > 0 then
  redis.call('PUBLISH', ARGV[1], '{"k":"cs","c":[' .. table.concat(notes, ',') .. ']}')
end
return table.concat(out, ',')
"""


# Claims a socket slot for a user unless the user already has `cap` sockets in *other* rooms (one in
# the same room is about to be replaced, so it does not count). Slots of dead nodes lapse by score.
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local prefix = ARGV[2] .. '|'
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(m, 1, string.len(prefix)) ~= prefix then n = n + 1 end
end
if n >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[5], prefix .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""


APPEND_BATCH = 256
# The change script's event arguments when it writes no event (an update): never read, so no clock either.
_NO_EVENT = Event("unused", {}, time=datetime.fromtimestamp(0, UTC), id="unused")


@dataclass(slots=True)
class _Append:
    room_id: str
    cipher: RoomCipher
    payload: bytes
    sender: str
    role: str
    ref: str
    expire_at_ms: int
    future: asyncio.Future[tuple[int, bool, int]]
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class JoinResult:
    fresh: bool  # False: the participant already had an entry (a resume or a replacement)
    started_at: int | None
    newly_started: bool


@dataclass(frozen=True, slots=True)
class ChatRecord:
    seq: int
    time: int
    sender: str
    role: str
    ref: str
    name: str
    text: str


@dataclass(frozen=True, slots=True)
class LeaveResult:
    done: bool  # False: the entry was no longer this connection's (or in the expected state)
    room_emptied: bool  # this leave removed the room's last participant


class ChatCorrupt(Exception):
    code = "chat_corrupt"


class RoomStore:
    def __init__(self, redis: aioredis.Redis, keyring: KeyRing, clock: Clock | None = None) -> None:
        self.redis = redis
        self.clock: Clock = clock if clock is not None else SystemClock()
        db = int(redis.connection_pool.connection_kwargs.get("db", 0) or 0)
        self.namespace = f"db{db}:" if db else ""
        self.bus_pattern = BUS_PATTERN.format(self.namespace)
        self.chat_bus = CHAT_BUS.format(self.namespace)
        self.keyring = keyring
        self._join = redis.register_script(_JOIN)
        self._change = redis.register_script(_CHANGE)
        self._chat = redis.register_script(_CHAT)
        self._claim = redis.register_script(_CLAIM)
        self._ciphers: dict[str, RoomCipher] = {}
        self._room_json: dict[str, str] = {}
        self._last_seq: dict[str, int] = {}
        self._appends: list[_Append] = []
        self._appends_ready = asyncio.Event()
        self._appender_running = False

    # --- presence and attendance ------------------------------------------------------------------

    async def join(self, room_id: str, pid: str, entry: dict[str, Any], *, practitioner_id: str,
                   client_id: str, joined_event: Event, started_event: Event, fresh_notice: str,
                   resume_notice: str, started_notice: str) -> JoinResult:
        at = int(entry["joined_at"])
        record = {"pid": pid, "role": entry["role"], "at": at, "conn": entry["conn"]}
        res = await self._join(
            keys=[PRESENCE.format(room_id), ATTENDANCE.format(room_id), LIVE_ROOMS,
                  STARTED.format(room_id), EVENTS_STREAM],
            args=[pid, _dumps(entry), room_id, self.bus(room_id), at, practitioner_id, client_id,
                  _dumps({**record, "kind": "join"}), _dumps({**record, "kind": "resume"}),
                  fresh_notice, resume_notice, started_notice,
                  *lua_args(joined_event), *lua_args(started_event)])
        fresh, started, newly = (int(x) for x in res)
        return JoinResult(bool(fresh), started or None, bool(newly))

    async def update(self, room_id: str, pid: str, conn: str, entry: dict[str, Any], notice: str,
                     *, expect_state: str = "") -> bool:
        """Replace the entry (state, media flags) if it is still this connection's."""
        res = await self._change(
            keys=[PRESENCE.format(room_id), ATTENDANCE.format(room_id), LIVE_ROOMS, EVENTS_STREAM],
            args=[pid, conn, "set", expect_state, _dumps(entry), room_id, self.bus(room_id), notice,
                  "", *lua_args(_NO_EVENT)])
        return bool(res)

    async def leave(self, room_id: str, pid: str, conn: str, role: str, reason: str, notice: str,
                    event: Event, *, expect_state: str = "", last_seen_ms: int | None = None) -> LeaveResult:
        """Remove the participant if the entry is still this connection's."""
        at = self.now_ms()
        record = {"pid": pid, "role": role, "at": at, "conn": conn, "kind": "leave", "reason": reason,
                  "last_seen": last_seen_ms or at}
        res = await self._change(
            keys=[PRESENCE.format(room_id), ATTENDANCE.format(room_id), LIVE_ROOMS, EVENTS_STREAM],
            args=[pid, conn, "leave", expect_state, "", room_id, self.bus(room_id), notice,
                  _dumps(record), *lua_args(event)])
        return LeaveResult(done=int(res) > 0, room_emptied=int(res) == 2)

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    async def presence(self, room_id: str) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(PRESENCE.format(room_id))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    async def started_at(self, room_id: str) -> int | None:
        raw = await self.redis.get(STARTED.format(room_id))
        return int(raw) if raw else None

    async def attendance(self, room_id: str) -> list[dict[str, Any]]:
        return [json.loads(r) for r in await self.redis.lrange(ATTENDANCE.format(room_id), 0, -1)]

    def bus(self, room_id: str) -> str:
        return BUS.format(self.namespace, room_id)

    async def publish(self, room_id: str, envelope: str) -> None:
        await self.redis.publish(self.bus(room_id), envelope)

    # --- the per-user cap -------------------------------------------------------------------------

    async def claim_socket(self, sub: str, room_id: str, conn: str, cap: int, ttl_ms: int) -> bool:
        now = self.now_ms()
        return bool(await self._claim(keys=[USER_CONNS.format(sub)],
                                      args=[now, room_id, conn, cap, now + ttl_ms, ttl_ms * 4]))

    async def refresh_sockets(self, sockets: list[tuple[str, str, str]], ttl_ms: int) -> None:
        if not sockets:
            return
        expiry = self.now_ms() + ttl_ms
        pipe = self.redis.pipeline(transaction=False)
        for sub, room_id, conn in sockets:
            pipe.zadd(USER_CONNS.format(sub), {f"{room_id}|{conn}": expiry}, xx=True)
        await pipe.execute()

    async def release_socket(self, sub: str, room_id: str, conn: str) -> None:
        await self.redis.zrem(USER_CONNS.format(sub), f"{room_id}|{conn}")

    # --- nodes ------------------------------------------------------------------------------------

    async def node_alive(self, node: str, ttl_ms: int) -> None:
        await self.redis.set(NODE.format(node), b"1", px=ttl_ms)

    async def node_gone(self, node: str) -> None:
        await self.redis.delete(NODE.format(node))

    async def live_nodes(self, nodes: set[str]) -> set[str]:
        if not nodes:
            return set()
        ordered = sorted(nodes)
        found = await self.redis.mget([NODE.format(n) for n in ordered])
        return {n for n, v in zip(ordered, found, strict=True) if v is not None}

    async def live_rooms(self) -> list[str]:
        return [_text(r) for r in await self.redis.smembers(LIVE_ROOMS)]

    # --- chat -------------------------------------------------------------------------------------

    async def cipher(self, room_id: str, expire_at_ms: int | None = None) -> RoomCipher:
        cached = self._ciphers.get(room_id)
        if cached is not None:
            return cached
        key = DATA_KEY.format(room_id)
        context = b"room-chat:" + room_id.encode()
        raw = await self.redis.get(key)
        if raw is None:
            wrapped = self.keyring.wrap(KeyRing.new_data_key(), context)
            value = f"{wrapped.key_id}:{base64.b64encode(wrapped.blob).decode()}"
            await self.redis.set(key, value, nx=True)
            raw = await self.redis.get(key)  # whoever set it first wins; everyone uses that key
            if raw is None:
                raise ChatCorrupt("the room's chat key vanished while it was created")
        if expire_at_ms is not None:
            await self.redis.pexpireat(key, expire_at_ms)
        kid, _, blob = _text(raw).partition(":")
        data_key = self.keyring.unwrap(WrappedKey(kid, base64.b64decode(blob)), context)
        cipher = self._ciphers[room_id] = RoomCipher(room_id, data_key)
        return cipher

    def forget(self, room_id: str) -> None:
        """Drop cached keys of a room this node no longer serves."""
        self._ciphers.pop(room_id, None)
        self._last_seq.pop(room_id, None)
        self._room_json.pop(room_id, None)

    def saw_seq(self, room_id: str, seq: int) -> None:
        if seq > self._last_seq.get(room_id, 0):
            self._last_seq[room_id] = seq

    async def append_chat(self, room_id: str, *, sender: str, role: str, name: str, ref: str, text: str,
                          expire_at_ms: int) -> tuple[int, bool, int]:
        """Store and publish one message; (seq, duplicate, time). A duplicate id changes nothing."""
        cipher = self._ciphers.get(room_id) or await self.cipher(room_id, expire_at_ms)
        item = _Append(room_id, cipher, _encode({"text": text, "name": name}), sender, role, ref,
                       expire_at_ms, asyncio.get_running_loop().create_future())
        if not self._appender_running:
            await self._append_batch([item])
            while not item.future.done():  # lost the race for its sequence number: try the next one
                await self._append_batch([item])
            return await item.future
        self._appends.append(item)
        self._appends_ready.set()
        return await item.future

    async def run_appender(self) -> None:
        """Send queued chat appends in batches: one script call carries every message that arrived
        while the previous one was in flight, and publishes them together, which is what keeps Redis
        off the per-message cost on both ends."""
        self._appender_running = True
        try:
            while True:
                await self._appends_ready.wait()
                self._appends_ready.clear()
                while self._appends:
                    batch = self._appends[:APPEND_BATCH]
                    del self._appends[:APPEND_BATCH]
                    try:
                        await self._append_batch(batch)
                    except Exception as exc:
                        for a in batch:
                            if not a.future.done():
                                a.future.set_exception(exc)
        finally:
            self._appender_running = False
            for a in self._appends:
                if not a.future.done():
                    a.future.set_exception(ChatCorrupt("the server is stopping"))
            self._appends.clear()

    async def _append_batch(self, batch: list[_Append]) -> None:
        expected: dict[str, int] = {}
        keys: list[str] = []
        args: list[str | int | bytes] = [self.chat_bus]
        sent: list[tuple[_Append, int]] = []
        at = self.now_ms()
        for a in batch:
            room = a.room_id
            seq = expected.get(room) or self._last_seq.get(room, 0) + 1
            expected[room] = seq + 1
            room_json = self._room_json.get(room)
            if room_json is None:
                room_json = self._room_json[room] = _encode(room).decode()
            record = _encode({"seq": seq, "t": at, "from": a.sender, "role": a.role, "ref": a.ref,
                              "ct": base64.b64encode(a.cipher.seal(seq, a.payload)).decode()})
            keys += (CHAT_SEQ.format(room), CHAT.format(room), CHAT_IDS.format(room))
            args += (seq, f"{a.sender}:{a.ref}", record, a.expire_at_ms, room_json)
            sent.append((a, at))
        results = await self._chat(keys=keys, args=args)
        again: list[_Append] = []
        for (a, at), res in zip(sent, _text(results).split(","), strict=True):
            if not res.startswith("busy:"):
                n = int(res)
                if n < 0:
                    a.future.set_result((-n, True, at))
                else:
                    self.saw_seq(a.room_id, n)
                    a.future.set_result((n, False, at))
            else:  # another sender came first: retry at the next number
                self.saw_seq(a.room_id, int(res[5:]))
                a.attempts += 1
                if a.attempts > 64:
                    a.future.set_exception(ChatCorrupt("the chat sequence is contended beyond reason"))
                else:
                    again.append(a)
        if again and self._appender_running:
            self._appends[:0] = again
            self._appends_ready.set()

    async def chat_seq(self, room_id: str) -> int:
        raw = await self.redis.get(CHAT_SEQ.format(room_id))
        return int(raw) if raw else 0

    async def chat_after(self, room_id: str, after_seq: int, limit: int) -> list[ChatRecord]:
        raw = await self.redis.zrangebyscore(CHAT.format(room_id), f"({after_seq}", "+inf",
                                             start=0, num=limit)
        return [await self.open_record(room_id, _text(r)) for r in raw]

    async def chat_recent(self, room_id: str, count: int) -> list[ChatRecord]:
        raw = await self.redis.zrange(CHAT.format(room_id), -count, -1)
        return [await self.open_record(room_id, _text(r)) for r in raw]

    async def open_record(self, room_id: str, raw: bytes | str | dict[str, Any]) -> ChatRecord:
        rec = raw if isinstance(raw, dict) else json.loads(raw)
        cipher = self._ciphers.get(room_id) or await self.cipher(room_id)
        seq = int(rec["seq"])
        try:
            payload = _decode(cipher.open(seq, base64.b64decode(rec["ct"])))
        except Exception as exc:
            raise ChatCorrupt(f"chat message {seq} does not decrypt") from exc
        return ChatRecord(seq=seq, time=int(rec["t"]), sender=str(rec["from"]), role=str(rec["role"]),
                          ref=str(rec["ref"]), name=str(payload.get("name", "")), text=str(payload["text"]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_encode = msgspec.json.Encoder().encode  # compact UTF-8 JSON, as `_dumps` writes it
_decode = msgspec.json.Decoder().decode
