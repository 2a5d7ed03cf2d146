"""The ledger in Redis: one Lua script call writes a batch of changes, each whole — its postings' entries, the
balances, the records it changes, the events it causes and the processed mark of the event it came from — or
not at all. Two scripts do it: `WRITE_LUA` writes a batch the consumer worked out (ledger.plan) if nothing it
was worked out from has moved; `APPLY_LUA` decides each change of a batch against what Redis holds (the
reference, and the way for a batch that could not be worked out or found something moved).

Redis layout (prefix `ledger` by default; amounts are integers in minor units):
  {p}:processed                 set: ids of the events applied (a second delivery changes nothing)
  {p}:balances:{CUR}            hash: account -> balance
  {p}:posting:{id}              string: the posting as JSON (at most one per id, never changed)
  {p}:postings                  list: posting ids in the order they were made
  {p}:entries:{CUR}:{account}   list: the account's entries as JSON (seq: the posting's place in
                                {p}:postings, posting, kind, amount, balance after, time, booking_id), oldest
                                first; kept for the accounts with a history (rules.has_history: practitioners',
                                clients' and referrers'), the others' history being the postings
  {p}:daily:{CUR}:{YYYY-MM-DD}  hash: account class (e.g. practitioner:available) -> the day's net change
  {p}:days:{CUR}                zset: local days (Africa/Algiers) with postings -> their ordinal
  {p}:booking:{id}              hash: the booking's money (see rules.BookingMoney), state, earned, rev; a free
                                reschedule's also carried_from and paid_booking (the booking first paid for)
  {p}:code:{CODE}               string: a discount code's kind (from code.created)
  {p}:practitioners:{CUR}       set: practitioners with an account in that currency
  {p}:complaint:{id}            hash: a complaint (written by the server's complaint routes; the ledger adds
                                `held` and `hold_posting` when it holds the money)
  {p}:complaints                zset: complaint id -> filed at
  {p}:payout:{id}               hash: payout_id, practitioner_id, amount, currency, sunday, date, status
  {p}:payouts:{sunday}          zset: payout ids of one payout week -> amount
  {p}:payout_run:{sunday}       string: the id of the payout.run event for that week (written once)
  {p}:refund:{id}               hash: refund_id, client_id, booking_id, complaint_id, amount, currency, reason,
                                status (owed|sending|sent|paid|failed), created_at, posting; the refund job and
                                the gateway's answers add batch, tries (the hand-overs: the attempt), sent_at,
                                file, answered_at, answer_reason
  {p}:refunds                   zset: every refund id -> made at (epoch s)
  {p}:refunds:due               zset: refunds to hand to the payment gateway -> made (or sent again) at
  {p}:refunds:failed            zset: refunds the gateway could not make, waiting for an admin -> answered at
  {p}:client:{id}:refunds       zset: a client's refunds -> made at
  {p}:refund_batch:{id}         list: the refund ids handed to the gateway together (one file), until done
  {p}:refund_sending            hash: the batch being handed over, the job handing it over and its lease's end
                                (a crash hands the same batch again, by whichever job takes it over)
  {p}:paydates                  hash: Sunday (ISO date) -> the payout date announced for it
  {p}:holiday_fixes             hash: estimated holiday date -> the date an admin confirmed or set
  {p}:failures                  hash: stream entry id -> times its handling failed
  {p}:dead                      stream: events that could not be applied, with the reason
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from .rules import HISTORY_PREFIXES, MAY_GO_NEGATIVE, MAY_GO_NEGATIVE_PREFIXES, Entry, account_class

PREFIX = "ledger"
MAX_ENTRIES_READ = 10_000


def _starts(prefixes: tuple[str, ...]) -> str:
    return " or ".join(f"string.sub(a, 1, {len(p)}) == '{p}'" for p in prefixes) or "false"


def _account_lua() -> str:
    """The rules' account classes in Lua: which may go negative, which keep their entries one by one."""
    exact = " or ".join(f"a == '{a}'" for a in sorted(MAY_GO_NEGATIVE)) or "false"
    return (f"local function may_go_negative(a) return {exact} or {_starts(MAY_GO_NEGATIVE_PREFIXES)} end\n"
            f"local function has_history(a) return {_starts(HISTORY_PREFIXES)} end\n")


