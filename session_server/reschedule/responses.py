"""The shapes the reschedule routes answer with, for the OpenAPI document (session_server.openapi)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..bookings.responses import BookingOut

Iso = str  # ISO 8601 in UTC, e.g. 2026-11-26T08:00:00Z


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimeOut(View):
    starts_at: Iso
    ends_at: Iso


class OfferOut(View):
    """A free reschedule offer for an interrupted session."""

    booking_id: str = Field(description="the interrupted booking")
    practitioner_id: str
    client_id: str
    status: str = Field(description="open, accepted (used once) or expired (unused: support follows it up)")
    reason: str = Field(description="verdict, support or practitioner: who made the offer")
    attribution: str = Field(description="platform, client_connection, practitioner_connection or unknown")
    offered_at: Iso
    expires_at: Iso = Field(description="the offer ends then, and a new session must start before it")
    original_starts_at: Iso
    proposals: list[TimeOut] = Field(description="times the practitioner proposed (up to three)")
    new_booking_id: str | None = Field(description="once accepted: the new booking")
    accepted_at: Iso | None
    expired_at: Iso | None
    needs_support: bool = Field(description="true once the offer expired unused")


class OfferMadeOut(OfferOut):
    """The offer, and whether this request made it (false: the booking had an offer already)."""

    created: bool


class OfferSlotsOut(View):
    """The times the client may choose, in UTC; `timezone` is the practitioner's."""

    booking_id: str
    status: str
    expires_at: Iso
    timezone: str
    session_minutes: int
    slots: list[TimeOut] = Field(description="the practitioner's free slots, the client free too")
    proposals: list[TimeOut] = Field(description="the practitioner's proposals still ahead")


class RescheduledOut(View):
    """The new booking (free of charge: `price.client_total` is 0) and the offer, now used."""

    booking: BookingOut
    offer: OfferOut


class OffersOut(View):
    """Offers by status: the open ones, or those that expired unused (for support)."""

    offers: list[OfferOut]
