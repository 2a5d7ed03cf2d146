"""Reading the server's events for the ledger: a stream entry becomes a typed `Incoming`, or a `Poison`
that says why it can never be applied (an unknown version, a malformed body), which goes to the dead
letter instead of blocking the events after it.

Stream entry fields (the server's format, docs/events.md): `id`, `type`, `v`, `time` (ISO 8601 UTC),
`body` (JSON). Bodies are read tolerantly where producers differ in spelling: a reschedule names its
two bookings `rescheduled_from`/`rescheduled_to` or `booking_id`/`new_booking_id`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

# The types the ledger applies, and the body versions it reads.
TYPES: Mapping[str, frozenset[int]] = {
    "code.created": frozenset({1}),
    "booking.created": frozenset({1}),
    "booking.cancelled": frozenset({1}),
    "booking.completed": frozenset({1}),
    "booking.rescheduled": frozenset({1}),
    "session.verdict": frozenset({1}),
    "complaint.filed": frozenset({1}),
    "complaint.resolved": frozenset({1}),
    "payout.run": frozenset({1}),
    "payout.paid": frozenset({1}),
    "payout.failed": frozenset({1}),
    "refund.paid": frozenset({1}),
}


class Poison(ValueError):
    """An event the ledger can never apply; the message is the reason kept in the dead letter."""


class Incoming(msgspec.Struct, frozen=True):
    id: str
    type: str
    version: int
    time: datetime
    body: Mapping[str, Any]
    iso_time: str  # `time` in ISO 8601 UTC, as postings and records write it

    @property
    def epoch(self) -> int:
        return int(self.time.timestamp())

    # typed reads of the body: a missing or mistyped field is poison

    def text(self, *names: str, required: bool = True) -> str:
        for name in names:
            value = self.body.get(name)
            if isinstance(value, str) and value:
                return value
        if required:
            raise Poison(f"{self.type}: the body has no {' or '.join(names)}")
        return ""

    def amount(self, name: str, default: int | None = None) -> int:
        value = self.body.get(name, default)
        if type(value) is not int or value < 0:
            raise Poison(f"{self.type}: {name} must be a non-negative integer")
        return value

    def instant(self, name: str) -> int:
        value = self.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value // 1000 if value > 10**11 else value  # epoch ms or s
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
            except ValueError:
                pass
        raise Poison(f"{self.type}: {name} must be a time")


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def wanted(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> bool:
    """Whether an entry is one the ledger applies, judged by its type alone (cheap: most are not)."""
    t = raw.get(b"type") if b"type" in raw else raw.get("type")  # type: ignore[call-overload]
    return t is not None and _text(t) in TYPES


def parse(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> Incoming:
    """The entry's fields, read by name (as the stream gives them: bytes, or text from a client that decodes)."""
    by_name: Mapping[Any, Any] = raw
    names: tuple[Any, ...] = _BYTE_NAMES if b"id" in raw else _NAMES
    try:
        event_id, type_, v, t, body_raw = (by_name[n] for n in names)
        event_id, type_, version, text = _text(event_id), _text(type_), int(v), _text(t)
        time = datetime.fromisoformat(text)
        body = _JSON.decode(body_raw)
    except (KeyError, ValueError) as exc:
        raise Poison(f"unreadable entry ({type(exc).__name__})") from None
    if not event_id or time.tzinfo is None:
        raise Poison("an event needs an id and a time with its zone")
    if version not in TYPES.get(type_, frozenset()):
        raise Poison(f"{type_}: unknown version {version}")
    if not isinstance(body, dict):
        raise Poison(f"{type_}: the body is not an object")
    return Incoming(event_id, type_, version, time, body, text if _utc_as_written(text) else utc_text(time))


def utc_text(time: datetime) -> str:
    """An instant in ISO 8601 UTC with its zone written `Z` (microseconds only when there are some)."""
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc_as_written(text: str) -> bool:
    """Whether `utc_text` of this time would give the text back (the server writes times so): the extended
    form with `T` and `Z`, and no fraction or six digits of one that are not all zero."""
    return _UTC_TEXT.fullmatch(text) is not None and text[19:26] != ".000000"


_UTC_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z", re.ASCII)


_NAMES = ("id", "type", "v", "time", "body")
_BYTE_NAMES = tuple(n.encode() for n in _NAMES)
_JSON = msgspec.json.Decoder()
