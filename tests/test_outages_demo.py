"""The demo of an outage: `--demo-cut-after N` books a demo session that has begun already, and the client's
link asks its page to cut its own camera and microphone N seconds after joining."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from session_server.app import create_app
from session_server.bookings.model import load_booking
from session_server.cli import _settings, build_parser

from .conftest import make_settings, running


async def test_the_outage_demo_starts_at_once_and_the_client_link_carries_the_cut(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    app = create_app(make_settings(tmp_path, redis_url, demo=True, demo_cut_after_s=45, port=8125))
    async with running(app):
        out = capsys.readouterr().out
    prac, client = re.findall(r"http://127\.0\.0\.1:8125/room/([0-9a-f]{32})(\?demo_cut=45)?#token=", out)
    assert prac[1] == "" and client[1] == "?demo_cut=45"  # only the client's page cuts itself
    booking = await load_booking(redis_client, client[0])
    assert booking is not None and booking.starts_at <= time.time() < booking.ends_at
    assert "cut 45 s after the client's media connects" in out


def test_the_command_line_flag_turns_the_demo_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SESSION_SERVER_DATA_DIR", str(tmp_path))
    args = build_parser().parse_args(["serve", "--demo-cut-after", "60"])
    settings = _settings(args)
    assert settings.demo and settings.demo_cut_after_s == 60
