"""Acceptance in a real browser: the client's and the practitioner's pages find each other, chat, and
see each other's video (the peer connections' own statistics say so); the client's page lists the documents
shared with the booking, downloads them as they were uploaded, and shows one shared during the session."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from session_server.auth import Role
from session_server.demo import PRACTITIONER_ID, seed_demo
from session_server.documents.demo import DEMO_NAME, seed_demo_document

from .rooms_support import room_server
from .support import (
    CHROMIUM_ARGS,
    browser_for_media,
    chromium_path,
    enter_room,
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
            refused: list[str] = []  # what the pages asked of the API and were refused (a console error each)
            for who, lang in (("client", "ar"), ("practitioner", "en")):
                context = await browser.new_context(viewport={"width": 1200, "height": 760})
                page = await context.new_page()
                page.on("response", lambda r: refused.append(f"{r.status} {r.url}") if r.status >= 400 else None)
                link = demo["links"][who]
                await page.goto(link.replace("#token=", f"?lang={lang}#token=", 1))
                await enter_room(page)
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
            # a session going well asks for nothing it cannot have (no reschedule offer while the room is open)
            assert refused == [], refused
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def _demo_pages(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[Any, Any]]:
    """The demo's client and practitioner pages, entered, on a live server with 2 s heartbeats."""
    browser_path = browser_for_media()
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, heartbeat_interval_s=2.0, heartbeat_timeout_s=30.0) as server, \
            async_playwright() as pw:
        demo = await seed_demo(server.app.state.ctx, echo=False)
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            pages = await open_room_pages(browser, demo["links"])
            yield pages["client"], pages["practitioner"]
        finally:
            await browser.close()


async def test_a_page_that_lost_its_connection_gets_the_missed_messages_once_and_can_report_it(
        tmp_path: Path, redis_url: str) -> None:
    async with _demo_pages(tmp_path, redis_url) as (client, prac):
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
        # on a phone the notice leaves the chat's box and its button free to use
        await client.set_viewport_size({"width": 390, "height": 844})
        await client.locator(".chat-form").scroll_into_view_if_needed()
        note, form = await client.locator("#notice").bounding_box(), await client.locator(".chat-form").bounding_box()
        assert note and form, (note, form)
        assert note["y"] + note["height"] <= form["y"] or form["y"] + form["height"] <= note["y"], (note, form)
        await client.screenshot(path=str(SCREENSHOTS / "room-client-notice-phone-en.png"))


async def test_a_page_whose_network_dies_without_a_word_says_so_and_comes_back_by_itself(
        tmp_path: Path, redis_url: str) -> None:
    """The client's network goes silent (no close, no error: the browser goes offline). The page stops
    believing its socket after two heartbeats of silence and says it is reconnecting, without waiting for a
    closing handshake that a dead network never completes (Chromium waits up to a minute for it, the page
    saying "connected" all along); once the network is back it is in the room again by itself."""
    async with _demo_pages(tmp_path, redis_url) as (client, prac):
        await client.locator("#conn[data-state=connected]").wait_for(timeout=10_000)
        await client.context.set_offline(True)
        # a few heartbeats (2 s each) at most; the browser's own closing handshake would take a minute
        await client.locator("#conn[data-state=reconnecting]").wait_for(timeout=20_000)
        await client.context.set_offline(False)
        await client.locator("#conn[data-state=connected]").wait_for(timeout=20_000)
        await prac.locator("#participants li[data-role=client]:not([data-state=reconnecting])").wait_for(
            timeout=10_000)


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
                    # the page learns the media mode when it has joined, some time after it loaded
                    await page.locator("#conn[data-state=connected]").wait_for(timeout=20_000)
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


def _pdf(title: str) -> bytes:
    """A small valid PDF whose bytes differ with `title` (the server sniffs the `%PDF-` magic bytes)."""
    return (b"%PDF-1.7\n1 0 obj << /Type /Catalog /Title (" + title.encode() + b") >> endobj\n"
            + bytes(range(256)) + b"\ntrailer << /Root 1 0 R >>\n%%EOF\n")


