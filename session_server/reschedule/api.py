"""HTTP edge of free reschedules: the offer, its times, the practitioner's proposals, the client's choice,
support's list of expired offers, and the /reschedule/{booking_id} page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..auth import USER_ID, Identity, Permission, Role, authenticate, authenticate_any
from ..bookings.api import booking_view, check_epoch_range
from ..bookings.store import iso
from ..context import AppContext
from ..http import Body, IsoDatetime, NoQuery, documented, parse_query, private_page_headers, read_json
from . import responses as out
from .rules import MAX_PROPOSALS, Offer, OfferStatus
from .service import RescheduleService

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "reschedule"
# The page holds the access token it read from the URL fragment: no third-party anything, no caching, no
# referrer, no framing (as the room page).
PAGE_HEADERS = private_page_headers("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")

Id = Annotated[str, Field(pattern=USER_ID.pattern)]


def _service(request: Request) -> RescheduleService:
    ctx: AppContext = request.app.state.ctx
    service: RescheduleService = ctx.reschedule
    return service


class OfferIn(Body):
    attribution: Literal["platform", "client_connection", "practitioner_connection", "unknown"] = Field(
        default="unknown", description="whose connection, or the platform, the breakdown is put down to")
    problem_id: Id | None = Field(default=None, description="the reported problem support marked unresolvable")


class ProposalsIn(Body):
    times: list[IsoDatetime] = Field(min_length=1, max_length=MAX_PROPOSALS)


class ChoiceIn(Body):
    starts_at: IsoDatetime


class OffersQuery(Body):
    status: Literal["open", "expired"] = Field(
        default="expired", description="expired: the offers that ended unused, which support follows up")
    limit: int = Field(default=100, ge=1, le=500)


def offer_view(o: Offer, session_s: int | None = None) -> dict[str, Any]:
    length = session_s or 0
    return {"booking_id": o.booking_id, "practitioner_id": o.practitioner_id, "client_id": o.client_id,
            "status": o.status.value, "reason": o.reason.value, "attribution": o.attribution,
            "offered_at": iso(o.offered_at), "expires_at": iso(o.expires_at),
            "original_starts_at": iso(o.original_starts_at),
            "proposals": [{"starts_at": iso(s), "ends_at": iso(s + length)} for s in o.proposals],
            "new_booking_id": o.new_booking_id or None,
            "accepted_at": iso(o.accepted_at) if o.accepted_at else None,
            "expired_at": iso(o.expired_at) if o.expired_at else None,
            "needs_support": o.status is OfferStatus.EXPIRED}


async def _view(request: Request, o: Offer) -> dict[str, Any]:
    ctx: AppContext = request.app.state.ctx
    p = await ctx.bookings.practitioner(o.practitioner_id)
    return offer_view(o, p.session_s)


def _reader(request: Request) -> Identity:
    identity = authenticate_any(request)
    identity.require(Permission.BOOKINGS_READ)
    return identity


@documented("Offer a free reschedule (a technical problem that cannot be solved)", auth=("bearer", "api_key"),
            roles=("support", "admin", "practitioner"), body=OfferIn,
            responses={200: out.OfferMadeOut, 201: out.OfferMadeOut},
            errors=("wrong_role", "permission_denied", "booking_not_found", "not_reschedulable"),
            tags=("reschedule",))
async def make_offer(request: Request) -> Response:
    identity = authenticate_any(request)
    identity.require_role(Role.SUPPORT, Role.ADMIN, Role.PRACTITIONER)
    if identity.role is Role.PRACTITIONER:
        identity.require(Permission.BOOKINGS_WRITE)
    body = await read_json(request, OfferIn)
    offer, created = await _service(request).offer_by(
        request.path_params["bid"], sub=identity.sub, role=identity.role.value, attribution=body.attribution,
        problem_id=body.problem_id or "")
    return JSONResponse({**await _view(request, offer), "created": created}, status_code=201 if created else 200)


@documented("A booking's reschedule offer", auth=("bearer", "api_key"), query=NoQuery, responses={200: out.OfferOut},
            errors=("permission_denied", "offer_not_found"), tags=("reschedule",))
async def get_offer(request: Request) -> Response:
    identity = _reader(request)
    parse_query(request, NoQuery)
    offer = await _service(request).offer(request.path_params["bid"], sub=identity.sub, role=identity.role.value)
    return JSONResponse(await _view(request, offer))


@documented("The times a reschedule offer lets the client choose", auth=("bearer", "api_key"),
            query=NoQuery, responses={200: out.OfferSlotsOut}, errors=("permission_denied", "offer_not_found"),
            tags=("reschedule",))
async def get_offer_slots(request: Request) -> Response:
    identity = _reader(request)
    parse_query(request, NoQuery)
    found = await _service(request).slots(request.path_params["bid"], sub=identity.sub, role=identity.role.value)

    def times(items: list[tuple[int, int]]) -> list[dict[str, str]]:
        return [{"starts_at": iso(s), "ends_at": iso(e)} for s, e in items]

    return JSONResponse({"booking_id": found.offer.booking_id, "status": found.offer.status.value,
                         "expires_at": iso(found.offer.expires_at), "timezone": found.timezone,
                         "session_minutes": found.session_minutes, "slots": times(found.slots),
                         "proposals": times(found.proposals)})


@documented("Propose up to three new times (the practitioner)", roles=("practitioner",), body=ProposalsIn,
            responses={200: out.OfferOut},
            errors=("wrong_role", "permission_denied", "offer_not_found", "wrong_party", "offer_used",
                    "offer_expired", "too_soon", "outside_offer", "slot_taken", "date_out_of_range"),
            tags=("reschedule",))
async def propose(request: Request) -> Response:
    identity = authenticate(request)
    identity.require(Permission.BOOKINGS_WRITE)
    body = await read_json(request, ProposalsIn)
    starts = [check_epoch_range(t) for t in body.times]
    offer = await _service(request).propose(request.path_params["bid"], starts, sub=identity.sub,
                                            role=identity.role.value)
    return JSONResponse(await _view(request, offer))


@documented("Choose the new time of an interrupted session (the client; free of charge)", roles=("client",),
            body=ChoiceIn, responses={201: out.RescheduledOut},
            errors=("wrong_role", "permission_denied", "offer_not_found", "wrong_party", "offer_used",
                    "offer_expired", "not_reschedulable", "illegal_transition", "too_soon", "outside_offer",
                    "not_a_slot", "not_offered", "slot_taken", "client_overlap", "not_bookable",
                    "practitioner_not_found", "date_out_of_range"), tags=("reschedule",))
async def choose(request: Request) -> Response:
    identity = authenticate(request)
    identity.require(Permission.BOOKINGS_WRITE)
    body = await read_json(request, ChoiceIn)
    starts_at = check_epoch_range(body.starts_at)
    bid = request.path_params["bid"]
    booking, offer = await _service(request).choose(bid, starts_at, sub=identity.sub, role=identity.role.value)
    view = booking_view(booking, {"rescheduled_from": bid}, identity)
    return JSONResponse({"booking": view, "offer": offer_view(offer, booking.ends_at - booking.starts_at)},
                        status_code=201, headers={"Location": f"/v1/bookings/{booking.id}"})


@documented("Reschedule offers by status (support follows up those that expired unused)",
            auth=("bearer", "api_key"), roles=("support", "admin"), query=OffersQuery,
            responses={200: out.OffersOut}, errors=("wrong_role",), tags=("reschedule",))
async def list_offers(request: Request) -> Response:
    identity = authenticate_any(request)
    identity.require_role(Role.SUPPORT, Role.ADMIN)
    q = parse_query(request, OffersQuery)
    found = await _service(request).offers(OfferStatus(q.status), q.limit)
    return JSONResponse({"offers": [await _view(request, o) for o in found]})


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/bookings/{bid}/reschedule-offer", make_offer, methods=["POST"]),
        Route("/v1/bookings/{bid}/reschedule-offer", get_offer, methods=["GET"]),
        Route("/v1/bookings/{bid}/reschedule-offer/slots", get_offer_slots, methods=["GET"]),
        Route("/v1/bookings/{bid}/reschedule-offer/proposals", propose, methods=["PUT"]),
        Route("/v1/bookings/{bid}/reschedule", choose, methods=["POST"]),
        Route("/v1/reschedule-offers", list_offers, methods=["GET"]),
        Mount("/static/reschedule", StaticFiles(directory=STATIC_DIR), name="reschedule-static"),
    ]
