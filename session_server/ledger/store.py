"""The server's writes to the ledger's records: complaints (the client's text encrypted at rest), the
bank's answers to payouts, and the payment gateway's answers to refunds (and an admin sending one again).
Each record change and its event in one Lua script; the money itself moves only in the ledger's consumer,
which applies these events in the stream's order (see ledger/).

Keys (beside the ledger's own, ledger/store.py, where the refunds' are listed):
  {p}:complaint:{id}            hash: complaint_id, booking_id, client_id, practitioner_id, reason, status
                                (open|upheld|rejected), filed_at, has_text, text (AES-256-GCM, base64),
                                key_id, wrapped_key (base64), shared, resolved_at, resolved_by, refund; the
                                consumer adds held, currency, hold_posting, resolution_posting
  {p}:booking:{id}:complaint    string: the complaint of a booking (one per booking)
  {p}:complaints                zset: complaint id -> filed at (epoch s)
  {p}:practitioner:{id}:complaints  zset: the practitioner's complaints -> filed at
  {p}:client:{id}:complaints    zset: the client's complaints -> filed at
  {p}:complaints:client_indexed  string: a filing time before which every complaint is in its client's index
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from files.keyring import KeyRing, WrappedKey
from ledger.store import LedgerStore

from .errors import script_refusal

NONCE_BYTES = 12

# KEYS: 1 complaint hash, 2 booking's complaint marker, 3 complaints zset, 4 practitioner's complaints zset,
# 5 client's complaints zset, 6 stream. ARGV: 1 filed at, 2-6 event, 7.. field pairs.
FILE_LUA = """
if redis.call('SET', KEYS[2], ARGV[2], 'NX') == false then return {'exists'} end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local id = redis.call('HGET', KEYS[1], 'complaint_id')
for k = 3, 5 do redis.call('ZADD', KEYS[k], ARGV[1], id) end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[2], 'type', ARGV[3], 'v', ARGV[4],
  'time', ARGV[5], 'body', ARGV[6])
return {'ok'}
"""

INDEX_MARGIN_S = 300  # the complaints' index reads again those filed this long before the last one it saw

# KEYS: 1 complaints zset, 2 the index's cursor. ARGV: 1 key prefix, 2 offset, 3 count. The clients' index of the
# complaints filed since the cursor (a filing time, in seconds; those of that second again): each goes into its
# client's zset (ZADD: done twice, the same). A complaint filed by a process from before the index (during a
# rolling deploy) is indexed so. The number read and the last one's filing time.
INDEX_CLIENTS_LUA = """
local since = redis.call('GET', KEYS[2]) or '-inf'
local found = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', tonumber(ARGV[2]),
  tonumber(ARGV[3]))
local P = ARGV[1] .. ':'
for i = 1, #found, 2 do
  local client = redis.call('HGET', P .. 'complaint:' .. found[i], 'client_id')
  if client then redis.call('ZADD', P .. 'client:' .. client .. ':complaints', found[i + 1], found[i]) end
end
return {#found / 2, found[#found] or ''}
"""

# KEYS: 1 complaint hash, 2 stream. ARGV: 1 decision, 2 refund ('' all held), 3 by, 4 at, 5-9 event (its body
# is completed here with the refund decided).
RESOLVE_LUA = """
local c = redis.call('HMGET', KEYS[1], 'status', 'held')
if not c[1] then return {'not_found'} end
if c[1] ~= 'open' then return {'resolved'} end
if not c[2] then return {'hold_pending'} end
local refund = 0
if ARGV[1] == 'upheld' then
  refund = tonumber(c[2])
  if ARGV[2] ~= '' then
    if tonumber(ARGV[2]) > tonumber(c[2]) then return {'too_large'} end
    refund = tonumber(ARGV[2])
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'resolved_by', ARGV[3], 'resolved_at', ARGV[4],
  'refund', string.format('%d', refund))
