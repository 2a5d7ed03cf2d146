"""No log line holds a token: a real server process, tokens sent in query strings and paths, its whole
log read back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import websockets

from session_server.log_redaction import RedactingFilter, redact

from .rooms_support import ServerProcess


def _pieces(token: str) -> list[str]:
    """Every part of the token long enough to be worth stealing, each enough to find a leak."""
    return [part[:24] for part in token.split(".") if len(part) >= 24] + [token]


async def test_tokens_in_urls_never_reach_the_logs(tmp_path: Path, redis_url: str,
                                                   token: Callable[..., str]) -> None:
    tok = token("client", "c1")
    server = ServerProcess(tmp_path, redis_url, "redact", log_level="info")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for url in (f"/v1/me?token={tok}", f"/v1/me?access_token={tok}",
                        f"/v1/me?x=1&access_token={quote(tok, safe='')}", f"/v1/bookings/{tok}",
                        f"/v1/me/{tok}?token={tok}", f"/no/such/{tok}"):
                await http.get(url)
        for path in (f"/v1/rooms/{tok}/ws?access_token={tok}", f"/v1/notifications/ws?token={tok}",
                     f"/v1/rooms/b1/ws?token={tok}"):
            try:
                async with websockets.connect(server.ws_url + path, open_timeout=5,
                                              origin=server.url) as ws:  # type: ignore[arg-type]
                    await ws.send('{"type": "join", "id": "j1", "v": 1}')
                    await asyncio.wait_for(ws.recv(), 5)
            except (websockets.exceptions.WebSocketException, TimeoutError, OSError):
                pass
    finally:
        await server.stop()
    log = server.log.read_text(encoding="utf-8", errors="replace")
    # the access log is on, and names route templates: neither the query nor the path as sent
    assert "session_server.access: GET /v1/me 401" in log, log[-3000:]
    assert "session_server.access: GET /v1/bookings/{bid} 401" in log, log[-3000:]
    assert "session_server.access: WebSocket /v1/rooms/{booking_id}/ws" in log, log[-3000:]
    leaked = [p for p in _pieces(tok) if p in log]
    assert not leaked, log[-3000:]


@pytest.mark.parametrize("text, expected", [
    ('127.0.0.1:5 - "GET /v1/me?token=abc HTTP/1.1" 401', '127.0.0.1:5 - "GET /v1/me?[redacted] HTTP/1.1" 401'),
    ("room eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjMSJ9.sig-_x: join refused", "room [token]: join refused"),
    ("room eyJhbGciOiJIUzI1NiJ9.eyJzdW", "room [token]"),  # cut short, still a token's beginning
    ("subprotocol bearer.eyJhbGciOiJIUzI1NiJ9.e30.x", "subprotocol [token]"),
    ("is it ready? yes", "is it ready? yes"),
    ("booking b-123 cancelled", "booking b-123 cancelled"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_filter_rewrites_arguments_and_exception_text() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/x?access_token=eyJabcdefgh.eyJ.s", "1.1", 401), None)
    try:
        raise ValueError("bad url /x?token=eyJabcdefgh.eyJ.s")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert "eyJabcdefgh" not in formatted
    assert '"GET /x?[redacted] HTTP/1.1" 401' in formatted
