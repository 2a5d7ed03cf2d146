"""HTTP edge of bookings: practitioners, availability, slots, codes, quotes, bookings and interest.

Each handler authenticates, validates the request, calls the bookings service and shapes its answer.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ledger.pricing import CodeKind

from ..auth import USER_ID, Identity, Permission, Role, authenticate, authenticate_admin, authenticate_any
from ..context import AppContext
from ..http import Body, FastJSONResponse, IsoDatetime, NoQuery, Text, documented, parse_query, read_json
from . import responses as out
from . import rules
from .errors import BookingNotFound, DateOutOfRange, EmptyUpdate, NotYourProfile, PractitionerNotFound
from .model import Booking
from .rules import PractitionerStatus, Specialty
from .service import BookingService
from .store import Practitioner, iso

ID_PATTERN = USER_ID.pattern
CODE_PATTERN = r"^[A-Z0-9_-]{3,32}$"
MAX_PRICE_MINOR = 100_000_000  # one million in major units: anything above is a typo
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

Id = Annotated[str, Field(pattern=ID_PATTERN)]


def _service(request: Request) -> BookingService:
    ctx: AppContext = request.app.state.ctx
    service: BookingService = ctx.bookings
    return service


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("an IANA time zone such as Africa/Algiers") from None
    return value


def _hhmm(value: str, *, end: bool) -> time | None:
    if end and value == "24:00":
        return None
    m = _HHMM.match(value)
    if not m:
        raise ValueError("a wall-clock time HH:MM (24:00 allowed as an end)")
    return time(int(m.group(1)), int(m.group(2)))


def _self_or_admin(request: Request, pid: str, permission: Permission) -> Identity:
    scheme = request.headers.get("authorization", "").partition(" ")[0].lower()
    if scheme == "basic":
        return authenticate_admin(request)
    identity = authenticate(request)
    identity.require(permission)
    if identity.role is Role.ADMIN or (identity.role is Role.PRACTITIONER and identity.sub == pid):
        return identity
    raise NotYourProfile("only this practitioner or an admin may change this")


# --- bodies --------------------------------------------------------------------------------------


class PractitionerIn(Body):
    id: Id
    display_name: Text = Field(min_length=1, max_length=200)
    specialty: Specialty
    session_minutes: int = Field(default=50, ge=15, le=rules.MAX_SESSION_MINUTES,
                                 description="the length of one session, in minutes")
    price_minor: int = Field(ge=0, le=MAX_PRICE_MINOR)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$",
                                 description="absent: the platform's (SESSION_SERVER_CURRENCY)")
    timezone: str | None = Field(default=None, description="absent: SESSION_SERVER_DEFAULT_TIMEZONE")

    _zone = field_validator("timezone")(lambda v: v if v is None else _check_zone(v))


class PractitionerPatch(Body):
    """The profile. The price has a route of its own (PUT .../price), whose event the ledger follows."""

    display_name: Text | None = Field(default=None, min_length=1, max_length=200)
    specialty: Specialty | None = None
    session_minutes: int | None = Field(default=None, ge=15, le=rules.MAX_SESSION_MINUTES)
    timezone: str | None = None

    _zone = field_validator("timezone")(lambda v: v if v is None else _check_zone(v))


class StatusIn(Body):
    status: Literal["active", "suspended"]
    reason: Text = Field(default="", max_length=500, description="why, kept with the change")


class PriceIn(Body):
    price_minor: int = Field(ge=0, le=MAX_PRICE_MINOR)


class Weekday(enum.StrEnum):
    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"


_WEEKDAYS = list(Weekday)


class WeeklyIn(Body):
    day: Weekday
    start: str
    end: str

    @model_validator(mode="after")
    def _times(self) -> WeeklyIn:
        _hhmm(self.start, end=False)
        _hhmm(self.end, end=True)
        return self


class ExceptionIn(Body):
    date: date
    blocked: bool = False
    start: str | None = None
    end: str | None = None

    @model_validator(mode="after")
    def _times(self) -> ExceptionIn:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end, or neither for a blocked day")
        if self.start is not None and self.end is not None:
            _hhmm(self.start, end=False)
            _hhmm(self.end, end=True)
        return self


def _respec(published: Mapping[str, Any], today: date) -> tuple[rules.AvailabilitySpec, dict[str, Any]]:
    """The availability on record, without its exceptions before `today` (they are history)."""
    spec = AvailabilityIn.model_validate(published)
    kept = spec.model_copy(update={"exceptions": [e for e in spec.exceptions if e.date >= today]})
    return kept.spec(), kept.model_dump(mode="json")


class AvailabilityIn(Body):
    weekly: list[WeeklyIn] = Field(default_factory=list, max_length=70, description="absent: no weekly hours")
    exceptions: list[ExceptionIn] = Field(default_factory=list, max_length=200, description="absent: no exceptions")

    def spec(self) -> rules.AvailabilitySpec:
        weekly = tuple(rules.WeeklyWindow(_WEEKDAYS.index(w.day), _hhmm(w.start, end=False) or time(0),
                                          _hhmm(w.end, end=True)) for w in self.weekly)
        exceptions = tuple(
            rules.DatedException(e.date, e.blocked,
                                 _hhmm(e.start, end=False) if e.start is not None else None,
                                 _hhmm(e.end, end=True) if e.end is not None else None)
            for e in self.exceptions)
        return rules.AvailabilitySpec(weekly, exceptions)


class SlotsQuery(Body):
    start: IsoDatetime = Field(alias="from")
    end: IsoDatetime = Field(alias="to")
    code: str | None = Field(default=None, pattern=CODE_PATTERN, description="absent: no discount code")


class QuoteQuery(Body):
    practitioner_id: Id
    code: str | None = Field(default=None, pattern=CODE_PATTERN, description="absent: no discount code")


class BookingIn(Body):
    practitioner_id: Id
    starts_at: IsoDatetime
    code: str | None = Field(default=None, pattern=CODE_PATTERN, description="absent: no discount code")
    expected_total: int | None = Field(default=None, ge=0, description=(
        "the quote's client_total; absent: the price is not checked (given and different: 409 price_changed)"))


class CancelIn(Body):
    reason: Text = Field(min_length=1, max_length=500)


class BookingsQuery(Body):
    start: IsoDatetime | None = Field(default=None, alias="from")
    end: IsoDatetime | None = Field(default=None, alias="to")
    practitioner_id: Id | None = None
    client_id: Id | None = None
    limit: int = Field(default=100, ge=1, le=500)


class CodeIn(Body):
    code: str = Field(pattern=CODE_PATTERN)
    amount_minor: int = Field(default=0, ge=0, le=MAX_PRICE_MINOR,
                              description="a fixed discount in minor units (give this or percent)")
    percent: int = Field(default=0, ge=0, le=100, description=(
        "a discount in percent of the practitioner's price (a practitioner's code) or of the commission "
        "(a platform code); give this or amount_minor"))
    expires_at: IsoDatetime | None = Field(default=None, description="absent: the code never expires")
    max_uses: int = Field(default=0, ge=0, le=1_000_000, description="0: no limit on the number of uses")

    @model_validator(mode="after")
    def _one_value(self) -> CodeIn:
        if (self.amount_minor > 0) == (self.percent > 0):
            raise ValueError("give either amount_minor or percent")
        return self


class PlatformCodeIn(CodeIn):
    kind: Literal["promotion", "referral"]
    referrer_id: Id | None = Field(default=None, description="a referral's referrer (none for a promotion)")
    referrer_credit_minor: int = Field(default=0, ge=0, le=MAX_PRICE_MINOR,
                                       description="a referral's credit to its referrer, in minor units")

    @model_validator(mode="after")
    def _referrer(self) -> PlatformCodeIn:
        if (self.kind == "referral") != (self.referrer_id is not None):
            raise ValueError("a referral code names its referrer_id; a promotion does not")
        return self


# --- views ---------------------------------------------------------------------------------------


def booking_view(b: Booking, extra: dict[str, str], identity: Identity) -> dict[str, Any]:
    out: dict[str, Any] = {"id": b.id, "practitioner_id": b.practitioner_id, "client_id": b.client_id,
                           "starts_at": iso(b.starts_at), "ends_at": iso(b.ends_at), "status": b.status.value,
                           "created_at": iso(b.created_at)}
    if identity.role is Role.SUPPORT:
        out.update({k: extra[k] for k in ("rescheduled_from", "rescheduled_to") if k in extra})
        return out  # metadata only
    out.update({"timezone": b.timezone,
                "price": {"currency": b.currency, "client_total": b.client_total,
                          "practitioner_share": b.practitioner_share, "platform_share": b.platform_share,
                          "discount": b.discount, "code": b.code or None}})
    if "cancel_reason" in extra:
        out["cancellation"] = {"reason": extra["cancel_reason"], "by": extra.get("cancelled_by")}
    for link in ("rescheduled_from", "rescheduled_to"):
        if link in extra:
            out[link] = extra[link]
    return out


def _epoch(d: datetime) -> int:
    return int(d.timestamp())


def check_epoch_range(d: datetime) -> int:
    value = _epoch(d)
    if not 0 < value < 4102444800:  # before 2100
        raise DateOutOfRange("that date is out of range")
    return value


# --- handlers: practitioners ---------------------------------------------------------------------


@documented("Create a practitioner (pending review)", auth=("bearer", "api_key"), roles=("admin",), body=PractitionerIn,
            responses={201: out.PractitionerOut}, errors=("wrong_role", "exists", "currency_not_supported"),
            tags=("bookings",))
async def create_practitioner(request: Request) -> Response:
    authenticate_admin(request)
    body = await read_json(request, PractitionerIn)
    p = await _service(request).create_practitioner(
        pid=body.id, display_name=body.display_name, specialty=body.specialty.value,
        session_minutes=body.session_minutes, price_minor=body.price_minor, currency=body.currency,
        timezone=body.timezone)
    return JSONResponse(p.as_json(), status_code=201, headers={"Location": f"/v1/practitioners/{body.id}"})


@documented("Update a practitioner's profile", auth=("bearer", "api_key"), roles=("admin",), body=PractitionerPatch,
            responses={200: out.PractitionerOut},
            errors=("wrong_role", "empty_update", "practitioner_not_found", "bad_window", "date_in_past",
                    "beyond_horizon", "conflicting_exception"), tags=("bookings",))
async def update_practitioner(request: Request) -> Response:
    authenticate_admin(request)
    pid = request.path_params["pid"]
    body = await read_json(request, PractitionerPatch)
    changes = {k: (v.value if isinstance(v, enum.Enum) else v)
               for k, v in body.model_dump(exclude_none=True).items()}
    if not changes:
        raise EmptyUpdate("nothing to change")
    p = await _service(request).update_practitioner(pid, changes, _respec)
    return JSONResponse(p.as_json())


@documented("Activate or suspend a practitioner", auth=("bearer", "api_key"), roles=("admin",), body=StatusIn,
            responses={200: out.PractitionerOut}, errors=("wrong_role", "practitioner_not_found", "illegal_transition"),
            tags=("bookings",))
async def set_status(request: Request) -> Response:
    admin = authenticate_admin(request)
    pid = request.path_params["pid"]
    body = await read_json(request, StatusIn)
    p = await _service(request).set_status(pid, PractitionerStatus(body.status), reason=body.reason, by=admin.sub)
    return JSONResponse(p.as_json())


@documented("Set a practitioner's price", auth=("bearer", "api_key"), roles=("practitioner", "admin"), body=PriceIn,
            responses={200: out.PractitionerOut},
            errors=("wrong_role", "permission_denied", "not_your_profile", "practitioner_not_found"),
            tags=("bookings",))
async def set_price(request: Request) -> Response:
    pid = request.path_params["pid"]
    _self_or_admin(request, pid, Permission.AVAILABILITY_WRITE)
    body = await read_json(request, PriceIn)
    return JSONResponse((await _service(request).set_price(pid, body.price_minor)).as_json())


@documented("A practitioner", auth=("bearer", "api_key"), query=NoQuery, responses={200: out.PractitionerOut},
            errors=("practitioner_not_found",), tags=("bookings",))
async def get_practitioner(request: Request) -> Response:
    identity = authenticate_any(request)
    parse_query(request, NoQuery)
    p = await _service(request).practitioner(request.path_params["pid"])
    _require_visible(identity, p)
    return JSONResponse(p.as_json())


def _can_see_inactive(identity: Identity, pid: str) -> bool:
    return identity.role in (Role.ADMIN, Role.SUPPORT) or (identity.role is Role.PRACTITIONER and identity.sub == pid)


def _require_visible(identity: Identity, p: Practitioner) -> None:
    """A practitioner who is not active exists only for themselves and staff: to clients, in every route."""
    if p.status is not PractitionerStatus.ACTIVE and not _can_see_inactive(identity, p.id):
        raise PractitionerNotFound()


class ListQuery(Body):
    specialty: Specialty | None = None
    status: PractitionerStatus | None = None


@documented("Practitioners", auth=("bearer", "api_key"), query=ListQuery, responses={200: out.PractitionersOut},
            tags=("bookings",))
async def list_practitioners(request: Request) -> Response:
    identity = authenticate_any(request)
    q = parse_query(request, ListQuery)
    found = await _service(request).practitioners()
    out = [p.as_json() for p in found
           if (q.specialty is None or p.specialty == q.specialty.value)
           and (q.status is None or p.status is q.status)
           and (p.status is PractitionerStatus.ACTIVE or _can_see_inactive(identity, p.id))]
    return JSONResponse({"practitioners": out})


# --- handlers: availability and slots ------------------------------------------------------------


def _windows(windows: list[tuple[int, int]]) -> list[dict[str, str]]:
    return [{"start": iso(s), "end": iso(e)} for s, e in windows]


@documented("Publish a practitioner's availability", auth=("bearer", "api_key"), roles=("practitioner", "admin"),
            body=AvailabilityIn, responses={200: out.PublishedOut},
            errors=("wrong_role", "permission_denied", "not_your_profile", "practitioner_not_found", "bad_window",
                    "date_in_past", "beyond_horizon", "conflicting_exception", "invalid_input"), tags=("bookings",))
async def put_availability(request: Request) -> Response:
    pid = request.path_params["pid"]
    _self_or_admin(request, pid, Permission.AVAILABILITY_WRITE)
    body = await read_json(request, AvailabilityIn, empty=False)  # an empty body never withdraws every window
    p, windows, waiting = await _service(request).put_availability(pid, body.spec(), body.model_dump(mode="json"))
    return JSONResponse({"practitioner_id": pid, "timezone": p.timezone, "availability": body.model_dump(mode="json"),
                         "windows": _windows(windows), "waiting_clients": waiting})


@documented("A practitioner's availability", auth=("bearer", "api_key"), query=NoQuery,
            responses={200: out.AvailabilityOut},
            errors=("practitioner_not_found",), tags=("bookings",))
async def get_availability(request: Request) -> Response:
    identity = authenticate_any(request)
    parse_query(request, NoQuery)
    pid = request.path_params["pid"]
    svc = _service(request)
    p = await svc.practitioner(pid)
    _require_visible(identity, p)
    windows = await svc.windows(p)
    return JSONResponse({"practitioner_id": pid, "timezone": p.timezone, "availability": p.availability,
                         "windows": _windows(windows)})


@documented("Free slots with their prices", auth=("bearer", "api_key"), query=SlotsQuery, responses={200: out.SlotsOut},
            errors=("bad_range", "range_too_long", "date_out_of_range", "practitioner_not_found", "code_unknown",
                    "code_expired", "code_used_up", "code_not_applicable", "code_already_used"), tags=("bookings",))
async def get_slots(request: Request) -> Response:
    identity = authenticate_any(request)
    pid = request.path_params["pid"]
    q = parse_query(request, SlotsQuery)
    start, end = check_epoch_range(q.start), check_epoch_range(q.end)
    p, found = await _service(request).slots(pid, start, end, q.code, identity.sub,
                                             lambda p: _require_visible(identity, p))
    return JSONResponse({"practitioner_id": pid, "timezone": p.timezone, "session_minutes": p.session_minutes,
                         "slots": [s.as_json() for s in found]})


@documented("A price quote", auth=("bearer", "api_key"), query=QuoteQuery, responses={200: out.QuoteOut},
            errors=("practitioner_not_found", "code_unknown", "code_expired", "code_used_up", "code_not_applicable",
                    "code_already_used"), tags=("bookings",))
async def get_quote(request: Request) -> Response:
    identity = authenticate_any(request)
    q = parse_query(request, QuoteQuery)
    p, price = await _service(request).quote(q.practitioner_id, q.code, identity.sub,
                                             lambda p: _require_visible(identity, p))
    return JSONResponse({"practitioner_id": p.id, **price.as_json()})


@documented("Join a practitioner's waiting list", roles=("client",),
            responses={200: out.InterestOut, 201: out.InterestOut},
            errors=("wrong_role", "practitioner_not_found", "slots_available"), tags=("bookings",))
async def register_interest(request: Request) -> Response:
    identity = authenticate(request)
    identity.require_role(Role.CLIENT)
    pid = request.path_params["pid"]
    waiting = await _service(request).register_interest(pid, identity.sub)
    return JSONResponse({"practitioner_id": pid, "waiting": True, "already_registered": waiting is None},
                        status_code=200 if waiting is None else 201)


# --- handlers: codes and bookings ----------------------------------------------------------------


@documented("Create a practitioner's discount code", auth=("bearer", "api_key"), roles=("practitioner", "admin"),
            body=CodeIn, responses={201: out.CodeOut},
            errors=("wrong_role", "permission_denied", "not_your_profile", "practitioner_not_found", "exists",
                    "expires_in_past"), tags=("bookings",))
async def create_practitioner_code(request: Request) -> Response:
    pid = request.path_params["pid"]
    _self_or_admin(request, pid, Permission.AVAILABILITY_WRITE)
    body = await read_json(request, CodeIn)
    view = await _service(request).create_practitioner_code(
        pid, code=body.code, amount_minor=body.amount_minor, percent=body.percent,
        expires_at=_epoch(body.expires_at) if body.expires_at else 0, max_uses=body.max_uses)
    return JSONResponse(view, status_code=201)


@documented("Create a promotion or referral code", auth=("bearer", "api_key"), roles=("admin",), body=PlatformCodeIn,
            responses={201: out.CodeOut},
            errors=("wrong_role", "exists", "expires_in_past", "discount_exceeds_commission"), tags=("bookings",))
async def create_platform_code(request: Request) -> Response:
    authenticate_admin(request)
    body = await read_json(request, PlatformCodeIn)
    view = await _service(request).create_platform_code(
        code=body.code, kind=CodeKind(body.kind), referrer_id=body.referrer_id or "",
        amount_minor=body.amount_minor, percent=body.percent, referrer_credit_minor=body.referrer_credit_minor,
        expires_at=_epoch(body.expires_at) if body.expires_at else 0, max_uses=body.max_uses)
    return JSONResponse(view, status_code=201)


@documented("Book a slot", roles=("client",), body=BookingIn, responses={201: out.BookingOut},
            errors=("wrong_role", "permission_denied", "practitioner_not_found", "not_bookable", "practitioner_changed",
                    "price_changed", "slot_taken", "client_overlap", "not_a_slot", "too_soon", "beyond_horizon",
                    "date_out_of_range", "stale", "code_unknown", "code_expired", "code_used_up", "code_not_applicable",
                    "code_already_used"), tags=("bookings",))
async def create_booking(request: Request) -> Response:
    identity = authenticate(request)
    identity.require(Permission.BOOKINGS_WRITE)
    identity.require_role(Role.CLIENT)
    body = await read_json(request, BookingIn)
    starts_at = check_epoch_range(body.starts_at)
    booking = await _service(request).book(client_id=identity.sub, practitioner_id=body.practitioner_id,
                                           starts_at=starts_at, code=body.code, expected_total=body.expected_total)
    return FastJSONResponse(booking_view(booking, {}, identity), status_code=201,
                            headers={"Location": f"/v1/bookings/{booking.id}"})


def _may_see(identity: Identity, b: Booking) -> bool:
    return identity.role in (Role.ADMIN, Role.SUPPORT) or b.party(identity.sub, identity.role) is not None


@documented("A booking", auth=("bearer", "api_key"), query=NoQuery, responses={200: out.BookingOut},
            errors=("permission_denied", "booking_not_found"), tags=("bookings",))
async def get_booking(request: Request) -> Response:
    identity = authenticate_any(request)
    parse_query(request, NoQuery)
    identity.require(Permission.BOOKINGS_READ)
    found = await _service(request).booking(request.path_params["bid"])
    if found is None or not _may_see(identity, found[0]):
        raise BookingNotFound()
    return JSONResponse(booking_view(*found, identity))


@documented("Bookings", auth=("bearer", "api_key"), query=BookingsQuery, responses={200: out.BookingsOut},
            errors=("permission_denied", "date_out_of_range"), tags=("bookings",))
async def list_bookings(request: Request) -> Response:
    identity = authenticate_any(request)
    identity.require(Permission.BOOKINGS_READ)
    q = parse_query(request, BookingsQuery)
    start = check_epoch_range(q.start) if q.start else None
    end = check_epoch_range(q.end) if q.end else None
    # a client or a practitioner sees their own bookings; staff anyone's
    if identity.role is Role.CLIENT:
        client_id, practitioner_id = identity.sub, None
    elif identity.role is Role.PRACTITIONER:
        client_id, practitioner_id = None, identity.sub
    else:
        client_id, practitioner_id = q.client_id, q.practitioner_id
    found = await _service(request).bookings(client_id=client_id, practitioner_id=practitioner_id,
                                             start=start, end=end, limit=q.limit)
    return JSONResponse({"bookings": [booking_view(b, x, identity) for b, x in found]})


@documented("Cancel a booking", auth=("bearer", "api_key"), body=CancelIn, responses={200: out.BookingOut},
            errors=("permission_denied", "booking_not_found", "too_late_to_cancel", "illegal_transition", "stale"),
            tags=("bookings",))
async def cancel_booking(request: Request) -> Response:
    identity = authenticate_any(request)
    identity.require(Permission.BOOKINGS_WRITE)
    body = await read_json(request, CancelIn)
    booking, extra = await _service(request).cancel(request.path_params["bid"], sub=identity.sub,
                                                    role=identity.role.value, reason=body.reason)
    return JSONResponse(booking_view(booking, extra, identity))


def routes() -> list[BaseRoute]:
    # Booking is the busiest route: first, so the router tries fewer patterns before it (no other route
    # here matches its path, so the order changes nothing else).
    return [
        Route("/v1/bookings", create_booking, methods=["POST"]),
        Route("/v1/practitioners", create_practitioner, methods=["POST"]),
        Route("/v1/practitioners", list_practitioners, methods=["GET"]),
        Route("/v1/practitioners/{pid}", get_practitioner, methods=["GET"]),
        Route("/v1/practitioners/{pid}", update_practitioner, methods=["PATCH"]),
        Route("/v1/practitioners/{pid}/status", set_status, methods=["POST"]),
        Route("/v1/practitioners/{pid}/price", set_price, methods=["PUT"]),
        Route("/v1/practitioners/{pid}/availability", put_availability, methods=["PUT"]),
        Route("/v1/practitioners/{pid}/availability", get_availability, methods=["GET"]),
        Route("/v1/practitioners/{pid}/slots", get_slots, methods=["GET"]),
        Route("/v1/practitioners/{pid}/interest", register_interest, methods=["POST"]),
        Route("/v1/practitioners/{pid}/codes", create_practitioner_code, methods=["POST"]),
        Route("/v1/codes", create_platform_code, methods=["POST"]),
        Route("/v1/quotes", get_quote, methods=["GET"]),
        Route("/v1/bookings", list_bookings, methods=["GET"]),
        Route("/v1/bookings/{bid}", get_booking, methods=["GET"]),
        Route("/v1/bookings/{bid}/cancel", cancel_booking, methods=["POST"]),
    ]
