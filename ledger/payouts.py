"""Sunday payouts: when a payout week's date comes, one `payout.run` event is written (once, whatever the
number of processes); the ledger's consumer turns it into one payout per practitioner (posting id
`payout:{practitioner}:{sunday}`, so a crash and a second delivery never pay twice), and the exporter
hands the week's payouts to the bank as a transfer file. Payout dates, once announced, stay as they are
until an admin moves them (with an event saying so).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from . import paydates
from .exports import format_major, write_whole
from .intake import utc_text
from .processor import event_fields, stable_id
from .store import LedgerStore

# KEYS: 1 run marker, 2 events stream. ARGV: 1-5 the payout.run event's fields.
RUN_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[1], 'type', ARGV[2], 'v', ARGV[3],
  'time', ARGV[4], 'body', ARGV[5])
return 1
"""

# KEYS: 1 announced dates hash, 2 events stream. ARGV: 1 Sunday, 2 date, 3-7 the event's fields.
ANNOUNCE_LUA = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[3], 'type', ARGV[4], 'v', ARGV[5],
  'time', ARGV[6], 'body', ARGV[7])
return 1
"""

# KEYS: 1 fixes hash, 2 announced dates hash, 3 events stream. ARGV: 1 estimated date, 2 actual date,
# 3 the number n of announced dates to move, then n pairs (Sunday, new date), then events (5 fields each).
CORRECT_LUA = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local n = tonumber(ARGV[3])
for i = 0, n - 1 do redis.call('HSET', KEYS[2], ARGV[4 + 2 * i], ARGV[5 + 2 * i]) end
for j = 4 + 2 * n, #ARGV, 5 do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[j], 'type', ARGV[j + 1], 'v', ARGV[j + 2],
    'time', ARGV[j + 3], 'body', ARGV[j + 4])
end
return 1
"""


# A run missed on its day (no process was up) still happens this many days later; older ones do not, so a
# new deployment never pays out weeks it was not running for.
CATCH_UP_DAYS = 2


class PayoutExporter(Protocol):
    """Hands a week's payouts to the bank; the same payouts give the same file, so a retry is harmless."""

    def export(self, sunday: str, payouts: Sequence[Mapping[str, str]]) -> str:
        """Write the transfer order; a reference to it (a file name)."""
        ...


class CsvTransferExporter:
    """A CSV bank/postal transfer file per payout week: one line per payout."""

    HEADER = ("payout_id", "practitioner_id", "amount_minor", "amount", "currency", "payout_date")

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, sunday: str) -> Path:
        return self.directory / f"payouts-{sunday}.csv"

    def render(self, payouts: Sequence[Mapping[str, str]]) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.HEADER)
        for p in sorted(payouts, key=lambda p: p["practitioner_id"]):
            writer.writerow((p["payout_id"], p["practitioner_id"], p["amount"], format_major(int(p["amount"])),
                             p["currency"], p["date"]))
        return out.getvalue()

    def export(self, sunday: str, payouts: Sequence[Mapping[str, str]]) -> str:
        return write_whole(self.path(sunday), self.render(payouts))


