"""Refunds: what the ledger owes a client goes back through the payment gateway.

The consumer makes a refund in the same change as the posting that owes it (a cancellation, a no-show,
an upheld complaint): its record, status `owed`, one per posting, against the booking the client paid
for. The money stays in the client's `refund_payable` until the gateway says it made the refund
(`refund.paid`: the consumer moves it to `refunded`); a refund the gateway could not make stays owed,
and an admin sends it again.

The refund job hands what is due to the gateway in batches: it claims the due refunds as one batch (status
`sending`, in one script), has the exporter write the batch (a CSV refund file by default, named after the
batch), then marks them `sent` with a `refund.sent` event each. A crash between the two
hands the same batch over again (only its refunds still waiting), never a refund in two batches at once;
each hand-over is the refund's id and its attempt, which the gateway's answer names.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .exports import format_major, write_whole
from .processor import event_fields, stable_id
from .store import LedgerStore

BATCH_LIMIT = 1000  # refunds handed over in one file at most
LEASE_MS = 15_000  # a batch being handed over is its job's for this long (writing a file takes far less)

# KEYS: 1 due zset, 2 the batch being handed over (hash: batch, owner, until). ARGV: 1 key prefix, 2 a new batch id,
# 3 the limit, 4 this job's id, 5 the lease (ms). The batch to hand over: one left open by this job (its last try
# failed: the lease is not made longer, so that a job that keeps failing lets another take the batch), or by
# another job whose lease ran out (it died, or keeps failing), else a new batch of the due refunds (each
# `sending`, its attempt counted); false if there is none, or if another job is handing one over now.
CLAIM_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open = redis.call('HMGET', KEYS[2], 'batch', 'owner', 'until')
if open[1] then
  if open[2] == ARGV[4] then return open[1] end
  if now < tonumber(open[3]) then return false end
  redis.call('HSET', KEYS[2], 'owner', ARGV[4], 'until', now + tonumber(ARGV[5]))
  return open[1]
end
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
if #ids == 0 then return false end
local P = ARGV[1] .. ':'
for _, id in ipairs(ids) do
  redis.call('HSET', P .. 'refund:' .. id, 'status', 'sending', 'batch', ARGV[2])
  redis.call('HINCRBY', P .. 'refund:' .. id, 'tries', 1)
  redis.call('RPUSH', P .. 'refund_batch:' .. ARGV[2], id)
end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('HSET', KEYS[2], 'batch', ARGV[2], 'owner', ARGV[4], 'until', now + tonumber(ARGV[5]))
return ARGV[2]
"""

# KEYS: 1 the batch being handed over, 2 events stream. ARGV: 1 key prefix, 2 batch id, 3 sent at, 4 the file,
# 5 this job's id, then per refund its id and its refund.sent event (5 fields). Marks the batch's refunds still
# `sending` in it as sent, and closes the batch (if it is still this job's).
SENT_LUA = """
local open = redis.call('HMGET', KEYS[1], 'batch', 'owner')
if open[1] ~= ARGV[2] or open[2] ~= ARGV[5] then return 0 end
local P = ARGV[1] .. ':'
local n = 0
for i = 6, #ARGV, 6 do
  local key = P .. 'refund:' .. ARGV[i]
  local r = redis.call('HMGET', key, 'status', 'batch')
  if r[1] == 'sending' and r[2] == ARGV[2] then
    redis.call('HSET', key, 'status', 'sent', 'sent_at', ARGV[3], 'file', ARGV[4])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[i + 1], 'type', ARGV[i + 2],
      'v', ARGV[i + 3], 'time', ARGV[i + 4], 'body', ARGV[i + 5])
    n = n + 1
  end
end
redis.call('DEL', KEYS[1], P .. 'refund_batch:' .. ARGV[2])
return n
"""


class RefundExporter(Protocol):
    """Hands a batch of refunds to the payment gateway. A batch handed over again after a crash has the same
    name, and holds its refunds still waiting (those the gateway answered meanwhile are left out)."""

    def export(self, batch: str, refunds: Sequence[Mapping[str, str]]) -> str:
        """Hand the refunds over; a reference to what was handed (a file name)."""
        ...


