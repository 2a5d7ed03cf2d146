"""Helpers for the support board's tests: an agent's board socket that keeps every frame and folds the
updates into the board as the page does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from session_server.bookings.model import Booking
from session_server.bookings.store import ALL_BOOKINGS_KEY

from .conftest import LiveServer


async def index_booking(redis_url: str, booking: Booking) -> None:
    """Put a booking written by hand into the time index, as the bookings store does."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.zadd(ALL_BOOKINGS_KEY, {booking.id: booking.starts_at})
    finally:
        await r.aclose()


class AgentBoard:
    """An agent's board socket: every frame, and the board as the page sees it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.tickets: dict[str, dict[str, Any]] = {}
        self.figures: dict[str, Any] = {}
        self.close_code: int | None = None
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                text = raw if isinstance(raw, str) else raw.decode()
                self.raw.append(text)
                frame = json.loads(text)
                self.frames.append(frame)
                self._fold(frame)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            self.close_code = rcvd.code if rcvd is not None else 1006
            self._changed.set()

    def _fold(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "snapshot":
            self.sessions = {s["booking_id"]: s for s in frame["sessions"]}
            self.tickets = {t["id"]: t for t in frame["tickets"]}
            self.figures = frame["figures"]
        elif frame["type"] == "update":
            for s in frame["sessions"]:
                known = self.sessions.get(s["booking_id"], {"series": {}})
                series = known.get("series", {})
                for key, points in s.pop("points", {}).items():
                    series.setdefault(key, []).extend(points)
                s["series"] = series
                self.sessions[s["booking_id"]] = s
            for bid in frame.get("gone", []):
                self.sessions.pop(bid, None)
            for t in frame["tickets"]:
                self.tickets[t["id"]] = t
            if "figures" in frame:
                self.figures = frame["figures"]

    async def until(self, check: Callable[[AgentBoard], Any], what: str, timeout: float = 10.0  # noqa: ASYNC109
                    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = check(self)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or self._reader.done():
                raise AssertionError(f"the board never showed {what} (close code {self.close_code}; "
                                     f"last frames: {self.frames[-3:]})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 2)


async def open_board(server: LiveServer, token: str, *, origin: str | None = None) -> AgentBoard:
    ws = await connect(f"{server.ws_url}/v1/support/ws",
                       subprotocols=["support.v1", "bearer." + token],  # type: ignore[list-item]
                       origin=origin, max_size=None, compression=None, open_timeout=5)  # type: ignore[arg-type]
    return AgentBoard(ws)


async def board_refusal(server: LiveServer, token: str) -> tuple[int, str | None]:
    """The close code (or HTTP status) a board socket gets with `token`, and the code of the `error`
    message it was sent before the close (None if none came)."""
    try:
        ws = await connect(f"{server.ws_url}/v1/support/ws", subprotocols=["support.v1", "bearer." + token],  # type: ignore[list-item]
                           compression=None, open_timeout=5)
    except InvalidStatus as exc:
        return exc.response.status_code, None
    board = AgentBoard(ws)
    await asyncio.wait_for(asyncio.shield(board._reader), 5)
    assert board.close_code is not None
    errors = [f["code"] for f in board.frames if f.get("type") == "error"]
    return board.close_code, (errors[0] if errors else None)
