"""HTTP and WebSocket edges of notifications.

HTTP: GET /v1/notifications (newest first, `unread=true` for the unread list), POST /v1/notifications/read.
WebSocket /v1/notifications/ws: the token comes in the `Sec-WebSocket-Protocol` header as
`bearer.<token>` (offer `notifications.v1` beside it and the server selects that one, so the token is
not echoed), or as the first message `{"type": "auth", "token": "..."}` within AUTH_TIMEOUT_S. The server
then sends `hello` (with the unread count) and one `notification` message per new notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import msgspec
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..auth import Identity, Permission, authenticate
from ..context import AppContext
from ..errors import DomainError
from ..http import Body, JsonTooDeep, check_json_depth, documented, parse_query, read_json
from ..ws_handshake import HandshakePolicy
from . import responses as out
from .rules import BadReadRequest
from .service import NotificationService

PROTOCOL = "notifications.v1"
AUTH_TIMEOUT_S = 5.0
CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_MANY = 4429


def _service(conn: Request | WebSocket) -> NotificationService:
    ctx: AppContext = conn.app.state.ctx
    return ctx.notifications


class ListQuery(Body):
    unread: bool = Field(default=False, description="true: the unread ones only")
    limit: int = Field(default=50, ge=1, le=500)


class ReadIn(Body):
    ids: list[str] | None = Field(default=None, max_length=500, description="the notifications to mark read")
    all: bool = Field(default=False, description="true: mark every one read (give this or ids)")


@documented("The caller's notifications", query=ListQuery, responses={200: out.NotificationsOut},
            errors=("permission_denied",), tags=("notifications",))
async def list_notifications(request: Request) -> Response:
    identity = authenticate(request)
    identity.require(Permission.NOTIFICATIONS_READ)
    q = parse_query(request, ListQuery)
    items, unread = await _service(request).store.recent(identity.sub, unread_only=q.unread, limit=q.limit)
    return JSONResponse({"notifications": items, "unread_count": unread})


@documented("Mark notifications read", body=ReadIn, responses={200: out.MarkedOut},
            errors=("permission_denied", "bad_read_request"), tags=("notifications",))
async def mark_read(request: Request) -> Response:
    identity = authenticate(request)
    identity.require(Permission.NOTIFICATIONS_READ)
    body = await read_json(request, ReadIn)
    if body.all == (body.ids is not None):
        raise BadReadRequest("give either ids or all: true")
    svc = _service(request)
    marked = await svc.store.mark_read(identity.sub, None if body.all else body.ids)
    return JSONResponse({"marked": marked, "unread_count": await svc.store.unread_count(identity.sub)})


class AuthMessage(msgspec.Struct, tag="auth", forbid_unknown_fields=True):
    token: str


class PingMessage(msgspec.Struct, tag="ping", forbid_unknown_fields=True):
    pass


Incoming = AuthMessage | PingMessage
_decoder = msgspec.json.Decoder(Incoming)


def _offered(ws: WebSocket) -> list[str]:
    raw = ws.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


async def _identify(ws: WebSocket) -> tuple[Identity, str | None] | None:
    ctx: AppContext = ws.app.state.ctx
    offered = _offered(ws)
    bearer = next((p for p in offered if p.startswith("bearer.")), None)
    if bearer is not None:
        subprotocol = PROTOCOL if PROTOCOL in offered else bearer
        try:
            identity = ctx.tokens.verify(bearer.removeprefix("bearer."))
        except DomainError as exc:
            # accepted first, so that the client reads why (a refused handshake is a bare HTTP 403)
            await ws.accept(subprotocol=subprotocol)
            await _refuse(ws, exc.code, exc.message)
            return None
        return identity, subprotocol
    await ws.accept(subprotocol=PROTOCOL if PROTOCOL in offered else None)
    try:
        raw = await asyncio.wait_for(ws.receive_text(), AUTH_TIMEOUT_S)
        check_json_depth(raw)
        msg = _decoder.decode(raw)
        if not isinstance(msg, AuthMessage):
            raise ValueError("auth first")
        return ctx.tokens.verify(msg.token), None
    except DomainError as exc:  # the token itself was refused: say why, as the HTTP routes do
        await _refuse(ws, exc.code, exc.message)
        return None
    except (TimeoutError, ValueError, msgspec.DecodeError, KeyError):
        await _refuse(ws, "unauthenticated", "send {\"type\": \"auth\", \"token\": ...} first")
        return None


async def _refuse(ws: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await _send(ws, {"type": "error", "code": code, "message": message})
        await ws.close(CLOSE_UNAUTHENTICATED, code)


async def _send(ws: WebSocket, payload: dict[str, Any]) -> None:
    await ws.send_text(json.dumps(payload, separators=(",", ":")))


async def notifications_ws(ws: WebSocket) -> None:
    ctx: AppContext = ws.app.state.ctx
    if not await HandshakePolicy(ctx.settings.origins).admit(ws, "notifications"):
        return
    found = await _identify(ws)
    if found is None:
        return
    identity, subprotocol = found
    svc = _service(ws)
    async with svc.connection(identity.sub) as queue:
        if subprotocol is not None or ws.client_state.name == "CONNECTING":
            await ws.accept(subprotocol=subprotocol)
        if queue is None:
            await _send(ws, {"type": "error", "code": "too_many_connections",
                             "message": "close another notifications connection first"})
            await ws.close(CLOSE_TOO_MANY)
            return
        ctx.metrics.ws_connections.labels("notifications").inc()
        try:
            await _send(ws, {"type": "hello", "user_id": identity.sub,
                             "unread_count": await svc.store.unread_count(identity.sub)})
            await _pump(ws, queue)
        finally:
            ctx.metrics.ws_connections.labels("notifications").dec()


async def _pump(ws: WebSocket, queue: asyncio.Queue[dict[str, Any]]) -> None:
    async def send_loop() -> None:
        while True:
            await _send(ws, {"type": "notification", "notification": await queue.get()})

    async def receive_loop() -> None:
        while True:
            raw = await ws.receive_text()
            try:
                check_json_depth(raw)
                msg = _decoder.decode(raw)
            except JsonTooDeep as exc:
                await _send(ws, {"type": "error", "code": exc.code, "message": exc.message})
                continue
            except (msgspec.DecodeError, msgspec.ValidationError):
                await _send(ws, {"type": "error", "code": "bad_message", "message": "unknown message"})
                continue
            if isinstance(msg, PingMessage):
                await _send(ws, {"type": "pong"})

    sender = asyncio.create_task(send_loop())
    try:
        await receive_loop()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await sender


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/notifications", list_notifications, methods=["GET"]),
        Route("/v1/notifications/read", mark_read, methods=["POST"]),
        WebSocketRoute("/v1/notifications/ws", notifications_ws),
    ]


