"""A practitioner opens her statement from her link, in a real browser: the balances, the next payout date,
a chart of each week's earnings and every movement with its session, in Arabic and then in French, and the
CSV file with the exact amounts; whoever is not that practitioner is told plainly why there is nothing to
see. Screenshots in Arabic and French (STATEMENT_SCREENSHOTS, a directory)."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiofiles
import pytest
import redis.asyncio as aioredis

from session_server.app import create_app
from session_server.auth import Role
from session_server.events import Event

from .accessibility import assert_accessible
from .conftest import LiveServer, make_settings
from .ledger_support import at, created, publish, transition
from .support import CHROMIUM_ARGS, chromium_path, eventually, in_loopback_namespace, require

pytestmark = [
    pytest.mark.netns,
    pytest.mark.browser,
    pytest.mark.usefixtures("no_stray_tasks"),
]

SHOTS = Path(os.environ["STATEMENT_SCREENSHOTS"]) if os.environ.get("STATEMENT_SCREENSHOTS") else None
DAY = 86400


def digits(text: str) -> str:
    """The digits of an amount as the page writes it, whatever the language's separators and symbol."""
    return re.sub(r"\D", "", text)


@contextlib.asynccontextmanager
async def _seeded_server_and_browser(tmp_path: Path, redis_url: str,
                                     redis_client: aioredis.Redis) -> AsyncIterator[tuple[LiveServer, Any]]:
    """A server whose ledger holds, for p1: a session completed last week (2,800.00) and one completed today
    (3,000.00); and headless Chromium."""
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    server = LiveServer(create_app(make_settings(tmp_path, redis_url, ledger_claim_idle_ms=200)))
    await server.start()
    try:
        now = int(time.time())
        last_week, today = now - 7 * DAY, now - 1
        await publish(redis_client,
                      created("b1", share=280_000, starts=last_week - 3600, now=last_week - 2 * DAY),
                      transition("b1", "completed", now=last_week),
                      created("b2", share=300_000, starts=today - 3600, now=today - DAY),
                      transition("b2", "completed", now=today))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
            try:
                yield server, browser
            finally:
                await browser.close()
    finally:
        await server.stop()


