"""The shapes the ledger's HTTP routes answer with, for the OpenAPI document (session_server.openapi)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComplaintOut(_Out):
    """A complaint. `text` is the client's own words: for the client and admins, and for the practitioner
    only once an admin shared it; `held_minor` is null until the money is held (at once, in practice)."""

    id: str
    booking_id: str
    client_id: str
    practitioner_id: str
    reason: str
    status: str
    filed_at: str
    held_minor: int | None
    currency: str
    refund_minor: int | None
    resolved_at: str | None
    has_text: bool
    shared_with_practitioner: bool
    text: str | None = None


class ComplaintsOut(_Out):
    complaints: list[ComplaintOut]


class StatementEntryOut(_Out):
    time: str
    posting_id: str
    kind: str
    account: str
    amount_minor: int
    balance_minor: int
    booking_id: str | None


class StatementOut(_Out):
    """A practitioner's balances (available for Sunday's payout, held by complaints, in transit to the
    bank, paid) and every entry on them, oldest first."""

    practitioner_id: str
    currency: str
    available_minor: int
    held_minor: int
    in_transit_minor: int
    paid_minor: int
    next_payout_date: str
    next_payout_date_announced: bool
    payout_minimum_minor: int
    entries: list[StatementEntryOut]


class LiabilitiesOut(_Out):
    escrow_minor: int
    practitioners_available_minor: int
    practitioners_held_minor: int
    payouts_in_transit_minor: int
    refunds_payable_minor: int
    referral_credits_minor: int


class RevenueDayOut(_Out):
    date: str
    currency: str
    client_payments_minor: int
    revenue_minor: int
    discounts_funded_minor: int
    liabilities: LiabilitiesOut
    paid_out_total_minor: int = Field(description="paid to practitioners so far, as the bank confirmed")
    refunded_total_minor: int = Field(description="refunded to clients so far, as the payment gateway confirmed")


class RevenueOut(_Out):
    days: list[RevenueDayOut]


class PayoutOut(_Out):
    payout_id: str
    practitioner_id: str
    amount_minor: int
    currency: str
    sunday: str
    date: str
    status: str


class PayoutsOut(_Out):
    payouts: list[PayoutOut]


class RefundOut(_Out):
    refund_id: str
    client_id: str
    booking_id: str = Field(description="the booking whose payment it returns (for a free reschedule, the booking "
                                        "first paid for)")
    attempt: int = Field(description="how many times it was handed to the gateway (0: not yet); the refund file's "
                                     "`attempt`")
    complaint_id: str | None = Field(description="the upheld complaint it comes from, if any")
    amount_minor: int
    currency: str
    reason: str = Field(description="why the client is refunded: the way the booking ended (cancelled_in_time, "
                                    "cancelled_late, cancelled_by_practitioner, cancelled_by_admin, client_no_show, "
                                    "practitioner_no_show, both_no_show) or complaint_upheld")
    status: Literal["owed", "sending", "sent", "paid", "failed"] = Field(
        description="owed: waiting to be handed to the payment gateway; sending/sent: handed to it; paid: made; "
                    "failed: the gateway could not make it (an admin sends it again)")
    created_at: str
    sent_at: str | None
    answered_at: str | None
    answer_reason: str | None = Field(description="why the gateway could not make it (failed)")


class RefundsOut(_Out):
    refunds: list[RefundOut]


class PayoutDateOut(_Out):
    sunday: str
    date: str
    announced: bool
    computed: str
    holiday: str | None
    holiday_names: dict[str, str] | None = Field(
        description="the holiday's name in Arabic, French and English (ar, fr, en), without the estimate's mark")
    estimated: bool


class PayoutDatesOut(_Out):
    payout_dates: list[PayoutDateOut]


class KeptDateOut(_Out):
    sunday: str
    announced: str
    computed: str


class HolidayCorrectionOut(_Out):
    """What an admin's correction did: announced payout dates moved (only if asked) and kept."""

    estimated: str
    date: str
    moved: list[dict[str, str]]
    kept: list[KeptDateOut]
