"""Acceptance in a real browser, `sfu` mode, in the demo room: client and practitioner see each other's video;
the client's media is cut past the threshold; both pages say what is happening and that nothing is lost; at the
give-up the booking is `interrupted` with the client's connection to blame, both pages say the session will be
rescheduled at no extra cost, and the stream holds exactly one `session.verdict`.

The server runs on a ManualClock set to the session's start, so the thresholds are reached by moving the clock
rather than by waiting; the media itself runs in real time."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from session_server.bookings.model import load_booking
from session_server.clock import ManualClock
from session_server.demo import seed_demo
from session_server.outages.store import OutageStore

from .bookings_support import events
from .rooms_support import room_server
from .support import CHROMIUM_ARGS, chromium_path, enter_room, eventually, in_loopback_namespace, require

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.usefixtures("no_stray_tasks")]

SHOTS = Path(os.environ.get("ROOM_SCREENSHOT_DIR", "/tmp"))
INBOUND_FRAMES = """async () => {
  const pc = window.roomDebug.pc();
  if (!pc) return 0;
  let frames = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") frames = r.framesDecoded || 0;
  });
  return frames;
}"""
# The client's camera and microphone stop reaching the server: its senders send nothing any more.
CUT_CLIENT_MEDIA = """async () => {
  const pc = window.roomDebug.pc();
  await Promise.all(pc.getSenders().map((s) => s.replaceTrack(null)));
  return pc.getSenders().length;
}"""
NOTIFY_S, INTERRUPT_S, GIVEUP_S = 3.0, 5.0, 8.0
MANUAL = {"heartbeat_interval_s": 60.0, "heartbeat_timeout_s": 600.0, "media_mode": "sfu",
          "media_announce_addresses": ("127.0.0.1",), "media_silence_timeout_s": 1.0, "outage_notify_s": NOTIFY_S,
          "outage_interrupt_s": INTERRUPT_S, "outage_giveup_s": GIVEUP_S, "outage_check_interval_s": 0.1}


async def _cut_the_client(pages: dict[str, Any], store: OutageStore, booking_id: str, clock: ManualClock) -> None:
    """Both pages see each other's video for a minute of the session, then the client's media is cut, until
    the server's timeline says it stopped."""
    for who, page in pages.items():
        async def frames(p: Any = page) -> int:
            return int(await p.evaluate(INBOUND_FRAMES))

        first = await eventually(frames, timeout=30, what=f"a first frame decoded by the {who}")

        async def rising(p: Any = page, f: int = first) -> bool:
            return int(await p.evaluate(INBOUND_FRAMES)) > f + 10

        await eventually(rising, timeout=20, what=f"the {who}'s video running")

    async def both_connected() -> bool:
        timeline = await store.timeline(booking_id)
        return {e.role for e in timeline if e.kind == "media" and e.state == "connected"} == {
            "client", "practitioner"}

    await eventually(both_connected, timeout=10, what="both parties' media connected on the timeline")
    assert await pages["client"].locator("#outage").is_hidden()
    clock.advance(60)  # a minute of the session with media flowing

    # the client's media is cut: the server hears no more of it and says so after a second of silence
    cut_at = int(clock.now() * 1000) - 1000
    assert await pages["client"].evaluate(CUT_CLIENT_MEDIA) > 0

    async def client_stopped() -> bool:
        return any(e.role == "client" and e.state == "media_stopped" and e.at_ms >= cut_at
                   for e in await store.timeline(booking_id))

    await eventually(client_stopped, timeout=15, what="the client's media stopped, on the timeline")


async def _room_pages(browser: Any, demo: dict[str, Any], langs: dict[str, str]) -> dict[str, Any]:
    pages: dict[str, Any] = {}
    for who, lang in langs.items():
        context = await browser.new_context(viewport={"width": 1200, "height": 760})
        page = await context.new_page()
        await page.goto(demo["links"][who].replace("#token=", f"?lang={lang}#token=", 1))
        await enter_room(page)  # past the lobby's device check
        pages[who] = page
    return pages