class PayoutCalendar:
    """Announced payout dates and admins' holiday corrections, over the store."""

    ANNOUNCE_WEEKS = 2

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._announce = store.redis.register_script(ANNOUNCE_LUA)
        self._correct = store.redis.register_script(CORRECT_LUA)

    async def calendar(self, years: Sequence[int]) -> paydates.Calendar:
        fixes = {date.fromisoformat(k): date.fromisoformat(v) for k, v in (await self.store.holiday_fixes()).items()}
        return paydates.calendar(years, fixes)

    async def announced(self) -> dict[date, date]:
        return {date.fromisoformat(k): date.fromisoformat(v)
                for k, v in (await self.store.announced_paydates()).items()}

    async def date_of(self, sunday: date) -> tuple[date, bool]:
        """The payout date of a week and whether it is announced (then it no longer moves by itself)."""
        announced = await self.announced()
        if sunday in announced:
            return announced[sunday], True
        cal = await self.calendar([sunday.year, sunday.year + 1])
        return paydates.payout_date(sunday, cal), False

    async def announce(self, now: float) -> list[date]:
        """Announce the payout dates of this week and the next ones (once each, with an event)."""
        today = paydates.local_date(now)
        first = paydates.sunday_of(today)
        cal = await self.calendar([today.year, today.year + 1])
        new = []
        at = datetime.fromtimestamp(now, UTC)
        for i in range(self.ANNOUNCE_WEEKS):
            sunday = first + timedelta(weeks=i)
            day = paydates.payout_date(sunday, cal)
            fields = event_fields("payout.date_announced", {"sunday": sunday.isoformat(), "date": day.isoformat(),
                                                            "shifted": day != sunday}, at,
                                  stable_id("announce", sunday.isoformat()))
            if await self._announce(keys=[self.store.key("paydates"), self.store.events_stream],
                                    args=[sunday.isoformat(), day.isoformat(), *fields]):
                new.append(sunday)
        return new

    async def correct(self, estimated: date, actual: date, *, move_announced: bool, by: str,
                      now: float) -> tuple[list[tuple[date, date, date]], list[tuple[date, date, date]]]:
        """Record an admin's confirmation (actual == estimated) or correction of an estimated holiday.
        Announced payout dates it would change are moved only if `move_announced`; the answer is
        (moved, kept), each (Sunday, announced date, date by the corrected calendar)."""
        years = [estimated.year - 1, estimated.year, estimated.year + 1]
        fixes = {date.fromisoformat(k): date.fromisoformat(v) for k, v in (await self.store.holiday_fixes()).items()}
        fixes[estimated] = actual
        cal = paydates.calendar(years, fixes)
        announced = await self.announced()
        changed = [(s, d, paydates.payout_date(s, cal)) for s, d in sorted(announced.items())
                   if paydates.payout_date(s, cal) != d]
        moved = changed if move_announced else []
        kept = [] if move_announced else changed
        at = datetime.fromtimestamp(now, UTC)
        events = [event_fields("holiday.corrected", {"estimated": estimated.isoformat(), "date": actual.isoformat(),
                                                     "by": by, "announced_moved": len(moved),
                                                     "announced_kept": len(kept)}, at,
                               stable_id("holiday", estimated.isoformat(), actual.isoformat(), utc_text(at)))]
        events += [event_fields("payout.date_moved", {"sunday": s.isoformat(), "from": d.isoformat(),
                                                      "to": n.isoformat(), "by": by}, at,
                                stable_id("moved", s.isoformat(), n.isoformat(), utc_text(at))) for s, d, n in moved]
        args: list[str] = [estimated.isoformat(), actual.isoformat(), str(len(moved))]
        for s, _d, n in moved:
            args += [s.isoformat(), n.isoformat()]
        for e in events:
            args += e
        await self._correct(keys=[self.store.key("holiday_fixes"), self.store.key("paydates"),
                                  self.store.events_stream], args=args)
        return moved, kept


class PayoutJob:
    """Runs in every process: announces dates, writes a due week's `payout.run` once, exports what the
    consumer paid out. `step(now)` is idempotent; several processes may call it at once."""

    def __init__(self, store: LedgerStore, exporter: PayoutExporter, *, currency: str) -> None:
        self.store = store
        self.exporter = exporter
        self.currency = currency
        self.calendar = PayoutCalendar(store)
        self._run = store.redis.register_script(RUN_LUA)

    async def step(self, now: float) -> list[str]:
        """The Sundays whose payout run this call started."""
        await self.calendar.announce(now)
        today = paydates.local_date(now)
        announced = await self.calendar.announced()
        cal = await self.calendar.calendar([today.year - 1, today.year])
        started = []
        for sunday in (paydates.sunday_of(today) - timedelta(weeks=1), paydates.sunday_of(today)):
            day = announced.get(sunday) or paydates.payout_date(sunday, cal)
            if not day <= today <= day + timedelta(days=CATCH_UP_DAYS):
                continue
            if await self.start_run(sunday, day, now):
                started.append(sunday.isoformat())
        await self.export_ready(now)
        return started

    async def start_run(self, sunday: date, day: date, now: float) -> bool:
        at = datetime.fromtimestamp(now, UTC)
        fields = event_fields("payout.run", {"sunday": sunday.isoformat(), "date": day.isoformat(),
                                             "currency": self.currency}, at,
                              stable_id("payout.run", sunday.isoformat(), self.currency))
        return bool(await self._run(keys=[self.store.key("payout_run", sunday.isoformat(), self.currency),
                                          self.store.events_stream], args=fields))

    async def export_ready(self, now: float) -> list[str]:
        """Export each week whose run the consumer has applied and that has no transfer file yet."""
        exported = []
        today = paydates.local_date(now)
        for sunday in (paydates.sunday_of(today) - timedelta(weeks=1), paydates.sunday_of(today)):
            s = sunday.isoformat()
            run_id = await self.store.redis.get(self.store.key("payout_run", s, self.currency))
            if run_id is None or await self.store.redis.exists(self.store.key("payout_export", s)):
                continue
            run = run_id.decode() if isinstance(run_id, bytes) else str(run_id)
            if run not in await self.store.processed([run]):
                continue  # the consumer has not made this week's payouts yet
            ref = self.exporter.export(s, await self.store.payouts_of(s))
            await self.store.redis.set(self.store.key("payout_export", s), ref)
            exported.append(s)
        return exported
