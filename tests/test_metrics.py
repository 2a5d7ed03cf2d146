"""HTTP metrics count requests by route template (never the raw path), method and status."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from session_server.app import StartupError, create_app
from session_server.settings import SettingsError, load_settings

from .conftest import METRICS_TOKEN, auth, make_settings, metrics_auth
from .rooms_support import CLIENT, PRACTITIONER, ServerProcess, joined, room_server, write_booking
from .support import free_port


async def test_requests_are_counted_by_route_template_and_unmatched_ones_apart(
        client: httpx.AsyncClient, token: Callable[..., str]) -> None:
    c = auth(token("client", "c1"))
    assert (await client.get("/v1/bookings/b-123", headers=c)).status_code == 404  # routed; the handler says 404
    assert (await client.get("/v1/bookings/b-456", headers=c)).status_code == 404
    assert (await client.delete("/healthz")).status_code == 405  # the path exists, the method does not
    assert (await client.get("/no/such/thing")).status_code == 404
    assert (await client.head("/healthz")).status_code == 200
    text = (await client.get("/metrics", headers=metrics_auth())).text
    assert 'session_http_requests_total{method="GET",route="/v1/bookings/{bid}",status="404"} 2.0' in text
    assert 'session_http_requests_total{method="DELETE",route="unmatched",status="405"} 1.0' in text
    assert 'session_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'session_http_requests_total{method="HEAD",route="/healthz",status="200"} 1.0' in text
    assert 'session_http_request_seconds_count{route="/v1/bookings/{bid}"} 2.0' in text
    assert "b-123" not in text and "/no/such/thing" not in text


# --- where /metrics may be read -----------------------------------------------------------------------


async def test_metrics_are_refused_on_the_public_port_without_the_credential(
        tmp_path: Path, redis_url: str) -> None:
    async with room_server(tmp_path / "closed", redis_url, metrics_token="") as server, httpx.AsyncClient() as c:
        r = await c.get(f"{server.url}/metrics")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert "session_http_requests" not in r.text
    async with room_server(tmp_path / "token", redis_url) as server, httpx.AsyncClient() as c:
        for headers in ({}, {"Authorization": "Bearer " + "x" * 40}, {"Authorization": f"Basic {METRICS_TOKEN}"}):
            r = await c.get(f"{server.url}/metrics", headers=headers)
            assert r.status_code == 401 and r.json()["code"] == "unauthenticated", headers
            assert "session_http_requests" not in r.text
        r = await c.get(f"{server.url}/metrics", headers=metrics_auth())
        assert r.status_code == 200 and "session_http_requests_total" in r.text


async def test_metrics_have_a_listener_of_their_own_on_loopback(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    async with room_server(tmp_path, redis_url, metrics_token="", metrics_port=port) as server, \
            httpx.AsyncClient() as c:
        assert server.app.state.metrics_address == ("127.0.0.1", port)
        assert (await c.get(f"{server.url}/healthz")).status_code == 200
        assert (await c.get(f"{server.url}/metrics")).status_code == 404  # not on the public port
        r = await c.get(f"http://127.0.0.1:{port}/metrics")
        assert r.status_code == 200
        assert 'session_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in r.text
        # the metrics port serves the metrics only, never the API
        assert '"alive"' not in (await c.get(f"http://127.0.0.1:{port}/healthz")).text
    with pytest.raises(httpx.ConnectError):  # and it stops with the server
        async with httpx.AsyncClient() as c:
            await c.get(f"http://127.0.0.1:{port}/metrics")


def test_a_metrics_port_already_taken_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port} .*SESSION_SERVER_METRICS_PORT"):
            create_app(make_settings(tmp_path, None, metrics_port=port))


def test_a_metrics_port_is_a_setting_on_loopback_by_default() -> None:
    s = load_settings({"SESSION_SERVER_METRICS_PORT": "9464"})
    assert (s.metrics_host, s.metrics_port, s.metrics_token) == ("127.0.0.1", 9464, "")
    assert load_settings({}).metrics_port is None  # no listener unless asked for
    with pytest.raises(SettingsError, match="SESSION_SERVER_METRICS_TOKEN"):
        load_settings({"SESSION_SERVER_METRICS_TOKEN": "short"})
    with pytest.raises(SettingsError, match="SESSION_SERVER_METRICS_PORT"):
        load_settings({"SESSION_SERVER_METRICS_PORT": "8000"})  # the public port


# --- chat and documents -------------------------------------------------------------------------------


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_chat_and_document_metrics_count_outcomes_and_bytes_never_content(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, "b1")
    async with room_server(tmp_path, redis_url, chat_max_bytes=64) as server, \
            httpx.AsyncClient(base_url=server.url) as c:
        async def scrape() -> str:
            return (await c.get("/metrics", headers=metrics_auth())).text

        client, _ = await joined(server, "b1", token("client", CLIENT))
        await client.send({"type": "chat.send", "id": "m1", "text": "a private sentence"})
        await client.expect("chat.ack", lambda m: m["ref"] == "m1")
        await client.send({"type": "chat.send", "id": "m1", "text": "a private sentence"})
        await client.expect("chat.ack", lambda m: m.get("duplicate") is True)
        await client.send({"type": "chat.send", "id": "m2", "text": "x" * 65})
        await client.expect("error", lambda m: m.get("code") == "message_too_large")
        await client.close()

        prac = auth(token("practitioner", PRACTITIONER))
        content = b"%PDF-1.5\n" + b"confidential worksheet " * 500
        r = await c.post("/v1/documents", content=content, headers={**prac, "X-Filename": "fiche.pdf"})
        assert r.status_code == 201
        doc_id = r.json()["id"]
        r = await c.post("/v1/documents", content=b"", headers={**prac, "X-Filename": "e.txt"})
        assert r.json()["code"] == "empty_document"
        r = await c.get(f"/v1/documents/{doc_id}/content", headers=prac)
        assert r.content == content
        r = await c.get(f"/v1/documents/{doc_id}/content", headers=auth(token("client", "someone-else")))
        assert r.status_code == 404

        text = await scrape()
        assert _sample(text, "session_chat_messages_total", outcome="stored") == 1
        assert _sample(text, "session_chat_messages_total", outcome="duplicate") == 1
        assert _sample(text, "session_chat_messages_total", outcome="message_too_large") == 1
        assert _sample(text, "session_document_uploads_total", outcome="stored") == 1
        assert _sample(text, "session_document_uploads_total", outcome="empty_document") == 1
        assert _sample(text, "session_document_downloads_total", outcome="served") == 1
        assert _sample(text, "session_document_downloads_total", outcome="document_not_found") == 1
        assert _sample(text, "session_document_bytes_total", direction="uploaded") == len(content)
        assert _sample(text, "session_document_bytes_total", direction="downloaded") == len(content)
        for secret in ("private sentence", "fiche", doc_id, "b1", CLIENT, PRACTITIONER):
            assert secret not in text


# --- the access log -----------------------------------------------------------------------------------


async def test_the_access_log_names_route_templates_never_ids_or_query_strings(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    """A real `session-server serve`, its log read as an operator reads it."""
    server = ServerProcess(tmp_path, redis_url, "node", log_level="info")
    await server.start()
    try:
        client = auth(token("client", "c-amina-77"))
        async with httpx.AsyncClient(base_url=server.url) as c:
            await c.get("/v1/quotes", params={"practitioner_id": "p-samira-3", "code": "RAMADAN50",
                                              "starts_at": "2030-01-01T10:00:00Z"}, headers=client)
            await c.get("/v1/bookings/b-private-42", headers=client)
            await c.get("/v1/documents/0123456789abcdef0123456789abcdef/content?download=1", headers=client)
        with contextlib.suppress(Exception):
            async with connect(f"{server.ws_url}/v1/rooms/b-private-99/ws", open_timeout=5,
                               subprotocols=["session.v1", "bearer." + token("client", "c-amina-77")]) as ws:  # type: ignore[list-item]
                await ws.send(json.dumps({"type": "join", "v": 1, "id": "j1"}))
                await ws.recv()
    finally:
        await server.stop()
    log = server.log.read_text()
    access = [line for line in log.splitlines() if "session_server.access" in line]
    assert any("GET /v1/quotes 4" in line or "GET /v1/quotes 2" in line for line in access), log
    assert any("GET /v1/bookings/{bid} 404" in line for line in access), log
    assert any("GET /v1/documents/{document_id}/content 404" in line for line in access), log
    assert any("WebSocket /v1/rooms/{booking_id}/ws" in line for line in access), log
    for secret in ("RAMADAN50", "p-samira-3", "c-amina-77", "download=1", "?"):
        assert secret not in log, f"{secret!r} is in the log:\n{log}"
    # request lines: ours, and none of uvicorn's with a raw path
    requests = [line for line in log.splitlines() if "session_server.access" in line or "uvicorn" in line]
    for raw in ("b-private-42", "b-private-99", "0123456789abcdef", "/v1/rooms/b"):
        assert not [line for line in requests if raw in line], f"{raw!r} in a request line:\n{log}"
