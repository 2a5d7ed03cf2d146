"""The HTTP edge's shared pieces: problem documents, typed JSON bodies, and error handlers.

Every error response is an RFC 9457 problem document (`application/problem+json`) whose `code` is
stable; clients branch on `code`, people read `detail`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import types
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import msgspec
import pydantic
import pydantic_core
import redis.exceptions
from pydantic.fields import FieldInfo
from pydantic_core import CoreSchema
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from signaling.json_depth import TooDeep, check_depth

from .errors import (
    DomainError,
    InternalError,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RedisUnavailable,
    UnsupportedMediaType,
    WordedError,
    default_title,
    lookup,
)
from .money import accepted_language
from .redis_outage import RedisOutage

log = logging.getLogger(__name__)

PROBLEM_TYPE = "https://session-server.invalid/problems/"
_HTTP_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "invalid_input", 429: "rate_limited", 500: "internal_error", 503: "unavailable",
}

M = TypeVar("M", bound=pydantic.BaseModel)
H = TypeVar("H", bound=Callable[..., Any])


class JsonExpected(UnsupportedMediaType):
    """The route reads JSON: send `Content-Type: application/json`."""

    code, title = "json_expected", "JSON expected"


class JsonTooDeep(InvalidInput):
    """The JSON nests arrays and objects deeper than the server reads (32 levels), in a body or a message."""

    code, title = "json_too_deep", "JSON too deep"


def check_json_depth(raw: str | bytes) -> None:
    """Refuse JSON nested past the bound before a decoder recurses into it (and overflows)."""
    try:
        check_depth(raw)
    except TooDeep as exc:
        raise JsonTooDeep(str(exc)) from None


# --- what a route reads, answers and refuses, for the OpenAPI document ---------------------------


@dataclass(frozen=True)
class RouteDoc:
    """A route's contract, kept on its handler (`@documented`) and read by session_server.openapi.

    `auth` names the ways in: "bearer" (an access token; `roles` narrows who), "api_key" (the platform's
    backend, HTTP Basic), both for either; () for none. `errors` are the refusals particular to the route,
    as catalogue classes (or, while a module still raises them ad hoc, as codes); the generic ones (bad
    credentials, a body too large, a malformed body or query, Redis away) follow from the rest.
    """

    summary: str
    responses: Mapping[int, Any]
    auth: tuple[str, ...] = ("bearer",)
    roles: tuple[str, ...] = ()
    body: type[pydantic.BaseModel] | None = None
    body_media_type: str = "application/json"
    query: type[pydantic.BaseModel] | None = None
    errors: Sequence[type[DomainError] | str] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # request headers read, with their meaning
    tags: tuple[str, ...] = ()


def documented(summary: str, *, responses: Mapping[int, Any], auth: tuple[str, ...] = ("bearer",),
               roles: tuple[str, ...] = (), body: type[pydantic.BaseModel] | None = None,
               body_media_type: str = "application/json", query: type[pydantic.BaseModel] | None = None,
               errors: Sequence[type[DomainError] | str] = (), headers: Mapping[str, str] | None = None,
               tags: tuple[str, ...] = ()) -> Callable[[H], H]:
    """Keeps the route's contract on its handler; the handler itself is unchanged."""
    doc = RouteDoc(summary=summary, responses=dict(responses), auth=auth, roles=roles, body=body,
                   body_media_type=body_media_type, query=query, errors=tuple(errors),
                   headers=dict(headers or {}), tags=tags)

    def mark(handler: H) -> H:
        handler.route_doc = doc  # type: ignore[attr-defined]
        return handler

    return mark


def route_doc(handler: Any) -> RouteDoc | None:
    doc = getattr(handler, "route_doc", None)
    return doc if isinstance(doc, RouteDoc) else None


_JSON = msgspec.json.Encoder()


class FastJSONResponse(JSONResponse):
    """A JSONResponse rendered by msgspec, in a fraction of the time: the same compact UTF-8 JSON for
    JSON-native values (dicts keep their order; a float may be spelled differently, 1e16 for 1e+16).
    For the hot paths and problem documents."""

    def render(self, content: Any) -> bytes:
        return _JSON.encode(content)