async def test_a_client_whose_media_is_cut_is_told_with_the_practitioner_and_the_session_is_interrupted_once(
        tmp_path: Path, redis_url: str) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    clock = ManualClock(time.time())
    # heartbeats long enough that the server's still clock never finds a page silent
    async with room_server(tmp_path, redis_url, clock=clock, **MANUAL) as server, async_playwright() as pw:
        ctx = server.app.state.ctx
        demo = await seed_demo(ctx, echo=False)
        booking_id = demo["booking_id"]
        clock.set(demo["starts_at"] + 5)  # the session's scheduled time has begun
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        r = aioredis.Redis.from_url(redis_url)
        try:
            pages = await _room_pages(browser, demo, {"client": "ar", "practitioner": "fr"})
            client, prac = pages["client"], pages["practitioner"]
            await _cut_the_client(pages, OutageStore(r), booking_id, clock)
            clock.advance(NOTIFY_S)  # past the threshold: both pages are told
            await client.locator("#outage[data-state=ongoing]", has_text="انقطع الاتصال بينكما").wait_for(
                timeout=5_000)
            assert "اتصالك بالإنترنت" in await client.locator("#outage").inner_text()  # "your connection"
            await prac.locator("#outage[data-state=ongoing]", has_text="Internet du client").wait_for(timeout=5_000)
            assert "Rien n'est perdu" in await prac.locator("#outage").inner_text()
            await prac.locator("#outage-end").wait_for(timeout=5_000)  # the practitioner may end it
            assert await client.locator("#outage-end").count() == 0
            await client.screenshot(path=str(SHOTS / "outage-client-ongoing-ar.png"))
            await prac.screenshot(path=str(SHOTS / "outage-practitioner-ongoing-fr.png"))
            booking = await load_booking(r, booking_id)
            assert booking is not None and booking.status.value == "in_session"

            clock.advance(GIVEUP_S)  # still down at the give-up: the verdict, once, and the room closes
            await client.locator("#outage[data-state=interrupted]", has_text="دون أي تكلفة إضافية").wait_for(
                timeout=10_000)
            await prac.locator("#outage[data-state=interrupted]", has_text="sans frais").wait_for(timeout=10_000)
            await client.screenshot(path=str(SHOTS / "outage-client-interrupted-ar.png"))
            await prac.screenshot(path=str(SHOTS / "outage-practitioner-interrupted-fr.png"))
            booking = await load_booking(r, booking_id)
            assert booking is not None and booking.status.value == "interrupted"
            verdicts = await events(r, "session.verdict")
            assert len(verdicts) == 1
            assert (verdicts[0].body["verdict"], verdicts[0].body["attribution"]) == ("interrupted",
                                                                                   "client_connection")
        finally:
            await r.aclose()
            await browser.close()


async def test_the_outage_demo_cuts_the_client_and_both_pages_follow_to_the_interruption(
        tmp_path: Path, redis_url: str) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, heartbeat_interval_s=2.0, heartbeat_timeout_s=10.0,
                           media_mode="sfu", media_announce_addresses=("127.0.0.1",), media_silence_timeout_s=1.0,
                           outage_notify_s=NOTIFY_S, outage_interrupt_s=INTERRUPT_S, outage_giveup_s=GIVEUP_S,
                           outage_check_interval_s=0.1, demo_cut_after_s=4) as server, async_playwright() as pw:
        demo = await seed_demo(server.app.state.ctx, echo=False)
        assert "?demo_cut=4#" in demo["links"]["client"]
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        r = aioredis.Redis.from_url(redis_url)
        try:
            pages: dict[str, Any] = {}
            for who, lang in (("client", "en"), ("practitioner", "ar")):
                context = await browser.new_context(viewport={"width": 1200, "height": 760})
                page = await context.new_page()
                await page.goto(demo["links"][who].replace("#token=", f"&lang={lang}#token=", 1)
                                if who == "client" else
                                demo["links"][who].replace("#token=", f"?lang={lang}#token=", 1))
                await enter_room(page)
                pages[who] = page
            client, prac = pages["client"], pages["practitioner"]
            # nobody touches the pages: the client's page cuts itself, both are told, and the room gives up
            await client.locator("#outage[data-state=ongoing]", has_text="Your internet connection").wait_for(
                timeout=30_000)
            await prac.locator("#outage[data-state=ongoing]", has_text="اتصال العميل").wait_for(timeout=10_000)
            await prac.screenshot(path=str(SHOTS / "outage-demo-practitioner-ongoing-ar.png"))
            await prac.locator("#outage[data-state=interrupted]").wait_for(timeout=GIVEUP_S * 1000 + 10_000)
            await client.locator("#outage[data-state=interrupted]", has_text="no extra cost").wait_for(
                timeout=10_000)
            await prac.screenshot(path=str(SHOTS / "outage-demo-practitioner-interrupted-ar.png"))
            verdicts = await events(r, "session.verdict")
            assert [(v.body["verdict"], v.body["attribution"]) for v in verdicts] == [
                ("interrupted", "client_connection")]
        finally:
            await r.aclose()
            await browser.close()


