"""Shared pieces of the documents tests: an app with the documents feature, bookings, sample files."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from session_server.app import create_app
from session_server.bookings.model import BOOKING_KEY, Booking, BookingStatus
from session_server.documents import DocumentsFeature
from session_server.documents.store import DOC_KEY
from session_server.events import EVENTS_STREAM, Event
from session_server.settings import Settings

from .conftest import auth, make_settings, running

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 3 + b"\xff\xd9"
TEXT = "تمرين: اكتب ثلاث أفكار إيجابية.\nExercice : écrivez trois pensées positives.\n".encode()


@dataclass
class DocsEnv:
    app: Starlette
    http: httpx.AsyncClient
    redis: aioredis.Redis
    settings: Settings

    @property
    def root(self) -> Path:
        return self.settings.data_dir / "documents"

    def files_on_disk(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()) if self.root.exists() else []

    async def document_count(self) -> int:
        return len([k async for k in self.redis.scan_iter(match=DOC_KEY.format("*"))
                    if k.count(b":") == 2])

    async def events(self, type_: str) -> list[Event]:
        raw = await self.redis.xrange(EVENTS_STREAM)
        return [e for e in (Event.from_fields(f) for _, f in raw) if e.type == type_]

    async def upload(self, tok: str, body: Any, name: str = "fiche.pdf", *,
                     content_type: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        h = {**auth(tok), "X-Filename": quote(name, safe="")}
        if content_type is not None:
            h["Content-Type"] = content_type
        h.update(headers or {})
        return await self.http.post("/v1/documents", content=body, headers=h)

    async def uploaded(self, tok: str, body: bytes = PDF, name: str = "fiche.pdf") -> str:
        r = await self.upload(tok, body, name)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def share(self, tok: str, doc_id: str, **body: Any) -> httpx.Response:
        return await self.http.post(f"/v1/documents/{doc_id}/shares", json=body, headers=auth(tok))

    async def download(self, tok: str, doc_id: str, **headers: str) -> httpx.Response:
        return await self.http.get(f"/v1/documents/{doc_id}/content", headers={**auth(tok), **headers})


async def put_booking(redis: aioredis.Redis, booking_id: str, practitioner_id: str, client_id: str, *,
                      status: BookingStatus = BookingStatus.CONFIRMED, starts_in_s: int = 3600) -> Booking:
    now = int(time.time())
    booking = Booking(id=booking_id, practitioner_id=practitioner_id, client_id=client_id,
                      starts_at=now + starts_in_s, ends_at=now + starts_in_s + 3000, status=status,
                      currency="DZD", client_total=550_000, practitioner_share=500_000,
                      platform_share=50_000, discount=0, code="", created_at=now, timezone="Africa/Algiers")
    await redis.hset(BOOKING_KEY.format(booking_id), mapping=booking.to_hash())  # type: ignore[arg-type]
    return booking


@contextlib.asynccontextmanager
async def docs_env(tmp_path: Path, redis_url: str, **overrides: Any) -> AsyncIterator[DocsEnv]:
    settings = make_settings(tmp_path, redis_url, **overrides)
    app = create_app(settings, features=[DocumentsFeature()])
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            r = aioredis.Redis.from_url(redis_url)
            try:
                yield DocsEnv(app, http, r, settings)
            finally:
                await r.aclose()


@pytest.fixture
async def docs(tmp_path: Path, redis_url: str) -> AsyncIterator[DocsEnv]:
    async with docs_env(tmp_path, redis_url) as env:
        yield env


Minter = Callable[..., str]


def problem_code(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return str(json.loads(r.text)["code"])
