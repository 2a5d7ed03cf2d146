"""The demo: an active practitioner with availability, a client, and a booking a few minutes away."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from session_server.app import create_app

from .bookings_support import events
from .conftest import api_key_auth, auth, make_settings, running


async def test_the_demo_seeds_a_bookable_practitioner_and_a_booking_minutes_away(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    app = create_app(make_settings(tmp_path, redis_url, demo=True, port=8123))
    async with running(app):
        out = capsys.readouterr().out
        links = re.findall(r"(http://127\.0\.0\.1:8123/room/([0-9a-f]{32})#token=([\w.-]+))", out)
        assert len(links) == 2 and links[0][1] == links[1][1]
        booking_id = links[0][1]
        # and the support board, as an agent (a token no longer than a shift)
        board = re.findall(r"http://127\.0\.0\.1:8123/support#token=([\w.-]+)", out)
        assert len(board) == 1
        # and the administration's page, as an admin
        admin = re.findall(r"http://127\.0\.0\.1:8123/admin#token=([\w.-]+)", out)
        assert len(admin) == 1
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            practitioner_token, client_token = links[0][2], links[1][2]
            r = await http.get(f"/v1/bookings/{booking_id}", headers=auth(client_token))
            assert r.status_code == 200
            booking = r.json()
            assert booking["status"] == "confirmed"
            r = await http.get("/v1/me", headers=auth(practitioner_token))
            assert r.json()["sub"] == booking["practitioner_id"] and r.json()["role"] == "practitioner"
            r = await http.get("/v1/me", headers=auth(board[0]))
            assert r.status_code == 200 and r.json()["role"] == "support"
            r = await http.get("/v1/complaints", headers=auth(admin[0]))
            assert r.status_code == 200 and r.json()["complaints"] == []
            page = await http.get("/admin", headers={"Accept": "text/html"})
            assert page.status_code == 200 and "/static/admin/admin.js" in page.text
            r = await http.get(f"/v1/practitioners/{booking['practitioner_id']}/availability",
                               headers=auth(client_token))
            assert r.json()["windows"]
            r = await http.get(f"/v1/bookings/{booking_id}/documents", headers=auth(client_token))
            assert r.status_code == 200, r.text
            shared = r.json()
            docs = shared["documents"] if isinstance(shared, dict) else shared
            assert len(docs) == 1, "the demo shares one worksheet with its booking"
            content = await http.get(docs[0]["download_url"], headers=auth(client_token))
            assert content.status_code == 200 and len(content.content) == docs[0]["size"]
        starts = booking["starts_at"]
        from datetime import datetime

        minutes = (datetime.fromisoformat(starts).timestamp() - time.time()) / 60
        assert 3 <= minutes <= 7
    # a second launch replaces the demo booking instead of failing on the overlap
    app = create_app(make_settings(tmp_path, redis_url, demo=True, port=8123))
    async with running(app):
        out = capsys.readouterr().out
        second = re.findall(r"/room/([0-9a-f]{32})#token=", out)
        assert second and second[0] != booking_id
    assert len(await events(redis_client, "booking.created")) == 2
    assert len(await events(redis_client, "booking.cancelled")) == 1



async def test_the_demo_practitioner_can_move_time_zone(tmp_path: Path, redis_url: str) -> None:
    app = create_app(make_settings(tmp_path, redis_url, demo=True, port=8124))
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            r = await http.patch("/v1/practitioners/demo-practitioner", headers=api_key_auth(),
                                 json={"timezone": "Europe/Paris"})
    assert r.status_code == 200, r.text
    assert r.json()["timezone"] == "Europe/Paris"
