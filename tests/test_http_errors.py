"""Every error the HTTP edge returns is an RFC 9457 problem document with a stable code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from session_server.app import create_app
from session_server.context import AppContext

from .conftest import api_key_auth, make_settings, running
from .support import eventually


def assert_problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"].endswith("/" + code) and body["title"] and body["detail"]


async def test_unknown_path_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/no/such/thing"), 404, "not_found")


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_a_person_following_a_cut_link_gets_a_page_in_their_language_and_programs_a_problem(
        client: httpx.AsyncClient) -> None:
    """A browser asking for a page that does not exist (a link cut short: `/complaint/`, `/room/`) is told so
    in words and shown the way home; a program, and anything under the API, still gets the problem document."""
    r = await client.get("/complaint/", headers={"Accept": BROWSER, "Accept-Language": "ar-DZ,ar;q=0.9"})
    assert r.status_code == 404 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<html lang="ar" dir="rtl">' in r.text and "هذه الصفحة غير موجودة" in r.text
    assert '<a href="/?lang=ar">' in r.text
    assert r.headers["cache-control"] == "no-store" and "default-src 'none'" in r.headers["content-security-policy"]
    r = await client.get("/room/?lang=fr", headers={"Accept": BROWSER, "Accept-Language": "en"})
    assert r.status_code == 404 and "Cette page n’existe pas" in r.text and 'dir="ltr"' in r.text
    r = await client.get("/room/?lang=<script>", headers={"Accept": BROWSER})
    assert r.status_code == 404 and "<script>" not in r.text  # only a language of ours is written back
    r = await client.get("/complaint/", headers={"Accept": "application/json"})
    assert_problem(r, 404, "not_found")
    assert "Accept" in r.headers["vary"]  # a cache keeps the page and the problem document apart
    r = await client.get("/nowhere", headers={"Accept": BROWSER})
    assert r.status_code == 404 and 'lang="ar"' in r.text  # no language of ours asked for: Arabic
    assert_problem(await client.get("/v1/nothing", headers={"Accept": BROWSER}), 404, "not_found")
    assert_problem(await client.post("/complaint/", headers={"Accept": BROWSER}), 404, "not_found")


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    r = await client.delete("/healthz")
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]


async def test_body_over_the_limit_is_413_before_it_is_read(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/tokens", headers=api_key_auth(), content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert_problem(r, 413, "payload_too_large")


async def test_streamed_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    r = await client.post("/v1/tokens", headers=api_key_auth(), content=body())
    assert_problem(r, 413, "payload_too_large")


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"sub": 5, "role": "client"}', b"\xff\xfe"])
async def test_malformed_body_is_422_without_echoing_it(client: httpx.AsyncClient, content: bytes) -> None:
    r = await client.post("/v1/tokens", headers=api_key_auth(), content=content)
    assert_problem(r, 422, "invalid_input")
    assert "errors" in r.json()
    assert "not json" not in r.text


class BrokenFeature:
    name = "broken"

    def __init__(self) -> None:
        self.holding = 0

    def routes(self) -> list[BaseRoute]:
        async def boom(request: Request) -> Response:
            raise RuntimeError("a bug with a secret inside")

        async def hold(request: Request) -> Response:
            ctx: AppContext = request.app.state.ctx
            await ctx.redis.blpop(["never-filled"], timeout=3)
            return JSONResponse({"held": True})

        async def count(request: Request) -> Response:
            ctx: AppContext = request.app.state.ctx
            await ctx.redis.incr("counter")
            return JSONResponse({"ok": True})

        return [Route("/t/boom", boom), Route("/t/hold", hold), Route("/t/count", count)]

    async def start(self, ctx: AppContext) -> None:
        pass

    async def stop(self, ctx: AppContext) -> None:
        pass


async def test_an_unexpected_error_is_500_problem_without_details(tmp_path: Path, redis_url: str) -> None:
    app = create_app(make_settings(tmp_path, redis_url), features=[BrokenFeature()])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        r = await c.get("/t/boom")
    assert_problem(r, 500, "internal_error")
    assert "secret" not in r.text


async def test_an_exhausted_redis_pool_waits_then_answers_503(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, redis_max_connections=2, redis_pool_timeout_s=0.2)
    app = create_app(settings, features=[BrokenFeature()])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        ctx: AppContext = app.state.ctx
        holders = [asyncio.create_task(c.get("/t/hold")) for _ in range(2)]

        pool = ctx.redis.connection_pool

        async def both_held() -> bool:
            return len(pool._in_use_connections) == 2  # type: ignore[attr-defined]

        await eventually(both_held, what="both pooled connections held by BLPOP")
        r = await c.get("/t/count")
        assert_problem(r, 503, "redis_unavailable")
        assert r.headers["retry-after"] == "1"
        for h in holders:
            assert (await h).status_code == 200
        assert (await c.get("/t/count")).status_code == 200  # the pool recovers on its own


async def test_a_refusal_of_its_own_kind_is_titled_by_its_code_not_as_a_bad_request(
        client: httpx.AsyncClient, token: Callable[..., str]) -> None:
    from .bookings_support import every_day, first_slot, make_practitioner
    from .conftest import auth

    await make_practitioner(client, "p1", weekly=every_day())
    c = auth(token("client", "c1"))
    slot = await first_slot(client, "p1", c)
    r = await client.post("/v1/bookings", headers=c, json={"practitioner_id": "p1", "starts_at": slot["starts_at"],
                                                           "expected_total": 1})
    assert_problem(r, 409, "price_changed")
    assert r.json()["title"] == "Price changed"


async def test_a_body_that_is_not_sent_as_json_is_refused_with_415(
        client: httpx.AsyncClient, token: Callable[..., str]) -> None:
    from .conftest import auth

    c = auth(token("client", "c1"))
    body = '{"practitioner_id": "p1", "starts_at": "2030-01-01T10:00:00Z"}'
    for media_type in ("text/plain", "application/x-www-form-urlencoded"):
        r = await client.post("/v1/bookings", headers={**c, "Content-Type": media_type}, content=body)
        assert_problem(r, 415, "json_expected")
    r = await client.post("/v1/bookings", headers={**c, "Content-Type": "application/json; charset=utf-8"},
                          content=body)
    assert r.status_code == 404 and r.json()["code"] == "practitioner_not_found"  # read, then refused for cause
