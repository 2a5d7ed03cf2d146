"""The booking record as other features (rooms, documents, outages, support) read it.

Redis layout (the store owns the writes; other features only read through `load_booking`):
  ss:booking:{id}   hash: id, practitioner_id, client_id, starts_at, ends_at (epoch seconds, UTC),
                    status, currency, client_total, practitioner_share, platform_share, discount,
                    code, created_at, timezone; the store adds status_changed_at, cancel_reason,
                    cancelled_by, rev (a change counter), and with the session's verdict verdict,
                    verdict_attribution, verdict_at, net_minutes, which `Booking` does not carry
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

BOOKING_KEY = "ss:booking:{}"


class BookingStatus(enum.StrEnum):
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    IN_SESSION = "in_session"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    RESCHEDULED = "rescheduled"
    # the session's verdict (session_server/outages): recorded, never rescheduled
    CLIENT_NO_SHOW = "client_no_show"
    PRACTITIONER_NO_SHOW = "practitioner_no_show"
    BOTH_NO_SHOW = "both_no_show"
    ENDED_EARLY = "ended_early"


@dataclass(frozen=True, slots=True)
class Booking:
    id: str
    practitioner_id: str
    client_id: str
    starts_at: int  # epoch seconds, UTC
    ends_at: int
    status: BookingStatus
    currency: str
    client_total: int
    practitioner_share: int
    platform_share: int
    discount: int
    code: str
    created_at: int
    timezone: str

    def party(self, sub: str, role: str) -> str | None:
        """"client" or "practitioner" if `sub` in that role is one of this booking's parties, else None.
        The role counts: one id may name both a client and a practitioner of the platform."""
        if role == "client" and sub == self.client_id:
            return "client"
        if role == "practitioner" and sub == self.practitioner_id:
            return "practitioner"
        return None

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.starts_at, UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.ends_at, UTC)

    def to_hash(self) -> dict[str, str]:
        return {f: _s(getattr(self, f)) for f in self.__slots__}

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Booking:
        h = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            id=h["id"], practitioner_id=h["practitioner_id"], client_id=h["client_id"],
            starts_at=int(h["starts_at"]), ends_at=int(h["ends_at"]), status=BookingStatus(h["status"]),
            currency=h["currency"], client_total=int(h["client_total"]),
            practitioner_share=int(h["practitioner_share"]), platform_share=int(h["platform_share"]),
            discount=int(h["discount"]), code=h.get("code", ""), created_at=int(h["created_at"]),
            timezone=h["timezone"],
        )


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _s(v: Any) -> str:
    return str(v.value) if isinstance(v, enum.Enum) else str(v)


async def load_booking(redis: aioredis.Redis, booking_id: str) -> Booking | None:
    raw = await redis.hgetall(BOOKING_KEY.format(booking_id))
    return Booking.from_hash(raw) if raw else None


@dataclass(frozen=True, slots=True)
class SessionVerdict:
    """What a session's timeline decided (session_server/outages), as the booking records it: the facts
    the ledger needs (ids, times, minutes; the amounts come from the booking)."""

    verdict: str  # completed | interrupted | client_no_show | practitioner_no_show | both_no_show | ended_early
    attribution: str | None  # for interrupted: platform | client_connection | practitioner_connection | unknown
    net_minutes: int
    scheduled_minutes: int
    client_present_minutes: int
    practitioner_present_minutes: int
    client_first_joined_at: int | None  # epoch seconds
    practitioner_first_joined_at: int | None
    ended_by: str | None  # for ended_early: client | practitioner
    decided_at: int  # epoch seconds
    trigger: str  # what made it final: no_show | gave_up | room_closed | practitioner | completion_job
