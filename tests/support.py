"""Helpers the tests share: polling to a deadline, a live in-process server, environment checks."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip when something the test needs is missing; under CI=true that is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def in_loopback_namespace() -> bool:
    """True inside a network namespace whose only interface is lo (see scripts/test)."""
    # /sys/class/net still shows the host's interfaces after `unshare -n`; the kernel's own list does not.
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


CHROMIUM_ARGS = [
    "--allow-loopback-in-peer-connection",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


def browser_for_media() -> str:
    """The Chromium to drive, once it is sure this test runs fenced in a loopback-only namespace."""
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    path = chromium_path()
    require(path is not None, "Chromium is not installed")
    assert path is not None
    return path


async def enter_room(page: Any, button: str = "#enter") -> None:
    """What a person does on the room page's lobby once the device check is done: click to enter (the
    `#enter` button, or `#enter-audio` / `#enter-chat`)."""
    await page.locator(button).wait_for(state="visible", timeout=20_000)
    await page.locator("#device-note").filter(has_not_text="…").wait_for(timeout=20_000)
    await page.click(button)
    await page.locator("#room").wait_for(state="visible", timeout=10_000)


async def open_room_pages(browser: Any, links: dict[str, str], lang: str = "en",
                          enter: bool = True) -> dict[str, Any]:
    """The client's and the practitioner's room pages, each in its own browser context, as the demo's
    links open them (in `lang`), and entered from the lobby unless `enter` is false."""
    pages: dict[str, Any] = {}
    for who in ("client", "practitioner"):
        context = await browser.new_context(viewport={"width": 1200, "height": 760})
        page = await context.new_page()
        await page.goto(links[who].replace("#token=", f"?lang={lang}#token=", 1))
        if enter:
            await enter_room(page)
        pages[who] = page
    return pages


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0,  # noqa: ASYNC109
                     interval: float = 0.02, what: str = "condition") -> T:
    """Poll `check` until it returns a truthy value; fail with `what` if the deadline passes."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


async def readiness(base_url: str) -> int:
    """The status of one `/readyz` probe on a connection of its own, as an orchestrator's health check makes
    it. A probe sent on a kept-alive connection that sat idle about as long as the server's keep-alive
    timeout can meet the server closing it, which says nothing about readiness."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as probe:
        return (await probe.get("/readyz")).status_code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