class CsvRefundExporter:
    """A CSV refund file per batch, for the gateway's merchant portal: one line per refund, against the
    booking whose payment it returns (the gateway's reference of that payment). The refund's id and its
    attempt name one hand-over; nothing says who the client is or why the money goes back (a cancellation,
    a no-show, a complaint), which the gateway has no need to know."""

    HEADER = ("refund_id", "attempt", "booking_id", "amount_minor", "amount", "currency")

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, batch: str) -> Path:
        return self.directory / f"refunds-{batch}.csv"

    def render(self, refunds: Sequence[Mapping[str, str]]) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.HEADER)
        for r in sorted(refunds, key=lambda r: (r["created_at"], r["refund_id"])):
            writer.writerow((r["refund_id"], r["tries"], r["booking_id"], r["amount"],
                             format_major(int(r["amount"])), r["currency"]))
        return out.getvalue()

    def export(self, batch: str, refunds: Sequence[Mapping[str, str]]) -> str:
        return write_whole(self.path(batch), self.render(refunds))


def batch_id(now: float) -> str:
    """A batch's id: when it was made (UTC, readable in a file name) and a random part."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


class RefundJob:
    """Runs in every process: hands the due refunds to the gateway. `step(now)` may run in several processes
    at once: one batch is handed over at a time, by one of them (another takes it over only once its lease
    has run out: the one handing it over died, or keeps failing)."""

    def __init__(self, store: LedgerStore, exporter: RefundExporter, *, lease_ms: int = LEASE_MS) -> None:
        self.store = store
        self.exporter = exporter
        self.lease_ms = lease_ms
        # this job's, in this process's run: a batch a dead run left is taken over once its lease has run out,
        # by whichever job comes first (a restarted process's too), never by two at once
        self.id = uuid.uuid4().hex
        self._claim = store.redis.register_script(CLAIM_LUA)
        self._sent = store.redis.register_script(SENT_LUA)

    @property
    def sending_key(self) -> str:
        return self.store.key("refund_sending")

    async def waiting(self) -> tuple[int, int]:
        """How many refunds wait: to be handed to the gateway (due), and for an admin (the gateway could not
        make them)."""
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.store.key("refunds", "due"))
            pipe.zcard(self.store.key("refunds", "failed"))
            due, failed = await pipe.execute()
        return int(due), int(failed)

    async def step(self, now: float) -> list[str]:
        """Hand over the due refunds (a batch left by a crash first); the ids of the refunds marked sent."""
        raw: Any = await self._claim(keys=[self.store.key("refunds", "due"), self.sending_key],
                                     args=[self.store.prefix, batch_id(now), BATCH_LIMIT, self.id, self.lease_ms])
        if not raw:
            return []
        batch = raw.decode() if isinstance(raw, bytes) else str(raw)
        ids = [i.decode() if isinstance(i, bytes) else str(i)
               for i in await self.store.redis.lrange(self.store.key("refund_batch", batch), 0, -1)]
        # only those still waiting in this batch: one answered meanwhile (a batch handed over again after a
        # crash), or sent again into a later batch, is not handed over twice
        refunds = [r for r in await self.store.hashes([self.store.refund_key(i) for i in ids])
                   if r.get("status") == "sending" and r.get("batch") == batch]
        # (a file written and synced to disk: not on the event loop)
        file = await asyncio.to_thread(self.exporter.export, batch, refunds) if refunds else ""
        at = datetime.fromtimestamp(now, UTC)
        args: list[Any] = [self.store.prefix, batch, at.isoformat().replace("+00:00", "Z"), file, self.id]
        for r in refunds:
            args += [r["refund_id"], *event_fields("refund.sent", {
                "refund_id": r["refund_id"], "client_id": r["client_id"], "booking_id": r["booking_id"],
                "amount": int(r["amount"]), "currency": r["currency"], "batch": batch, "attempt": int(r["tries"])},
                at, stable_id(r["refund_id"], "sent", batch))]
        marked = await self._sent(keys=[self.sending_key, self.store.events_stream], args=args)
        return [r["refund_id"] for r in refunds] if marked else []
