"""Following the event stream on every node: a booking that loses its right to a room closes it here.

Not a consumer group: each node must act on its own sockets, so each node reads every entry (plain
XREAD) from where it started, and remembers where it is, so a restarted loop misses nothing. The rooms
never read the bookings' store for this; the tick's booking re-check (service.py) is the backstop for
an entry read while this loop was down for longer than the stream keeps it.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis

from ..events import EVENTS_STREAM, Event
from .service import RoomService

log = logging.getLogger(__name__)

BLOCK_MS = 5000
BATCH = 200
# the event that ends a room's right -> (the room.closing code, what a person reads)
ENDINGS = {
    "booking.cancelled": ("booking_cancelled", "the booking was cancelled"),
    "practitioner.suspended": ("practitioner_suspended", "the practitioner's account is suspended"),
    "booking.rescheduled": ("booking_rescheduled", "the session was moved to another time"),
    # the session's verdict is final (session_server/outages): its room has nothing more to wait for
    "session.verdict": ("session_ended", "the session is over"),
}


async def stream_tail(redis: aioredis.Redis, stream: str = EVENTS_STREAM) -> str:
    """The id of the stream's newest entry now ("0-0" for none): where a node starts following."""
    last = await redis.xrevrange(stream, count=1)
    if not last:
        return "0-0"
    entry_id = last[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


class RoomEndings:
    def __init__(self, service: RoomService, start_id: str, stream: str = EVENTS_STREAM) -> None:
        self.service = service
        self.stream = stream
        self.last_id = start_id

    async def run(self, client: aioredis.Redis) -> None:
        """Read and act until cancelled (the task supervisor restarts it, from `last_id`, after an error)."""
        while True:
            found: Any = await client.xread({self.stream: self.last_id}, count=BATCH, block=BLOCK_MS)
            for _stream, entries in found or []:
                for entry_id, fields in entries:
                    self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    self.handle(fields)

    def handle(self, fields: dict[bytes, bytes]) -> None:
        kind = fields.get(b"type", b"").decode(errors="replace")
        if kind not in ENDINGS:
            return
        try:
            event = Event.from_fields(fields)
        except (KeyError, ValueError):
            log.warning("ignored a malformed %s event", kind)
            return
        code, reason = ENDINGS[kind]
        if kind == "session.verdict":
            b = event.body
            ended = self.service.end_session(str(b.get("booking_id", "")), str(b.get("verdict", "")),
                                             b.get("attribution"))
        elif kind in ("booking.cancelled", "booking.rescheduled"):
            booking_id = str(event.body.get("booking_id", ""))
            ended = self.service.end_booking(booking_id, code, reason)
        else:
            ended = self.service.end_practitioner(str(event.body.get("practitioner_id", "")), code, reason)
        if ended:
            log.info("closed %d room connection(s) on this node: %s", ended, code)
