"""The OpenAPI 3.1 document of the HTTP API, generated from what the edges already use.

Bodies and queries come from the pydantic models that `read_json` and `parse_query` validate with,
responses from the handlers' response models, refusals from the error catalogue (session_server.errors):
each route's `@documented` contract (session_server.http) names its own refusals, and the generic ones
follow from how it authenticates and what it reads. Nothing here is written a second time by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import __version__
from .auth import API_KEY_ERRORS, TOKEN_ERRORS, Role
from .errors import (
    CatalogueEntry,
    DomainError,
    InternalError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RedisUnavailable,
    lookup,
)
from .http import JsonExpected, JsonTooDeep, RouteDoc, documented, route_doc

REF = "#/components/schemas/{model}"
STATIC_DIR = Path(__file__).resolve().parent / "static" / "api"
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document. Branch on `code`; people read `detail`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Where the body or query is malformed; never echoes the input.",
            "items": {"type": "object", "required": ["loc", "msg", "type"],
                      "properties": {"loc": {"type": "array", "items": {"type": "string"}},
                                     "msg": {"type": "string"}, "type": {"type": "string"}}},
        },
    },
}

ROLES_TEXT = ", ".join(r.value for r in Role)


def entry_of(code: str) -> CatalogueEntry:
    """The catalogue's entry for a code a route names; a code it does not know is a defect of the route."""
    entry = lookup(code)
    if entry is None:
        raise ValueError(f"the code {code!r} is not in the error catalogue")
    return entry


def refusals(doc: RouteDoc) -> dict[int, list[str]]:
    """Every refusal the route can make, by status: its own, and those that follow from its contract."""
    # not_found: a path holding a control character names nothing, whatever the route (ControlCharacterGuard)
    found: list[type[DomainError] | str] = [InternalError, RedisUnavailable, NotFound, *doc.errors]
    if "bearer" in doc.auth:
        found.extend(TOKEN_ERRORS)
    if "api_key" in doc.auth:
        found.extend(API_KEY_ERRORS)
    if doc.body is not None:
        found.extend([PayloadTooLarge, InvalidInput])
        if doc.body_media_type == "application/json":
            found.extend([JsonExpected, JsonTooDeep])
    if doc.query is not None:
        found.append(InvalidInput)
    by_status: dict[int, list[str]] = {}
    for item in found:
        code = item if isinstance(item, str) else item.code
        status = entry_of(code).status if isinstance(item, str) else item.status
        codes = by_status.setdefault(status, [])
        if code not in codes:
            codes.append(code)
    return {s: sorted(c) for s, c in sorted(by_status.items())}


def _problem_response(status: int, codes: Sequence[str]) -> dict[str, Any]:
    lines = "\n".join(f"- `{c}`: {entry_of(c).meaning}" for c in codes)
    schema = {"allOf": [{"$ref": REF.format(model="Problem")},
                        {"type": "object", "properties": {"status": {"const": status},
                                                          "code": {"enum": list(codes)}}}]}
    return {"description": f"Refused.\n\n{lines}", "content": {"application/problem+json": {"schema": schema}}}


def _success_response(value: Any, refs: Mapping[Any, Any]) -> dict[str, Any]:
    if value is None:
        return {"description": "No content."}
    if isinstance(value, str):  # a media type whose body is not JSON (a page, metrics, a document)
        schema: dict[str, Any] = {"type": "object"} if value.endswith("json") else {"type": "string"}
        return {"description": f"`{value}`.", "content": {value: {"schema": schema}}}
    return {"description": (value.__doc__ or value.__name__).strip().split("\n")[0],
            "content": {"application/json": {"schema": refs[(value, "serialization")]}}}


def _security(doc: RouteDoc) -> list[dict[str, list[str]]]:
    out: list[dict[str, list[str]]] = []
    if "bearer" in doc.auth:
        out.append({"bearer": list(doc.roles)})
    if "api_key" in doc.auth:
        out.append({"apiKey": []})
    return out


