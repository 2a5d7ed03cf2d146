"""The administration decides a complaint from its page, in a real browser: the complaint waits in the queue
with what is held; the admin reads the client's words, shares them with the practitioner, tries a refund
larger than what is held (told so, nothing sent), then upholds it with a partial refund, confirmed in a
second step: the client gets that part back and the practitioner the rest. The page also shows the
platform's revenue per day as a chart and what it keeps for others, the next payout dates, and lets an admin
correct an estimated holiday, which moves the payout date it had moved. Whoever is not an admin is told why
there is nothing to see. The refunds to clients not made yet are listed, a failed one first and sent again in
a click. Screenshots in Arabic and French (ADMIN_SCREENSHOTS, a directory)."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ledger import paydates
from session_server.app import create_app
from session_server.auth import Role

from .accessibility import assert_accessible
from .complaint_support import book_a_session, complaints_filed, manual_server, statement, the_session_takes_place
from .conftest import LiveServer, auth, make_settings
from .support import CHROMIUM_ARGS, chromium_path, eventually, in_loopback_namespace, require

pytestmark = [
    pytest.mark.netns,
    pytest.mark.browser,
    pytest.mark.usefixtures("no_stray_tasks"),
]

SHOTS = Path(os.environ["ADMIN_SCREENSHOTS"]) if os.environ.get("ADMIN_SCREENSHOTS") else None


def digits(text: str) -> str:
    """The digits of an amount as the page writes it, whatever the language's separators and symbol."""
    return re.sub(r"\D", "", text)


