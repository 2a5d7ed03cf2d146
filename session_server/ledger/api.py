"""HTTP edge of the ledger: complaints, the bank's answers to payouts, payout dates and the views."""

from __future__ import annotations

import enum
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..auth import USER_ID, Identity, Permission, Role, authenticate, authenticate_admin, authenticate_any
from ..context import AppContext
from ..errors import DomainError
from ..http import Body, NoQuery, Text, documented, parse_query, private_page_headers, read_json
from . import responses as out
from .errors import ComplaintNotFound, NotYourStatement, PayoutNotFound, RefundNotFound
from .service import LedgerService

STATIC = Path(__file__).resolve().parent.parent / "static"
PAGE_HEADERS = private_page_headers("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
Id = Annotated[str, Field(pattern=USER_ID.pattern)]
HexId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


def _service(request: Request) -> LedgerService:
    ctx: AppContext = request.app.state.ctx
    service: LedgerService = ctx.ledger
    return service


class ComplaintReason(enum.StrEnum):
    PRACTITIONER_LATE = "practitioner_late"
    PRACTITIONER_ABSENT = "practitioner_absent"
    SESSION_CUT_SHORT = "session_cut_short"
    CONDUCT = "conduct"
    TECHNICAL_PROBLEM = "technical_problem"
    BILLING = "billing"
    OTHER = "other"


class ComplaintIn(Body):
    reason: ComplaintReason
    text: Text | None = Field(default=None, min_length=1, max_length=4000,
                              description="absent: no text (encrypted at rest when given)")


class ResolveIn(Body):
    decision: Literal["upheld", "rejected"]
    # upheld: the refund from the held amount (all of it if left out); rejected: none
    refund_minor: int | None = Field(default=None, ge=0, le=100_000_000,
                                     description="upheld: absent refunds all of the held amount")

    @model_validator(mode="after")
    def _refund_only_when_upheld(self) -> ResolveIn:
        if self.decision == "rejected" and self.refund_minor is not None:
            raise ValueError("a rejected complaint refunds nothing")
        return self


class ComplaintsQuery(Body):
    status: Literal["open", "upheld", "rejected"] | None = None
    practitioner_id: Id | None = None
    limit: int = Field(default=100, ge=1, le=500)
    order: Literal["newest", "oldest"] = Field(default="newest",
                                              description="oldest: the queue, those waiting longest first")


class PayoutAnswerIn(Body):
    status: Literal["paid", "failed"]
    reason: Text = Field(default="", max_length=500, description="why the transfer failed (with failed)")


class RefundsQuery(Body):
    status: Literal["owed", "sending", "sent", "paid", "failed"] | None = None
    client_id: Id | None = Field(default=None, description="an admin's filter; a client sees only their own")
    limit: int = Field(default=100, ge=1, le=500)


class RefundAnswerIn(Body):
    status: Literal["paid", "failed"]
    reason: Text = Field(default="", max_length=500, description="why the gateway could not make it (with failed "
                                                                 "only)")
    attempt: int = Field(ge=1, le=1000, description="the hand-over answered: the refund file's `attempt` (an answer "
                                                    "for an earlier one than the latest is refused)")

    @model_validator(mode="after")
    def _reason_only_when_failed(self) -> RefundAnswerIn:
        if self.status == "paid" and self.reason:
            raise ValueError("a refund made has no reason: send one with failed only")
        return self


class _Nothing(Body):
    """A route that takes no body: one sent is refused, not ignored."""


class PayoutsQuery(Body):
    sunday: date


class RevenueQuery(Body):
    start: date | None = Field(default=None, alias="from", description="absent: from the first day recorded")
    end: date | None = Field(default=None, alias="to", description="absent: to the last day recorded")


class PayoutDatesQuery(Body):
    year: int = Field(ge=2000, le=2100)


class HolidayIn(Body):
    estimated: date
    date: date
    move_announced: bool = Field(default=False, description="true: announced payout dates move too")


def _complaint_for(identity: Identity, record: dict[str, Any], svc: LedgerService) -> dict[str, Any]:
    """The complaint as the caller may see it: the client's text for the client and admins, and for the
    practitioner only once shared; anyone else finds nothing."""
    if identity.role is Role.ADMIN:
        return svc.complaint_view(record, with_text=True)
    if identity.role is Role.CLIENT and identity.sub == record["client_id"]:
        return svc.complaint_view(record, with_text=True)
    if identity.role is Role.PRACTITIONER and identity.sub == record["practitioner_id"]:
        return svc.complaint_view(record, with_text=record.get("shared") == "1")
    raise ComplaintNotFound("no such complaint")


@documented("File a complaint about a session (its practitioner share is held at once)", roles=("client",),
            body=ComplaintIn, responses={201: out.ComplaintOut},
            errors=("wrong_role", "permission_denied", "booking_not_found", "session_not_settled",
                    "complaint_window_closed", "already_complained"), tags=("ledger",))
async def file_complaint(request: Request) -> Response:
    identity = authenticate(request)
    identity.require(Permission.BOOKINGS_WRITE)
    identity.require_role(Role.CLIENT)
    body = await read_json(request, ComplaintIn)
    svc = _service(request)
    record = await svc.file_complaint(request.path_params["bid"], identity.sub, body.reason.value, body.text)
    return JSONResponse(svc.complaint_view(record, with_text=True), status_code=201,
                        headers={"Location": f"/v1/complaints/{record['complaint_id']}"})


@documented("Complaints: the admins' queue, a practitioner's own, a client's own", auth=("bearer", "api_key"),
            query=ComplaintsQuery, responses={200: out.ComplaintsOut}, errors=("wrong_role",), tags=("ledger",))
async def list_complaints(request: Request) -> Response:
    identity = authenticate_any(request)
    q = parse_query(request, ComplaintsQuery)
    svc = _service(request)
    oldest = q.order == "oldest"
    if identity.role is Role.ADMIN:
        found = await svc.complaint_list(q.practitioner_id, q.status, q.limit, oldest_first=oldest)
    elif identity.role is Role.PRACTITIONER:
        found = await svc.complaint_list(identity.sub, q.status, q.limit, oldest_first=oldest)
    elif identity.role is Role.CLIENT:
        found = await svc.complaint_list(None, q.status, q.limit, oldest_first=oldest, client_id=identity.sub)
    else:
        identity.require_role(Role.ADMIN, Role.PRACTITIONER, Role.CLIENT)
        found = []
    # a list never carries the client's text: one complaint at a time, for those who may read it
    return JSONResponse({"complaints": [svc.complaint_view(r, with_text=False) for r in found]})


@documented("A complaint", auth=("bearer", "api_key"), query=NoQuery, responses={200: out.ComplaintOut},
            errors=("complaint_not_found",), tags=("ledger",))
async def get_complaint(request: Request) -> Response:
    identity = authenticate_any(request)
    parse_query(request, NoQuery)
    svc = _service(request)
    record = await svc.complaint(request.path_params["cid"])
    return JSONResponse(_complaint_for(identity, record, svc))


@documented("Resolve a complaint: upheld (refund from the held amount) or rejected (released)",
            auth=("bearer", "api_key"), roles=("admin",), body=ResolveIn, responses={200: out.ComplaintOut},
            errors=("wrong_role", "complaint_not_found", "hold_pending", "already_resolved", "refund_too_large"),
            tags=("ledger",))
async def resolve_complaint(request: Request) -> Response:
    admin = authenticate_admin(request)
    body = await read_json(request, ResolveIn)
    svc = _service(request)
    record = await svc.resolve(request.path_params["cid"], body.decision, body.refund_minor, admin.sub)
    return JSONResponse(svc.complaint_view(record, with_text=True))


@documented("Share a complaint's text with the practitioner", auth=("bearer", "api_key"), roles=("admin",),
            responses={200: out.ComplaintOut}, errors=("wrong_role", "complaint_not_found"), tags=("ledger",))
async def share_complaint(request: Request) -> Response:
    admin = authenticate_admin(request)
    svc = _service(request)
    record = await svc.share(request.path_params["cid"], admin.sub)
    return JSONResponse(svc.complaint_view(record, with_text=True))


def _statement_caller(request: Request, pid: str) -> None:
    identity = authenticate_any(request)
    if identity.role is Role.ADMIN or (identity.role is Role.PRACTITIONER and identity.sub == pid):
        return
    raise NotYourStatement("only this practitioner or an admin may read this statement")


@documented("A practitioner's statement: balances and every entry", auth=("bearer", "api_key"),
            roles=("practitioner", "admin"), query=NoQuery, responses={200: out.StatementOut},
            errors=("not_your_statement", "invalid_input"), tags=("ledger",))
async def statement(request: Request) -> Response:
    pid = request.path_params["pid"]
    _statement_caller(request, pid)
    parse_query(request, NoQuery)
    return JSONResponse(await _service(request).statement(pid))


@documented("A practitioner's statement as CSV", auth=("bearer", "api_key"), roles=("practitioner", "admin"),
            query=NoQuery, responses={200: "text/csv"}, errors=("not_your_statement", "invalid_input"),
            tags=("ledger",))
async def statement_csv(request: Request) -> Response:
    pid = request.path_params["pid"]
    _statement_caller(request, pid)
    parse_query(request, NoQuery)
    svc = _service(request)
    text = svc.statement_csv(await svc.statement(pid))
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="statement.csv"'})


@documented("The platform's revenue and liabilities per day", auth=("bearer", "api_key"), roles=("admin",),
            query=RevenueQuery, responses={200: out.RevenueOut}, errors=("wrong_role",), tags=("ledger",))
async def revenue(request: Request) -> Response:
    authenticate_admin(request)
    q = parse_query(request, RevenueQuery)
    return JSONResponse({"days": await _service(request).revenue(q.start, q.end)})


def _payout_view(p: dict[str, str]) -> dict[str, Any]:
    return {"payout_id": p["payout_id"], "practitioner_id": p["practitioner_id"], "amount_minor": int(p["amount"]),
            "currency": p["currency"], "sunday": p["sunday"], "date": p["date"], "status": p["status"]}


@documented("The payouts of one payout week", auth=("bearer", "api_key"), roles=("admin",), query=PayoutsQuery,
            responses={200: out.PayoutsOut}, errors=("wrong_role",), tags=("ledger",))
async def list_payouts(request: Request) -> Response:
    authenticate_admin(request)
    q = parse_query(request, PayoutsQuery)
    found = await _service(request).payouts(q.sunday.isoformat())
    return JSONResponse({"payouts": [_payout_view(p) for p in found if p]})


@documented("The bank's answer for a payout: paid, or failed (the money returns to the balance)",
            auth=("bearer", "api_key"), roles=("admin",), body=PayoutAnswerIn, responses={200: out.PayoutOut},
            errors=("wrong_role", "payout_not_found", "payout_answered"), tags=("ledger",))
async def answer_payout(request: Request) -> Response:
    authenticate_admin(request)
    body = await read_json(request, PayoutAnswerIn)
    payout_id = _ledger_id(request, "payout_id", PayoutNotFound("no such payout"))
    found = await _service(request).answer_payout(payout_id, body.status == "paid", body.reason)
    return JSONResponse(_payout_view(found))


def _refund_view(r: dict[str, str]) -> dict[str, Any]:
    return {"refund_id": r["refund_id"], "client_id": r["client_id"], "booking_id": r["booking_id"],
            "attempt": int(r.get("tries", "0")),
            "complaint_id": r.get("complaint_id") or None, "amount_minor": int(r["amount"]),
            "currency": r["currency"], "reason": r["reason"], "status": r["status"], "created_at": r["created_at"],
            "sent_at": r.get("sent_at"), "answered_at": r.get("answered_at"),
            "answer_reason": r.get("answer_reason") or None}


def _ledger_id(request: Request, name: str, unknown: DomainError) -> str:
    """A payout's or a refund's id from the path: 32 lowercase hex digits (the ledger makes them so), or
    `unknown` (no such record) without asking Redis."""
    value = str(request.path_params[name])
    if len(value) != 32 or not all(c in "0123456789abcdef" for c in value):
        raise unknown
    return value


def _refund_id(request: Request) -> str:
    return _ledger_id(request, "refund_id", RefundNotFound("no such refund"))


@documented("Refunds, the newest first: an admin's view of every client's (or one's), a client's own",
            auth=("bearer", "api_key"), query=RefundsQuery, responses={200: out.RefundsOut},
            errors=("wrong_role",), tags=("ledger",))
async def list_refunds(request: Request) -> Response:
    identity = authenticate_any(request)
    q = parse_query(request, RefundsQuery)
    if identity.role is Role.CLIENT:
        client_id: str | None = identity.sub
    else:
        identity.require_role(Role.ADMIN)
        client_id = q.client_id
    found = await _service(request).refunds(client_id, q.status, q.limit)
    return JSONResponse({"refunds": [_refund_view(r) for r in found]})


@documented("The payment gateway's answer for a refund: paid (the money is back with the client), or failed "
            "(it stays owed until an admin sends it again)", auth=("bearer", "api_key"), roles=("admin",),
            body=RefundAnswerIn, responses={200: out.RefundOut},
            query=NoQuery, errors=("wrong_role", "refund_not_found", "refund_not_sent", "refund_answered",
                                   "refund_attempt_stale"), tags=("ledger",))
async def answer_refund(request: Request) -> Response:
    authenticate_admin(request)
    parse_query(request, NoQuery)
    body = await read_json(request, RefundAnswerIn)
    found = await _service(request).answer_refund(_refund_id(request), body.status == "paid", body.reason,
                                                  body.attempt)
    return JSONResponse(_refund_view(found))


@documented("Send a refund the gateway could not make again (in the refund job's next batch)",
            auth=("bearer", "api_key"), roles=("admin",), query=NoQuery, responses={200: out.RefundOut},
            errors=("wrong_role", "refund_not_found", "refund_not_failed"), tags=("ledger",))
async def retry_refund(request: Request) -> Response:
    admin = authenticate_admin(request)
    parse_query(request, NoQuery)
    await read_json(request, _Nothing)
    found = await _service(request).retry_refund(_refund_id(request), admin.sub)
    return JSONResponse(_refund_view(found))


@documented("Payout dates of a year: each Sunday, or the first working day after it when it is a holiday",
            auth=("bearer", "api_key"), query=PayoutDatesQuery, responses={200: out.PayoutDatesOut}, tags=("ledger",))
async def payout_dates(request: Request) -> Response:
    authenticate_any(request)
    q = parse_query(request, PayoutDatesQuery)
    return JSONResponse({"payout_dates": await _service(request).payout_dates(q.year)})


@documented("Confirm or correct an estimated holiday (moves announced payout dates only if asked)",
            auth=("bearer", "api_key"), roles=("admin",), body=HolidayIn, responses={200: out.HolidayCorrectionOut},
            errors=("wrong_role", "not_an_estimated_holiday"), tags=("ledger",))
async def correct_holiday(request: Request) -> Response:
    admin = authenticate_admin(request)
    body = await read_json(request, HolidayIn)
    return JSONResponse(await _service(request).correct_holiday(body.estimated, body.date, body.move_announced,
                                                                admin.sub))


def _page_route(name: str, summary: str) -> Any:
    page = (STATIC / name / f"{name}.html").read_text(encoding="utf-8")

    @documented(summary, auth=(), responses={200: "text/html"}, tags=("ledger",))
    async def ledger_page(request: Request) -> Response:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    return ledger_page


def routes() -> list[BaseRoute]:
    return [
        Route("/statement", _page_route("statement", "A practitioner's statement as a page (the token travels in "
                                                     "the URL fragment; ?lang=ar|fr|en, and ?practitioner= for an "
                                                     "admin)"), methods=["GET"]),
        Mount("/static/statement", StaticFiles(directory=STATIC / "statement"), name="statement-static"),
        Route("/complaint/{bid}", _page_route("complaint", "A client's complaint about a session, as a page (the "
                                                           "token travels in the URL fragment; ?lang=ar|fr|en)"),
              methods=["GET"]),
        Mount("/static/complaint", StaticFiles(directory=STATIC / "complaint"), name="complaint-static"),
        Route("/admin", _page_route("admin", "The administration's page: complaints to decide, the platform's "
                                             "money per day, payout dates and each week's payouts (the admin "
                                             "token travels in the URL fragment; ?lang=ar|fr|en)"),
              methods=["GET"]),
        Mount("/static/admin", StaticFiles(directory=STATIC / "admin"), name="admin-static"),
        Route("/v1/bookings/{bid}/complaints", file_complaint, methods=["POST"]),
        Route("/v1/complaints", list_complaints, methods=["GET"]),
        Route("/v1/complaints/{cid}", get_complaint, methods=["GET"]),
        Route("/v1/complaints/{cid}/resolve", resolve_complaint, methods=["POST"]),
        Route("/v1/complaints/{cid}/share", share_complaint, methods=["POST"]),
        Route("/v1/ledger/practitioners/{pid}/statement", statement, methods=["GET"]),
        Route("/v1/ledger/practitioners/{pid}/statement.csv", statement_csv, methods=["GET"]),
        Route("/v1/ledger/revenue", revenue, methods=["GET"]),
        Route("/v1/ledger/payouts", list_payouts, methods=["GET"]),
        Route("/v1/ledger/payouts/{payout_id}/answer", answer_payout, methods=["POST"]),
        Route("/v1/ledger/refunds", list_refunds, methods=["GET"]),
        Route("/v1/ledger/refunds/{refund_id}/answer", answer_refund, methods=["POST"]),
        Route("/v1/ledger/refunds/{refund_id}/retry", retry_refund, methods=["POST"]),
        Route("/v1/ledger/payout-dates", payout_dates, methods=["GET"]),
        Route("/v1/ledger/holidays", correct_holiday, methods=["POST"]),
    ]