# One call writes a batch of changes. KEYS: 1 processed set, 2 events stream, 3 dead-letter stream. ARGV: 1 the
# key prefix, 2 a flat JSON array (see LedgerStore.apply_many; flat because every table the script makes costs):
# the number of changes, the event ids and the accounts per currency to read up front, then each change's
# fields (see Change.encode). The changes are decided in order, each against the state the
# ones before it left (read from Redis once, then kept in the script: balances, records, postings made,
# events applied), and only then written, batched per key. A refused change writes nothing; the script as a
# whole is atomic, so each change is applied whole or not at all and no other client sees a half-written one.
# The result: one reply per change, {'ok', new postings}, {'already'} (its event was applied before) or
# {status, detail} (refused: stale, unbalanced, negative).
APPLY_LUA = _account_lua() + r"""
local A = cjson.decode(ARGV[2])
local P = ARGV[1] .. ':'
local results = {}
-- what the changes accepted so far left, over what Redis holds: per balances key, account -> balance,
-- the text Redis held for it (false: none), and whether this script moved it
local bal, raw, moved = {}, {}, {}
local function balances_of(bkey)
  local b = bal[bkey]
  if b == nil then b = {}; bal[bkey] = b; raw[bkey] = {}; moved[bkey] = {} end
  return b
end
local function balance(bkey, account)
  local b = balances_of(bkey)
  local v = b[account]
  if v == nil then
    local r = redis.call('HGET', bkey, account)
    raw[bkey][account] = r
    v = tonumber(r or '0')
    b[account] = v
  end
  return v
end
local rec = {}                       -- record key -> {field -> value}: the records' fields set so far
local posted, done, done_ids = {}, {}, {}
local function current(key, f)
  local b = bal[key]
  if b ~= nil and b[f] ~= nil then
    if moved[key][f] then return string.format('%d', b[f]) end
    return raw[key][f] or ''
  end
  local r = rec[key]
  if r ~= nil and r[f] ~= nil then return r[f] end
  return redis.call('HGET', key, f) or ''
end
-- the writes, gathered as the changes are accepted and made once every change is decided
local post_ids, entry_lists, daily, days = {}, {}, {}, {}
local strings, members, scores, events, dead = {}, {}, {}, {}, {}
local seq = redis.call('LLEN', P .. 'postings')
-- read up front, in a few commands: whether the events were applied, and the balances the postings move
local i = 2
local applied = {}
for j = i + 1, i + A[i], 1000 do
  local last = math.min(i + A[i], j + 999)
  local found = redis.call('SMISMEMBER', KEYS[1], unpack(A, j, last))
  for k = j, last do applied[A[k]] = found[k - j + 1] == 1 end
end
i = i + 1 + A[i]
local groups = A[i]
i = i + 1
for g = 1, groups do
  local bkey, count = P .. 'balances:' .. A[i], A[i + 1]
  local b, r = balances_of(bkey), raw[bkey]
  for j = i + 2, i + 1 + count, 1000 do
    local last = math.min(i + 1 + count, j + 999)
    local found = redis.call('HMGET', bkey, unpack(A, j, last))
    for k = j, last do
      if b[A[k]] == nil then
        r[A[k]] = found[k - j + 1]
        b[A[k]] = tonumber(found[k - j + 1] or '0')
      end
    end
  end
  i = i + 2 + count
end
-- whether any of the batch's posting ids was used before, in one command: if none was (the usual case), no
-- posting needs a look of its own
local taken = false
do
  local ids = {}
  local at = i
  for n = 1, A[1] do
    at = at + 2 + 3 * tonumber(A[at + 1])
    local np = tonumber(A[at])
    at = at + 1
    for p = 1, np do
      ids[#ids + 1] = P .. 'posting:' .. A[at]
      at = at + 9 + 3 * tonumber(A[at + 8])
    end
    local ns = tonumber(A[at])
    at = at + 1
    for s = 1, ns do at = at + 2 + tonumber(A[at + 1]) end
    for _, width in ipairs({2, 2, 3, 5}) do at = at + 1 + width * tonumber(A[at]) end
    at = at + 1 + tonumber(A[at])
  end
  for j = 1, #ids, 1000 do
    if redis.call('EXISTS', unpack(ids, j, math.min(#ids, j + 999))) > 0 then taken = true end
  end
end
-- each change's fields (see Change.encode): the event id, then counted lists
for n = 1, A[1] do
  local event = A[i]
  local status, detail = nil, nil
  if event ~= '' then
    local seen = done[event] or applied[event]
    if seen == nil then seen = redis.call('SISMEMBER', KEYS[1], event) == 1 end
    if seen then status = 'already' end
  end
  local at = i + 1
  local ng = tonumber(A[at])
  if status == nil then
    for g = at + 1, at + 3 * ng, 3 do
      if current(A[g], A[g + 1]) ~= A[g + 2] then status, detail = 'stale', A[g] .. ' ' .. A[g + 1] break end
    end
  end
  at = at + 1 + 3 * ng
  -- postings: id, kind, currency, time, day, ordinal, booking_id, json, entry count, entries (account,
  -- amount, class)
  local np = tonumber(A[at])
  at = at + 1
  local fresh, after = {}, {}
  for p = 1, np do
    local ne = tonumber(A[at + 8])
    if status == nil and not posted[A[at]] and not (taken and redis.call('EXISTS', P .. 'posting:' .. A[at]) == 1) then
      local bkey = P .. 'balances:' .. A[at + 2]
      local ta = after[bkey]
      if ta == nil then ta = {}; after[bkey] = ta end
      local sum = 0
      for e = at + 9, at + 6 + 3 * ne, 3 do
        local amount = tonumber(A[e + 1])
        sum = sum + amount
        local v = ta[A[e]]
        if v == nil then v = balance(bkey, A[e]) end
        ta[A[e]] = v + amount
      end
      if sum ~= 0 then status, detail = 'unbalanced', A[at] end
      fresh[#fresh + 1] = at
    end
    at = at + 9 + 3 * ne
  end
  if status == nil then
    for bkey, ta in pairs(after) do
      for account, v in pairs(ta) do
        if v < 0 and not may_go_negative(account) then status, detail = 'negative', account break end
      end
      if status ~= nil then break end
    end
  end
  if status == nil then
    for _, q in ipairs(fresh) do
      local id, cur, day = A[q], A[q + 2], A[q + 4]
      posted[id] = true
      seq = seq + 1
      post_ids[#post_ids + 1] = q
      local bkey = P .. 'balances:' .. cur
      local b, m = bal[bkey], moved[bkey]
      local dkey = P .. 'daily:' .. cur .. ':' .. day
      local dt = daily[dkey]
      if dt == nil then dt = {}; daily[dkey] = dt end
      local zkey = P .. 'days:' .. cur
      if days[zkey] == nil then days[zkey] = {} end
      days[zkey][day] = A[q + 5]
      local head = '{"seq":' .. seq .. ',"posting":' .. cjson.encode(id) .. ',"kind":' .. cjson.encode(A[q + 1])
      local tail = ',"time":' .. cjson.encode(A[q + 3]) .. ',"booking_id":' .. cjson.encode(A[q + 6]) .. '}'
      for e = q + 9, q + 6 + 3 * tonumber(A[q + 8]), 3 do
        local account, amount = A[e], tonumber(A[e + 1])
        local v = b[account] + amount
        b[account] = v
        m[account] = true
        if has_history(account) then
          local lkey = P .. 'entries:' .. cur .. ':' .. account
          local list = entry_lists[lkey]
          if list == nil then list = {}; entry_lists[lkey] = list end
          list[#list + 1] = head .. ',"amount":' .. string.format('%d', amount) .. ',"balance":' ..
            string.format('%d', v) .. tail
        end
        dt[A[e + 2]] = (dt[A[e + 2]] or 0) + amount
      end
    end
  end
  -- records: key, field-and-value count, fields and values
  local ns = tonumber(A[at])
  at = at + 1
  for s = 1, ns do
    local key, nf = A[at], tonumber(A[at + 1])
    if status == nil then
      local r = rec[key]
      if r == nil then r = {}; rec[key] = r end
      for f = at + 2, at + nf, 2 do r[A[f]] = A[f + 1] end
    end
    at = at + 2 + nf
  end
  -- strings (key, value), members (key, member), scores (key, score, member), events (5 fields), dead letter
  for _, spec in ipairs({{strings, 2}, {members, 2}, {scores, 3}, {events, 5}}) do
    local out, width = spec[1], spec[2]
    local count = tonumber(A[at])
    if status == nil then
      for f = at + 1, at + width * count, width do out[#out + 1] = f end
    end
    at = at + 1 + width * count
  end
  local nd = tonumber(A[at])
  if status == nil and nd > 0 then dead[#dead + 1] = at end
  i = at + 1 + nd
  if status ~= nil then
    results[n] = {status, detail}
  else
    if event ~= '' then done[event] = true; done_ids[#done_ids + 1] = event end
    results[n] = {'ok', tostring(#fresh)}
  end
end
-- every change is decided: now the writes (batched per key, in chunks an unpack can take)
local function chunked(cmd, key, items)
  for j = 1, #items, 1000 do redis.call(cmd, key, unpack(items, j, math.min(#items, j + 999))) end
end
local ids, kv = {}, {}
for k, q in ipairs(post_ids) do
  ids[k] = A[q]
  kv[#kv + 1] = P .. 'posting:' .. A[q]
  kv[#kv + 1] = A[q + 7]
end
for j = 1, #kv, 1000 do redis.call('MSET', unpack(kv, j, math.min(#kv, j + 999))) end
if #ids > 0 then chunked('RPUSH', P .. 'postings', ids) end
for bkey, m in pairs(moved) do
  local fv, b = {}, bal[bkey]
  for account in pairs(m) do fv[#fv + 1] = account; fv[#fv + 1] = string.format('%d', b[account]) end
  if #fv > 0 then chunked('HSET', bkey, fv) end
end
for lkey, list in pairs(entry_lists) do chunked('RPUSH', lkey, list) end
for dkey, dt in pairs(daily) do
  for class, amount in pairs(dt) do redis.call('HINCRBY', dkey, class, string.format('%d', amount)) end
end
for zkey, ds in pairs(days) do
  for day, ordinal in pairs(ds) do redis.call('ZADD', zkey, ordinal, day) end
end
for key, r in pairs(rec) do
  local fv = {}
  for f, v in pairs(r) do fv[#fv + 1] = f; fv[#fv + 1] = v end
  chunked('HSET', key, fv)
end
for _, f in ipairs(strings) do redis.call('SET', A[f], A[f + 1]) end
for _, f in ipairs(members) do redis.call('SADD', A[f], A[f + 1]) end
for _, f in ipairs(scores) do redis.call('ZADD', A[f], A[f + 1], A[f + 2]) end
for _, f in ipairs(events) do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000000', '*', 'id', A[f], 'type', A[f + 1], 'v', A[f + 2],
    'time', A[f + 3], 'body', A[f + 4])
end
for _, at in ipairs(dead) do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100000', '*', unpack(A, at + 1, at + tonumber(A[at])))
end
if #done_ids > 0 then chunked('SADD', KEYS[1], done_ids) end
return results
"""