def _iso_8601(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # refused by the type itself, unless already a datetime
    if has_control_characters(value):
        raise ValueError("control characters are not allowed")
    # `+01:00` sent unencoded in a query string arrives as ` 01:00` (a `+` there means a space): a space
    # just before an offset can mean nothing else, so it is read as the `+` it was
    value = _PLUS_AS_SPACE.sub(r"\1+\2", value)
    if not _ISO_DATETIME.match(value) or not _ISO_TEXT.fullmatch(value):
        raise ValueError("an ISO 8601 date and time with an offset, such as 2026-12-01T09:00:00+01:00")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not a real date and time") from None


_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_PLUS_AS_SPACE = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}(?::?\d{2})?)$")
# fromisoformat stops reading at a NUL and takes what came before: only what ISO 8601 spells is read
_ISO_TEXT = re.compile(r"[0-9Tt :.,+\-Zz]+")
# A time in an API: ISO 8601 text with its offset, never a bare number (which pydantic would read as
# seconds since 1970, a guess no client should depend on).
IsoDatetime = Annotated[pydantic.AwareDatetime, pydantic.BeforeValidator(_iso_8601)]


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def has_control_characters(value: str) -> bool:
    """C0 and C1 controls (NUL, newline, ESC, ...): never part of a time, an id, a code or a path."""
    return _CONTROL.search(value) is not None


_HIDDEN = re.compile("[\u202a-\u202e\u2066-\u2069]")  # bidi embeddings, overrides, isolates


def plain_text(value: str) -> str:
    """The value, if a person may have written it as it is; else ValueError saying why."""
    if any(unicodedata.category(ch) == "Cc" and ch not in "\r\n\t" for ch in value):
        raise ValueError("control characters are not allowed")
    if _HIDDEN.search(value):
        raise ValueError("bidirectional override characters are not allowed")
    return value


# Free text a person writes (a reason, a name): any script and direction marks, but no control characters
# and no bidirectional overrides, which can make text read differently from what it says.
Text = Annotated[str, pydantic.AfterValidator(plain_text)]


def _raw_max_length(field: FieldInfo) -> int | None:
    if not _is_text(field.annotation):  # a list's max_length counts its items
        return None
    limits = [m.max_length for m in field.metadata if isinstance(getattr(m, "max_length", None), int)]
    return min(limits, default=None)


def _model_fields_schema(schema: Any) -> dict[str, Any] | None:
    while isinstance(schema, dict):  # a model, maybe wrapped by its model validators
        if schema.get("type") == "model-fields":
            fields: dict[str, Any] = schema["fields"]
            return fields
        schema = schema.get("schema")
    return None