async def test_a_practitioner_reads_her_statement_in_arabic_and_french_and_downloads_the_exact_amounts(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    async with _seeded_server_and_browser(tmp_path, redis_url, redis_client) as (server, browser):
        token, _ = server.app.state.ctx.tokens.mint(sub="p1", name="Dr. Salma", role=Role.PRACTITIONER, ttl_s=3600)
        # the client complains about today's session: its share is held
        await publish(redis_client, Event("complaint.filed", {
            "complaint_id": "k1", "booking_id": "b2", "client_id": "c1", "practitioner_id": "p1",
            "reason": "conduct", "has_text": False}, time=at(int(time.time()))))
        context = await browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
        page = await context.new_page()
        await page.goto(f"{server.url}/statement?lang=ar#token={token}")
        assert "token" not in page.url  # the token leaves the address bar at once

        async def settled() -> bool:
            # the ledger catches up in the background: the page shows what it holds when opened
            await page.reload()
            await page.wait_for_selector("body[data-state='ready']", state="attached")
            return digits(await page.inner_text("#held")) == "300000"

        await eventually(settled, timeout=20, what="the statement with the hold")
        assert await page.evaluate("document.documentElement.dir") == "rtl"
        assert await page.inner_text("h1") == "كشف حسابي"
        assert digits(await page.inner_text("#available")) == "280000"  # 2,800.00 DZD
        assert digits(await page.inner_text("#in_transit")) == "000"
        assert "د.ج" in await page.inner_text("#available")
        assert "الدفعة القادمة:" in await page.inner_text("#next-payout")

        # every movement, newest first, in words: the hold moved 3,000.00 from available to held
        rows = await page.eval_on_selector_all("#entries tbody tr", """rows => rows.map(r => [
            r.dataset.kind, r.dataset.account, r.cells[1].innerText, r.cells[2].innerText,
            r.cells[4].innerText])""")
        assert [(k, a, s) for k, a, _w, s, _m in rows] == [
            ("complaint_hold", "held", "b2"), ("complaint_hold", "available", "b2"),
            ("completed", "available", "b2"), ("completed", "available", "b1")]
        assert rows[0][2] == "حجز بسبب شكوى" and rows[3][2] == "جلسة تمت"
        assert [digits(r[4]) for r in rows] == ["300000", "300000", "300000", "280000"]
        assert rows[1][4].startswith("−") and rows[0][4].startswith("+")

        # the chart: twelve weeks, this week and last week earned, the rest empty
        bars = await page.eval_on_selector_all("#chart rect", "rs => rs.map(r => r.getAttribute('class'))")
        assert len(bars) == 12 and bars.count("bar-rect") == 2
        label = await page.get_attribute("#chart", "aria-label")
        assert label is not None and await page.inner_text("#held") in label  # 3,000.00 earned this week
        await assert_accessible(page, "the statement in Arabic")
        if SHOTS:
            await page.screenshot(path=str(SHOTS / "statement-ar.png"), full_page=True)

        # the same page in French, without reloading
        await page.select_option("#lang", "fr")
        assert await page.evaluate("document.documentElement.dir") == "ltr"
        assert await page.inner_text("h1") == "Mon relevé"
        assert "Retenue pour réclamation" in await page.inner_text("#entries")
        assert "DZD" in await page.inner_text("#available") or "DA" in await page.inner_text("#available")
        await assert_accessible(page, "the statement in French")
        if SHOTS:
            await page.screenshot(path=str(SHOTS / "statement-fr.png"), full_page=True)

        # the CSV file: the exact amounts in minor units, one line per movement
        async with page.expect_download() as download_info:
            await page.click("#csv")
        download = await download_info.value
        assert download.suggested_filename.startswith("statement-p1-")
        async with aiofiles.open(await download.path(), encoding="utf-8") as f:
            text = await f.read()
        lines = list(csv.DictReader(text.splitlines()))
        assert sorted((r["kind"], r["account"], r["amount_minor"]) for r in lines) == [
            ("complaint_hold", "available", "-300000"), ("complaint_hold", "held", "300000"),
            ("completed", "available", "280000"), ("completed", "available", "300000")]

        # the complaint is upheld with a refund of 1,000.00: the rows say what went to the client and what
        # came back to her, and this week's bar shows what she keeps
        await publish(redis_client, Event("complaint.resolved", {
            "complaint_id": "k1", "booking_id": "b2", "client_id": "c1", "practitioner_id": "p1",
            "decision": "upheld", "refund_minor": 100_000}, time=at(int(time.time()))))

        async def resolved() -> bool:
            await page.reload()
            await page.wait_for_selector("body[data-state='ready']", state="attached")
            return digits(await page.inner_text("#held")) == "000"

        await eventually(resolved, timeout=20, what="the hold resolved")
        words = await page.eval_on_selector_all("#entries tbody tr[data-kind='complaint_upheld']",
                                                "rows => rows.map(r => [r.dataset.account, r.cells[1].innerText])")
        # (the page stays in French across the reloads: the choice is in the address too)
        assert await page.inner_text("h1") == "Mon relevé" and "lang=fr" in page.url
        assert sorted(words) == [["available", "Réclamation fondée : le reste vous revient"],
                                 ["held", "Réclamation fondée : montant remboursé au client"],
                                 ["held", "Réclamation fondée : montant remboursé au client"]]
        assert digits(await page.inner_text("#available")) == "480000"  # 2,800.00 + the 2,000.00 released
        kept = await page.evaluate("new Intl.NumberFormat('fr-FR', {style: 'currency', currency: 'DZD'}).format(2000)")
        assert f"cette semaine : {kept}" in await page.inner_text("#chart-caption")  # 3,000.00 less the refund


async def test_whoever_is_not_the_practitioner_is_told_why_there_is_nothing_to_see(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    async with _seeded_server_and_browser(tmp_path, redis_url, redis_client) as (server, browser):
        tokens = server.app.state.ctx.tokens
        client, _ = tokens.mint(sub="c1", name="Amina", role=Role.CLIENT, ttl_s=3600)
        other, _ = tokens.mint(sub="p2", name="Dr. Other", role=Role.PRACTITIONER, ttl_s=3600)
        expired, _ = tokens.mint(sub="p1", name="Dr. Salma", role=Role.PRACTITIONER, ttl_s=60,
                                 now=time.time() - 3600)
        admin, _ = tokens.mint(sub="a1", name="Admin", role=Role.ADMIN, ttl_s=3600)
        cases: list[tuple[str, str, str]] = [
            ("", "fr", "Cette page s’ouvre depuis le lien que la plateforme vous envoie. "
                     "Ouvrez votre relevé depuis la plateforme."),
            (f"#token={client}", "ar", "هذه الصفحة لكشف حساب المختصين فقط."),
            (f"?practitioner=p1#token={other}", "fr", "Ce relevé n’est pas le vôtre."),
            (f"#token={expired}", "ar", "انتهت صلاحية الرابط أو أنه غير مكتمل. افتح كشف حسابك من جديد من المنصة."),
            (f"#token={admin}", "en", "Add ?practitioner= and the practitioner's id to the address to open their "
                                      "statement."),
        ]
        for suffix, lang, says in cases:
            page = await (await browser.new_context()).new_page()
            path, _, fragment = suffix.partition("#")
            address = f"{server.url}/statement{path}{'&' if path else '?'}lang={lang}"
            await page.goto(address + (f"#{fragment}" if fragment else ""))
            await page.wait_for_selector("body[data-state^='err_']", state="attached")
            notices: list[Any] = await page.eval_on_selector_all(".notice:not([hidden])",
                                                                 "ns => ns.map(n => n.innerText)")
            assert notices == [says], suffix
            assert await page.is_hidden("#main")  # no figures, no empty table
            await page.context.close()

        # a practitioner with nothing yet: the page says so, and that nothing is paid under the minimum
        page = await (await browser.new_context()).new_page()
        await page.goto(f"{server.url}/statement?lang=en#token={other}")
        await page.wait_for_selector("body[data-state='ready']", state="attached")
        assert await page.is_visible("#no-entries") and await page.is_hidden("#entries")
        assert (await page.inner_text("#next-payout")).startswith("Paid once your available balance reaches")
        # an admin opens p1's statement: its heading names whose it is
        page = await (await browser.new_context()).new_page()
        await page.goto(f"{server.url}/statement?practitioner=p1&lang=fr#token={admin}")
        await page.wait_for_selector("body[data-state='ready']", state="attached")
        assert await page.inner_text("h1") == "Relevé de p1"
