"""A query parameter a route does not take is refused with 422 `invalid_input`, never silently ignored: a
caller who adds `?booking_id=` to the documents list, or misspells a filter, must not read every document,
or an unfiltered answer, as the filtered one it asked for."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from session_server.http import route_doc

from .conftest import api_key_auth, auth

ID = "0123456789abcdef0123456789abcdef"
# every JSON read of the API that takes no query parameters, with an id in its path where it has one
NO_QUERY = [
    "/v1/me", "/v1/practitioners/p1", "/v1/practitioners/p1/availability", f"/v1/bookings/{ID}",
    "/v1/documents", f"/v1/documents/{ID}", f"/v1/documents/{ID}/shares", f"/v1/bookings/{ID}/documents",
    f"/v1/bookings/{ID}/reschedule-offer", f"/v1/bookings/{ID}/reschedule-offer/slots", f"/v1/complaints/{ID}",
    f"/v1/support/sessions/{ID}", f"/v1/support/tickets/{ID}", "/v1/ledger/practitioners/p1/statement",
    "/v1/ledger/practitioners/p1/statement.csv", "/v1/support/figures",
]
# reads that are not the API's JSON: health probes, the metrics scrape, pages, a document's bytes
NOT_JSON_READS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/api", "/", "/favicon.ico",
                  "/room/{booking_id}", "/reschedule/{bid}", "/statement", "/complaint/{bid}", "/admin", "/support",
                  "/v1/documents/{document_id}/content"}


def test_every_json_read_declares_the_query_it_takes(app: Starlette) -> None:
    undeclared = [r.path for r in app.routes if isinstance(r, Route) and r.methods and "GET" in r.methods
                  and r.path not in NOT_JSON_READS and (doc := route_doc(r.endpoint)) is not None and doc.query is None]
    assert undeclared == []


@pytest.mark.parametrize("path", NO_QUERY)
async def test_a_parameter_the_route_does_not_take_is_refused(
        client: httpx.AsyncClient, token: Callable[..., str], path: str) -> None:
    practitioner = auth(token("practitioner", "p1"))
    for headers in (practitioner, auth(token("admin", "a1")), api_key_auth()):
        r = await client.get(path, params={"booking_id": ID}, headers=headers)
        if r.status_code in (401, 403) and r.json()["code"] in ("wrong_role", "unauthenticated", "permission_denied",
                                                                "api_key_not_allowed"):
            continue  # this caller may not read the route at all: the next one may
        assert r.status_code == 422 and r.json()["code"] == "invalid_input", (path, r.status_code, r.text)
        assert [e["loc"] for e in r.json()["errors"]] == [["booking_id"]]
        return
    pytest.fail(f"no caller may read {path}")