def _parameters(route: Route, doc: RouteDoc, refs: Mapping[Any, Any],
                defs: Mapping[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in route.param_convertors]
    if doc.query is not None:
        ref = refs[(doc.query, "validation")]["$ref"].rsplit("/", 1)[1]
        schema = defs[ref]
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    for name, meaning in doc.headers.items():
        params.append({"name": name, "in": "header", "required": False, "description": meaning,
                       "schema": {"type": "string"}})
    return params


def _models(docs: Iterable[RouteDoc]) -> list[tuple[type[pydantic.BaseModel], Any]]:
    wanted: dict[tuple[type[pydantic.BaseModel], str], None] = {}
    for doc in docs:
        for model in (doc.body, doc.query):
            if model is not None:
                wanted[(model, "validation")] = None
        for value in doc.responses.values():
            if isinstance(value, type) and issubclass(value, pydantic.BaseModel):
                wanted[(value, "serialization")] = None
    return list(wanted)


def documented_routes(routes: Iterable[BaseRoute]) -> list[tuple[Route, RouteDoc]]:
    out = []
    for route in routes:
        if isinstance(route, Route):
            doc = route_doc(route.endpoint)
            if doc is not None:
                out.append((route, doc))
    return out


def undocumented_routes(routes: Iterable[BaseRoute]) -> list[str]:
    """HTTP routes without a contract (WebSocket routes and static mounts are not operations)."""
    return [f"{sorted(r.methods or ())} {r.path}" for r in routes
            if isinstance(r, Route) and route_doc(r.endpoint) is None]


def build(routes: Iterable[BaseRoute], *, title: str = "Session server") -> dict[str, Any]:
    pairs = documented_routes(routes)
    refs, top = models_json_schema(_models(doc for _, doc in pairs), ref_template=REF)
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for route, doc in pairs:
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op: dict[str, Any] = {
                "operationId": f"{method.lower()}_{route.name}",
                "summary": doc.summary,
                "tags": list(doc.tags),
                "security": _security(doc),
                "parameters": _parameters(route, doc, refs, defs),
                "responses": {
                    **{str(s): _success_response(v, refs) for s, v in doc.responses.items()},
                    **{str(s): _problem_response(s, codes) for s, codes in refusals(doc).items()},
                },
            }
            if doc.body is not None:
                op["requestBody"] = {"required": True, "content": {
                    doc.body_media_type: {"schema": refs[(doc.body, "validation")]}}}
            elif doc.body_media_type != "application/json":
                op["requestBody"] = {"required": True, "content": {
                    doc.body_media_type: {"schema": {"type": "string", "format": "binary"}}}}
            paths.setdefault(route.path, {})[method.lower()] = op
    defs["Problem"] = PROBLEM_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__,
                 "description": "The HTTP API of the session server. Errors are RFC 9457 problem documents "
                                "with a stable `code`; the WebSocket routes are described in the signaling "
                                "protocol (docs/protocol.md in the source)."},
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": f"An access token (HS256 JWT) minted by POST /v1/tokens. Its `role` "
                                          f"is one of {ROLES_TEXT}; an operation's list names the roles it "
                                          "serves (none listed: any role)."},
                "apiKey": {"type": "http", "scheme": "basic",
                           "description": "The platform's backend: API key id and secret as HTTP Basic "
                                          "credentials. It acts as an admin."},
            },
        },
    }


@documented("This document: the API's contract as OpenAPI 3.1", auth=(), responses={200: "application/json"},
            tags=("meta",))
async def openapi_json(request: Request) -> Response:
    state = request.app.state
    document = getattr(state, "openapi_document", None)
    if document is None:
        document = state.openapi_document = build(request.app.routes)
    return JSONResponse(document)


@documented("The API's contract rendered for people (works offline)", auth=(), responses={200: "text/html"},
            tags=("meta",))
async def api_page(request: Request) -> Response:
    return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)


_CREDENTIALS = {(): "none", ("api_key",): "API key", ("bearer",): "token", ("bearer", "api_key"): "token or API key"}


def credentials_table(routes: Iterable[BaseRoute]) -> str:
    """The Markdown table of what each HTTP route takes as credentials, and which roles, for docs/api.md."""
    rows = ["| method | path | credentials | roles |", "|--------|------|-------------|-------|"]
    for route, doc in documented_routes(routes):
        methods = ", ".join(sorted((route.methods or set()) - {"HEAD"}))
        roles = ", ".join(doc.roles) if doc.roles else ("any" if "bearer" in doc.auth else "")
        if doc.auth == ("api_key",):
            roles = "the platform's backend"
        rows.append(f"| {methods} | `{route.path}` | {_CREDENTIALS[doc.auth]} | {roles} |")
    return "\n".join(rows)


def _usual_meaning(name: str, where: str, method: str, default: Any) -> str:
    """What a default means where the field does not say: the meanings every list and update share."""
    if name == "limit":
        return "the most items in one answer"
    if method == "PATCH" and default is None:
        return "absent: unchanged"
    if where == "query" and default is None and name in ("from", "to"):
        return "absent: no bound"
    if where == "query" and default is None:
        return "absent: not filtered by it"
    return ""


def defaults_table(routes: Iterable[BaseRoute]) -> str:
    """The Markdown table of every optional field of a body or query, with its default, for docs/api.md."""
    rows = ["| route | field | default | meaning |", "|-------|-------|---------|---------|"]
    for route, doc in documented_routes(routes):
        method = ", ".join(sorted((route.methods or set()) - {"HEAD"}))
        for where, model in (("query", doc.query), ("body", doc.body)):
            if model is None:
                continue
            for name, info in model.model_fields.items():
                if info.is_required():
                    continue
                default = info.get_default(call_default_factory=True)
                shown = "absent" if default is None else f"`{json.dumps(default, ensure_ascii=False)}`"
                meaning = info.description or _usual_meaning(info.alias or name, where, method, default)
                rows.append(f"| {method} `{route.path}` | {where} `{info.alias or name}` | {shown} | {meaning} |")
    return "\n".join(rows)


def error_table(routes: Iterable[BaseRoute]) -> str:
    """The Markdown table of every code the HTTP routes can answer with, for docs/api.md."""
    codes = {code for _, doc in documented_routes(routes) for cs in refusals(doc).values() for code in cs}
    rows = ["| status | code | title | meaning |", "|-------:|------|-------|---------|"]
    entries = sorted((entry_of(c) for c in codes), key=lambda e: (e.status, e.code))
    rows += [f"| {e.status} | `{e.code}` | {e.title} | {e.meaning} |" for e in entries]
    return "\n".join(rows)