def _check_raw_length(field: Any, limit: int) -> None:
    """Refuse a text longer than `limit` as sent, before it is stripped and validated.

    Only text fields get this check: a validator before a field makes pydantic read the JSON value as
    a Python one, which strict mode would refuse for a date or an enum given as a string."""
    def raw_fits(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            raise pydantic_core.PydanticKnownError("string_too_long", {"max_length": limit})
        return value

    outer = field["schema"]
    holder = outer if outer.get("type") == "default" else field  # keep the default outside, as pydantic does
    if holder["schema"].get("metadata", {}).get("raw_max_length") is None:  # a nested model's schema is reused
        holder["schema"] = pydantic_core.core_schema.no_info_before_validator_function(
            raw_fits, holder["schema"], metadata={"raw_max_length": limit})


def _is_text(annotation: Any) -> bool:
    """A str, maybe Annotated, maybe optional."""
    if get_origin(annotation) is Annotated:
        return _is_text(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return len(members) == 1 and _is_text(members[0])
    return annotation is str


class Body(pydantic.BaseModel):
    """Base of every request body: unknown fields are refused, values are immutable. JSON bodies are read
    strictly (`read_json`): a number is not a string, a boolean not a number.

    Text is stored without its surrounding whitespace, and the stripped text must fit the field's
    limits; the raw text must fit its `max_length` too, since that is the `maxLength` the OpenAPI
    document gives clients (a 501-character reason is refused even if 2 of its characters are spaces).
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[pydantic.BaseModel],
                                     handler: pydantic.GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        fields = _model_fields_schema(schema)
        for name, info in cls.model_fields.items():
            limit = _raw_max_length(info)
            if limit is not None and fields is not None and name in fields:
                _check_raw_length(fields[name], limit)
        return schema


def problem(status: int, code: str, detail: str, *, instance: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    # one title per code, wherever the refusal is answered from: the catalogue's
    entry = lookup(code)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": entry.title if entry is not None else default_title(code),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return FastJSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


async def read_json(request: Request, model: type[M], *, limit: int | None = None, empty: bool = True) -> M:
    """Read and validate a JSON body into `model`, refusing bodies over the limit while streaming. An empty body
    reads as `{}` where every field is optional, unless `empty` is false (a route whose body replaces a whole
    thing: a body lost on the way must not replace it with nothing)."""
    max_bytes = limit if limit is not None else request.app.state.ctx.settings.max_body_bytes
    media_type = request.headers.get("content-type", "application/json").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise JsonExpected(f"send JSON, with Content-Type: application/json (not {media_type[:100]})")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw and not empty:
        raise InvalidInput("the body is empty: send the JSON document this route replaces (an empty object if that "
                           "is what you mean)")
    check_json_depth(raw)
    try:
        return model.model_validate_json(raw or b"{}", strict=True)
    except pydantic.ValidationError as exc:
        raise InvalidInput("the body does not match the expected shape",
                           errors=validation_errors(exc)) from None


class NoQuery(Body):
    """A route that takes no query parameters: one sent (a filter the route does not have, say) is refused
    rather than silently ignored, so that nobody reads an unfiltered answer as a filtered one."""


def validation_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    # Never echo the input back: it may hold health data or secrets.
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def parse_query(request: Request, model: type[M]) -> M:
    controlled = [{"loc": ["query", name], "msg": "control characters are not allowed", "type": "value_error"}
                  for name, value in request.query_params.multi_items() if has_control_characters(value)]
    if controlled:
        raise InvalidInput("the query parameters are invalid", errors=controlled)
    try:
        return model.model_validate(dict(request.query_params))
    except pydantic.ValidationError as exc:
        raise InvalidInput("the query parameters are invalid", errors=validation_errors(exc)) from None


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    headers = exc.extra.pop("headers", None)
    detail = exc.message
    if isinstance(exc, WordedError):  # said in the reader's language, amounts formatted for it
        lang = accepted_language(request.headers.get("accept-language", ""))
        detail = exc.detail(lang)
        headers = {**(headers or {}), "Content-Language": lang, "Vary": "Accept-Language"}
    return problem(exc.status, exc.code, detail, instance=request.url.path,
                   headers=headers, **exc.extra)


# The router's own refusals (no such path, wrong method) by status, as catalogue entries.
_ROUTER_ERRORS: dict[int, type[DomainError]] = {404: NotFound, 405: MethodNotAllowed}


# A person who follows a cut or mistyped link gets a page in their language, not a problem document: a
# browser asking for HTML, outside the API and the static files.
_LOST_PAGE = {
    "ar": ("rtl", "هذه الصفحة غير موجودة",
           "ربما الرابط غير مكتمل. افتح الرابط الذي وصلك من المنصة كاملًا، أو ابدأ من الصفحة الرئيسية.",
           "الصفحة الرئيسية"),
    "fr": ("ltr", "Cette page n’existe pas",
           "Le lien est peut-être incomplet. Ouvrez en entier le lien que la plateforme vous a envoyé, ou partez "
           "de la page d’accueil.", "Page d’accueil"),
    "en": ("ltr", "This page does not exist",
           "The link may be incomplete. Open the whole link the platform sent you, or start from the home page.",
           "Home page"),
}
_NOT_PAGES = ("/v1/", "/static/", "/metrics", "/healthz", "/readyz")


def _wants_page(request: Request) -> bool:
    return (request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")
            and not request.url.path.startswith(_NOT_PAGES))


def lost_page(request: Request) -> Response:
    """404 as a page: what happened and the way home, in the language of `?lang=` or of the browser."""
    wanted = request.query_params.get("lang", "")
    # (without a language of ours, Arabic: the pages' own first language)
    lang = wanted if wanted in _LOST_PAGE else accepted_language(request.headers.get("accept-language", ""), "ar")
    direction, title, text, home = _LOST_PAGE.get(lang, _LOST_PAGE["en"])
    body = (f'<!doctype html><html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;"
            "margin:3rem auto;padding:0 1rem;color:#1f2937}h1{font-size:1.5rem}a{color:#1d4ed8}</style></head>"
            f'<body><main><h1>{title}</h1><p>{text}</p><p><a href="/?lang={lang}">{home}</a></p></main>'
            "</body></html>")
    policy = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'")
    return Response(body, status_code=404, media_type="text/html; charset=utf-8", headers={
        "Content-Language": lang, "Vary": "Accept, Accept-Language", **private_page_headers(policy)})


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and _wants_page(request):
        return lost_page(request)
    known = _ROUTER_ERRORS.get(exc.status_code)
    code = known.code if known is not None else _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    entry = lookup(code)
    if entry is None:
        log.warning("an HTTP error with no catalogue entry: %s", code)
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 404 and not request.url.path.startswith(_NOT_PAGES):
        headers["Vary"] = "Accept, Accept-Language"  # a browser at the same address gets the page instead
    return problem(exc.status_code, code, str(exc.detail), instance=request.url.path, headers=headers or None)


def redis_unavailable(detail: str, instance: str) -> Response:
    return problem(RedisUnavailable.status, RedisUnavailable.code, detail, instance=instance,
                   headers={"Retry-After": "1"})


# The WebSocket close code for "try again later" (RFC 6455 registry): a socket's handler let a Redis failure
# through, and no HTTP answer can be sent on an accepted socket.
CLOSE_TRY_AGAIN_LATER = 1013


async def on_redis_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    # One outage, one story in the log: the app's RedisOutage counts this failure and rate-limits the lines.
    outage = getattr(conn.app.state, "redis_outage", None)
    route = getattr(conn.scope.get("route"), "path", "a route")
    if isinstance(outage, RedisOutage):
        outage.failed(f"{conn.scope.get('method', 'WEBSOCKET')} {route}", exc)
    else:
        log.warning("redis unavailable: %s", type(exc).__name__)
    if isinstance(conn, WebSocket):
        with contextlib.suppress(Exception):  # the socket may be closed already
            await conn.close(CLOSE_TRY_AGAIN_LATER, "the data store is not reachable; try again shortly")
        return None
    return redis_unavailable("the data store is not reachable; try again shortly", conn.url.path)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(InternalError.status, InternalError.code, "an unexpected error occurred; it has been logged",
                   instance=request.url.path)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: on_domain_error,
    HTTPException: on_http_error,
    redis.exceptions.ConnectionError: on_redis_error,
    redis.exceptions.TimeoutError: on_redis_error,
    redis.exceptions.BusyLoadingError: on_redis_error,
    Exception: on_unexpected_error,
}


def private_page_headers(policy: str) -> dict[str, str]:
    """The headers of a page that acts for someone (their token in its link's fragment): never cached, no
    referrer, and `policy`, the Content-Security-Policy of what that page itself loads and talks to."""
    return {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": policy}


class ControlCharacterGuard:
    """Refuses a request whose path holds a control character (sent percent-encoded: `%00`, `%0A`).

    Every path parameter is an id, and no id has one: such a path names nothing, so it is answered 404
    (a WebSocket handshake is refused) before any route reads its parameters or writes them anywhere.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and has_control_characters(scope.get("path", "")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            # `instance` as every problem has it, the path as sent (percent-encoded: it carries no control
            # character itself)
            sent = scope.get("raw_path") or b""
            response = problem(NotFound.status, NotFound.code, "no resource has a control character in its path",
                               instance=sent.decode("ascii", "replace")[:2048] or None)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
