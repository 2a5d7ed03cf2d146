"""Health, readiness, metrics and identity: the endpoints every deployment needs."""

from __future__ import annotations

import asyncio

import redis.exceptions
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .auth import USER_ID, Role, api_key_credentials, authenticate
from .context import AppContext
from .http import Body, Text, read_json, redis_unavailable
from .metrics import metrics_endpoint

READY_TIMEOUT_S = 1.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    try:
        await asyncio.wait_for(ctx.redis.ping(), READY_TIMEOUT_S)
    except (redis.exceptions.RedisError, OSError, TimeoutError):
        ctx.metrics.redis_up.set(0)
        return redis_unavailable("the data store does not answer", "/readyz")
    ctx.metrics.redis_up.set(1)
    return JSONResponse({"status": "ready", "redis": "ok"})


class TokenRequest(Body):
    sub: str = Field(pattern=USER_ID.pattern)
    name: Text = Field(default="", max_length=200)  # shown to the other party in rooms and chat
    role: Role
    ttl_s: int = Field(default=3600, ge=1)
    grants: list[str] | None = Field(default=None, max_length=32)


async def mint_token(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    key_id = ctx.tokens.check_api_key(*api_key_credentials(request))
    body = await read_json(request, TokenRequest)
    token, exp = ctx.tokens.mint(sub=body.sub, name=body.name, role=body.role, ttl_s=body.ttl_s,
                                 grants=body.grants, key_id=key_id)
    return JSONResponse({"token": token, "token_type": "Bearer", "expires_at": exp}, status_code=201,
                        headers={"Cache-Control": "no-store"})


async def me(request: Request) -> Response:
    return JSONResponse(authenticate(request).as_json(), headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/v1/tokens", mint_token, methods=["POST"]),
        Route("/v1/me", me, methods=["GET"]),
    ]
