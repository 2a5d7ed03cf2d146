"""Money in what a person reads: every amount formatted from minor units in the reader's language (Babel,
from CLDR), and the platform's codes held to the rule that they never give more than its commission.

Through the real server on 127.0.0.1 (uvicorn, real Redis), as a client app or the platform's backend
meets it: a promotion worth more than the commission is refused when it is created, with a stable code,
instead of being accepted and capped in silence; `price_changed` names the new price as 3,200.00 DZD
is written in Arabic, French and English, never as 320000.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from session_server.money import accepted_language, format_money
from session_server.settings import Settings

from .bookings_support import every_day, first_slot, make_practitioner
from .conftest import LiveServer, api_key_auth, auth

Token = Callable[..., str]
RLM, NBSP, NNBSP = "\u200f", "\u00a0", "\u202f"
# 3,200.00 DZD as each language writes it (CLDR through Babel)
DZD_3200 = {"ar": f"{RLM}3.200,00{NBSP}د.ج.{RLM}", "fr": f"3{NNBSP}200,00{NBSP}DZD", "en": f"DZD{NBSP}3,200.00"}
COMMISSION = {"ar": f"{RLM}500,00{NBSP}د.ج.{RLM}", "fr": f"500,00{NBSP}DZD", "en": f"DZD{NBSP}500.00"}


@pytest.mark.parametrize("lang", ["ar", "fr", "en"])
def test_an_amount_is_written_from_minor_units_in_the_readers_language(lang: str) -> None:
    assert format_money(320_000, "DZD", lang) == DZD_3200[lang]
    assert format_money(50_000, "DZD", lang) == COMMISSION[lang]


def test_the_currency_says_how_many_decimals_its_minor_units_have() -> None:
    assert format_money(3_200, "JPY", "en") == "¥3,200"  # no minor unit
    assert format_money(3_200, "TND", "fr") == f"3,200{NBSP}TND"  # three decimals
    assert format_money(-1_050, "EUR", "fr") == f"-10,50{NBSP}€"
    assert format_money(320_000, "DZD", "de") == DZD_3200["en"]  # a language we do not speak: English


def test_the_readers_language_comes_from_accept_language() -> None:
    assert accepted_language("fr-DZ,fr;q=0.9,en;q=0.8") == "fr"
    assert accepted_language("de-DE, ar;q=0.5") == "ar"
    assert accepted_language("") == "en" and accepted_language("de") == "en"


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=20) as client:
        yield client


async def _create(http: httpx.AsyncClient, body: dict[str, Any], lang: str = "en") -> httpx.Response:
    return await http.post("/v1/codes", headers={**api_key_auth(), "Accept-Language": lang}, json=body)


@pytest.mark.parametrize("lang", ["ar", "fr", "en"])
async def test_a_promotion_worth_more_than_the_commission_is_refused_at_creation(
        http: httpx.AsyncClient, token: Token, settings: Settings, lang: str) -> None:
    assert settings.platform_commission_minor == 50_000
    await make_practitioner(http, "p1", weekly=every_day())
    r = await _create(http, {"code": "BIGPROMO", "kind": "promotion", "amount_minor": 320_000}, lang)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert (problem["code"], problem["commission_minor"], problem["currency"]) == (
        "discount_exceeds_commission", 50_000, "DZD")
    assert problem["title"] == "Discount exceeds the commission"
    assert COMMISSION[lang] in problem["detail"] and DZD_3200[lang] in problem["detail"], problem["detail"]
    assert "320000" not in problem["detail"] and r.headers["content-language"] == lang
    # nothing was created: the code does not exist, and can then be created within the rule
    r = await http.get("/v1/quotes", headers=auth(token("client", "c1")),
                       params={"practitioner_id": "p1", "code": "BIGPROMO"})
    assert r.status_code == 422 and r.json()["code"] == "code_unknown"
    r = await _create(http, {"code": "BIGPROMO", "kind": "promotion", "amount_minor": 50_000})
    assert r.status_code == 201, r.text


async def test_a_referral_whose_discount_and_credit_exceed_the_commission_is_refused(http: httpx.AsyncClient) -> None:
    r = await _create(http, {"code": "FRIEND", "kind": "referral", "referrer_id": "c9", "amount_minor": 40_000,
                             "referrer_credit_minor": 20_000})
    assert r.status_code == 422 and r.json()["code"] == "discount_exceeds_commission", r.text
    assert f"DZD{NBSP}600.00" in r.json()["detail"]
    for fits in ({"code": "FRIEND", "kind": "referral", "referrer_id": "c9", "amount_minor": 30_000,
                  "referrer_credit_minor": 20_000},
                 {"code": "ALLOFIT", "kind": "promotion", "percent": 100}):  # a percentage is of the commission
        r = await _create(http, fits)
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("lang", ["ar", "fr", "en"])
async def test_price_changed_names_the_new_price_in_the_readers_language(
        http: httpx.AsyncClient, token: Token, lang: str) -> None:
    await make_practitioner(http, "p1", price=270_000, weekly=every_day())  # + 500.00 commission: 3,200.00
    c = {**auth(token("client", "c1")), "Accept-Language": lang}
    slot = await first_slot(http, "p1", c)
    r = await http.post("/v1/bookings", headers=c, json={"practitioner_id": "p1", "starts_at": slot["starts_at"],
                                                         "expected_total": 300_000})
    assert r.status_code == 409 and r.json()["code"] == "price_changed", r.text
    detail = r.json()["detail"]
    assert DZD_3200[lang] in detail and "320000" not in detail, detail
    assert r.json()["quote"]["client_total"] == 320_000  # programs read the minor units
    assert r.headers["content-language"] == lang