async def test_a_page_reloaded_during_an_outage_shows_it_again_and_its_stage_line_says_the_same(
        tmp_path: Path, redis_url: str) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    clock = ManualClock(time.time())
    async with room_server(tmp_path, redis_url, clock=clock, **MANUAL) as server, async_playwright() as pw:
        demo = await seed_demo(server.app.state.ctx, echo=False)
        clock.set(demo["starts_at"] + 5)
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        r = aioredis.Redis.from_url(redis_url)
        try:
            pages = await _room_pages(browser, demo, {"client": "ar", "practitioner": "fr"})
            prac = pages["practitioner"]
            await _cut_the_client(pages, OutageStore(r), demo["booking_id"], clock)
            clock.advance(NOTIFY_S)
            banner = prac.locator("#outage[data-state=ongoing]", has_text="Internet du client")
            await banner.wait_for(timeout=5_000)
            # the practitioner reloads the page while the client's media is still down: the page goes back
            # into the room (it had entered) and the server's welcome says the outage again
            await prac.reload()
            await prac.locator("#room").wait_for(state="visible", timeout=10_000)
            await banner.wait_for(timeout=5_000)
            assert "Rien n'est perdu" in await prac.locator("#outage").inner_text()
            await prac.locator("#outage-end").wait_for(timeout=5_000)
            # the line above the videos tells the same story as the banner: the connection with the client
            # is cut, not "the client is waiting for you", before and after the page's own media connects
            stage = prac.locator("#waiting")
            cut = "La connexion avec Demo client est coupée. Nous essayons de la rétablir."
            await prac.locator("#waiting", has_text=cut).wait_for(timeout=5_000)

            async def own_media_connected() -> bool:
                return bool(await prac.evaluate(
                    "() => { const pc = window.roomDebug.pc(); return !!pc && pc.connectionState === 'connected'; }"))

            await eventually(own_media_connected, timeout=20, what="the reloaded page's own media connected")
            assert await stage.inner_text() == cut
            assert await prac.locator("#outage[data-state=ongoing]").is_visible()
            # the client's tile says why it is empty rather than staying a black box
            await prac.locator("#remote-placeholder", has_text="Connexion avec Demo client coupée").wait_for(
                state="visible", timeout=5_000)
            await prac.screenshot(path=str(SHOTS / "outage-practitioner-reloaded-fr.png"))
            # in Arabic too, the stage line and the banner agree
            await prac.select_option("#lang", "ar")
            await prac.locator("#outage[data-state=ongoing]", has_text="اتصال العميل").wait_for(timeout=5_000)
            assert await stage.inner_text() == "انقطع الاتصال بينك وبين Demo client. نواصل محاولة إعادته."
            await prac.locator("#remote-placeholder", has_text="انقطع الاتصال مع Demo client").wait_for(
                state="visible", timeout=5_000)
            await prac.screenshot(path=str(SHOTS / "outage-practitioner-reloaded-ar.png"))
            # the client's own page, which was not reloaded, says the same on its stage line
            await pages["client"].locator("#waiting", has_text="انقطع الاتصال بينك وبين Dr. Demo").wait_for(
                timeout=5_000)

            # ending the session is asked in a dialog of its own: a double click on the banner's button
            # ends nothing, and keeping the session is one click
            dialog = prac.locator("#confirm-end")
            # the answer that ends it does nothing as the dialog opens (a second click of a double click, a
            # tap that lands twice): it is disabled in the same moment the dialog appears
            assert await prac.evaluate(
                "() => { document.getElementById('outage-end').click();"
                " return document.getElementById('confirm-end-yes').disabled; }")
            await dialog.wait_for(state="visible", timeout=5_000)
            await prac.locator("#confirm-end-keep").click()
            await dialog.wait_for(state="hidden", timeout=5_000)
            await prac.locator("#outage-end").dblclick()
            await dialog.wait_for(state="visible", timeout=5_000)
            assert "لا يمكن التراجع" in await dialog.inner_text()  # "this cannot be undone"
            await prac.screenshot(path=str(SHOTS / "outage-practitioner-end-dialog-ar.png"))
            await prac.locator("#confirm-end-keep").click()
            await dialog.wait_for(state="hidden", timeout=5_000)
            booking = await load_booking(r, demo["booking_id"])
            assert booking is not None and booking.status.value == "in_session"
            assert await prac.locator("#outage[data-state=ongoing]").is_visible()
            # asked again and answered: the session stops for both, to be rescheduled
            await prac.locator("#outage-end").click()
            await prac.locator("#confirm-end-yes").click()
            await prac.locator("#outage[data-state=interrupted]").wait_for(timeout=10_000)
            await dialog.wait_for(state="hidden", timeout=5_000)  # answered: the dialog goes
            await pages["client"].locator("#outage[data-state=interrupted]", has_text="دون أي تكلفة إضافية").wait_for(
                timeout=10_000)
            booking = await load_booking(r, demo["booking_id"])
            assert booking is not None and booking.status.value == "interrupted"
            # held again at no cost: the client's page, once its room is closed, offers no complaint about it
            await pages["client"].locator("#conn[data-state=closed]").wait_for(state="attached", timeout=10_000)
            await pages["client"].locator("#reschedule-offer a").wait_for(timeout=15_000)
            assert await pages["client"].locator("#complaint-link").is_hidden()
        finally:
            await r.aclose()
            await browser.close()
