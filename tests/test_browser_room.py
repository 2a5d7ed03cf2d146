"""Acceptance in a real browser: the client's and the practitioner's pages find each other, chat, and
see each other's video (the peer connections' own statistics say so)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from session_server.demo import seed_demo

from .rooms_support import room_server
from .support import (
    CHROMIUM_ARGS,
    browser_for_media,
    chromium_path,
    eventually,
    free_port,
    in_loopback_namespace,
    open_room_pages,
    require,
)

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.usefixtures("no_stray_tasks")]

FRAMES_DECODED = """async () => {
  const pc = window.roomDebug.pc();
  if (!pc) return 0;
  let frames = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") frames = r.framesDecoded || 0;
  });
  return frames;
}"""
SCREENSHOTS = Path(os.environ.get("ROOM_SCREENSHOT_DIR", "/tmp"))


async def test_client_and_practitioner_pages_chat_and_see_each_others_video(
        tmp_path: Path, redis_url: str) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, heartbeat_interval_s=2.0, heartbeat_timeout_s=10.0) as server, \
            async_playwright() as pw:
        demo = await seed_demo(server.app.state.ctx, echo=False)  # the links the demo prints
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            pages: dict[str, Any] = {}
            for who, lang in (("client", "ar"), ("practitioner", "en")):
                context = await browser.new_context(viewport={"width": 1200, "height": 760})
                page = await context.new_page()
                link = demo["links"][who]
                await page.goto(link.replace("#token=", f"?lang={lang}#token=", 1))
                pages[who] = page
                if who == "client":
                    # the client arrives first: the page says the practitioner is not there yet
                    await page.locator("#waiting", has_text="المختص لم يصل بعد").wait_for(timeout=10_000)
                    await page.screenshot(path=str(SCREENSHOTS / "room-client-waiting-ar.png"))
            client, prac = pages["client"], pages["practitioner"]
            # the practitioner sees who is waiting
            await prac.locator("#participants li[data-role=client]", has_text="Demo client").wait_for(
                timeout=10_000)
            assert "#token" not in client.url and "token=" not in prac.url
            assert await client.evaluate("document.documentElement.dir") == "rtl"

            await client.fill("#chat-input", "مرحبا دكتور")
            await client.press("#chat-input", "Enter")
            await prac.locator("#messages li.theirs", has_text="مرحبا دكتور").wait_for(timeout=10_000)
            await prac.fill("#chat-input", "Hello, how are you today?")
            await prac.press("#chat-input", "Enter")
            await client.locator("#messages li.theirs", has_text="Hello, how are you today?").wait_for(
                timeout=10_000)

            async def frames(page: Any) -> int:
                return int(await page.evaluate(FRAMES_DECODED))

            for page in (client, prac):
                first = await eventually(lambda p=page: frames(p), timeout=20, what="a first decoded frame")

                async def rising(p: Any = page, f: int = first) -> bool:
                    return await frames(p) > f + 10

                await eventually(rising, timeout=20, what="framesDecoded rising")
            await client.screenshot(path=str(SCREENSHOTS / "room-client-ar.png"))
            await prac.screenshot(path=str(SCREENSHOTS / "room-practitioner-en.png"))
        finally:
            await browser.close()


async def test_a_page_that_lost_its_connection_gets_the_missed_messages_once_and_can_report_it(
        tmp_path: Path, redis_url: str) -> None:
    browser_path = browser_for_media()
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, heartbeat_interval_s=2.0, heartbeat_timeout_s=30.0) as server, \
            async_playwright() as pw:
        demo = await seed_demo(server.app.state.ctx, echo=False)
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            pages = await open_room_pages(browser, demo["links"])
            client, prac = pages["client"], pages["practitioner"]
            await prac.fill("#chat-input", "Before the tunnel")
            await prac.press("#chat-input", "Enter")
            await client.locator("#messages li.theirs", has_text="Before the tunnel").wait_for(timeout=10_000)

            # The client's train enters a tunnel: no network, the socket drops without a goodbye.
            await client.context.set_offline(True)
            await client.evaluate("window.roomDebug.dropSocket()")
            await prac.locator("#participants li[data-role=client][data-state=reconnecting]").wait_for(
                timeout=10_000)
            missed = ["First while away", "Second while away", "Third while away"]
            for text in missed:
                await prac.fill("#chat-input", text)
                await prac.press("#chat-input", "Enter")
                await prac.locator("#messages li.mine", has_text=text).wait_for(timeout=10_000)
            assert await client.evaluate("window.roomDebug.state().conn") == "reconnecting"
            assert await client.locator("#messages li", has_text="while away").count() == 0

            await client.context.set_offline(False)
            await client.locator("#messages li.theirs", has_text=missed[-1]).wait_for(timeout=20_000)
            shown = await client.locator("#messages li.theirs").all_inner_texts()
            got = [next(t for t in [*missed, "Before the tunnel"] if t in line) for line in shown]
            assert got == ["Before the tunnel", *missed]  # each once, in order
            await prac.locator("#participants li[data-role=client]:not([data-state=reconnecting])").wait_for(
                timeout=10_000)

            # Back, the client reports the trouble: the server acknowledges and the page says so.
            await client.click("#report")
            await client.get_by_text("Report sent. Support will contact you.").wait_for(timeout=10_000)
            await client.screenshot(path=str(SCREENSHOTS / "room-client-resumed-en.png"))
        finally:
            await browser.close()


async def test_the_readme_demo_shows_each_page_the_others_video_through_the_server_and_stops_cleanly(
        tmp_path: Path) -> None:
    """What a newcomer does: `session-server --demo`, open the two printed links, Ctrl-C."""
    browser_path = browser_for_media()
    from playwright.async_api import async_playwright

    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), "SESSION_SERVER_DATA_DIR": str(tmp_path / "data"),
           "SESSION_SERVER_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "session_server.cli", "--demo", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    printed: list[str] = []
    try:
        links: dict[str, str] = {}
        while len(links) < 2:
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).decode()
            assert line, f"the server exited before printing the demo links: {''.join(printed)}"
            printed.append(line)
            for who in ("practitioner", "client"):
                if line.strip().startswith(f"{who}:"):
                    links[who] = line.split(":", 1)[1].strip()
        assert all(link.startswith(f"http://127.0.0.1:{port}/room/") for link in links.values())
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
            try:
                for page in (await open_room_pages(browser, links)).values():
                    assert await page.evaluate("window.roomDebug.mediaMode()") == "sfu"

                    async def decoding(p: Any = page) -> bool:
                        return int(await p.evaluate(FRAMES_DECODED)) > 10

                    await eventually(decoding, timeout=30, what="the other side's video decoding")
            finally:
                await browser.close()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        printed.append(rest.decode())
        assert proc.returncode == 0, "".join(printed)[-3000:]
        assert "Traceback" not in "".join(printed), "".join(printed)[-3000:]
        assert "Task was destroyed" not in "".join(printed)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
