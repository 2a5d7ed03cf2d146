"""HTTP metrics count requests by route template (never the raw path), method and status."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from .conftest import auth


async def test_requests_are_counted_by_route_template_and_unmatched_ones_apart(
        client: httpx.AsyncClient, token: Callable[..., str]) -> None:
    c = auth(token("client", "c1"))
    assert (await client.get("/v1/bookings/b-123", headers=c)).status_code == 404  # routed; the handler says 404
    assert (await client.get("/v1/bookings/b-456", headers=c)).status_code == 404
    assert (await client.delete("/healthz")).status_code == 405  # the path exists, the method does not
    assert (await client.get("/no/such/thing")).status_code == 404
    assert (await client.head("/healthz")).status_code == 200
    text = (await client.get("/metrics")).text
    assert 'session_http_requests_total{method="GET",route="/v1/bookings/{bid}",status="404"} 2.0' in text
    assert 'session_http_requests_total{method="DELETE",route="unmatched",status="405"} 1.0' in text
    assert 'session_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'session_http_requests_total{method="HEAD",route="/healthz",status="200"} 1.0' in text
    assert 'session_http_request_seconds_count{route="/v1/bookings/{bid}"} 2.0' in text
    assert "b-123" not in text and "/no/such/thing" not in text
