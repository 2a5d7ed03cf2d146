"""One title per stable code, everywhere: a problem document's `title` names its problem type (the code),
is the catalogue's for that code whichever route or handler answers, and no two codes share one.

(It was "Invalid input" for `date_out_of_range` and "Date in past" for `date_in_past`, "Conflict" for
eight different conflicts, "Unauthenticated" for nine token problems.)
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from session_server.app import create_app
from session_server.errors import DomainError, catalogue, lookup
from session_server.http import problem

from .bookings_support import local_day, make_practitioner
from .conftest import LiveServer, api_key_auth, auth, make_settings

ROOT = Path(__file__).resolve().parent.parent
Token = Callable[..., str]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Starlette:
    return create_app(make_settings(tmp_path_factory.mktemp("titles"), "redis://127.0.0.1:1/0"))


def _subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_every_code_has_one_title_and_no_two_codes_share_one(app: Starlette) -> None:
    titles: dict[str, set[str]] = defaultdict(set)
    for entry in catalogue():
        titles[entry.code].add(entry.title)
        # what the HTTP edge answers for it, whoever builds the problem document
        titles[entry.code].add(json.loads(bytes(problem(entry.status, entry.code, "-").body))["title"])
    for cls in _subclasses(DomainError):
        if "code" in cls.__dict__:
            titles[cls.code].add(cls.title)
    several = {code: sorted(ts) for code, ts in titles.items() if len(ts) > 1}
    assert several == {}, "codes with more than one title"
    codes_of: dict[str, list[str]] = defaultdict(list)
    for code, (title,) in titles.items():
        codes_of[title].append(code)
    shared = {title: codes for title, codes in codes_of.items() if len(codes) > 1}
    assert shared == {}, "titles that name more than one code"


def test_the_docs_error_table_gives_each_code_its_title(app: Starlette) -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    table = text.split("<!-- generated from the error catalogue: do not edit by hand -->\n", 1)[1]
    rows = [line.split("|") for line in table.split("<!-- end of generated table -->", 1)[0].splitlines()[2:]]
    assert rows
    for row in rows:
        code, title = row[2].strip().strip("`"), row[3].strip()
        entry = lookup(code)
        assert entry is not None and entry.title == title, (code, title)


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=20) as client:
        yield client


def _titled(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status and r.json()["code"] == code, r.text
    entry = lookup(code)
    assert entry is not None and r.json()["title"] == entry.title
    return str(r.json()["title"])


async def test_refusals_answered_over_http_carry_their_codes_title(http: httpx.AsyncClient, token: Token) -> None:
    await make_practitioner(http, "p1")
    c = auth(token("client", "c1"))
    seen = {
        _titled(await http.put("/v1/practitioners/p1/availability", headers=api_key_auth(), json={
            "weekly": [], "exceptions": [{"date": local_day(-2), "blocked": True}]}), 422, "date_in_past"),
        _titled(await http.get("/v1/practitioners/p1/slots", headers=c, params={
            "from": "1969-12-01T00:00:00Z", "to": "1969-12-02T00:00:00Z"}), 422, "date_out_of_range"),
        _titled(await http.get("/v1/practitioners/p1/slots", headers=c, params={"from": "soon"}), 422,
                "invalid_input"),
        _titled(await http.get("/v1/no-such-thing", headers=c), 404, "not_found"),  # the router's own
        _titled(await http.delete("/v1/me", headers=c), 405, "method_not_allowed"),
        _titled(await http.get("/v1/me"), 401, "token_missing"),
        _titled(await http.get("/v1/me", headers={"Authorization": "Bearer x.y.z"}), 401, "token_malformed"),
        _titled(await http.post("/v1/codes", headers={**api_key_auth(), "Content-Type": "text/plain"},
                                        content=b"{}"), 415, "json_expected"),
    }
    assert {"Date in the past", "Date out of range", "Invalid input"} <= seen
    assert len(seen) == 8