local body = cjson.decode(ARGV[9])
body['refund_minor'] = refund
body['held'] = tonumber(c[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[5], 'type', ARGV[6], 'v', ARGV[7],
  'time', ARGV[8], 'body', cjson.encode(body))
return {'ok', string.format('%d', refund), c[2]}
"""

# KEYS: 1 complaint hash, 2 stream. ARGV: 1-5 event.
SHARE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
if redis.call('HGET', KEYS[1], 'shared') == '1' then return {'ok', '0'} end
redis.call('HSET', KEYS[1], 'shared', '1')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[1], 'type', ARGV[2], 'v', ARGV[3],
  'time', ARGV[4], 'body', ARGV[5])
return {'ok', '1'}
"""

# KEYS: 1 payout hash, 2 stream. ARGV: 1 status (paid|failed), 2 reason, 3 at, 4-8 event.
ANSWER_LUA = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return {'no_payout'} end
if s ~= 'in_transit' then return {'answered'} end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'answer_reason', ARGV[2], 'answered_at', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[4], 'type', ARGV[5], 'v', ARGV[6],
  'time', ARGV[7], 'body', ARGV[8])
return {'ok'}
"""


# KEYS: 1 refund hash, 2 stream, 3 failed zset. ARGV: 1 status (paid|failed), 2 reason, 3 at, 4 the attempt
# answered, 5-9 event, 10 now (epoch s). The gateway answers a hand-over of a refund (sending: a crash stopped the
# job just before it marked the batch sent), once: an answer for an earlier hand-over than the latest, or for
# one not made, is refused. A failed one waits for an admin among the failed.
ANSWER_REFUND_LUA = """
local r = redis.call('HMGET', KEYS[1], 'status', 'tries')
local s = r[1]
if not s then return {'no_refund'} end
local tries, attempt = tonumber(r[2] or '0'), tonumber(ARGV[4])
if attempt > tries then return {'refund_not_sent'} end
if attempt < tries then return {'refund_attempt_stale'} end
if s ~= 'sent' and s ~= 'sending' then return {'refund_answered'} end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'answer_reason', ARGV[2], 'answered_at', ARGV[3])
if ARGV[1] == 'failed' then redis.call('ZADD', KEYS[3], ARGV[10], redis.call('HGET', KEYS[1], 'refund_id')) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[5], 'type', ARGV[6], 'v', ARGV[7],
  'time', ARGV[8], 'body', ARGV[9])