# KEYS: 1 the processed set. ARGV: 1 a JSON array of the event ids, 2 a JSON array of hash keys (two arguments
# to encode, not one per id and key). One JSON array back: which events were applied (1 or 0 each), then each
# hash as an object, in the order given (one reply to decode, not one per value; an empty table comes out of
# cjson as {}, which is what an empty hash is).
READ_LUA = r"""
local events, keys = cjson.decode(ARGV[1]), cjson.decode(ARGV[2])
local out = {{}}
for j = 1, #events, 1000 do
  local found = redis.call('SMISMEMBER', KEYS[1], unpack(events, j, math.min(#events, j + 999)))
  for k = 1, #found do out[1][j + k - 1] = found[k] end
end
for i = 1, #keys do
  local flat, h = redis.call('HGETALL', keys[i]), {}
  for j = 1, #flat, 2 do h[flat[j]] = flat[j + 1] end
  out[i + 1] = h
end
return cjson.encode(out)
"""

# A batch worked out by the consumer (ledger.plan), written if nothing it was worked out from has moved. KEYS: 1
# the processed set, 2 the postings list, 3 the events stream, 4 the dead-letter stream. ARGV: 1 the plan, a
# flat JSON array (see ledger.plan.make): the checks (the events, none applied; the postings count; per key,
# fields and the text each held, "" for none; the postings, none made), then the writes, each list preceded by
# its length. Every check comes before any write: {'moved', what} means nothing was written.
WRITE_LUA = r"""
local A = cjson.decode(ARGV[1])
local function each(cmd, key, first, last)
  for j = first, last, 1000 do redis.call(cmd, key, unpack(A, j, math.min(last, j + 999))) end
end
local ne = A[1]
local events_at = 2
for j = events_at, events_at + ne - 1, 1000 do
  local found = redis.call('SMISMEMBER', KEYS[1], unpack(A, j, math.min(events_at + ne - 1, j + 999)))
  for k = 1, #found do if found[k] == 1 then return {'moved', A[j + k - 1]} end end
end
local i = events_at + ne
if redis.call('LLEN', KEYS[2]) ~= A[i] then return {'moved', 'postings'} end
i = i + 1
for g = 1, A[i] do
  local key, n = A[i + 1], A[i + 2]
  local fields = i + 3
  for j = 0, n - 1, 1000 do
    local found = redis.call('HMGET', key, unpack(A, fields + j, fields + math.min(n - 1, j + 999)))
    for k = 1, #found do
      if (found[k] or '') ~= A[fields + n + j + k - 1] then return {'moved', key .. ' ' .. A[fields + j + k - 1]} end
    end
  end
  i = i + 2 + 2 * n
end
i = i + 1
local np = A[i]
local postings_at = i + 1
do
  local keys = {}
  for j = 1, np do keys[j] = A[postings_at + 2 * (j - 1)] end
  for j = 1, np, 1000 do
    if redis.call('EXISTS', unpack(keys, j, math.min(np, j + 999))) > 0 then return {'moved', 'a posting id'} end
  end
end
-- nothing moved: the writes
for j = postings_at, postings_at + 2 * np - 1, 1000 do
  redis.call('MSET', unpack(A, j, math.min(postings_at + 2 * np - 1, j + 999)))
end
i = postings_at + 2 * np
each('RPUSH', KEYS[2], i + 1, i + A[i])
i = i + 1 + A[i]
for _, cmd in ipairs({'HSET', 'RPUSH'}) do  -- balances, then entry lists
  local groups = A[i]
  i = i + 1
  for g = 1, groups do
    each(cmd, A[i], i + 2, i + 1 + A[i + 1])
    i = i + 2 + A[i + 1]
  end
end
for j = i + 1, i + 3 * A[i], 3 do redis.call('HINCRBY', A[j], A[j + 1], A[j + 2]) end
i = i + 1 + 3 * A[i]
for j = i + 1, i + 3 * A[i], 3 do redis.call('ZADD', A[j], A[j + 1], A[j + 2]) end
i = i + 1 + 3 * A[i]
local groups = A[i]
i = i + 1
for g = 1, groups do
  each('HSET', A[i], i + 2, i + 1 + A[i + 1])
  i = i + 2 + A[i + 1]
end
for j = i + 1, i + 2 * A[i], 2 do redis.call('SET', A[j], A[j + 1]) end
i = i + 1 + 2 * A[i]
groups = A[i]
i = i + 1
for g = 1, groups do
  each('SADD', A[i], i + 2, i + 1 + A[i + 1])
  i = i + 2 + A[i + 1]
end
for j = i + 1, i + 3 * A[i], 3 do redis.call('ZADD', A[j], A[j + 1], A[j + 2]) end
i = i + 1 + 3 * A[i]
for j = i + 1, i + 5 * A[i], 5 do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000000', '*', 'id', A[j], 'type', A[j + 1], 'v', A[j + 2],
    'time', A[j + 3], 'body', A[j + 4])
end
i = i + 1 + 5 * A[i]
local nd = A[i]
i = i + 1
for d = 1, nd do
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', unpack(A, i + 1, i + A[i]))
  i = i + 1 + A[i]
end
each('SADD', KEYS[1], events_at, events_at + ne - 1)
return {'ok'}
"""

