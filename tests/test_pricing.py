"""Pricing: the client pays the practitioner price plus the commission minus the discount, split exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.pricing import CodeKind, CodeRefusal, DiscountCode, PricingError, check_code, quote

prices = st.integers(min_value=0, max_value=100_000_000)
commissions = st.integers(min_value=0, max_value=10_000_000)


@st.composite
def codes(draw: st.DrawFn, kind: CodeKind | None = None) -> DiscountCode:
    k = kind or draw(st.sampled_from(list(CodeKind)))
    fixed = draw(st.booleans())
    return DiscountCode(
        code="CODE1", kind=k, owner_id="p1" if k is CodeKind.PRACTITIONER else "referrer",
        amount_minor=draw(st.integers(1, 200_000_000)) if fixed else 0,
        percent=0 if fixed else draw(st.integers(1, 100)),
        referrer_credit_minor=draw(st.integers(0, 20_000_000)) if k is CodeKind.REFERRAL else 0)


@given(prices, commissions, st.one_of(st.none(), codes()))
def test_the_client_pays_exactly_the_two_shares_and_no_share_is_negative(
        price: int, commission: int, code: DiscountCode | None) -> None:
    q = quote(price, commission, "DZD", code)
    assert q.client_total == q.practitioner_share + q.platform_share
    assert q.client_total == price + commission - q.discount
    assert q.practitioner_share >= 0 and q.platform_share >= 0 and q.discount >= 0
    assert 0 <= q.referrer_credit <= q.platform_share


@given(prices, commissions, codes(CodeKind.PROMOTION))
def test_a_promotion_never_exceeds_the_commission_nor_touches_the_practitioner(
        price: int, commission: int, code: DiscountCode) -> None:
    q = quote(price, commission, "DZD", code)
    assert q.discount <= commission
    assert q.practitioner_share == price


@given(prices, commissions, codes(CodeKind.PRACTITIONER))
def test_a_practitioner_code_never_touches_the_platform_share(
        price: int, commission: int, code: DiscountCode) -> None:
    q = quote(price, commission, "DZD", code)
    assert q.platform_share == commission
    assert q.discount <= price
    assert q.practitioner_share == price - q.discount


@given(prices, commissions, codes(CodeKind.REFERRAL))
def test_a_referral_discounts_from_the_platform_and_credits_the_referrer_from_what_is_left(
        price: int, commission: int, code: DiscountCode) -> None:
    q = quote(price, commission, "DZD", code)
    assert q.practitioner_share == price
    assert q.discount <= commission
    assert q.referrer_id == "referrer"
    assert q.referrer_credit == min(code.referrer_credit_minor, commission - q.discount)


def test_without_a_code_the_client_pays_price_plus_commission() -> None:
    q = quote(300_000, 50_000, "DZD")
    assert q.as_json() == {"currency": "DZD", "practitioner_price": 300_000, "commission": 50_000,
                           "discount": 0, "practitioner_share": 300_000, "platform_share": 50_000,
                           "client_total": 350_000, "code": None, "code_kind": None, "referrer_credit": 0}


def test_a_percentage_rounds_down_to_a_whole_minor_unit() -> None:
    code = DiscountCode("TEN", CodeKind.PRACTITIONER, owner_id="p1", percent=10)
    assert quote(12_345, 50_000, "DZD", code).discount == 1_234


@pytest.mark.parametrize(("code", "refusal"), [
    (DiscountCode("OLD", CodeKind.PROMOTION, amount_minor=100, expires_at=1000), CodeRefusal.EXPIRED),
    (DiscountCode("FULL", CodeKind.PROMOTION, amount_minor=100, max_uses=3, uses=3), CodeRefusal.USED_UP),
    (DiscountCode("OTHER", CodeKind.PRACTITIONER, owner_id="p2", amount_minor=100), CodeRefusal.NOT_APPLICABLE),
    (DiscountCode("SELF", CodeKind.REFERRAL, owner_id="c1", amount_minor=100), CodeRefusal.NOT_APPLICABLE),
    (DiscountCode("EUR", CodeKind.PROMOTION, amount_minor=100, currency="EUR"), CodeRefusal.NOT_APPLICABLE),
])
def test_an_unusable_code_is_refused_with_a_clear_reason(code: DiscountCode, refusal: CodeRefusal) -> None:
    with pytest.raises(PricingError) as info:
        check_code(code, practitioner_id="p1", client_id="c1", currency="DZD", now=2000)
    assert info.value.refusal is refusal


def test_a_code_is_either_fixed_or_a_percentage() -> None:
    with pytest.raises(ValueError):
        DiscountCode("BOTH", CodeKind.PROMOTION, amount_minor=10, percent=10)
    with pytest.raises(ValueError):
        DiscountCode("NONE", CodeKind.PROMOTION)
