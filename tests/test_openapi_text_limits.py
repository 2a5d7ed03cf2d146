"""Text in a body fits the OpenAPI document's `maxLength` as sent, before the server strips it.

Bodies keep text without its surrounding whitespace, and the stripped text must fit the field's
limits; the document's `maxLength` is of the raw text, so the raw text must fit it too. Driven through
the real HTTP edge (uvicorn on 127.0.0.1) and Redis.
"""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis

from .bookings_support import events, make_practitioner
from .conftest import LiveServer, api_key_auth

STATUS = "/v1/practitioners/p1/status"


async def test_a_reason_over_500_characters_with_spaces_around_is_refused_and_changes_nothing(
        live_server: LiveServer, redis_client: aioredis.Redis) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        await make_practitioner(http, "p1")
        before = [e.type for e in await events(redis_client)]
        reason = " " + "a" * 499 + " "  # 501 characters; 499 once stripped
        r = await http.post(STATUS, headers=api_key_auth(), json={"status": "suspended", "reason": reason})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "invalid_input"
        assert r.json()["errors"] == [{"loc": ["reason"], "msg": "String should have at most 500 characters",
                                       "type": "string_too_long"}]
        assert reason not in r.text  # the input is never echoed
        r = await http.get("/v1/practitioners/p1", headers=api_key_auth())
        assert r.status_code == 200 and r.json()["status"] == "active"
        assert [e.type for e in await events(redis_client)] == before


async def test_a_reason_of_500_characters_with_spaces_around_is_kept_stripped(
        live_server: LiveServer, redis_client: aioredis.Redis) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        await make_practitioner(http, "p1")
        r = await http.post(STATUS, headers=api_key_auth(),
                            json={"status": "suspended", "reason": " " + "a" * 498 + " "})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "suspended"
    [suspended] = await events(redis_client, "practitioner.suspended")
    assert suspended.body["reason"] == "a" * 498


async def test_the_document_gives_the_limit_the_server_keeps(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        document = (await http.get("/openapi.json")).json()
    body = document["paths"]["/v1/practitioners/{pid}/status"]["post"]["requestBody"]["content"]
    ref = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert document["components"]["schemas"][ref]["properties"]["reason"]["maxLength"] == 500