async def test_an_admin_reads_shares_and_decides_a_complaint_and_sees_the_money_and_the_payout_dates(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    async with manual_server(tmp_path, redis_url) as ms, httpx.AsyncClient(base_url=ms.server.url) as http, \
            async_playwright() as pw:
        server, clock, bearer = ms.server, ms.clock, ms.bearer
        # a session of 3,000.00 takes place and is over; its client complains, in her own words
        booking = await book_a_session(http, ms)
        bid = booking[0]
        await the_session_takes_place(http, redis_client, ms, booking)
        words = "Le praticien a répondu deux fois au téléphone pendant la séance."
        r = await http.post(f"/v1/bookings/{bid}/complaints", headers=auth(bearer(Role.CLIENT, "c1")),
                            json={"reason": "conduct", "text": words})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]

        async def held() -> bool:
            return bool((await statement(http, ms))["held_minor"] == 300_000)

        await eventually(held, timeout=30, what="the practitioner's share held")

        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            async def open_page(token: str, lang: str, *, today: str | None = None, width: int = 1100,
                                path: str = "/admin") -> Any:
                context = await browser.new_context(viewport={"width": width, "height": 900})
                page = await context.new_page()
                # the browser's calendar at the server's present (which the test moved), or at another day
                # for the payout dates only (the server keeps its own clock)
                await page.clock.set_fixed_time(datetime.fromisoformat(today + "T10:00:00+00:00") if today
                                                else datetime.fromtimestamp(clock.now(), UTC))
                await page.goto(f"{server.url}{path}?lang={lang}#token={token}")
                await page.wait_for_selector("body[data-state]", state="attached")
                return page

            # the practitioner follows it on the complaint page: what is held, not the client's words
            page = await open_page(bearer(Role.PRACTITIONER, "p1"), "fr", path=f"/complaint/{bid}")
            await page.locator("#status").wait_for(state="visible")
            assert await page.inner_text("#status-title") == "Une réclamation est en cours d’examen"
            assert digits(await page.inner_text("#status-text")) == "300000"
            assert await page.inner_text("#words") == "Les administrateurs ne vous ont pas transmis les mots du client."
            assert await page.is_hidden("#form")
            await page.context.close()

            admin = bearer(Role.ADMIN, "a1")
            page = await open_page(admin, "ar")
            await page.wait_for_selector("body[data-state='ready']", state="attached")
            assert "token" not in page.url  # the token leaves the address bar at once
            assert await page.evaluate("document.documentElement.dir") == "rtl"
            assert await page.inner_text("h1") == "الشكاوى والأموال"

            # the queue: the complaint waits, with the share it holds
            row = page.locator(f"#complaints tr[data-complaint='{cid}']")
            assert await row.get_attribute("data-status") == "open"
            cells = await row.locator("td").all_inner_texts()
            assert cells[1] == "سلوك المختص" and digits(cells[3]) == "300000" and cells[4] == "قيد الدراسة"

            # the money: thirty days, today's revenue drawn, and the same figures as the ledger's
            revenue = (await http.get("/v1/ledger/revenue", headers=auth(admin))).json()["days"]
            paid_in = sum(d["client_payments_minor"] for d in revenue)
            assert paid_in > 300_000
            bars = await page.eval_on_selector_all("#chart rect", "rs => rs.map(r => r.getAttribute('class'))")
            assert len(bars) == 30 and bars.count("bar-rect") >= 1
            assert digits(await page.inner_text("dd[data-figure='paid_in']")) == str(paid_in)
            assert digits(await page.inner_text("dd[data-figure='practitioners_held']")) == "300000"
            assert await page.locator("#dates tbody tr").count() == 8
            await assert_accessible(page, "the administration's page in Arabic")
            if SHOTS:
                await page.screenshot(path=str(SHOTS / "admin-ar.png"), full_page=True)

            # in French, the admin opens the complaint and reads the client's words
            await page.select_option("#lang", "fr")
            assert await page.inner_text("h1") == "Réclamations et argent"
            await row.get_by_role("button").click()
            dialog = page.locator("#complaint")
            await dialog.wait_for(state="visible")
            assert await page.inner_text("#text") == words
            assert await page.is_visible("#text-private")

            # shared with the practitioner after a second word, who can then read them
            await page.click("#share")
            await page.click("#share-yes")
            await page.locator("#shared").wait_for(state="visible")
            r = await http.get(f"/v1/complaints/{cid}", headers=auth(bearer(Role.PRACTITIONER, "p1")))
            assert r.json()["text"] == words

            # a refund above what is held is refused on the page, and nothing is sent
            await page.get_by_label("Acceptée : une partie seulement est remboursée").check()
            await page.fill("#part", "5000")
            await page.click("#decide")
            await page.locator("#decide-error").wait_for(state="visible")
            assert (await page.inner_text("#decide-error")).startswith("Saisissez un montant supérieur à zéro")
            assert await page.is_hidden("#confirm-box")
            r = await http.get(f"/v1/complaints/{cid}", headers=auth(admin))
            assert r.json()["status"] == "open"

            # 1,000.00 back to the client: the second step says who gets what, then it is decided
            await page.fill("#part", "1000")
            await page.click("#decide")
            await page.locator("#confirm-box").wait_for(state="visible")
            confirm = await page.inner_text("#confirm-text")
            assert confirm.startswith("1") and " sera remboursé au client et 2" in confirm
            assert await page.is_disabled("#confirm")  # a double click on "continue" cannot confirm
            await assert_accessible(page, "deciding a complaint in French")
            if SHOTS:
                await page.screenshot(path=str(SHOTS / "admin-decide-fr.png"), full_page=True)
            await page.click("#confirm")
            await dialog.wait_for(state="hidden")
            await page.locator("#said").wait_for(state="visible")
            assert await page.inner_text("#said") == "Réclamation acceptée ; les deux parties sont prévenues."
            r = await http.get(f"/v1/complaints/{cid}", headers=auth(admin))
            assert r.json()["status"] == "upheld" and r.json()["refund_minor"] == 100_000

            async def resolved() -> bool:
                s = await statement(http, ms)
                return bool(s["held_minor"] == 0 and s["available_minor"] == 200_000)

            await eventually(resolved, timeout=30, what="the hold resolved: 1,000.00 refunded, 2,000.00 released")
            # no longer waiting: the queue says so, and the complaint is among the upheld ones
            await page.locator("#no-complaints").wait_for(state="visible")
            assert await page.inner_text("#no-complaints") == "Aucune réclamation n’attend de décision."
            await page.click("[data-filter='upheld']")
            assert await row.get_attribute("data-status") == "upheld"
            if SHOTS:
                await page.screenshot(path=str(SHOTS / "admin-fr.png"), full_page=True)
            await page.context.close()

            # the practitioner, from her statement in Arabic: the complaint's movement leads to it, with what
            # came back to her and the client's words, now shared
            page = await open_page(bearer(Role.PRACTITIONER, "p1"), "ar", path="/statement")
            await page.wait_for_selector("body[data-state='ready']", state="attached")
            await page.locator("#entries tr[data-kind='complaint_upheld'] a").first.click()
            await page.wait_for_url(f"**/complaint/{bid}?lang=ar")
            await page.locator("#status").wait_for(state="visible")
            assert await page.inner_text("#status-title") == "قُبلت الشكوى"
            told = await page.inner_text("#status-text")
            assert told.startswith("رُدّ ") and "إلى العميل، وأُعيد " in told and "إلى رصيدك المتاح" in told
            assert [digits(x) for x in told.split("،")] == ["100000", "200000"]
            assert await page.inner_text("#words") == words
            await assert_accessible(page, "the complaint as its practitioner follows it, in Arabic")
            if SHOTS:
                await page.screenshot(path=str(SHOTS / "complaint-practitioner-ar.png"), full_page=True)
            await page.context.close()

            # an estimated holiday on a Sunday (the Islamic New Year, 2027-06-06 by the estimates) moves its
            # payout to the Monday; the moon is seen a day later: corrected, the Sunday is paid on the day
            page = await open_page(admin, "en", today="2027-05-20")
            await page.wait_for_selector("body[data-state='ready']", state="attached")
            sunday = page.locator("#dates tr[data-sunday='2027-06-06']")
            paid_on, note = await sunday.locator("td").all_inner_texts()
            assert "Monday, 7 June 2027" in paid_on
            assert note.startswith("Instead of Sunday 6 June: Islamic New Year · Estimated holiday")
            assert "(estimated)" not in note  # the page says it in its own words, in its language
            await sunday.get_by_role("button", name="Confirm or correct").click()
            await page.locator("#holiday").wait_for(state="visible")
            await page.fill("#holiday-date", "2027-06-07")
            await page.click("#holiday-save")
            await page.locator("#holiday").wait_for(state="hidden")

            async def paid_on_sunday() -> bool:
                cells = await page.locator("#dates tr[data-sunday='2027-06-06'] td").all_inner_texts()
                return bool(cells) and "Sunday, 6 June 2027" in cells[0] and cells[1].startswith("On the day")

            await eventually(paid_on_sunday, what="the payout on the Sunday once the holiday is corrected")
            r = await http.get("/v1/ledger/payout-dates?year=2027", headers=auth(admin))
            [june6] = [d for d in r.json()["payout_dates"] if d["sunday"] == "2027-06-06"]
            assert june6["date"] == "2027-06-06"
            await page.context.close()

            # on a phone, in Arabic: nothing wider than the screen, the complaint's dialog included
            page = await open_page(admin, "ar", width=390)
            await page.wait_for_selector("body[data-state='ready']", state="attached")
            await page.click("[data-filter='all']")
            assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            if SHOTS:
                await page.screenshot(path=str(SHOTS / "admin-phone-list-ar.png"))
            await page.locator(f"#complaints tr[data-complaint='{cid}'] button").click()
            await page.locator("#complaint").wait_for(state="visible")
            assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            box = await page.locator("#complaint").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
            if SHOTS:
                await page.screenshot(path=str(SHOTS / "admin-phone-ar.png"))
            await page.context.close()

            # anyone else: why there is nothing to see
            for token, lang, says in (
                    (bearer(Role.PRACTITIONER, "p1"), "fr",
                     "Cette page est réservée à l’administration de la plateforme."),
                    ("", "en", "This page opens from the link the platform gives you.")):
                page = await open_page(token, lang)
                await page.locator("#notice").wait_for(state="visible")
                assert await page.inner_text("#notice") == says
                assert await page.is_hidden("#main")
                await page.context.close()
        finally:
            await browser.close()


