"""What docs/api.md tells a newcomer holds against the real server on 127.0.0.1:

- a time with its `+` typed into a query string as it is (where it arrives as a space) is read as the
  time it names, the same as the percent-encoded `%2B`;
- the credentials table: a route it lists as taking the API key takes it, and one that takes a token
  only refuses the API key with 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from .bookings_support import every_day, make_practitioner
from .conftest import LiveServer, api_key_auth, auth

ROOT = Path(__file__).resolve().parent.parent
Token = Callable[..., str]


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=20) as client:
        yield client


async def test_a_plus_typed_into_a_query_time_is_read_as_the_offset_it_was(
        http: httpx.AsyncClient, live_server: LiveServer, token: Token) -> None:
    await make_practitioner(http, "p1", weekly=every_day())
    c = auth(token("client", "c1"))
    start = (datetime.now(ZoneInfo("Africa/Algiers")) + timedelta(days=1)).replace(microsecond=0)
    end = start + timedelta(hours=6)
    assert start.isoformat().endswith("+01:00")
    encoded = await http.get("/v1/practitioners/p1/slots", headers=c,
                             params={"from": start.isoformat(), "to": end.isoformat()})  # `+` sent as %2B
    assert encoded.status_code == 200, encoded.text
    assert encoded.json()["slots"], "the practitioner has slots then"
    # as typed into a terminal or an address bar: the `+` goes as it is, and means a space on the way in
    raw = f"{live_server.url}/v1/practitioners/p1/slots?from={start.isoformat()}&to={end.isoformat()}"
    assert "+01:00" in raw
    typed = await http.get(httpx.URL(raw), headers=c)
    assert typed.status_code == 200, typed.text
    assert typed.json() == encoded.json()
    # a space that is not before an offset is still refused, with the shape of a time in the message
    r = await http.get(f"{live_server.url}/v1/practitioners/p1/slots?from=tomorrow+09:00&to={end.isoformat()}",
                       headers=c)
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"


def _credentials() -> list[tuple[str, str, str]]:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    table = text.split("<!-- generated from the routes' contracts: credentials -->\n", 1)[1]
    table = table.split("<!-- end of generated credentials -->", 1)[0]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.strip().splitlines()[2:]]
    return [(method, path.strip("`"), credentials) for method, path, credentials, _ in rows]


async def test_the_credentials_table_says_which_routes_take_the_api_key(http: httpx.AsyncClient) -> None:
    checked = {"API key": 0, "token": 0}
    for method, path, credentials in _credentials():
        if method != "GET" or "{" in path or credentials == "none":
            continue
        r = await http.get(path, headers=api_key_auth())
        if "API key" in credentials:
            assert r.status_code != 401, f"{path} is documented to take the API key: {r.text}"
            checked["API key"] += 1
        else:
            assert r.status_code == 401, f"{path} is documented to take a token only: {r.status_code}"
            checked["token"] += 1
    assert checked["API key"] >= 5 and checked["token"] >= 5, checked
