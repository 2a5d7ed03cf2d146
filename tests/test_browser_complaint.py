"""A client complains about a session from the complaint page, in a real browser: before the session is over
the page says from when a complaint can be filed; after it, the client picks a reason, writes a few words
and sends; the practitioner's share is held at once; the page then shows what became of the complaint, and
once an admin upholds it, what is refunded. The session's practitioner follows it on the same page, without
a form; whoever is not a party is told why there is nothing. Screenshots in Arabic and French
(COMPLAINT_SCREENSHOTS, a directory)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from session_server.auth import Role

from .accessibility import assert_accessible
from .complaint_support import book_a_session, manual_server, statement, the_session_takes_place
from .conftest import auth
from .support import CHROMIUM_ARGS, chromium_path, eventually, in_loopback_namespace, require

pytestmark = [
    pytest.mark.netns,
    pytest.mark.browser,
    pytest.mark.usefixtures("no_stray_tasks"),
]

SHOTS = Path(os.environ["COMPLAINT_SCREENSHOTS"]) if os.environ.get("COMPLAINT_SCREENSHOTS") else None


async def test_a_client_files_a_complaint_from_the_page_and_sees_what_becomes_of_it(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    async with manual_server(tmp_path, redis_url) as ms, httpx.AsyncClient(base_url=ms.server.url) as http, \
            async_playwright() as pw:
        server, bearer = ms.server, ms.bearer
        booking = await book_a_session(http, ms)
        bid = booking[0]
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            async def open_page(token: str, lang: str) -> Any:
                page = await (await browser.new_context(viewport={"width": 900, "height": 900})).new_page()
                await page.goto(f"{server.url}/complaint/{bid}?lang={lang}#token={token}")
                await page.wait_for_selector("body[data-state]", state="attached")
                return page

            # before the session: not yet, and from when
            page = await open_page(bearer(Role.CLIENT, "c1"), "fr")
            await page.locator("#notice").wait_for(state="visible")
            assert (await page.inner_text("#notice")).startswith(
                "Vous pourrez déposer une réclamation une fois la séance terminée et clôturée, à partir du ")
            assert await page.is_hidden("#form")
            await page.context.close()

            # the session takes place and is over: the ledger settles it
            await the_session_takes_place(http, redis_client, ms, booking)

            # the client, in Arabic: a reason is asked for, then the complaint goes
            page = await open_page(bearer(Role.CLIENT, "c1"), "ar")
            await page.locator("#form").wait_for(state="visible")
            assert await page.evaluate("document.documentElement.dir") == "rtl"
            assert await page.locator("input[name=reason]").count() == 7
            await assert_accessible(page, "the complaint form in Arabic")
            # a story pasted past the limit: the box keeps 4,000 characters and says the rest was not kept
            await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
            await page.evaluate("text => navigator.clipboard.writeText(text)", "ب" * 4500)
            await page.focus("#text")
            await page.keyboard.press("Control+V")
            await page.locator("#text-count.warn").wait_for()
            assert await page.evaluate("document.getElementById('text').value.length") == 4000
            assert "لم يُحفظ ما زاد عليه" in await page.inner_text("#text-count")
            await page.fill("#text", "")
            assert "لم يُحفظ" not in await page.inner_text("#text-count")
            words = "أجاب المختص على الهاتف مرتين أثناء الجلسة."
            await page.fill("#text", words)
            await page.click("#send")
            assert await page.inner_text("#notice") == "اختر سببًا من القائمة."
            # words not sent yet: a reload is asked about first, and staying keeps them
            async with page.expect_event("dialog") as asked:
                await page.evaluate("setTimeout(() => location.reload(), 0)")
            dialog = await asked.value
            assert dialog.type == "beforeunload"
            await dialog.dismiss()
            assert await page.input_value("#text") == words
            await page.get_by_label("سلوك المختص").check()
            assert await page.is_hidden("#notice")  # a reason is chosen: "choose a reason" goes
            if SHOTS:
                await page.screenshot(path=str(SHOTS / "complaint-form-ar.png"), full_page=True)
            await page.click("#send")
            await page.locator("#status").wait_for(state="visible")
            assert await page.inner_text("#status-title") == "شكواك قيد الدراسة"
            assert await page.inner_text("#filed-reason") == "سلوك المختص"
            assert await page.is_hidden("#form") and await page.is_hidden("#notice")

            async def held() -> bool:
                s = await statement(http, ms)
                return bool(s["held_minor"] == 300_000 and s["available_minor"] == 0)

            await eventually(held, timeout=30, what="the practitioner's share held")
            found = (await http.get("/v1/complaints", headers=auth(bearer(Role.ADMIN, "a1")))).json()
            [filed] = found["complaints"]
            assert filed["booking_id"] == bid and filed["reason"] == "conduct" and filed["has_text"]
            r = await http.get(f"/v1/complaints/{filed['id']}", headers=auth(bearer(Role.ADMIN, "a1")))
            assert r.json()["text"] == words

            # upheld with a refund of 1,000.00: the page, opened again in French, says what comes back
            r = await http.post(f"/v1/complaints/{filed['id']}/resolve", headers=auth(bearer(Role.ADMIN, "a1")),
                                json={"decision": "upheld", "refund_minor": 100_000})
            assert r.status_code == 200, r.text
            await page.context.close()
            page = await open_page(bearer(Role.CLIENT, "c1"), "fr")
            await page.locator("#status").wait_for(state="visible")
            assert await page.inner_text("#status-title") == "Votre réclamation est fondée"
            refund = await page.evaluate(
                "new Intl.NumberFormat('fr-FR', {style: 'currency', currency: 'DZD'}).format(1000)")
            assert await page.inner_text("#status-text") == f"Votre remboursement : {refund}"
            assert await page.inner_text("#refund-state") == (
                "Le remboursement est en route par le service de paiement, vers la carte ou le compte qui a payé.")
            await assert_accessible(page, "the complaint's status in French")
            if SHOTS:
                await page.screenshot(path=str(SHOTS / "complaint-upheld-fr.png"), full_page=True)
            await page.context.close()

            # the payment service made the refund: the page says when it reached her
            admin = auth(bearer(Role.ADMIN, "a1"))

            async def handed_over() -> dict[str, Any] | None:
                r = await http.get("/v1/ledger/refunds", headers=admin, params={"client_id": "c1", "status": "sent"})
                found = [x for x in r.json()["refunds"] if x["complaint_id"] == filed["id"]]
                return found[0] if found and found[0]["amount_minor"] == 100_000 else None

            sent = await eventually(handed_over, timeout=30, what="the complaint's refund handed to the gateway")
            r = await http.post(f"/v1/ledger/refunds/{sent['refund_id']}/answer", headers=admin,
                                json={"status": "paid", "attempt": sent["attempt"]})
            assert r.status_code == 200, r.text
            page = await open_page(bearer(Role.CLIENT, "c1"), "ar")
            await page.locator("#refund-state[data-refund='paid']").wait_for()
            long_date = "d => new Intl.DateTimeFormat('ar-DZ', {dateStyle: 'long'}).format(new Date(d))"
            made_on = await page.evaluate(long_date, r.json()["answered_at"])
            assert await page.inner_text("#refund-state") == f"رُدّ إليك المبلغ في {made_on}."
            if SHOTS:
                await page.screenshot(path=str(SHOTS / "complaint-refunded-ar.png"), full_page=True)
            await page.context.close()

            # the session's practitioner follows the complaint there, without a form (and without the client's
            # words: no administrator shared them)
            page = await open_page(bearer(Role.PRACTITIONER, "p1"), "fr")
            await page.locator("#status").wait_for(state="visible")
            assert await page.inner_text("#status-title") == "La réclamation a été retenue"
            assert await page.inner_text("#words") == "Les administrateurs ne vous ont pas transmis les mots du client."
            assert await page.is_hidden("#form")
            await page.context.close()

            # anyone else: why there is no form
            for token, lang, says in (
                    (bearer(Role.CLIENT, "c2"), "en", "This session is not one of yours."),
                    (bearer(Role.PRACTITIONER, "p2"), "en", "This session is not one of yours."),
                    (bearer(Role.SUPPORT, "s1"), "fr", "Cette page est pour les deux parties de la séance : le client "
                                                       "qui réclame, le praticien qui suit la réclamation.")):
                page = await open_page(token, lang)
                await page.locator("#notice").wait_for(state="visible")
                assert await page.inner_text("#notice") == says
                assert await page.is_hidden("#form") and await page.is_hidden("#status")
                await page.context.close()
        finally:
            await browser.close()

