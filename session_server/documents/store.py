"""Document metadata, shares and audit in Redis; every change with its event in one MULTI or Lua script.

Redis layout:
  ss:doc:{id}                hash: id, owner_id, name, media_type, size, sha256, created_at, key_id,
                             header (the encoded header: fixed part and key slot, see files/format.py),
                             status (active|deleted), deleted_at. Deleting keeps only id, owner_id,
                             created_at, status and deleted_at: the header (the wrapped data key) is gone.
  ss:docs:all                set of document ids that have a data key (what key rotation walks)
  ss:docs:owner:{user}       zset document id -> created_at
  ss:doc:{id}:shares         zset share id -> created_at (active and revoked)
  ss:docshare:{share}        hash: id, document_id, kind (booking|client), client_id, booking_id,
                             created_at, revoked_at (0 while active)
  ss:docs:client:{user}      zset share id -> created_at: active shares naming this client
  ss:docs:booking:{booking}  zset share id -> created_at: active shares with this booking
  ss:doc:{id}:audit          list of JSON download records, newest first (kept after deletion)
  ss:room:{booking}:push     pub/sub channel: document.shared messages for a live room
  ss:docs:keyring:{node}     string "k1,k2": the master key ids a running server holds (expires in 30 s)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from files.format import Header
from session_server.clock import Clock, SystemClock
from session_server.events import EVENTS_STREAM, LUA_XADD_EVENT, Event, add_to, lua_args

from .rules import DocumentMeta, Share, ShareKind

DOC_KEY = "ss:doc:{}"
ALL_DOCS_KEY = "ss:docs:all"
OWNER_DOCS_KEY = "ss:docs:owner:{}"
DOC_SHARES_KEY = "ss:doc:{}:shares"
SHARE_KEY = "ss:docshare:{}"
CLIENT_SHARES_KEY = "ss:docs:client:{}"
BOOKING_SHARES_KEY = "ss:docs:booking:{}"
AUDIT_KEY = "ss:doc:{}:audit"
ROOM_PUSH_CHANNEL = "ss:room:{}:push"
KEYRING_NODE_KEY = "ss:docs:keyring:{}"
AUDIT_MAX = 100_000

_SHREDDED_FIELDS = ("name", "media_type", "size", "sha256", "key_id", "header")

# KEYS: doc, doc shares, share, client index, booking index (or a dummy), events stream, push channel
# ARGV: 1 share id, 2 kind, 3 client id, 4 booking id, 5 created_at, 6 push message ("" for none),
#       7..11 event
_SHARE = LUA_XADD_EVENT + """
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return {'gone'} end
local existing = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, sid in ipairs(existing) do
  local s = redis.call('HMGET', 'ss:docshare:' .. sid, 'kind', 'client_id', 'booking_id', 'revoked_at')
  if s[1] == ARGV[2] and s[4] == '0' and
     ((ARGV[2] == 'client' and s[2] == ARGV[3]) or (ARGV[2] == 'booking' and s[3] == ARGV[4])) then
    return {'exists', sid}
  end
end
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'document_id', redis.call('HGET', KEYS[1], 'id'),
  'kind', ARGV[2], 'client_id', ARGV[3], 'booking_id', ARGV[4], 'created_at', ARGV[5], 'revoked_at', '0')
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
if ARGV[2] == 'booking' then redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1]) end
xadd_event(KEYS[6], 7)
if ARGV[6] ~= '' then redis.call('PUBLISH', KEYS[7], ARGV[6]) end
return {'ok', ARGV[1]}
"""

# KEYS: share, client index, booking index, events stream. ARGV: 1 revoked_at, 2 share id, 3..7 event
_REVOKE = LUA_XADD_EVENT + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if redis.call('HGET', KEYS[1], 'revoked_at') ~= '0' then return 'revoked' end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
xadd_event(KEYS[4], 3)
return 'ok'
"""

# KEYS: doc, doc shares, owner index, all docs, events stream. ARGV: 1 deleted_at, 2 doc id, 3..7 event
_DELETE = LUA_XADD_EVENT + """
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 'gone' end
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local skey = 'ss:docshare:' .. sid
  local s = redis.call('HMGET', skey, 'client_id', 'booking_id')
  if s[1] then redis.call('ZREM', 'ss:docs:client:' .. s[1], sid) end
  if s[2] and s[2] ~= '' then redis.call('ZREM', 'ss:docs:booking:' .. s[2], sid) end
  redis.call('DEL', skey)
end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], 'name', 'media_type', 'size', 'sha256', 'key_id', 'header')
redis.call('HSET', KEYS[1], 'status', 'deleted', 'deleted_at', ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
xadd_event(KEYS[5], 3)
return 'ok'
"""

