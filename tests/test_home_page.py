"""Whoever opens the server's address gets a page that says what it is, in their language, with an icon;
an unknown address still gets the API's JSON problem."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(("ask", "headers", "lang", "says"), [
    ("", {}, "ar", "افتح الرابط الذي وصلك"),
    ("", {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.8"}, "fr", "Ouvrez le lien reçu"),
    ("?lang=en", {"Accept-Language": "fr"}, "en", "Open the link you received"),
    ("?lang=xx", {"Accept-Language": "de, en;q=0.5"}, "en", "Open the link you received"),
])
async def test_the_front_page_says_what_this_server_is_in_the_visitors_language(
        client: httpx.AsyncClient, ask: str, headers: dict[str, str], lang: str, says: str) -> None:
    r = await client.get("/" + ask, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f'<html lang="{lang}" dir="{"rtl" if lang == "ar" else "ltr"}">' in r.text
    assert says in r.text
    assert 'href="/docs/api" hreflang="en"' in r.text and "{" not in r.text  # every placeholder filled
    # the API's page is in English only: an Arabic or French reader is told before following the link
    assert {"ar": "(بالإنجليزية)</a>", "fr": "(en anglais)</a>", "en": "the API documentation</a>"}[lang] in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    css = await client.get("/static/home/home.css")
    assert css.status_code == 200


async def test_the_icon_is_served_and_unknown_addresses_stay_json_problems(client: httpx.AsyncClient) -> None:
    icon = await client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")
    missing = await client.get("/no-such-page")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