async def test_the_page_refuses_what_cannot_be_decided_says_why_and_reads_amounts_as_people_write_them(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    # (the ledger's consumer apart: these complaints have no booking in the ledger to hold money from)
    server = LiveServer(create_app(make_settings(tmp_path, redis_url, ledger_in_process=False)))
    await server.start()
    pending, decided_elsewhere, typed = "a" * 32, "b" * 32, "c" * 32
    try:
        await complaints_filed(server, redis_client, {pending: None, decided_elsewhere: 300_000, typed: 300_000})
        # two refunds not made yet, as the ledger's consumer and the gateway's answers leave them: one the gateway
        # could not make (the older), one handed to it and not answered
        failed, sent = "e" * 32, "f" * 32
        for rid, status, created, extra in ((sent, "sent", "2026-12-01T10:00:00Z", {}),
                                            (failed, "failed", "2026-12-02T10:00:00Z",
                                             {"answer_reason": "card expired", "tries": "1"})):
            await redis_client.hset(f"ledger:refund:{rid}", mapping={
                "refund_id": rid, "client_id": "c7", "booking_id": "b" + rid[:31], "complaint_id": "",
                "amount": "165000", "currency": "DZD", "reason": "cancelled_late", "status": status,
                "created_at": created, **extra})
            for key in ("ledger:refunds", "ledger:client:c7:refunds"):
                await redis_client.zadd(key, {rid: datetime.fromisoformat(created).timestamp()})
        admin = server.app.state.ctx.tokens.mint(sub="a1", name="a1", role=Role.ADMIN, ttl_s=600)[0]
        async with httpx.AsyncClient(base_url=server.url) as http, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
            try:
                page = await (await browser.new_context(viewport={"width": 1100, "height": 900})).new_page()
                await page.goto(f"{server.url}/admin?lang=en#token={admin}")
                await page.wait_for_selector("body[data-state='ready']", state="attached")
                # the oldest first, and the count of those waiting
                listed = await page.eval_on_selector_all("#complaints tbody tr",
                                                         "rs => rs.map(r => r.dataset.complaint)")
                assert listed == [pending, decided_elsewhere, typed]
                assert await page.inner_text("#open-count") == "(3)"

                async def open_one(cid: str) -> None:
                    await page.locator(f"#complaints tr[data-complaint='{cid}'] button").click()
                    await page.locator("#complaint").wait_for(state="visible")
                    # the reading starts at the title, not on an action
                    assert await page.evaluate("document.activeElement.id") == "complaint-title"

                # the money is not held yet: no decision at all, rejecting included
                await open_one(pending)
                await page.get_by_label("Rejected: the hold is released to the practitioner").check()
                await page.click("#decide")
                assert await page.inner_text("#decide-error") == "The money is not held yet. Try again in a moment."
                assert await page.is_hidden("#confirm-box")
                await page.click("#complaint-close")

                # decided elsewhere while the dialog is open: the page says so, in the dialog, and shows it decided
                await open_one(decided_elsewhere)
                await page.get_by_label("Rejected: the hold is released to the practitioner").check()
                await page.click("#decide")
                r = await http.post(f"/v1/complaints/{decided_elsewhere}/resolve", headers=auth(admin),
                                    json={"decision": "upheld"})
                assert r.status_code == 200, r.text
                await page.click("#confirm")
                said = page.locator("#complaint-said")
                await said.wait_for(state="visible")
                assert await said.inner_text() == "This complaint was decided already. It has been loaded again."
                assert await page.evaluate("document.activeElement.id") == "complaint-said"
                assert "Upheld" in await page.inner_text("#facts") and await page.is_hidden("#decide-form")
                r = await http.get(f"/v1/complaints/{decided_elsewhere}", headers=auth(admin))
                assert r.json()["status"] == "upheld"  # the page's "rejected" was not sent over it
                await page.click("#complaint-close")

                # an amount typed as the page writes it, thousands separator and all
                await page.select_option("#lang", "ar")
                await open_one(typed)
                await page.get_by_label("مقبولة: يُردّ جزء فقط إلى العميل").check()
                assert await page.inner_text("#part-box span") == "المبلغ المردود (د.ج.)"
                for written, minor in (("١٬٥٠٠٫٥٠", 150_050), ("1.500,5", 150_050), ("1,500.50", 150_050),
                                       ("1 500", 150_000), ("1500", 150_000)):
                    await page.fill("#part", written)
                    await page.click("#decide")
                    await page.locator("#confirm-box").wait_for(state="visible")
                    text = await page.inner_text("#confirm-text")
                    refund = await page.evaluate(
                        "m => new Intl.NumberFormat('ar-DZ', {style: 'currency', currency: 'DZD'}).format(m / 100)",
                        minor)
                    assert text.startswith(f"سيُردّ {refund} إلى العميل"), (written, text)
                    await page.click("#confirm-back")
                for wrong in ("0", "-5", "1e3", "3000,01", "1,5555", "١٢x"):
                    await page.fill("#part", wrong)
                    await page.click("#decide")
                    assert await page.is_visible("#decide-error") and await page.is_hidden("#confirm-box"), wrong
                r = await http.get(f"/v1/complaints/{typed}", headers=auth(admin))
                assert r.json()["status"] == "open"  # nothing was sent

                # last week's payout, still on its way (the bank answers days later): one click back
                await page.click("#complaint-close")
                today = datetime.now(paydates.ZONE).date()
                last_sunday = (paydates.sunday_of(today) - timedelta(weeks=1)).isoformat()
                await redis_client.hset("ledger:payout:" + "d" * 32, mapping={  # as the ledger's consumer writes it
                    "payout_id": "d" * 32, "practitioner_id": "p1", "amount": "280000", "currency": "DZD",
                    "sunday": last_sunday, "date": last_sunday, "status": "in_transit"})
                await redis_client.zadd(f"ledger:payouts:{last_sunday}", {"d" * 32: 280_000})
                await page.select_option("#lang", "en")
                assert await page.is_visible("#no-payouts") and await page.is_disabled("#week-next")
                await page.click("#week-prev")
                await page.locator(f"#week tr[data-payout='{'d' * 32}']").wait_for()
                cells = await page.locator(f"#week tr[data-payout='{'d' * 32}'] td").all_inner_texts()
                assert cells[0] == "p1" and digits(cells[1]) == "280000" and cells[2] == "On its way"
                await page.click("#week-next")
                await page.locator("#no-payouts").wait_for(state="visible")

                # the refunds not made yet: the failed one first, with the gateway's reason, sent again in a click
                rows = page.locator("#refunds tbody tr")
                assert await rows.evaluate_all("rs => rs.map(r => r.dataset.refund)") == [failed, sent]
                cells = await page.locator(f"#refunds tr[data-refund='{failed}'] td").all_inner_texts()
                assert (cells[1], digits(cells[2]), cells[3], cells[4], cells[5]) == (
                    "c7", "165000", "Cancelled late by the client", "Failed: card expired", "Send again")
                assert (await page.locator(f"#refunds tr[data-refund='{sent}'] td").all_inner_texts())[4:] == [
                    "Sent to the gateway", ""]
                await page.locator(f"#refunds tr[data-refund='{failed}'] button").click()
                await page.locator(f"#refunds tr[data-refund='{failed}'][data-status='owed']").wait_for()
                assert await page.inner_text("#said") == (
                    "The refund leaves again in the next file for the payment gateway.")
                assert await page.evaluate("document.activeElement.id") == "refunds-title"
                r = await http.get("/v1/ledger/refunds", headers=auth(admin), params={"status": "owed"})
                assert [x["refund_id"] for x in r.json()["refunds"]] == [failed]
                assert await redis_client.zrange("ledger:refunds:due", 0, -1) == [failed.encode()]
                assert await page.locator(f"#refunds tr[data-refund='{failed}'] button").count() == 0
                await page.select_option("#lang", "ar")
                assert (await page.locator(f"#refunds tr[data-refund='{failed}'] td").all_inner_texts())[4] == (
                    "ينتظر الإرسال")
                await open_one(typed)

                # on a phone: this week's payouts and the complaint cards keep who they are about
                await page.set_viewport_size({"width": 390, "height": 844})
                await page.click("#complaint-close")
                await page.wait_for_function("document.documentElement.scrollWidth <= window.innerWidth")
                assert await page.locator(f"#complaints tr[data-complaint='{typed}'] td.who").is_visible()
                assert await page.locator(f"#refunds tr[data-refund='{sent}'] td.who").is_visible()
                if SHOTS:
                    await page.screenshot(path=str(SHOTS / "admin-phone-cards-ar.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await server.stop()
