"""Pricing: what a client pays for a session and how it splits. Pure functions, no I/O, no clock.

The one rule (business rules, section 5): client price = practitioner price + the platform's fixed
commission − discount. Where a discount comes from depends on who issued the code:

- a practitioner's code comes only out of the practitioner's share (never below zero); the platform's
  commission is untouched;
- a platform promotional code comes only out of the platform's share and never exceeds the commission;
- a referral code gives the referred client a discount out of the platform's share (capped like a
  promotion) and credits the referrer; the credit is paid from what is left of the platform's share, so
  the platform never pays out more than the session brought in.

The booking quote and the ledger both call `quote()`, so the two can never disagree. Every amount is an
integer in minor units of one currency.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class CodeKind(enum.StrEnum):
    PRACTITIONER = "practitioner"
    PROMOTION = "promotion"
    REFERRAL = "referral"


class CodeRefusal(enum.StrEnum):
    """Why a code cannot be used; the value is the stable error code the API returns."""

    UNKNOWN = "code_unknown"
    EXPIRED = "code_expired"
    USED_UP = "code_used_up"
    NOT_APPLICABLE = "code_not_applicable"
    ALREADY_USED = "code_already_used"


class PricingError(ValueError):
    def __init__(self, refusal: CodeRefusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class DiscountCode:
    """A discount code. Exactly one of `amount_minor` (fixed) or `percent` (1–100) is non-zero.

    `owner_id` is the practitioner for practitioner codes and the referrer for referral codes.
    `expires_at` is epoch seconds (0: never); `max_uses` 0 means unlimited.
    """

    code: str
    kind: CodeKind
    owner_id: str = ""
    amount_minor: int = 0
    percent: int = 0
    referrer_credit_minor: int = 0
    expires_at: int = 0
    max_uses: int = 0
    uses: int = 0
    currency: str = "DZD"

    def __post_init__(self) -> None:
        if (self.amount_minor > 0) == (self.percent > 0):
            raise ValueError("a code has either a fixed amount or a percentage")
        if self.amount_minor < 0 or not 0 <= self.percent <= 100 or self.referrer_credit_minor < 0:
            raise ValueError("code amounts must not be negative and a percentage is at most 100")


@dataclass(frozen=True, slots=True)
class Quote:
    currency: str
    practitioner_price: int
    commission: int
    discount: int
    practitioner_share: int
    platform_share: int
    client_total: int
    code: str = ""
    code_kind: str = ""
    referrer_id: str = ""
    referrer_credit: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "practitioner_price": self.practitioner_price,
            "commission": self.commission,
            "discount": self.discount,
            "practitioner_share": self.practitioner_share,
            "platform_share": self.platform_share,
            "client_total": self.client_total,
            "code": self.code or None,
            "code_kind": self.code_kind or None,
            "referrer_credit": self.referrer_credit,
        }


def check_code(code: DiscountCode, *, practitioner_id: str, client_id: str, currency: str, now: int) -> None:
    """Refuse a code that cannot be used for this booking; `now` is epoch seconds."""
    if code.expires_at and now >= code.expires_at:
        raise PricingError(CodeRefusal.EXPIRED, f"the code {code.code} has expired")
    if code.max_uses and code.uses >= code.max_uses:
        raise PricingError(CodeRefusal.USED_UP, f"the code {code.code} has been used up")
    if code.amount_minor and code.currency != currency:
        raise PricingError(CodeRefusal.NOT_APPLICABLE, f"the code {code.code} is for another currency")
    if code.kind is CodeKind.PRACTITIONER and code.owner_id != practitioner_id:
        raise PricingError(CodeRefusal.NOT_APPLICABLE, f"the code {code.code} is for another practitioner")
    if code.kind is CodeKind.REFERRAL and code.owner_id == client_id:
        raise PricingError(CodeRefusal.NOT_APPLICABLE, "a referral code cannot be used by its referrer")


def platform_code_value(code: DiscountCode, commission: int) -> int:
    """What a platform code (promotion or referral) gives on one session at most, before any cap: its
    discount (a percentage is of the commission) and a referral's credit. The rule: never more than the
    commission, so a code worth more is refused when it is created."""
    discount = code.amount_minor if code.amount_minor else commission * code.percent // 100
    return discount + (code.referrer_credit_minor if code.kind is CodeKind.REFERRAL else 0)


def _discount_value(code: DiscountCode, base: int) -> int:
    wanted = code.amount_minor if code.amount_minor else base * code.percent // 100
    return max(0, min(wanted, base))


def quote(practitioner_price: int, commission: int, currency: str,
          code: DiscountCode | None = None) -> Quote:
    """The client price and its split. Assumes `check_code` already accepted the code."""
    if practitioner_price < 0 or commission < 0:
        raise ValueError("prices must not be negative")
    practitioner_share, platform_share, discount, credit = practitioner_price, commission, 0, 0
    if code is not None:
        if code.kind is CodeKind.PRACTITIONER:
            discount = _discount_value(code, practitioner_price)
            practitioner_share -= discount
        else:
            discount = _discount_value(code, commission)
            platform_share -= discount
            if code.kind is CodeKind.REFERRAL:
                credit = min(code.referrer_credit_minor, platform_share)
    return Quote(
        currency=currency,
        practitioner_price=practitioner_price,
        commission=commission,
        discount=discount,
        practitioner_share=practitioner_share,
        platform_share=platform_share,
        client_total=practitioner_share + platform_share,
        code=code.code if code else "",
        code_kind=code.kind.value if code else "",
        referrer_id=code.owner_id if code is not None and code.kind is CodeKind.REFERRAL else "",
        referrer_credit=credit,
    )
