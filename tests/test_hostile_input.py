"""Hostile input through the real edges: deep JSON, control characters in times and ids, names that hide
what they are. Each is refused with a typed error, the connection carries on, and nothing is logged as a
crash."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import websockets

from .bookings_support import every_day, iso, make_practitioner, window_from_now
from .conftest import LiveServer, api_key_auth, auth
from .documents_support import PDF, DocsEnv, docs_env, problem_code
from .rooms_support import CLIENT, PRACTITIONER, connect_peer, joined, room_server, write_booking

DEEP = 100_000
# under the room socket's 64 KiB frame limit: openers only, which is as deep as a decoder goes before it
# could notice the text is unfinished
DEEP_ARRAY_FRAME = '{"type": "chat.send", "id": "d1", "text": ' + "[" * 60_000
DEEP_OBJECT_FRAME = '{"type": "chat.send", "id": "d2", "text": ' + '{"a":' * 12_000


def no_crash_logged(caplog: pytest.LogCaptureFixture) -> None:
    crashes = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes]
    assert "RecursionError" not in caplog.text


async def test_deep_json_on_the_room_socket_is_a_typed_error_and_the_socket_stays_open(
        tmp_path: Path, redis_url: str, token: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        for frame in (DEEP_ARRAY_FRAME, DEEP_OBJECT_FRAME):
            assert len(frame.encode()) < 64 * 1024
            before = len(client.of_type("error"))
            await client.send_raw(frame)
            await client.expect("error", where=lambda m, n=before: len(client.of_type("error")) > n)
            assert client.of_type("error")[-1]["code"] == "json_too_deep"
        await client.send({"type": "chat.send", "text": "still here"})
        await prac.expect("chat.message", lambda m: m["text"] == "still here")
        await client.close()
        await prac.close()
    no_crash_logged(caplog)


async def test_deep_json_as_the_join_is_refused_with_4400(
        tmp_path: Path, redis_url: str, token: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    await write_booking(redis_url)
    async with room_server(tmp_path, redis_url) as server:
        peer = await connect_peer(server, "b1", token("client", CLIENT), via="header", join=False)
        await peer.send_raw('{"type": "join", "id": "j1", "x": ' + "[" * 60_000)
        assert await peer.closed() == 4400
        assert (await peer.expect("error"))["code"] == "json_too_deep"
    no_crash_logged(caplog)


async def test_deep_json_on_the_notifications_socket_is_a_typed_error(
        live_server: LiveServer, token: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    p_tok = token("practitioner", "p1")
    async with websockets.connect(f"{live_server.ws_url}/v1/notifications/ws",
                                  subprotocols=["notifications.v1", f"bearer.{p_tok}"],  # type: ignore[list-item]
                                  max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        await ws.send("[" * DEEP + "]" * DEEP)
        assert json.loads(await ws.recv())["code"] == "json_too_deep"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"
    no_crash_logged(caplog)


@pytest.mark.parametrize("nest", [("[", "]"), ('{"a":', "}")])
async def test_a_deep_http_body_is_a_typed_422(live_server: LiveServer, caplog: pytest.LogCaptureFixture,
                                              nest: tuple[str, str]) -> None:
    opener, closer = nest
    body = '{"sub": "c1", "role": "client", "name": ' + opener * DEEP + "1" + closer * DEEP + "}"
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        r = await http.post("/v1/tokens", headers={**api_key_auth(), "Content-Type": "application/json"},
                            content=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "json_too_deep"
        assert "[[[[" not in r.text
        again = await http.post("/v1/tokens", headers=api_key_auth(), json={"sub": "c1", "role": "client"})
        assert again.status_code == 201, again.text
    no_crash_logged(caplog)


# --- control characters in times, ids, codes and paths ---------------------------------------------

CONTROLS = ["\x00", "\n", "\x1b", "\x85"]


@pytest.mark.parametrize("control", CONTROLS)
async def test_a_time_with_a_control_character_is_refused_in_a_body_and_a_query(
        live_server: LiveServer, token: Callable[..., str], control: str) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        await make_practitioner(http, "p1", weekly=every_day())
        p = auth(token("practitioner", "p1"))
        expiry = iso(time.time() + 30 * 86400)
        for bad in (expiry + control, expiry[:10] + control + expiry[10:]):
            r = await http.post("/v1/practitioners/p1/codes", headers=p,
                                json={"code": "HALF", "percent": 50, "expires_at": bad})
            assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text
            assert r.json()["errors"][0]["loc"] == ["expires_at"]
        # nothing was stored: the code is still free
        r = await http.post("/v1/practitioners/p1/codes", headers=p,
                            json={"code": "HALF", "percent": 50, "expires_at": expiry})
        assert r.status_code == 201, r.text
        start, end = window_from_now(24)
        c = auth(token("client", "c1"))
        for params in ({"from": start + control, "to": end}, {"from": start, "to": end, "code": "HALF" + control}):
            r = await http.get("/v1/practitioners/p1/slots", headers=c, params=params)
            assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text
        r = await http.get("/v1/practitioners/p1/slots", headers=c, params={"from": start, "to": end})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("control", CONTROLS)
async def test_an_id_with_a_control_character_is_refused_in_a_path_and_a_body(
        live_server: LiveServer, token: Callable[..., str], control: str) -> None:
    encoded = quote(control, safe="")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        await make_practitioner(http, "p1", weekly=every_day())
        for method, path in (("GET", f"/v1/practitioners/p1{encoded}"), ("GET", f"/v1/bookings/b1{encoded}"),
                             ("PUT", f"/v1/practitioners/p1{encoded}/price"),
                             ("GET", f"/v1/documents/d{encoded}x/content")):
            r = await http.request(method, path, headers={**api_key_auth(), **auth(token("practitioner", "p1"))},
                                   json={"price_minor": 100_000})
            assert r.status_code == 404 and r.json()["code"] == "not_found", (path, r.text)
            assert r.json()["instance"] == path  # as every problem names what it answers, as it was sent
        r = await http.post("/v1/practitioners", headers=api_key_auth(), json={
            "id": "p2" + control + "x", "display_name": "P2", "specialty": "psychologist", "price_minor": 100_000,
            "session_minutes": 50, "timezone": "Africa/Algiers"})
        assert r.status_code == 422, r.text
        assert (await http.get("/v1/practitioners/p1", headers=api_key_auth())).status_code == 200
    with pytest.raises(websockets.exceptions.InvalidStatus):
        await websockets.connect(f"{live_server.ws_url}/v1/rooms/b1{encoded}/ws", open_timeout=5)


# --- names that hide what they are -----------------------------------------------------------------


@pytest.fixture
async def docs(tmp_path: Path, redis_url: str) -> AsyncIterator[DocsEnv]:
    async with docs_env(tmp_path, redis_url) as env:
        yield env


@pytest.mark.parametrize("raw", [
    "invoice\u202efdp.exe",  # reads as "invoiceexe.pdf"; "invoicefdp.exe" once the override is removed
    "photo\u2067gpj\u2069.scr",
    "report\u200f.pdf\u202e.js",
    "scan.pdf.exe.",  # Windows drops trailing dots
    "scan.pdf.EXE ",
    "notes.\uff45\uff58\uff45",  # fullwidth letters, read as ".exe"
    "a/b\\..\\setup.msi",
    "page.html",
])
async def test_a_name_that_is_an_executable_once_sanitised_is_refused(docs: DocsEnv, token: Callable[..., str],
                                                                      raw: str) -> None:
    r = await docs.upload(token("practitioner", "p1"), PDF, raw)
    assert r.status_code == 415 and problem_code(r) == "unsupported_document_type", r.text
    assert await docs.document_count() == 0
    assert docs.files_on_disk() == []


async def test_an_override_that_hides_nothing_dangerous_is_removed_and_the_name_kept(
        docs: DocsEnv, token: Callable[..., str]) -> None:
    r = await docs.upload(token("practitioner", "p1"), PDF, "exe\u202e.fdp\u202c.pdf")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "exe.fdp.pdf"
