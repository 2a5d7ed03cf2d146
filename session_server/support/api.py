"""Support's edges: the board page, its socket, the session detail, the tickets and the audit.

Roles: support staff and admins see the board and the tickets; admins read the audit, and a practitioner
the audit of one of their own sessions; everyone else gets 403 (`wrong_role`). Each look at a session's
detail and each reading of a ticket writes one audit record (entering a room is audited by the rooms'
observer in feature.py).

WebSocket /v1/support/ws: the token comes in the `Sec-WebSocket-Protocol` header as `bearer.<token>`
beside `support.v1` (the server selects `support.v1`, so the token is not echoed). The server sends one
`snapshot`, then `update` frames (coalesced) as sessions, tickets and today's figures change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..auth import Identity, Role, TokenMissing, WrongRole, authenticate
from ..context import AppContext
from ..errors import DomainError
from ..http import Body, NoQuery, documented, parse_query, private_page_headers, read_json
from ..ws_handshake import HandshakePolicy
from . import responses as out
from .board import Board, BoardTicket
from .errors import AuditNotYours, SessionNotOnBoard
from .rules import TicketAction
from .service import SupportService
from .store import day_of

PROTOCOL = "support.v1"
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 4008
STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "support"
PAGE_HEADERS = private_page_headers("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'")
STAFF = (Role.SUPPORT, Role.ADMIN)


def _ctx(conn: Request | WebSocket) -> AppContext:
    ctx: AppContext = conn.app.state.ctx
    return ctx


def _service(conn: Request | WebSocket) -> SupportService:
    return _ctx(conn).support


def _board(conn: Request | WebSocket) -> Board:
    return _ctx(conn).support_board


def _staff(request: Request) -> Identity:
    identity = authenticate(request)
    identity.require_role(*STAFF)
    return identity


def _page_route(page: str) -> Any:
    @documented("The support board (the token travels in the URL fragment)", auth=(),
                responses={200: "text/html"}, tags=("support",))
    async def board_page(request: Request) -> Response:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    return board_page


@documented("One session of the board, with its tickets (audited)", roles=("support", "admin"),
            query=NoQuery, responses={200: out.SessionDetailOut}, errors=("wrong_role", "session_not_on_board"),
            tags=("support",))
async def session_detail(request: Request) -> Response:
    identity = _staff(request)
    parse_query(request, NoQuery)
    booking_id = request.path_params["booking_id"]
    board = _board(request)
    row = board.rows.get(booking_id)
    if row is None:
        raise SessionNotOnBoard(f"no session {booking_id} on the board (its room opens in more than an hour, "
                                "or it ended long ago)")
    svc = _service(request)
    await svc.audit(who=identity.sub, role=identity.role.value, action="session.viewed", booking_id=booking_id)
    tickets = [board.tickets[t].as_json() for t in board.tickets if board.tickets[t].booking_id == booking_id]
    return JSONResponse({"session": row.as_json(board.open_tickets(booking_id), full=True), "tickets": tickets})


class TicketsQuery(Body):
    which: str = Field(default="active", pattern="^(active|today)$",
                       description="active: open and acknowledged tickets; today: every ticket opened today (UTC)")


@documented("Problem tickets", roles=("support", "admin"), query=TicketsQuery, responses={200: out.TicketsOut},
            errors=("wrong_role",), tags=("support",))
async def list_tickets(request: Request) -> Response:
    _staff(request)
    q = parse_query(request, TicketsQuery)
    svc = _service(request)
    if q.which == "active":
        tickets = await svc.store.active()
    else:
        tickets = await svc.store.of_day(day_of(svc.now_ms()))
    return JSONResponse({"tickets": [BoardTicket.of(t).as_json() for t in tickets],
                         "answer_within_s": svc.answer_within_s})


@documented("A ticket with its notes (audited)", roles=("support", "admin"), query=NoQuery,
            responses={200: out.TicketDetailOut},
            errors=("wrong_role", "ticket_not_found"), tags=("support",))
async def ticket_detail(request: Request) -> Response:
    identity = _staff(request)
    parse_query(request, NoQuery)
    svc = _service(request)
    t = await svc.ticket(request.path_params["ticket_id"])
    await svc.audit(who=identity.sub, role=identity.role.value, action="ticket.read", booking_id=t.booking_id,
                    ticket_id=t.id)
    return JSONResponse({"ticket": BoardTicket.of(t).as_json(), "notes": await svc.store.notes(t.id)})


def _ticket_step(action: TicketAction, summary: str) -> Any:
    @documented(summary, roles=("support", "admin"), responses={200: out.TicketOut},
                errors=("wrong_role", "ticket_not_found", "ticket_move_refused"), tags=("support",))
    async def step(request: Request) -> Response:
        identity = _staff(request)
        t = await _service(request).step(request.path_params["ticket_id"], action, by=identity.sub,
                                         role=identity.role.value)
        return JSONResponse(BoardTicket.of(t).as_json())

    step.__name__ = f"ticket_{action.value}"
    return step


class NoteIn(Body):
    cause: str | None = Field(default=None, max_length=64, description="one of the fixed causes (docs/support.md)")
    text: str = Field(default="", max_length=1000, description="staff-only free text")


@documented("Add a staff-only note to a ticket", roles=("support", "admin"), body=NoteIn,
            responses={200: out.TicketOut},
            errors=("wrong_role", "ticket_not_found", "unknown_cause", "empty_note", "ticket_note_too_long",
                    "ticket_move_refused"), tags=("support",))
async def add_note(request: Request) -> Response:
    identity = _staff(request)
    body = await read_json(request, NoteIn)
    t = await _service(request).step(request.path_params["ticket_id"], TicketAction.NOTE, by=identity.sub,
                                     cause=body.cause, text=body.text)
    return JSONResponse(BoardTicket.of(t).as_json())


@documented("Today's response figures", roles=("support", "admin"), query=NoQuery, responses={200: out.FiguresOut},
            errors=("wrong_role", "invalid_input"), tags=("support",))
async def figures(request: Request) -> Response:
    _staff(request)
    parse_query(request, NoQuery)  # today's: no other day to ask for
    return JSONResponse((await _service(request).figures()).as_json())


class AuditQuery(Body):
    booking_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                   description="absent: every booking (admins; a practitioner gives one)")
    limit: int = Field(default=100, ge=1, le=1000)


@documented("Who looked at which session, and when (admins; a practitioner for one of their own sessions)",
            roles=("admin", "practitioner"), query=AuditQuery, responses={200: out.AuditOut},
            errors=("wrong_role", "audit_not_yours"), tags=("support",))
async def audit(request: Request) -> Response:
    identity = authenticate(request)
    identity.require_role(Role.ADMIN, Role.PRACTITIONER)
    q = parse_query(request, AuditQuery)
    if identity.role is Role.PRACTITIONER:
        found = None if q.booking_id is None else await _ctx(request).bookings.booking(q.booking_id)
        if found is None or found[0].practitioner_id != identity.sub:
            raise AuditNotYours("give the id of one of your own sessions as booking_id")
    records = await _service(request).store.audit_records(booking_id=q.booking_id, limit=q.limit)
    return JSONResponse({"records": records})


# --- the board's socket ---------------------------------------------------------------------------

def _offered(ws: WebSocket) -> list[str]:
    return [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


async def _refuse(ws: WebSocket, exc: DomainError, close: int) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await ws.send_text(json.dumps({"type": "error", "code": exc.code, "message": exc.message},
                                      separators=(",", ":")))
        await ws.close(close, exc.code)


async def board_ws(ws: WebSocket) -> None:
    ctx = _ctx(ws)
    if not await HandshakePolicy(ctx.settings.origins).admit(ws, "support"):
        return
    bearer = next((p for p in _offered(ws) if p.startswith("bearer.")), None)
    # Accepted before the token is judged, so that the page reads why it was refused from the close code,
    # and a client from the `error` message that comes first (the same codes as the HTTP routes').
    await ws.accept(subprotocol=PROTOCOL if PROTOCOL in _offered(ws) else None)
    try:
        if bearer is None:
            raise TokenMissing("offer the access token as the subprotocol `bearer.<token>`")
        identity = ctx.tokens.verify(bearer.removeprefix("bearer."))
    except DomainError as exc:
        await _refuse(ws, exc, CLOSE_UNAUTHENTICATED)
        return
    if identity.role not in STAFF:
        await _refuse(ws, WrongRole("the support board is for support staff and admins"), CLOSE_FORBIDDEN)
        return
    board = _board(ws)
    await board.loaded.wait()
    agent = board.connect()
    ctx.metrics.ws_connections.labels("support").inc()

    async def send_loop() -> None:
        while True:
            text = await agent.queue.get()
            if agent.overflowed:
                await ws.close(CLOSE_TOO_SLOW)
                return
            await ws.send_text(text)

    async def receive_loop() -> None:
        while True:
            raw = await ws.receive_text()
            with contextlib.suppress(ValueError):
                if len(raw) < 256 and json.loads(raw).get("type") == "ping":
                    await ws.send_text('{"type":"pong"}')

    sender = asyncio.create_task(send_loop())
    try:
        await receive_loop()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        board.disconnect(agent)
        ctx.metrics.ws_connections.labels("support").dec()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await sender


def routes() -> list[BaseRoute]:
    page = (STATIC_DIR / "board.html").read_text(encoding="utf-8")
    return [
        Route("/support", _page_route(page), methods=["GET"]),
        Mount("/static/support", StaticFiles(directory=STATIC_DIR), name="support-static"),
        WebSocketRoute("/v1/support/ws", board_ws),
        Route("/v1/support/sessions/{booking_id}", session_detail, methods=["GET"]),
        Route("/v1/support/tickets", list_tickets, methods=["GET"]),
        Route("/v1/support/tickets/{ticket_id}", ticket_detail, methods=["GET"]),
        Route("/v1/support/tickets/{ticket_id}/acknowledge",
              _ticket_step(TicketAction.ACKNOWLEDGE, "Acknowledge a ticket (the reporter is told)"),
              methods=["POST"]),
        Route("/v1/support/tickets/{ticket_id}/resolve",
              _ticket_step(TicketAction.RESOLVE, "Resolve a ticket (the reporter is told)"), methods=["POST"]),
        Route("/v1/support/tickets/{ticket_id}/unresolvable",
              _ticket_step(TicketAction.UNRESOLVABLE,
                           "Mark a ticket unresolvable: the session is offered a free reschedule"),
              methods=["POST"]),
        Route("/v1/support/tickets/{ticket_id}/notes", add_note, methods=["POST"]),
        Route("/v1/support/figures", figures, methods=["GET"]),
        Route("/v1/audit", audit, methods=["GET"]),
    ]