return {'ok'}
"""

# KEYS: 1 refund hash, 2 due zset, 3 stream, 4 failed zset. ARGV: 1 refund id, 2 now (epoch s), 3 by, 4-8 event. A
# refund the gateway could not make is due again: the refund job hands it over in its next batch.
RETRY_REFUND_LUA = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return {'no_refund'} end
if s ~= 'failed' then return {'refund_not_failed'} end
redis.call('HSET', KEYS[1], 'status', 'owed', 'retried_by', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[4], 'type', ARGV[5], 'v', ARGV[6],
  'time', ARGV[7], 'body', ARGV[8])
return {'ok'}
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class ComplaintText:
    """A complaint's free text at rest: AES-256-GCM under a data key of its own, wrapped by the key ring;
    the complaint id is bound into both, so a text cannot be moved to another complaint."""

    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring

    def seal(self, complaint_id: str, text: str) -> dict[str, str]:
        data_key = KeyRing.new_data_key()
        wrapped = self.keyring.wrap(data_key, b"complaint-key:" + complaint_id.encode())
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + AESGCM(data_key).encrypt(nonce, text.encode(), b"complaint:" + complaint_id.encode())
        return {"text": base64.b64encode(blob).decode(), "key_id": wrapped.key_id,
                "wrapped_key": base64.b64encode(wrapped.blob).decode()}

    def open(self, complaint_id: str, record: dict[str, str]) -> str | None:
        if not record.get("text"):
            return None
        data_key = self.keyring.unwrap(WrappedKey(record["key_id"], base64.b64decode(record["wrapped_key"])),
                                       b"complaint-key:" + complaint_id.encode())
        blob = base64.b64decode(record["text"])
        try:
            plain = AESGCM(data_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                             b"complaint:" + complaint_id.encode())
        except InvalidTag:
            return None
        return plain.decode()


class ComplaintStore:
    def __init__(self, ledger: LedgerStore) -> None:
        self.ledger = ledger
        redis = ledger.redis
        self._file = redis.register_script(FILE_LUA)
        self._resolve = redis.register_script(RESOLVE_LUA)
        self._share = redis.register_script(SHARE_LUA)
        self._answer = redis.register_script(ANSWER_LUA)
        self._answer_refund = redis.register_script(ANSWER_REFUND_LUA)
        self._retry_refund = redis.register_script(RETRY_REFUND_LUA)
        self._index_clients = redis.register_script(INDEX_CLIENTS_LUA)

    @staticmethod
    def _check(raw: Sequence[Any]) -> list[str]:
        items = [_s(x) for x in raw]
        if items[0] != "ok":
            raise script_refusal(items[0])
        return items[1:]

    async def file(self, record: dict[str, str], practitioner_id: str, filed_at: int, event: list[str]) -> None:
        cid, bid = record["complaint_id"], record["booking_id"]
        pairs = [x for kv in record.items() for x in kv]
        self._check(await self._file(
            keys=[self.ledger.complaint_key(cid), self.ledger.key("booking", bid, "complaint"),
                  self.ledger.key("complaints"), self.ledger.key("practitioner", practitioner_id, "complaints"),
                  self.ledger.key("client", record["client_id"], "complaints"), self.ledger.events_stream],
            args=[filed_at, *event, *pairs]))

    async def index_clients(self, page: int = 1000) -> int:
        """Put the complaints filed since the last call into their clients' index (all of them the first time,
        those filed before the index existed included); the number read."""
        cursor = self.ledger.key("complaints", "client_indexed")
        offset, last = 0, ""
        while True:
            read, at = await self._index_clients(keys=[self.ledger.key("complaints"), cursor],
                                                 args=[self.ledger.prefix, offset, page])
            offset += int(read)
            last = _s(at) or last
            if int(read) < page:
                break
        if last:
            # from a while before the last one seen, next time: a complaint whose filing time is earlier than one
            # indexed already but that lands later (a slow request, another process's clock) is not missed
            await self.ledger.redis.set(cursor, str(float(last) - INDEX_MARGIN_S))
        return offset

    async def resolve(self, cid: str, decision: str, refund: int | None, by: str, at: str,
                      event: list[str]) -> tuple[int, int]:
        """The refund made and the amount that was held."""
        refund_s, held = self._check(await self._resolve(
            keys=[self.ledger.complaint_key(cid), self.ledger.events_stream],
            args=[decision, "" if refund is None else str(refund), by, at, *event]))
        return int(refund_s), int(held)

    async def share(self, cid: str, event: list[str]) -> bool:
        return self._check(await self._share(keys=[self.ledger.complaint_key(cid), self.ledger.events_stream],
                                             args=event))[0] == "1"

    async def answer(self, payout_id: str, status: str, reason: str, at: str, event: list[str]) -> None:
        self._check(await self._answer(keys=[self.ledger.payout_key(payout_id), self.ledger.events_stream],
                                       args=[status, reason, at, *event]))

    async def answer_refund(self, refund_id: str, status: str, reason: str, at: str, event: list[str],
                            attempt: int, now: int) -> None:
        self._check(await self._answer_refund(
            keys=[self.ledger.refund_key(refund_id), self.ledger.events_stream, self.ledger.key("refunds", "failed")],
            args=[status, reason, at, attempt, *event, now]))

    async def retry_refund(self, refund_id: str, now: int, by: str, event: list[str]) -> None:
        self._check(await self._retry_refund(
            keys=[self.ledger.refund_key(refund_id), self.ledger.key("refunds", "due"), self.ledger.events_stream,
                  self.ledger.key("refunds", "failed")],
            args=[refund_id, now, by, *event]))

    async def complaint_ids(self, practitioner_id: str | None, start: int, count: int, *,
                            oldest_first: bool = False, client_id: str | None = None) -> list[str]:
        """Complaint ids, the newest first (or the oldest), from the `start`-th on (at most `count`): every
        complaint, a practitioner's or a client's."""
        key = (self.ledger.key("practitioner", practitioner_id, "complaints") if practitioner_id
               else self.ledger.key("client", client_id, "complaints") if client_id
               else self.ledger.key("complaints"))
        read = self.ledger.redis.zrange if oldest_first else self.ledger.redis.zrevrange
        return [_s(x) for x in await read(key, start, start + count - 1)]