_JSON = msgspec.json.Encoder()
_READ = msgspec.json.Decoder()


class _Stored(msgspec.Struct):
    """A posting as it is stored: its fields, and each entry as (account, amount, account class)."""

    id: str
    kind: str
    currency: str
    time: str
    day: str
    ordinal: int
    booking_id: str
    ref: str
    corrects: str
    entries: list[tuple[str, int, str]]


class Posting(msgspec.Struct, frozen=True):
    """A balanced set of entries in one currency, made at most once under its id. `corrects` names the
    posting a correction undoes or amends (entries are never edited or deleted)."""

    id: str
    kind: str
    currency: str
    time: str  # ISO 8601 UTC
    day: str  # the local (Africa/Algiers) date it counts in
    ordinal: int  # that day's proleptic ordinal
    entries: tuple[Entry, ...]
    booking_id: str = ""
    ref: str = ""  # the event it came from
    corrects: str = ""

    def json(self) -> str:
        """The JSON it is stored as (made here: exact integers): its fields, and each entry as (account,
        amount, account class)."""
        return _JSON.encode(_Stored(self.id, self.kind, self.currency, self.time, self.day, self.ordinal,
                                    self.booking_id, self.ref, self.corrects,
                                    [(e.account, e.amount, account_class(e.account)) for e in self.entries])).decode()

    def encode(self) -> list[str | int]:
        """The posting's fields for the script, the JSON it is stored as among them."""
        out: list[str | int] = [self.id, self.kind, self.currency, self.time, self.day, self.ordinal, self.booking_id,
                                self.json(), len(self.entries)]
        for e in self.entries:
            out += (e.account, e.amount, account_class(e.account))
        return out


