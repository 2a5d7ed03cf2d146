"""Acceptance in a real browser, in the loopback-only namespace: the demo session with both parties
connected through the SFU appears on the support board with its quality charts moving; the client reports
a problem from the room; the ticket appears on the board with its clock running; the agent acknowledges
and the client's page says someone is on it; the agent marks it unresolvable and the client is told a
new session will be offered. Screenshots of the board in Arabic and French."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_server.auth import Role
from session_server.demo import seed_demo

from .rooms_support import CLIENT, PRACTITIONER, joined, room_server, write_booking
from .support import CHROMIUM_ARGS, chromium_path, eventually, in_loopback_namespace, open_room_pages, require
from .support_board_support import index_booking

pytestmark = [
    pytest.mark.netns,
    pytest.mark.browser,
    pytest.mark.usefixtures("no_stray_tasks"),
]

SHOTS = Path(os.environ.get("SUPPORT_SCREENSHOTS", "")) if os.environ.get("SUPPORT_SCREENSHOTS") else None


async def test_an_agent_watches_the_demo_session_and_answers_the_clients_report(
        tmp_path: Path, redis_url: str) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, heartbeat_interval_s=2.0, heartbeat_timeout_s=10.0,
                           media_mode="sfu", media_announce_addresses=("127.0.0.1",)) as server, \
            async_playwright() as pw:
        ctx = server.app.state.ctx
        demo = await seed_demo(ctx, echo=False)
        room_id = demo["booking_id"]
        agent_token, _ = ctx.tokens.mint(sub="agent-1", name="Sam", role=Role.SUPPORT, ttl_s=3600)
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            pages = await open_room_pages(browser, demo["links"], lang="ar")
            agent_ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
            board = await agent_ctx.new_page()
            await board.goto(f"{server.url}/support?lang=ar#token={agent_token}")

            async def row() -> dict[str, Any] | None:
                rows: list[dict[str, Any]] = await board.evaluate("window.supportDebug.sessions()")
                return next((r for r in rows if r["booking_id"] == room_id), None)

            async def in_session() -> dict[str, Any] | None:
                r = await row()
                return r if r and r["state"] == "in_session" and r["points"] > 0 else None

            first = await eventually(in_session, timeout=45, what="the demo session in session with quality points")

            async def moving() -> bool:
                r = await row()
                return bool(r and r["points"] > first["points"] + 4)

            await eventually(moving, timeout=30, what="the quality charts moving")
            card = board.locator(f'.card[data-booking="{room_id}"]')
            assert await card.locator(".chart path").count() >= 6  # two parties × three figures, at least
            assert "Demo" not in await card.inner_text()  # a pseudonym, never the client's name
            if SHOTS:
                await board.screenshot(path=str(SHOTS / "board-ar.png"), full_page=True)

            await pages["client"].click("#report")

            async def ticket() -> dict[str, Any] | None:
                found: list[dict[str, Any]] = await board.evaluate("window.supportDebug.tickets()")
                return next((t for t in found if t["booking_id"] == room_id and t["status"] == "open"), None)

            opened = await eventually(ticket, timeout=10, what="the client's ticket on the board")
            item = board.locator(f'.ticket[data-ticket="{opened["id"]}"]')
            age = item.locator('[data-role="age"]')
            before = await age.inner_text()

            async def clock_runs() -> bool:
                return await age.inner_text() != before

            await eventually(clock_runs, timeout=5, what="the ticket's clock running")
            await item.get_by_role("button", name="أنا أتولاها").click()

            async def told(text: str) -> bool:
                return text in await pages["client"].locator("#notice").inner_text()

            await eventually(lambda: told("يتابع مشكلتك"), timeout=10, what="the client told someone is on it")

            # the agent enters the room: no camera or microphone, both parties' connection in view, and
            # the parties told why support joined
            agent_room = await agent_ctx.new_page()
            await agent_room.goto(f"{server.url}/room/{room_id}?lang=ar#token={agent_token}")

            async def both_figures() -> bool:
                texts = await agent_room.locator('[data-role="staff-quality"]').all_inner_texts()
                return len(texts) == 2 and all("مللي ثانية" in x for x in texts)

            await eventually(both_figures, timeout=20, what="both parties' quality in the agent's room view")
            assert await agent_room.evaluate("window.roomDebug.state().me.role") == "support"
            assert not await agent_room.evaluate(
                "navigator.mediaDevices && window.roomDebug.state().mode !== 'chat'")
            await eventually(lambda: told("انضم أحد أعضاء فريق الدعم"), timeout=10,
                             what="the client told support joined")
            if SHOTS:
                await agent_room.screenshot(path=str(SHOTS / "agent-room-ar.png"))
            board.on("dialog", lambda d: d.accept())
            await board.select_option("#lang", "fr")
            await item.get_by_role("button", name="Impossible à résoudre : proposer une séance gratuite").click()
            await eventually(lambda: told("جلسة بديلة مجانية"), timeout=10, what="the client told of a new session")

            async def closed() -> bool:
                found: list[dict[str, Any]] = await board.evaluate("window.supportDebug.tickets()")
                return any(t["id"] == opened["id"] and t["status"] == "unresolvable" for t in found)

            await eventually(closed, timeout=10, what="the ticket unresolvable on the board")

            # the free reschedule was offered, and the client is told of it
            client_token = demo["links"]["client"].split("#token=", 1)[1]

            async def offered() -> bool:
                async with httpx.AsyncClient(base_url=server.url) as http:
                    r = await http.get("/v1/notifications", headers={"Authorization": f"Bearer {client_token}"})
                return any(n["kind"] == "reschedule.offered" for n in r.json()["notifications"])

            await eventually(offered, timeout=15, what="the client notified of the reschedule offer")
            if SHOTS:
                await board.screenshot(path=str(SHOTS / "board-fr.png"), full_page=True)
                await pages["client"].screenshot(path=str(SHOTS / "client-ar.png"))
        finally:
            await browser.close()


async def test_a_ticket_left_unanswered_reads_as_closed_and_its_ids_stay_whole(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    """A reporter who left before anyone answered: the ticket's clock says when it was closed, not that it
    was handled; and the client's pseudonym is never broken at a hyphen across two lines,
    in the Arabic sentence of a narrow queue as on the card, which a long id does not widen."""
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    booking = await write_booking(redis_url, "b1", practitioner="a-practitioner-with-a-long-hyphenated-id")
    await index_booking(redis_url, booking)
    # a session whose room is open (ten minutes before) and whose hour has not come
    await index_booking(redis_url, await write_booking(redis_url, "b2", starts_in_s=480))
    async with room_server(tmp_path, redis_url, heartbeat_interval_s=2.0, heartbeat_timeout_s=20.0) as server, \
            async_playwright() as pw:
        prac, _ = await joined(server, "b1", token("practitioner", "a-practitioner-with-a-long-hyphenated-id"))
        await prac.send({"type": "problem.report", "kind": "audio"})
        await prac.expect("support.update")
        await prac.send({"type": "leave"})
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 820, "height": 900})
            await page.goto(f"{server.url}/support?lang=ar#token={token('support', 'agent-1')}")
            item = page.locator('.ticket[data-status="abandoned"]')
            for lang, closed_after in (("ar", "أُغلق بعد"), ("fr", "clos après"), ("en", "closed after")):
                await page.select_option("#lang", lang)
                await item.wait_for(timeout=15_000)
                age = await item.locator('[data-role="age"]').inner_text()
                assert age.startswith(closed_after), (lang, age)
                # the pseudonym is laid out on one line (a single box), in the queue and on the card
                boxes = await page.eval_on_selector_all(
                    '.ticket .ids .pseudonym, .card[data-booking="b1"] .ids .pseudonym',
                    "ps => ps.map(e => [e.textContent, e.getClientRects().length])")
                assert len(boxes) == 2 and all(n == 1 for _, n in boxes), (lang, boxes)
                # and a long practitioner's id wraps inside the card rather than push its state out of it
                card = await page.locator('.card[data-booking="b1"]').bounding_box()
                state = await page.locator('.card[data-booking="b1"] header .badge').bounding_box()
                assert card and state, lang
                assert card["x"] <= state["x"] and state["x"] + state["width"] <= card["x"] + card["width"], lang
                # the state's pill is one line of text, not squeezed into a tall oval beside the ids
                assert await page.locator('.card[data-booking="b1"] header .badge').evaluate(
                    "b => { const r = document.createRange(); r.selectNodeContents(b);"
                    " return r.getClientRects().length === 1; }")
                if SHOTS:
                    await page.screenshot(path=str(SHOTS / f"board-abandoned-{lang}.png"), full_page=True)
            # a report still waiting: the card and the day's figures name it in words, not as "open report(s)"
            client, _ = await joined(server, "b1", token("client", CLIENT))
            await client.send({"type": "problem.report", "kind": "video"})
            await client.expect("support.update")
            badge = page.locator('.card[data-booking="b1"] .badge[data-tone="bad"]')
            await badge.wait_for(timeout=15_000)
            assert await badge.inner_text() == "Unresolved reports: 1"
            # the session not started yet says when it starts, not "0 min gone, 60 min left"
            soon = await page.locator('.card[data-booking="b2"] .times').inner_text()
            assert re.search(r"starts in [78] min", soon) and "gone" not in soon, soon
            # both parties come before the hour: the card says they are here, not that the session runs
            early = [(await joined(server, "b2", token(role, sub)))[0]
                     for role, sub in (("practitioner", PRACTITIONER), ("client", CLIENT))]
            await page.locator('.card[data-booking="b2"] [data-role="state"]',
                               has_text="Both here before the hour").wait_for(timeout=15_000)
            assert "both here since" in await page.locator('.card[data-booking="b2"] .times').inner_text()
            for ws in early:
                await ws.close()
            waiting = await page.eval_on_selector_all(
                "#figures dt", "dts => dts.map(dt => [dt.textContent, dt.nextElementSibling.textContent])")
            assert ["Waiting for an answer", "1"] in waiting, waiting
            await client.close()
        finally:
            await browser.close()


async def test_the_board_whose_network_dies_without_a_word_stops_saying_live_and_comes_back_by_itself(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    """An agent's network goes silent (the browser offline: no close, no error). The board stops saying
    "live" over figures going stale once its socket has said nothing for a few pings, without waiting for a
    closing handshake a dead network never completes; once the network is back it is live again by itself."""
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    await index_booking(redis_url, await write_booking(redis_url, "b1"))
    async with room_server(tmp_path, redis_url) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 800})
            await page.goto(f"{server.url}/support?lang=fr#token={token('support', 'agent-1')}")
            conn = page.locator("#conn")
            await page.locator("#conn[data-state=live]").wait_for(timeout=10_000)
            await page.context.set_offline(True)
            # a few pings (5 s each) at most; the browser's own closing handshake would take a minute
            await page.locator("#conn[data-state=connecting]").wait_for(timeout=30_000)
            assert await conn.inner_text() == "Connexion…"
            await page.context.set_offline(False)
            await page.locator("#conn[data-state=live]").wait_for(timeout=30_000)
            assert await conn.inner_text() == "En direct"
        finally:
            await browser.close()


async def test_a_token_the_board_refuses_hides_the_board_and_says_why(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    """A client's link, or a token that is not one: the board says why, once, and shows no stale board under
    it (its layout must not override `hidden`)."""
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            for bearer, says in ((token("client", "c1"), "This board is for support staff only."),
                                 ("not-a-token", "This sign-in link is no longer valid. Ask for a new one."),
                                 ("", "This board opens from the sign-in link your team sends you.")):
                page = await browser.new_page(viewport={"width": 1200, "height": 800})
                await page.goto(f"{server.url}/support?lang=en" + (f"#token={bearer}" if bearer else ""))
                notice = page.locator("#signed-out")
                await notice.wait_for(state="visible", timeout=10_000)
                assert await notice.inner_text() == says
                assert await page.locator("#main").is_hidden()
                await page.close()
        finally:
            await browser.close()


async def test_the_board_fits_a_phone_screen(tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    """An agent on call reads the board on a phone: a session's card fits the screen, nothing scrolls sideways."""
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    await index_booking(redis_url, await write_booking(redis_url, "b1"))
    async with room_server(tmp_path, redis_url) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            for lang in ("ar", "fr"):
                page = await browser.new_page(viewport={"width": 390, "height": 844})
                await page.goto(f"{server.url}/support?lang={lang}#token={token('support', 'agent-1')}")
                await page.locator('.card[data-booking="b1"]').wait_for(timeout=10_000)
                widths = await page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
                assert widths[0] <= widths[1], (lang, widths)
                if SHOTS:
                    await page.screenshot(path=str(SHOTS / f"board-phone-{lang}.png"), full_page=True)
                await page.close()
        finally:
            await browser.close()
