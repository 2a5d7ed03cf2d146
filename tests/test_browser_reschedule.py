"""Acceptance in a real browser: after a session broke down, the room page links to the reschedule page; the
practitioner proposes a time there (in French), the client (in Arabic, right to left) sees the proposal and
the free slots in their own time zone, picks a slot and confirms it; a linked booking exists that costs
the client nothing, and both are notified."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from session_server.auth import Role
from session_server.clock import ManualClock

from .bookings_support import events, iso
from .reschedule_support import CID, PID, T0, Server, interrupted_booking, seed_practitioner
from .rooms_support import room_server
from .support import CHROMIUM_ARGS, browser_for_media

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.usefixtures("no_stray_tasks")]

SCREENSHOTS = Path(os.environ.get("RESCHEDULE_SCREENSHOT_DIR", "/tmp"))
DAY = 86400


async def _page(browser: Any, url: str, locale: str = "ar-DZ") -> Any:
    context = await browser.new_context(viewport={"width": 1100, "height": 900}, timezone_id="Africa/Algiers",
                                        locale=locale)
    page = await context.new_page()
    await page.goto(url)
    return page


@contextlib.asynccontextmanager
async def _served(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[Any, Server, Any, str]]:
    """A live server on a manual clock at T0 with the practitioner seeded, a client of its API, Playwright and
    the browser to launch."""
    browser_path = browser_for_media()
    from playwright.async_api import async_playwright

    clock = ManualClock(T0)
    async with room_server(tmp_path, redis_url, clock=clock, media_mode="relay") as server, \
            httpx.AsyncClient(base_url=server.url) as http, async_playwright() as pw:
        s = Server(clock, http, server.app)
        await seed_practitioner(s)
        yield server, s, pw, browser_path


async def test_the_client_picks_a_new_time_on_the_reschedule_page_and_both_are_told(
        tmp_path: Path, redis_url: str) -> None:
    async with _served(tmp_path, redis_url) as (server, s, pw, browser_path):
        booking = await interrupted_booking(s)
        bid = booking["id"]
        client_token, prac_token = s.token(Role.CLIENT, CID), s.token(Role.PRACTITIONER, PID)
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            # the room is closed now; its page links to the new time
            room = await _page(browser, f"{server.url}/room/{bid}?lang=ar#token={client_token}")
            link = room.locator("#reschedule-offer a")
            await link.wait_for(timeout=15_000)
            assert await link.text_content() == "اختيار موعد جديد"
            await room.screenshot(path=str(SCREENSHOTS / "reschedule-room-link-ar.png"))
            assert f"/reschedule/{bid}" in (await link.get_attribute("href") or "")
            # a session stopped by a technical problem is held again at no cost: no complaint is offered for
            # it, and the complaint page says why
            assert await room.locator("#complaint-link").is_hidden()
            assert await room.inner_text("#gate-title") == "توقفت الجلسة بسبب مشكلة تقنية"  # said as it is
            complaint = await _page(browser, f"{server.url}/complaint/{bid}?lang=fr#token={client_token}")
            await complaint.locator("#notice").wait_for(state="visible", timeout=10_000)
            assert (await complaint.inner_text("#notice")).startswith(
                "Cette séance a été arrêtée à cause d’un problème technique et aura lieu de nouveau, sans frais.")
            assert await complaint.is_hidden("#form")
            await complaint.screenshot(path=str(SCREENSHOTS / "complaint-interrupted-fr.png"))
            await complaint.context.close()

            # the practitioner proposes an evening time outside their hours, reading the page in French in a
            # browser set up in American English: every date they see is French, none is mm/dd/yyyy
            prac = await _page(browser, f"{server.url}/reschedule/{bid}?lang=fr#token={prac_token}", "en-US")
            await prac.locator("#propose").wait_for(state="visible", timeout=10_000)
            assert "token=" not in prac.url
            assert await prac.evaluate("navigator.language") == "en-US"
            assert await prac.locator("#propose-form input").count() == 0  # no date input in the browser's format
            evening = (T0 // DAY + 4) * DAY + 18 * 3600  # 19:00 in Algiers (UTC+1), after their 18:00
            at = datetime.fromtimestamp(evening, ZoneInfo("Africa/Algiers"))
            days = await prac.locator("select[name=d1] option").all_inner_texts()
            assert days[0] == "Choisir un jour" and "vendredi 7 mars" in days, days
            assert all(re.fullmatch(r"[a-zé]+ \d{1,2} [a-zéû]+", d) for d in days[1:]), days
            hours = await prac.locator("select[name=h1] option").all_inner_texts()
            assert hours[0] == "Choisir une heure" and "19:00" in hours and not any("PM" in h for h in hours), hours
            # a day without its hour is said, in French, and nothing is sent
            await prac.select_option("select[name=d2]", label="samedi 8 mars")
            await prac.click("#propose-form button[type=submit]")
            await prac.locator("#message", has_text="choisissez le jour et l'heure").wait_for(timeout=5_000)
            await prac.select_option("select[name=d2]", value="")
            await prac.locator("#message").wait_for(state="hidden")  # mended: the words go
            await prac.select_option("select[name=d1]", label="vendredi 7 mars")
            await prac.select_option("select[name=h1]", label="19:00")
            assert await prac.locator("select[name=d1]").input_value() == at.strftime("%Y-%m-%d")
            await prac.screenshot(path=str(SCREENSHOTS / "reschedule-practitioner-choosing-fr.png"), full_page=True)
            await prac.click("#propose-form button[type=submit]")
            await prac.locator("#my-proposals li", has_text="vendredi 7 mars").wait_for(timeout=10_000)
            assert "19:00" in await prac.locator("#my-proposals li").inner_text()
            shown = await prac.locator("main").inner_text()
            assert not re.search(r"\d{1,2}/\d{1,2}/\d{4}", shown), shown  # no date in the browser's own format
            assert "March" not in shown and "Friday" not in shown, shown
            await prac.screenshot(path=str(SCREENSHOTS / "reschedule-practitioner-fr.png"), full_page=True)
            offer = await s.offer(bid)
            assert offer is not None
            assert [p["starts_at"] for p in offer["proposals"]] == [iso(evening)]
            # the same page switched to Arabic writes its days and hours in Arabic, right to left
            await prac.select_option("#lang", "ar")
            await prac.locator("select[name=d1] option", has_text="الجمعة").first.wait_for(state="attached")
            assert await prac.evaluate("document.documentElement.dir") == "rtl"
            assert "الجمعة" in await prac.locator("#my-proposals li").inner_text()
            await prac.select_option("select[name=d1]", value=at.strftime("%Y-%m-%d"))
            await prac.select_option("select[name=h1]", value="19:00")
            chosen = await prac.evaluate("""() => ["d1", "h1"].map((n) => {
              const s = document.querySelector(`select[name=${n}]`); return s.options[s.selectedIndex].text; })""")
            assert "الجمعة" in chosen[0] and "مارس" in chosen[0] and "March" not in chosen[0], chosen
            await prac.screenshot(path=str(SCREENSHOTS / "reschedule-practitioner-ar.png"), full_page=True)

            # the client, in Arabic, sees the proposal and the free slots, picks a slot and confirms
            client = await _page(browser, f"{server.url}/reschedule/{bid}?lang=ar#token={client_token}")
            await client.locator("#slots .day button").first.wait_for(timeout=10_000)
            assert await client.evaluate("document.documentElement.dir") == "rtl"
            assert await client.locator("#proposals button").count() == 1
            # a few days at a time, more on request
            assert await client.locator("#slots .day").count() == 4
            await client.click("#more-days")
            assert await client.locator("#slots .day").count() == 8
            # until every day is shown: then the button goes away (its style must not override `hidden`)
            for _ in range(10):
                if await client.locator("#more-days").is_hidden():
                    break
                shown = await client.locator("#slots .day").count()
                await client.click("#more-days")
                assert await client.locator("#slots .day").count() > shown
            assert await client.locator("#more-days").is_hidden()
            await client.screenshot(path=str(SCREENSHOTS / "reschedule-client-choose-ar.png"), full_page=True)
            # someone else books the time the client is looking at before they confirm: the page says so
            first = client.locator("#slots .day").nth(1).locator("button").nth(1)
            gone = await first.get_attribute("data-starts-at")
            await first.click()
            await client.locator("#confirm").wait_for(state="visible")
            await s.book(gone or "", headers=s.headers(Role.CLIENT, "c2"))
            await client.click("#confirm-btn")
            await client.locator("#message", has_text="حجز شخص آخر هذا الوقت للتو").wait_for(timeout=10_000)
            await client.locator(f"#slots button[data-starts-at='{gone}']").wait_for(state="detached")
            await client.screenshot(path=str(SCREENSHOTS / "reschedule-client-taken-ar.png"))
            assert (await s.booking(bid))["status"] == "interrupted"
            second_day = client.locator("#slots .day").nth(1).locator("button").nth(2)
            chosen = await second_day.get_attribute("data-starts-at")
            await second_day.click()
            await client.locator("#confirm").wait_for(state="visible")
            await client.screenshot(path=str(SCREENSHOTS / "reschedule-client-confirm-ar.png"))
            await client.click("#confirm-btn")
            await client.locator("#done").wait_for(state="visible", timeout=10_000)
            await client.screenshot(path=str(SCREENSHOTS / "reschedule-client-done-ar.png"))

            original = await s.booking(bid)
            assert original["status"] == "rescheduled"
            new = await s.booking(original["rescheduled_to"])
            assert new["rescheduled_from"] == bid and new["starts_at"] == chosen
            assert new["price"]["client_total"] == 0
            assert len(await events(s.redis, "booking.rescheduled")) == 1
            await s.wait_notified("reschedule.accepted", Role.CLIENT, CID)
            await s.wait_notified("reschedule.accepted", Role.PRACTITIONER, PID)
            room_link = await client.locator("#room-link").get_attribute("href")
            assert room_link is not None and room_link.startswith(f"/room/{new['id']}")

            # the same link opened again (another tab, later) shows the booked time and books nothing more
            again = await _page(browser, f"{server.url}/reschedule/{bid}?lang=fr#token={client_token}", "fr-FR")
            await again.locator("#done").wait_for(state="visible", timeout=10_000)
            assert "Votre nouvelle séance est réservée" in (await again.locator("#done-text").text_content() or "")
            await again.screenshot(path=str(SCREENSHOTS / "reschedule-client-done-fr.png"))
            assert len(await events(s.redis, "booking.rescheduled")) == 1
        finally:
            await browser.close()


async def test_the_reschedule_page_of_a_session_that_completed_says_at_once_that_no_new_time_is_offered(
        tmp_path: Path, redis_url: str) -> None:
    """A link to the reschedule page of a session that ended well: no offer will ever come, and the page says so
    after one look (it does not keep asking as it does while an interrupted session's offer is on its way)."""
    from .reschedule_support import write_verdict

    async with _served(tmp_path, redis_url) as (server, s, pw, browser_path):
        clock = s.clock
        booking = await s.book((await s.slots())[0]["starts_at"])
        clock.set(datetime.fromisoformat(booking["starts_at"]).timestamp() + 50 * 60)
        await write_verdict(s.redis, booking, verdict="completed", at=clock.now())
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 900},
                                                timezone_id="Africa/Algiers", locale="fr-FR")
            page = await context.new_page()
            looked: list[str] = []
            page.on("request", lambda r: looked.append(r.url) if r.url.endswith("/reschedule-offer") else None)
            token = s.token(Role.CLIENT, CID)
            await page.goto(f"{server.url}/reschedule/{booking['id']}?lang=fr#token={token}")
            await page.locator("body", has_text="Aucune nouvelle date n'est proposée pour cette séance.").wait_for(
                timeout=10_000)
            assert len(looked) == 1, looked
            await page.screenshot(path=str(SCREENSHOTS / "reschedule-no-offer-fr.png"))

            # a link to no session of theirs (a mistyped id, someone else's booking): said at once, plainly
            for wrong in ("0" * 32, booking["id"]):
                looked.clear()
                who = s.token(Role.CLIENT, "someone-else") if wrong == booking["id"] else token
                page = await context.new_page()
                page.on("request", lambda r: looked.append(r.url) if r.url.endswith("/reschedule-offer") else None)
                await page.goto(f"{server.url}/reschedule/{wrong}?lang=fr#token={who}")
                await page.locator("body", has_text="Aucune de vos séances ne correspond à ce lien.").wait_for(
                    timeout=10_000)
                assert len(looked) <= 1, looked
                await page.close()
        finally:
            await browser.close()
