"""The contract is served: /openapi.json, and a page for people that loads nothing from elsewhere."""

from __future__ import annotations

import re

import httpx


async def test_the_document_is_served_as_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    document = r.json()
    assert document["openapi"] == "3.1.0"
    assert "/v1/bookings" in document["paths"] and "/v1/tokens" in document["paths"]
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}


async def test_the_page_and_its_assets_come_from_this_server_only(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs/api")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        r = await client.get(asset)
        assert r.status_code == 200, asset
        assert not re.search(r"https?://", r.text), f"{asset} reaches outside the server"
