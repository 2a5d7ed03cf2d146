"""Which events notify whom, and with what. Pure: no I/O, no clock.

A notification carries ids, times and counts, never names or free text written by another person
(a cancellation reason stays in the booking, which only its parties can read).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..events import Event


class BadReadRequest(InvalidInput):
    """A mark-read request must name the notifications or say all of them, not both or neither."""

    code = "bad_read_request"


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    user_id: str
    kind: str
    created_at: str  # ISO 8601 UTC, the time of the event that caused it
    data: dict[str, Any]

    def as_json(self, *, read: bool | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "created_at": self.created_at,
                               "data": self.data}
        if read is not None:
            out["read"] = read
        return out


def notification_id(event_id: str, user_id: str) -> str:
    """Deterministic, so that an event delivered twice makes the same notification once."""
    return hashlib.sha256(f"{event_id}\0{user_id}".encode()).hexdigest()[:24]


def needs_waiting_clients(event: Event) -> bool:
    """Does deciding on this event need the practitioner's waiting list?"""
    # "slots": bookable slots at publication (events written before it was added count windows)
    return event.type == "availability.published" and int(event.body.get("slots", event.body.get("windows", 0))) > 0


_PARTIES = ("client", "practitioner")

# The steps of a free reschedule, each told to both parties (proposals to the client, who chooses):
# event type -> (notification kind, the body fields it carries besides booking_id).
_RESCHEDULE_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "booking.reschedule_offered": ("reschedule.offered", ("expires_at",)),
    "booking.reschedule_proposed": ("reschedule.proposed", ("expires_at",)),
    "booking.rescheduled": ("reschedule.accepted", ("new_booking_id", "starts_at", "ends_at")),
    "booking.reschedule_offer_expiring": ("reschedule.expiring", ("expires_at",)),
    "booking.reschedule_offer_expired": ("reschedule.expired", ("expires_at",)),
}


_PAYOUT_KINDS = {"payout.created": "payout.sent", "payout.paid": "payout.paid", "payout.failed": "payout.failed"}
_REFUND_KINDS = {"refund.created": "refund.owed", "refund.paid": "refund.paid", "refund.failed": "refund.failed"}


def needs_room_presence(event: Event) -> bool:
    """Does deciding on this event need to know who is in the room now?"""
    return event.type == "room.joined" and event.body.get("role") in _PARTIES and "client_id" in event.body


def notifications_for(event: Event, waiting_clients: Sequence[str] = (),
                      present: Collection[str] = ()) -> list[Notification]:
    """The notifications an event makes. `waiting_clients`: the practitioner's waiting list, for
    `availability.published`; `present`: the participants in the room now, for `room.joined`."""
    b = event.body
    when = event.time.isoformat().replace("+00:00", "Z")

    def note(user: str, kind: str, data: dict[str, Any]) -> Notification:
        return Notification(notification_id(event.id, user), user, kind, when, data)

    t = event.type
    if needs_room_presence(event):
        # One party entered the session's room and the other is not there: tell them, once per booking
        # (the id does not depend on the event, so leaving and coming back does not ping again).
        other = b["practitioner_id"] if b["role"] == "client" else b["client_id"]
        if other in present:
            return []
        return [Notification(notification_id(f"room.waiting:{b['booking_id']}", other), other, "room.waiting",
                             when, {"booking_id": b["booking_id"], "waiting": b["role"]})]
    if t in _RESCHEDULE_KINDS:
        kind, fields = _RESCHEDULE_KINDS[t]
        data = {"booking_id": b["booking_id"], **{f: b.get(f) for f in fields}}
        users = [b["client_id"]] if t == "booking.reschedule_proposed" else [b["client_id"], b["practitioner_id"]]
        return [note(u, kind, data) for u in users]
    if t == "booking.created" and b.get("rescheduled_from"):
        return []  # a free reschedule: both parties are told by its `booking.rescheduled`
    if t == "booking.created":
        return [note(b["practitioner_id"], "booking.created",
                     {"booking_id": b["booking_id"], "starts_at": b["starts_at"], "ends_at": b["ends_at"],
                      "client_id": b["client_id"]})]
    if t == "booking.cancelled":
        data = {"booking_id": b["booking_id"], "starts_at": b.get("starts_at"), "by": b.get("by")}
        others = {"client": [b["practitioner_id"]], "practitioner": [b["client_id"]]}.get(
            str(b.get("by")), [b["practitioner_id"], b["client_id"]])
        return [note(u, "booking.cancelled", data) for u in others]
    if t == "practitioner.interest_registered":
        return [note(b["practitioner_id"], "clients.waiting", {"practitioner_id": b["practitioner_id"]})]
    if t == "availability.published" and waiting_clients:
        return [note(c, "slots.available", {"practitioner_id": b["practitioner_id"]}) for c in waiting_clients]
    if t == "practitioner.suspended":
        return [note(b["practitioner_id"], "account.suspended",
                     {"reason": b.get("reason"), "automatic": bool(b.get("automatic"))})]
    if t == "practitioner.activated":
        return [note(b["practitioner_id"], "account.activated", {})]
    if t == "complaint.filed":
        # the practitioner learns that a hold exists, never the client's words
        data = {"complaint_id": b["complaint_id"], "booking_id": b["booking_id"]}
        return [note(b["client_id"], "complaint.filed", data), note(b["practitioner_id"], "complaint.filed", data)]
    if t == "complaint.resolved":
        data = {"complaint_id": b["complaint_id"], "booking_id": b["booking_id"], "decision": b.get("decision"),
                "refund_minor": b.get("refund_minor")}
        return [note(b["client_id"], "complaint.resolved", data),
                note(b["practitioner_id"], "complaint.resolved", data)]
    if t == "complaint.shared":
        # the practitioner may now read the client's words (in the complaint, not in the notification)
        return [note(b["practitioner_id"], "complaint.shared",
                     {"complaint_id": b["complaint_id"], "booking_id": b["booking_id"]})]
    if t in _PAYOUT_KINDS:
        # the practitioner's own money: sent to the bank, received, or refused and back in the balance
        data = {"payout_id": b["payout_id"], "amount_minor": int(b["amount"]), "currency": b["currency"],
                "sunday": b.get("sunday")}
        if t == "payout.created":
            data["date"] = b.get("date")
        return [note(b["practitioner_id"], _PAYOUT_KINDS[t], data)]
    if t in _REFUND_KINDS:
        # the client's own money: owed to them, back with them, or not made yet (it is sent again)
        data = {"refund_id": b["refund_id"], "booking_id": b["booking_id"], "amount_minor": int(b["amount"]),
                "currency": b["currency"]}
        if t == "refund.created":
            data["reason"] = b.get("reason")
        return [note(b["client_id"], _REFUND_KINDS[t], data)]
    return []
