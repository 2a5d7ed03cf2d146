"""The shapes bookings' HTTP routes answer with, for the OpenAPI document (session_server.openapi).

The handlers build these answers as dicts; these models describe them, field for field, so that the
document has a schema for every response and the contract test can hold the handlers to it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Iso = str  # ISO 8601 in UTC, e.g. 2026-11-26T08:00:00Z


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PractitionerOut(View):
    """A practitioner's profile."""

    id: str
    display_name: str
    specialty: str
    session_minutes: int
    price_minor: int
    currency: str
    timezone: str
    status: str
    created_at: Iso
    updated_at: Iso


class PractitionersOut(View):
    """Practitioners the caller may see."""

    practitioners: list[PractitionerOut]


class WindowOut(View):
    start: Iso
    end: Iso


class AvailabilityOut(View):
    """The availability as entered, and the published UTC windows from now on."""

    practitioner_id: str
    timezone: str
    availability: dict[str, Any]
    windows: list[WindowOut]


class PublishedOut(AvailabilityOut):
    """The availability as entered, the UTC windows published, and how many waiting clients were told."""

    waiting_clients: int


class PriceOut(View):
    """A price breakdown, in minor units of `currency`."""

    currency: str
    practitioner_price: int
    commission: int
    discount: int
    practitioner_share: int
    platform_share: int
    client_total: int
    code: str | None
    code_kind: str | None
    referrer_credit: int


class SlotOut(View):
    starts_at: Iso
    ends_at: Iso
    price: PriceOut


class SlotsOut(View):
    """Free slots, each with its price."""

    practitioner_id: str
    timezone: str
    session_minutes: int
    slots: list[SlotOut]


class QuoteOut(PriceOut):
    """The price of a session with this practitioner (and code)."""

    practitioner_id: str


class InterestOut(View):
    """The client is on the practitioner's waiting list."""

    practitioner_id: str
    waiting: bool
    already_registered: bool


class CodeOut(View):
    """A discount code."""

    code: str
    kind: str
    owner_id: str | None
    amount_minor: int
    percent: int
    referrer_credit_minor: int
    expires_at: Iso | None
    max_uses: int
    currency: str


class BookingPriceOut(View):
    currency: str
    client_total: int
    practitioner_share: int
    platform_share: int
    discount: int
    code: str | None


class CancellationOut(View):
    reason: str
    by: str | None


class BookingOut(View):
    """A booking. Support staff get the metadata only (no `timezone`, `price` or `cancellation`)."""

    id: str
    practitioner_id: str
    client_id: str
    starts_at: Iso
    ends_at: Iso
    status: str
    created_at: Iso
    timezone: str = Field(default="", json_schema_extra={"description": "absent for support staff"})
    price: BookingPriceOut | None = Field(default=None, description="absent for support staff")
    cancellation: CancellationOut | None = Field(default=None, description="once cancelled")
    rescheduled_from: str | None = Field(default=None, description="the interrupted booking this one replaces, "
                                         "free of charge (its payment carries over)")
    rescheduled_to: str | None = Field(default=None, description="the booking that replaced this interrupted one")


class BookingsOut(View):
    """Bookings the caller may see."""

    bookings: list[BookingOut]