class Change(msgspec.Struct):
    """Everything one script writes. `guards` are (key, field, expected value, "" for absent): the
    change is refused as stale if one differs (someone changed what it was decided from)."""

    event: str = ""
    postings: list[Posting] = msgspec.field(default_factory=list)
    guards: list[tuple[str, str, str]] = msgspec.field(default_factory=list)
    sets: list[tuple[str, dict[str, str]]] = msgspec.field(default_factory=list)
    strings: list[tuple[str, str]] = msgspec.field(default_factory=list)
    members: list[tuple[str, str]] = msgspec.field(default_factory=list)
    scores: list[tuple[str, float, str]] = msgspec.field(default_factory=list)
    events: list[list[str]] = msgspec.field(default_factory=list)  # stream fields: id, type, v, time, body
    dead: list[str] | None = None  # dead-letter stream fields

    def encode(self) -> list[str | int | float]:
        """The change as the script reads it: the event id, then each list preceded by its length."""
        out: list[str | int | float] = [self.event, len(self.guards)]
        for g in self.guards:
            out += g
        out.append(len(self.postings))
        for p in self.postings:
            out += p.encode()
        sets = [(k, v) for k, v in self.sets if v]
        out.append(len(sets))
        for k, v in sets:
            out += (k, 2 * len(v))
            for kv in v.items():
                out += kv
        for pairs in (self.strings, self.members):
            out.append(len(pairs))
            for pair in pairs:
                out += pair
        out.append(len(self.scores))
        for score in self.scores:
            out += score
        out.append(len(self.events))
        for fields in self.events:
            if len(fields) != 5:
                raise ValueError("an event is written with 5 fields: id, type, v, time, body")
            out += fields
        dead = self.dead or []
        out.append(len(dead))
        out += dead
        return out


