"""Domain events on a Redis Stream: the server's record of everything that happened.

Every state change writes its event in the same MULTI/EXEC or Lua script as the change itself, so an
event exists if and only if its change happened. Consumers (the ledger, notifications, support) read
with consumer groups: at-least-once, XACK after the effect, idempotent by event id.

Stream entry fields: `id` (event id, uuid4 hex), `type` (e.g. booking.created), `v` (body version),
`time` (ISO 8601 UTC), `body` (JSON). The catalogue is docs/events.md.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from .clock import Clock, SystemClock

EVENTS_STREAM = "ss:events"
# Compact, keys sorted, UTF-8 (what json.dumps(sort_keys=True, ensure_ascii=False) writes, several times
# faster; a float may be spelled differently, 1e16 for 1e+16).
_BODY = msgspec.json.Encoder(order="sorted")
# Approximate cap: a stream is a log, not an archive; consumers must keep up within this many entries.
STREAM_MAXLEN = 1_000_000


_MACHINE = SystemClock()


def event_time(clock: Clock) -> datetime:
    """The time of an event that happens now by `clock` (services pass the app's clock)."""
    return datetime.fromtimestamp(clock.now(), UTC)


def new_id() -> str:
    """A random (version 4) UUID as 32 hex digits."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    body: dict[str, Any]
    version: int = 1
    # Services give `time` from the app's clock; the machine's clock is only for an event built outside an
    # app (a command-line tool, a test's fixture).
    time: datetime = field(default_factory=lambda: event_time(_MACHINE))
    id: str = field(default_factory=new_id)

    def fields(self) -> dict[str, str]:
        return {
            "id": self.id,
            "type": self.type,
            "v": str(self.version),
            "time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "body": _BODY.encode(self.body).decode(),
        }

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes] | dict[str, str]) -> Event:
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in raw.items()}
        return cls(type=f["type"], body=json.loads(f["body"]), version=int(f["v"]),
                   time=datetime.fromisoformat(f["time"].replace("Z", "+00:00")), id=f["id"])


def add_to(pipe: Any, event: Event, stream: str = EVENTS_STREAM) -> None:
    """Queue the event's XADD on a transactional pipeline (MULTI/EXEC) with the change it records."""
    pipe.xadd(stream, event.fields(), maxlen=STREAM_MAXLEN, approximate=True)


def lua_args(event: Event) -> list[str]:
    """ARGV for Lua scripts that XADD the event themselves: see `LUA_XADD_EVENT`."""
    f = event.fields()
    return [f["id"], f["type"], f["v"], f["time"], f["body"]]


# Paste into a Lua script whose ARGV[n..n+4] come from lua_args(); call as xadd_event(stream_key, n).
LUA_XADD_EVENT = f"""
local function xadd_event(stream, n)
  return redis.call('XADD', stream, 'MAXLEN', '~', '{STREAM_MAXLEN}', '*',
    'id', ARGV[n], 'type', ARGV[n+1], 'v', ARGV[n+2], 'time', ARGV[n+3], 'body', ARGV[n+4])
end
"""
