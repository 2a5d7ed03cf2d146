"""The HTTP edge's shared pieces: problem documents, typed JSON bodies, and error handlers.

Every error response is an RFC 9457 problem document (`application/problem+json`) whose `code` is
stable; clients branch on `code`, people read `detail`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
import pydantic
import redis.exceptions
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import DomainError, InvalidInput, PayloadTooLarge, UnsupportedMediaType

log = logging.getLogger(__name__)

PROBLEM_TYPE = "https://session-server.invalid/problems/"
_HTTP_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "invalid_input", 429: "rate_limited", 500: "internal_error", 503: "unavailable",
}

M = TypeVar("M", bound=pydantic.BaseModel)


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
    if not _ISO_DATETIME.match(value):
        raise ValueError("an ISO 8601 date and time with an offset, such as 2026-12-01T09:00:00+01:00")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not a real date and time") from None


_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
# A time in an API: ISO 8601 text with its offset, never a bare number (which pydantic would read as
# seconds since 1970, a guess no client should depend on).
IsoDatetime = Annotated[pydantic.AwareDatetime, pydantic.BeforeValidator(_iso_8601)]


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


class Body(pydantic.BaseModel):
    """Base of every request body: unknown fields are refused, values are immutable. JSON bodies are read
    strictly (`read_json`): a number is not a string, a boolean not a number."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def problem(status: int, code: str, detail: str, *, title: str | None = None, instance: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": title or code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return FastJSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


async def read_json(request: Request, model: type[M], *, limit: int | None = None) -> M:
    """Read and validate a JSON body into `model`, refusing bodies over the limit while streaming."""
    max_bytes = limit if limit is not None else request.app.state.ctx.settings.max_body_bytes
    media_type = request.headers.get("content-type", "application/json").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"send JSON, with Content-Type: application/json (not {media_type[:100]})",
                                   code="json_expected")
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
    try:
        return model.model_validate_json(raw or b"{}", strict=True)
    except pydantic.ValidationError as exc:
        raise InvalidInput("the body does not match the expected shape",
                           errors=validation_errors(exc)) from None


def validation_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    # Never echo the input back: it may hold health data or secrets.
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def parse_query(request: Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query_params))
    except pydantic.ValidationError as exc:
        raise InvalidInput("the query parameters are invalid", errors=validation_errors(exc)) from None


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    headers = exc.extra.pop("headers", None)
    return problem(exc.status, exc.code, exc.message, title=exc.title, instance=request.url.path,
                   headers=headers, **exc.extra)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return problem(exc.status_code, code, str(exc.detail), instance=request.url.path,
                   headers=dict(exc.headers) if exc.headers else None)


async def on_redis_error(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable: %s", type(exc).__name__)
    return problem(503, "redis_unavailable", "the data store is not reachable; try again shortly",
                   instance=request.url.path, headers={"Retry-After": "1"})


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "internal_error", "an unexpected error occurred; it has been logged",
                   instance=request.url.path)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: on_domain_error,
    HTTPException: on_http_error,
    redis.exceptions.ConnectionError: on_redis_error,
    redis.exceptions.TimeoutError: on_redis_error,
    redis.exceptions.BusyLoadingError: on_redis_error,
    Exception: on_unexpected_error,
}