class Refused(Exception):
    """The script refused a change (stale guard, a forbidden negative, unbalanced): nothing was written."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class LedgerStore:
    def __init__(self, redis: aioredis.Redis, *, prefix: str = PREFIX, events_stream: str = "ss:events") -> None:
        self.redis = redis
        self.prefix = prefix
        self.events_stream = events_stream
        self._apply = redis.register_script(APPLY_LUA)
        self._read = redis.register_script(READ_LUA)
        self._write_plan = redis.register_script(WRITE_LUA)

    # --- keys ---

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def processed_key(self) -> str:
        return self.key("processed")

    @property
    def dead_key(self) -> str:
        return self.key("dead")

    def booking_key(self, bid: str) -> str:
        return f"{self.prefix}:booking:{bid}"

    def complaint_key(self, cid: str) -> str:
        return self.key("complaint", cid)

    def payout_key(self, payout_id: str) -> str:
        return self.key("payout", payout_id)

    def refund_key(self, refund_id: str) -> str:
        return self.key("refund", refund_id)

    def balances_key(self, currency: str) -> str:
        return self.key("balances", currency)

    # --- writes ---

    @staticmethod
    def _result(raw: Sequence[Any]) -> int | Refused:
        status = _s(raw[0])
        if status == "already":
            return 0
        if status != "ok":
            return Refused(status, _s(raw[1]) if len(raw) > 1 else "")
        return int(_s(raw[1]))

    async def apply(self, change: Change) -> int:
        """Write the change whole; the number of new postings (0 if its event was applied already)."""
        result = (await self.apply_many([change]))[0]
        if isinstance(result, Refused):
            raise result
        return result

    async def apply_many(self, changes: Sequence[Change]) -> list[int | Refused]:
        """The changes in order, in one script call: each decided against what the ones before it left, each
        written whole or refused (and then nothing of it written); each one's result or refusal."""
        if not changes:
            return []
        events = [c.event for c in changes if c.event]
        accounts: dict[str, dict[str, None]] = {}
        for change in changes:
            for p in change.postings:
                accounts.setdefault(p.currency, {}).update(dict.fromkeys(e.account for e in p.entries))
        fields: list[str | int | float] = [len(changes), len(events), *events, len(accounts)]
        for currency, names in accounts.items():
            fields += (currency, len(names), *names)
        for change in changes:
            fields += change.encode()
        raws: Any = await self._apply(keys=[self.processed_key, self.events_stream, self.dead_key],
                                      args=[self.prefix, _JSON.encode(fields)])
        return [self._result(raw) for raw in raws]

    async def write(self, plan: list[Any]) -> str | None:
        """Write a batch worked out by the consumer (`ledger.plan`) if nothing it was worked out from has moved:
        None if written, else what moved (and nothing was written)."""
        raw: Any = await self._write_plan(
            keys=[self.processed_key, self.key("postings"), self.events_stream, self.dead_key],
            args=[_JSON.encode(plan)])
        return None if _s(raw[0]) == "ok" else _s(raw[1])

    # --- reads ---

    async def balances_read(self, wanted: Sequence[tuple[str, str]], *,
                            count: bool) -> tuple[dict[tuple[str, str], tuple[int, str]], int | None]:
        """These (currency, account) balances with their text ("" for none), and the number of postings if
        `count`, in one round trip."""
        by_currency: dict[str, list[str]] = {}
        for currency, account in wanted:
            by_currency.setdefault(currency, []).append(account)
        async with self.redis.pipeline(transaction=False) as pipe:
            for currency, names in by_currency.items():
                pipe.hmget(self.balances_key(currency), names)
            if count:
                pipe.llen(self.key("postings"))
            replies = await pipe.execute()
        found: dict[tuple[str, str], tuple[int, str]] = {}
        for (currency, names), values in zip(by_currency.items(), replies, strict=False):
            for name, raw in zip(names, values, strict=True):
                found[(currency, name)] = (0, "") if raw is None else (int(raw), _s(raw))
        return found, (int(replies[-1]) if count else None)


    async def balances(self, currency: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self.balances_key(currency))
        return {_s(k): int(_s(v)) for k, v in raw.items()}

    async def balance(self, currency: str, account: str) -> tuple[int, str]:
        """The balance and its raw stored text ("" if the account never moved), for a guard."""
        raw = await self.redis.hget(self.balances_key(currency), account)
        return (0, "") if raw is None else (int(_s(raw)), _s(raw))

    async def processed(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these events the ledger has applied already."""
        if not event_ids:
            return set()
        found = await self.redis.smismember(self.processed_key, list(event_ids))
        return {e for e, hit in zip(event_ids, found, strict=True) if hit}

    async def read(self, event_ids: Sequence[str], keys: Sequence[str]) -> tuple[set[str], list[dict[str, str]]]:
        """Which of these events the ledger applied already, and these whole hashes, in one command (a batch's
        reads: one reply to parse, not one per key)."""
        if not keys and not event_ids:
            return set(), []
        raws: Any = _READ.decode(await self._read(keys=[self.processed_key],
                                                  args=[_JSON.encode(list(event_ids)), _JSON.encode(list(keys))]))
        applied = {e for e, hit in zip(event_ids, raws[0] or (), strict=True) if hit}
        return applied, raws[1:]

    async def hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        return (await self.read([], keys))[1]

    async def hash(self, key: str) -> dict[str, str]:
        return (await self.hashes([key]))[0]

    async def entries(self, currency: str, account: str) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(self.key("entries", currency, account), -MAX_ENTRIES_READ, -1)
        return [json.loads(r) for r in raw]

    async def postings(self, start: int = 0, end: int = -1) -> list[dict[str, Any]]:
        ids = await self.redis.lrange(self.key("postings"), start, end)
        if not ids:
            return []
        raw = await self.redis.mget([self.key("posting", _s(i)) for i in ids])
        return [json.loads(r) for r in raw if r is not None]

    async def practitioners(self, currency: str) -> list[str]:
        return sorted(_s(m) for m in await self.redis.smembers(self.key("practitioners", currency)))

    async def code_kind(self, code: str) -> str | None:
        raw = await self.redis.get(self.key("code", code))
        return None if raw is None else _s(raw)

    async def daily(self, currency: str) -> list[tuple[str, dict[str, int]]]:
        """Every local day with postings, oldest first, with its net change per account class."""
        days = [_s(d) for d in await self.redis.zrange(self.key("days", currency), 0, -1)]
        found = await self.hashes([self.key("daily", currency, d) for d in days])
        return [(d, {k: int(v) for k, v in h.items()}) for d, h in zip(days, found, strict=True)]

    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        raw: Any = await self.redis.xrange(self.dead_key, count=count)
        return [{_s(k): _s(v) for k, v in fields.items()} for _id, fields in raw]

    async def announced_paydates(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.key("paydates"))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def holiday_fixes(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.key("holiday_fixes"))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def refunds(self, *, client_id: str | None = None, start: int = 0, count: int = 100) -> list[dict[str, str]]:
        """Refunds, the newest first: every client's, or one client's."""
        key = self.key("client", client_id, "refunds") if client_id else self.key("refunds")
        ids = [_s(i) for i in await self.redis.zrevrange(key, start, start + count - 1)]
        return await self.hashes([self.refund_key(i) for i in ids])

    async def payouts_of(self, sunday: str) -> list[dict[str, str]]:
        ids = [_s(i) for i in await self.redis.zrange(self.key("payouts", sunday), 0, -1)]
        return await self.hashes([self.payout_key(i) for i in ids])


def fields_of(mapping: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in mapping.items()}