# KEYS: doc, events stream. ARGV: 1 old header, 2 new header, 3 new key id, 4..8 event
_REKEY = LUA_XADD_EVENT + """
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 'gone' end
if redis.call('HGET', KEYS[1], 'header') ~= ARGV[1] then return 'changed' end
redis.call('HSET', KEYS[1], 'header', ARGV[2], 'key_id', ARGV[3])
xadd_event(KEYS[2], 4)
return 'ok'
"""


def new_id() -> str:
    return uuid.uuid4().hex


def _s(raw: dict[bytes, bytes], key: str, default: str = "") -> str:
    v = raw.get(key.encode())
    return v.decode() if v is not None else default


def meta_from_hash(raw: dict[bytes, bytes]) -> DocumentMeta:
    return DocumentMeta(id=_s(raw, "id"), owner_id=_s(raw, "owner_id"), name=_s(raw, "name"),
                        media_type=_s(raw, "media_type"), size=int(_s(raw, "size", "0")),
                        sha256=_s(raw, "sha256"), created_at=int(_s(raw, "created_at", "0")),
                        deleted=_s(raw, "status") != "active")


def share_from_hash(raw: dict[bytes, bytes]) -> Share:
    return Share(id=_s(raw, "id"), document_id=_s(raw, "document_id"), kind=ShareKind(_s(raw, "kind")),
                 client_id=_s(raw, "client_id"), booking_id=_s(raw, "booking_id"),
                 created_at=int(_s(raw, "created_at", "0")), revoked_at=int(_s(raw, "revoked_at", "0")))