async def _upload_and_share(base_url: str, token: str, booking_id: str, name: str, body: bytes) -> dict[str, Any]:
    """What the practitioner does: upload a document, then share it with the booking.

    A client of its own each time: a connection left idle longer than the server's keep-alive may be
    closed just as the next request goes out on it."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        up = await http.post("/v1/documents", content=body,
                             headers={**headers, "X-Filename": quote(name, safe="")})
        assert up.status_code == 201, up.text
        doc: dict[str, Any] = up.json()
        shared = await http.post(f"/v1/documents/{doc['id']}/shares", json={"booking_id": booking_id},
                                 headers=headers)
        assert shared.status_code == 201, shared.text
    return doc


async def _download(page: Any, name: str) -> tuple[str, bytes]:
    """Click the document's link in the room's list: the file name the browser saves and its bytes."""
    async with page.expect_download(timeout=10_000) as info:
        await page.locator("#documents a", has_text=name).click()
    download = await info.value
    saved = Path(await download.path())
    return download.suggested_filename, await asyncio.to_thread(saved.read_bytes)


async def test_the_client_downloads_the_documents_shared_with_the_booking_and_sees_one_shared_live(
        tmp_path: Path, redis_url: str) -> None:
    browser_path = browser_for_media()
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, heartbeat_interval_s=2.0, heartbeat_timeout_s=30.0) as server, \
            async_playwright() as pw:
        ctx = server.app.state.ctx
        demo = await seed_demo(ctx, echo=False)
        booking_id = demo["booking_id"]
        await seed_demo_document(ctx, PRACTITIONER_ID, booking_id)  # what `--demo` shares
        prac_token = demo["links"]["practitioner"].split("#token=", 1)[1]
        # Before the session the practitioner uploads a worksheet and shares it with the booking.
        worksheet_name, worksheet = "تمرين الأسبوع.pdf", _pdf("worksheet")
        uploaded = await _upload_and_share(server.url, prac_token, booking_id, worksheet_name, worksheet)
        assert uploaded["name"] == worksheet_name and uploaded["sha256"] == hashlib.sha256(worksheet).hexdigest()

        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            pages = await open_room_pages(browser, demo["links"], lang="ar")
            client, prac = pages["client"], pages["practitioner"]
            # Support staff join the same room: their page does not even ask for the documents (the server
            # would refuse: they are the parties' only).
            support_token, _ = ctx.tokens.mint(sub="agent-7", name="Support", role=Role.SUPPORT, ttl_s=600)
            support = await (await browser.new_context(viewport={"width": 1200, "height": 760})).new_page()
            answers: list[tuple[str, int]] = []
            support.on("response", lambda r: answers.append((r.url.split("/v1/", 1)[-1], r.status)))
            room_url = demo["links"]["client"].split("#token=", 1)[0]
            await support.goto(f"{room_url}?lang=en#token={support_token}")

            # The client's page lists what was shared before the session, by name.
            for name in (worksheet_name, DEMO_NAME):
                await client.locator("#documents a", has_text=name).wait_for(timeout=10_000)
            assert await client.locator("#documents li").count() == 2
            assert await client.locator("#no-docs").is_hidden()
            # with its type and size (in the page's language), and the name kept in its own direction
            item = client.locator("#documents li", has_text=worksheet_name)
            details = await item.locator(".doc-details").inner_text()
            assert details.startswith("PDF · ") and len(details) > len("PDF · "), details
            assert await item.locator("a").get_attribute("dir") == "auto"

            # A click saves exactly the uploaded bytes, under the name the practitioner gave.
            saved_as, body = await _download(client, worksheet_name)
            assert saved_as == worksheet_name
            assert hashlib.sha256(body).hexdigest() == uploaded["sha256"] and body == worksheet

            # During the session the practitioner shares another document: it appears without a reload.
            for page in (client, prac, support):
                await page.locator("#conn[data-state=connected]").wait_for(timeout=10_000)
            await support.locator("#participants li[data-role=practitioner]").wait_for(timeout=10_000)
            await client.evaluate("window.sameDocument = true")
            live_name, live = "Fiche d'exercices – séance 2.pdf", _pdf("live")
            await _upload_and_share(server.url, prac_token, booking_id, live_name, live)
            await client.locator("#documents a", has_text=live_name).wait_for(timeout=10_000)
            await prac.locator("#documents a", has_text=live_name).wait_for(timeout=10_000)
            assert await client.evaluate("window.sameDocument === true")  # the page was never reloaded
            assert await client.locator("#documents li").count() == 3
            await client.screenshot(path=str(SCREENSHOTS / "room-client-documents-ar.png"))
            assert await _download(client, live_name) == (live_name, live)

            # The practitioner leaves: the support page heard that after the share, and still lists nothing;
            # it has no documents section to show at all (documents are the parties' own).
            await prac.click("#leave")
            await prac.click("#leave-yes")  # the page asks first
            await support.locator("#participants li[data-role=practitioner]").wait_for(
                state="detached", timeout=10_000)
            assert await support.locator("#documents li").count() == 0
            assert await support.locator(".docs").is_hidden() and await support.locator("#no-docs").is_hidden()
            assert not [a for a in answers if "documents" in a[0]], answers
        finally:
            await browser.close()
