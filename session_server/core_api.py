"""Health, readiness, metrics and identity: the endpoints every deployment needs."""

from __future__ import annotations

import asyncio
from typing import Literal

import redis.exceptions
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from . import openapi
from .auth import USER_ID, BadName, BadSub, BadTtl, Role, UnknownGrant, api_key_credentials, authenticate
from .context import AppContext
from .errors import NotFound, Unauthenticated
from .http import Body, NoQuery, Text, documented, parse_query, read_json, redis_unavailable
from .metrics import metrics_endpoint

READY_TIMEOUT_S = 1.0


class Alive(BaseModel):
    """The process is alive."""

    status: Literal["alive"]


class Ready(BaseModel):
    """The process serves: its data store answers."""

    status: Literal["ready"]
    redis: Literal["ok"]


class TokenOut(BaseModel):
    """The access token, for `Authorization: Bearer <token>`."""

    token: str
    token_type: Literal["Bearer"]
    expires_at: int = Field(description="epoch seconds")


class IdentityOut(BaseModel):
    """Who the token says the caller is."""

    sub: str
    name: str
    role: Role
    permissions: list[str]
    grants: list[str] | None
    expires_at: int = Field(description="epoch seconds")


@documented("Liveness", auth=(), responses={200: Alive}, tags=("health",))
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


@documented("Readiness: 503 `redis_unavailable` while the data store does not answer", auth=(),
            responses={200: Ready}, tags=("health",))
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
    name: Text = Field(default="", max_length=200, description="shown to the other party in rooms and chat")
    role: Role
    ttl_s: int = Field(default=3600, ge=1, description="the token's lifetime in seconds, at most "
                       "SESSION_SERVER_TOKEN_MAX_TTL_S (SESSION_SERVER_SUPPORT_TOKEN_MAX_TTL_S for support)")
    grants: list[str] | None = Field(default=None, max_length=32,
                                     description="absent: every permission of the role; a list narrows them")


@documented("Mint an access token (the platform's backend)", auth=("api_key",), body=TokenRequest,
            responses={201: TokenOut}, errors=(BadTtl, BadSub, BadName, UnknownGrant), tags=("identity",))
async def mint_token(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    key_id = ctx.tokens.check_api_key(*api_key_credentials(request))
    body = await read_json(request, TokenRequest)
    token, exp = ctx.tokens.mint(sub=body.sub, name=body.name, role=body.role, ttl_s=body.ttl_s,
                                 grants=body.grants, key_id=key_id)
    return JSONResponse({"token": token, "token_type": "Bearer", "expires_at": exp}, status_code=201,
                        headers={"Cache-Control": "no-store"})


@documented("Who am I: the identity the token states", query=NoQuery, responses={200: IdentityOut},
            tags=("identity",))
async def me(request: Request) -> Response:
    identity = authenticate(request)
    parse_query(request, NoQuery)
    return JSONResponse(identity.as_json(), headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", documented("Prometheus metrics, on the public port only with the metrics credential "
                                     "(`Authorization: Bearer <SESSION_SERVER_METRICS_TOKEN>`); 404 when none is set",
                                     auth=(), responses={200: "text/plain"}, errors=(NotFound, Unauthenticated),
                                     tags=("health",))(metrics_endpoint), methods=["GET"]),
        Route("/v1/tokens", mint_token, methods=["POST"]),
        Route("/v1/me", me, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
        Route("/docs/api", openapi.api_page, methods=["GET"]),
        Mount("/static/api", StaticFiles(directory=openapi.STATIC_DIR), name="api-static"),
    ]