class DocumentStore:
    def __init__(self, redis: aioredis.Redis, stream: str = EVENTS_STREAM, *, clock: Clock | None = None) -> None:
        self.redis = redis
        self.stream = stream
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._share = redis.register_script(_SHARE)
        self._revoke = redis.register_script(_REVOKE)
        self._delete = redis.register_script(_DELETE)
        self._rekey = redis.register_script(_REKEY)

    def _now(self) -> datetime:
        """The time of an event: now, by the clock the app runs on."""
        return datetime.fromtimestamp(self.clock.now(), UTC)

    @staticmethod
    async def _ids(reply: Any) -> list[str]:
        return [i.decode() for i in await reply]

    async def create(self, meta: DocumentMeta, header: Header) -> None:
        event = Event("document.uploaded", {"document_id": meta.id, "owner_id": meta.owner_id,
                                            "media_type": meta.media_type, "size": meta.size,
                                            "key_id": header.wrapped_key.key_id}, time=self._now())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(DOC_KEY.format(meta.id), mapping={
                "id": meta.id, "owner_id": meta.owner_id, "name": meta.name, "media_type": meta.media_type,
                "size": str(meta.size), "sha256": meta.sha256, "created_at": str(meta.created_at),
                "key_id": header.wrapped_key.key_id, "header": header.encode(), "status": "active"})
            pipe.zadd(OWNER_DOCS_KEY.format(meta.owner_id), {meta.id: meta.created_at})
            pipe.sadd(ALL_DOCS_KEY, meta.id)
            add_to(pipe, event, self.stream)
            await pipe.execute()

    async def get(self, document_id: str) -> DocumentMeta | None:
        raw: dict[bytes, bytes] = await self.redis.hgetall(DOC_KEY.format(document_id))  # type: ignore[assignment]
        return meta_from_hash(raw) if raw else None

    async def header(self, document_id: str) -> Header | None:
        raw: bytes | None = await self.redis.hget(DOC_KEY.format(document_id), "header")  # type: ignore[assignment]
        return Header.decode(raw) if raw else None

    async def get_many(self, ids: Sequence[str]) -> list[DocumentMeta]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(DOC_KEY.format(i))
            raws = await pipe.execute()
        return [meta_from_hash(r) for r in raws if r]

    async def owned(self, owner_id: str) -> list[DocumentMeta]:
        ids = await self._ids(self.redis.zrevrange(OWNER_DOCS_KEY.format(owner_id), 0, -1))
        return [d for d in await self.get_many(ids) if not d.deleted]

    async def shares_by_ids(self, ids: Sequence[str]) -> list[Share]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(SHARE_KEY.format(i))
            raws = await pipe.execute()
        return [share_from_hash(r) for r in raws if r]

    async def shares_of(self, document_id: str) -> list[Share]:
        ids = await self._ids(self.redis.zrange(DOC_SHARES_KEY.format(document_id), 0, -1))
        return await self.shares_by_ids(ids)

    async def shares_for_client(self, client_id: str) -> list[Share]:
        ids = await self._ids(self.redis.zrevrange(CLIENT_SHARES_KEY.format(client_id), 0, -1))
        return await self.shares_by_ids(ids)

    async def shares_for_booking(self, booking_id: str) -> list[Share]:
        ids = await self._ids(self.redis.zrevrange(BOOKING_SHARES_KEY.format(booking_id), 0, -1))
        return await self.shares_by_ids(ids)

    async def share(self, doc: DocumentMeta, *, kind: ShareKind, client_id: str, booking_id: str,
                    now: int) -> tuple[str, str]:
        """('ok'|'exists'|'gone', share id). A booking share is pushed to the live room atomically."""
        share_id = new_id()
        body: dict[str, Any] = {"document_id": doc.id, "share_id": share_id, "kind": kind.value,
                                "owner_id": doc.owner_id, "client_id": client_id}
        push = ""
        if kind is ShareKind.BOOKING:
            body["booking_id"] = booking_id
            push = json.dumps({"type": "document.shared", "document": {
                "id": doc.id, "name": doc.name, "media_type": doc.media_type, "size": doc.size,
                "shared_at": now}}, ensure_ascii=False, separators=(",", ":"))
        event = Event("document.shared", body, time=self._now())
        keys = [DOC_KEY.format(doc.id), DOC_SHARES_KEY.format(doc.id), SHARE_KEY.format(share_id),
                CLIENT_SHARES_KEY.format(client_id), BOOKING_SHARES_KEY.format(booking_id or "-"),
                self.stream, ROOM_PUSH_CHANNEL.format(booking_id or "-")]
        args = [share_id, kind.value, client_id, booking_id, str(now), push, *lua_args(event)]
        result = await self._share(keys=keys, args=args)
        status = result[0].decode()
        return status, (result[1].decode() if len(result) > 1 else "")

    async def revoke(self, share: Share, *, owner_id: str, now: int) -> str:
        event = Event("document.revoked", {"document_id": share.document_id, "share_id": share.id,
                                           "kind": share.kind.value, "owner_id": owner_id,
                                           "client_id": share.client_id,
                                           **({"booking_id": share.booking_id} if share.booking_id else {})},
                      time=self._now())
        keys = [SHARE_KEY.format(share.id), CLIENT_SHARES_KEY.format(share.client_id),
                BOOKING_SHARES_KEY.format(share.booking_id or "-"), self.stream]
        result = await self._revoke(keys=keys, args=[str(now), share.id, *lua_args(event)])
        return result.decode() if isinstance(result, bytes) else str(result)

    async def delete(self, doc: DocumentMeta, *, now: int) -> bool:
        """Shred: the wrapped data key and the name go with the metadata; the audit log stays."""
        event = Event("document.deleted", {"document_id": doc.id, "owner_id": doc.owner_id}, time=self._now())
        keys = [DOC_KEY.format(doc.id), DOC_SHARES_KEY.format(doc.id), OWNER_DOCS_KEY.format(doc.owner_id),
                ALL_DOCS_KEY, self.stream]
        result = await self._delete(keys=keys, args=[str(now), doc.id, *lua_args(event)])
        return bool(result == b"ok")

    async def record_download(self, doc: DocumentMeta, *, user_id: str, role: str, at: int,
                              byte_range: tuple[int, int] | None) -> None:
        entry: dict[str, Any] = {"document_id": doc.id, "user_id": user_id, "role": role, "at": at,
                                 "range": list(byte_range) if byte_range else None}
        event = Event("document.downloaded", dict(entry), time=self._now())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(AUDIT_KEY.format(doc.id), json.dumps(entry, separators=(",", ":")))
            pipe.ltrim(AUDIT_KEY.format(doc.id), 0, AUDIT_MAX - 1)
            add_to(pipe, event, self.stream)
            await pipe.execute()

    async def audit(self, document_id: str, limit: int) -> list[dict[str, Any]]:
        raw: list[bytes] = await self.redis.lrange(AUDIT_KEY.format(document_id), 0, limit - 1)  # type: ignore[assignment]
        return [json.loads(r) for r in raw]

    async def all_ids(self) -> list[str]:
        return sorted(await self._ids(self.redis.smembers(ALL_DOCS_KEY)))

    async def rekey(self, document_id: str, old: Header, new: Header) -> str:
        event = Event("document.rekeyed", {"document_id": document_id,
                                           "from_key_id": old.wrapped_key.key_id,
                                           "to_key_id": new.wrapped_key.key_id}, time=self._now())
        result = await self._rekey(keys=[DOC_KEY.format(document_id), self.stream],
                                   args=[old.encode(), new.encode(), new.wrapped_key.key_id, *lua_args(event)])
        return result.decode() if isinstance(result, bytes) else str(result)
