"""The room page as real people meet it, in real Chromium through the server's SFU: a client with no camera
or microphone, one who refused them, sound only both ways, leaving and coming back, a room not open yet,
a service briefly unavailable (its Redis frozen), an expired link. Each screen is photographed in Arabic
and checked with axe-core."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from session_server.auth import Role
from session_server.clock import ManualClock
from session_server.demo import CLIENT_ID, seed_demo
from session_server.rooms.media_bridge import SfuBridge

from .accessibility import assert_accessible
from .redis_support import PrivateRedis
from .room_page_support import PLAYING, SFU, SHOTS, new_page, practitioner_in_the_room, rising
from .rooms_support import room_server
from .support import CHROMIUM_ARGS, browser_for_media, enter_room, eventually

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.usefixtures("no_stray_tasks")]

# A browser with no camera and no microphone at all (no fake devices), where playing sound needs a click.
NO_DEVICES = ["--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream",
              "--autoplay-policy=user-gesture-required"]
# A browser with a camera and a microphone whose user says no to them.
REFUSES = ["--allow-loopback-in-peer-connection", "--use-fake-device-for-media-stream",
           "--deny-permission-prompts", "--autoplay-policy=user-gesture-required"]


async def test_a_client_with_no_camera_or_microphone_sees_and_hears_the_practitioner_after_one_click(
        tmp_path: Path, redis_url: str) -> None:
    async with practitioner_in_the_room(tmp_path, redis_url, NO_DEVICES, "en") as (
            demo, prac, bare):
        client = await new_page(bare, demo["links"]["client"], "ar")
        # the lobby says who is expected, when, and that nothing was found, calmly; the camera is not needed
        await client.locator("#device-note", has_text="لم نجد كاميرا ولا ميكروفونًا").wait_for(timeout=15_000)
        await client.locator("#gate-title", has_text="Dr. Demo").wait_for()
        assert await client.locator("#gate-when").inner_text()
        await client.screenshot(path=str(SHOTS / "people-no-devices-lobby-ar.png"))
        await assert_accessible(client, "the lobby of a client without devices")
        assert await client.locator("#enter").inner_text() == "الدخول لرؤية الطرف الآخر وسماعه"

        await client.click("#enter")  # the one click
        await rising(client, "video", "the client without devices")
        await rising(client, "audio", "the client without devices")
        playing = await client.evaluate(PLAYING)
        assert playing == {"paused": False, "muted": False, "volume": 1, "attached": True, "visible": True}
        assert await client.locator("#start-sound").is_hidden()
        # the buttons tell the truth
        mic, cam = client.locator("#toggle-mic"), client.locator("#toggle-cam")
        assert await mic.is_disabled() and await mic.inner_text() == "لا يوجد ميكروفون"
        assert await cam.is_disabled() and await cam.inner_text() == "لا توجد كاميرا"
        # and the practitioner is told, in words, rather than shown a black tile
        flags = prac.locator("#remote-flags")
        await flags.filter(has_text="no microphone").filter(has_text="no camera").wait_for(timeout=10_000)
        await prac.locator("#remote-placeholder", has_text="Demo client has no camera").wait_for()
        await client.screenshot(path=str(SHOTS / "people-no-devices-in-session-ar.png"))
        await assert_accessible(client, "the room of a client without devices")
        await assert_accessible(prac, "the practitioner's room")


async def test_a_client_who_refused_the_camera_and_microphone_still_sees_and_hears_and_is_told_how_to_allow(
        tmp_path: Path, redis_url: str) -> None:
    async with practitioner_in_the_room(tmp_path, redis_url, REFUSES, "fr") as (
            demo, prac, refusing):
        client = await new_page(refusing, demo["links"]["client"], "ar")
        await client.locator("#device-note", has_text="لم تسمح باستعمال الكاميرا والميكروفون").wait_for(
            timeout=15_000)
        assert (await client.evaluate("window.roomDebug.state().devices"))["denied"] is True
        await client.screenshot(path=str(SHOTS / "people-refused-lobby-ar.png"))
        await client.click("#enter")
        await client.locator("#room").wait_for(state="visible")
        # (Whether the picture then arrives is not checked here: a browser refused the camera gathers
        # addresses only on the default route, and the loopback-only namespace of these tests has none.
        # A client with no devices at all, above, proves that a page sending nothing sees and hears.)
        assert await client.locator("#toggle-cam").inner_text() == "الكاميرا غير مسموح بها"
        await prac.locator("#remote-flags", has_text="pas de caméra").wait_for(timeout=10_000)
        await client.screenshot(path=str(SHOTS / "people-refused-in-session-ar.png"))
        await assert_accessible(client, "the room of a client who refused the devices")


async def test_sound_only_stops_the_video_both_ways_in_the_server_and_video_comes_back(
        tmp_path: Path, redis_url: str) -> None:
    path = browser_for_media()
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, **SFU) as server, async_playwright() as pw:
        bridge = server.app.state.ctx.rooms.bridge
        assert isinstance(bridge, SfuBridge)
        demo = await seed_demo(server.app.state.ctx, echo=False)
        room = demo["booking_id"]
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            client = await new_page(browser, demo["links"]["client"], "ar")
            # the device check: the camera's preview and the microphone's level before entering
            await client.locator("#device-note", has_text="الكاميرا والميكروفون يعملان").wait_for(timeout=15_000)
            await client.locator("#preview").wait_for(state="visible")

            async def level() -> bool:
                return bool(await client.evaluate("document.getElementById('mic-level').value > 0"))

            await eventually(level, timeout=10, what="the microphone's level moving")
            await client.screenshot(path=str(SHOTS / "people-lobby-devices-ar.png"))
            await assert_accessible(client, "the lobby with a camera and a microphone")
            await enter_room(client)
            prac = await new_page(browser, demo["links"]["practitioner"], "fr")
            await enter_room(prac)
            for page, who in ((client, "client"), (prac, "practitioner")):
                await rising(page, "video", who)
            ids = {"client": "demo-client", "practitioner": "demo-practitioner"}

            await client.click("#toggle-audio-only")
            assert await client.locator("#toggle-audio-only").get_attribute("aria-pressed") == "true"
            await prac.locator("#remote-flags", has_text="son seulement").wait_for(timeout=10_000)
            await prac.screenshot(path=str(SHOTS / "people-other-in-sound-only-fr.png"))
            # the server has applied it once the other party is told: from then on no video is forwarded
            # to the client nor from the client, while the sound goes on both ways
            before = {who: bridge.media.forwarded_to(room, pid) for who, pid in ids.items()}

            async def sound_went_on() -> bool:
                return all(bridge.media.forwarded_to(room, pid)["audio"] > before[who]["audio"] + 100
                           for who, pid in ids.items())

            await eventually(sound_went_on, timeout=20, what="sound forwarded both ways")
            for who, pid in ids.items():
                assert bridge.media.forwarded_to(room, pid)["video"] == before[who]["video"], who
            await client.locator("#remote-placeholder", has_text="الصوت فقط").wait_for()
            assert (await client.evaluate(PLAYING))["visible"] is False
            await client.screenshot(path=str(SHOTS / "people-sound-only-ar.png"))
            await assert_accessible(client, "the room in sound only")

            await client.click("#toggle-audio-only")
            for who, pid in ids.items():
                # counted from now on (a peer connection rebuilt meanwhile starts its counters at zero)
                base: dict[str, int] = {}

                async def video_again(pid: str = pid, base: dict[str, int] = base) -> bool:
                    n = bridge.media.forwarded_to(room, pid).get("video", 0)
                    if "n" not in base or n < base["n"]:
                        base["n"] = n
                        return False
                    return n > base["n"] + 50

                await eventually(video_again, timeout=30, what=f"video forwarded to the {who} again")
            await rising(client, "video", "the client with video again")

            # every message follows the language: the report's acknowledgement too, full stop included
            await prac.click("#report")
            toast = prac.locator("#notice")
            await toast.filter(has_text="Signalement envoyé. L'assistance va vous contacter.").wait_for(timeout=10_000)
            await prac.select_option("#lang", "ar")
            await toast.filter(has_text="تم إرسال البلاغ. سيتواصل معك فريق الدعم.").wait_for(timeout=2_000)
            assert await prac.evaluate("getComputedStyle(document.getElementById('notice')).direction") == "rtl"
        finally:
            await browser.close()


async def test_leaving_is_confirmed_shown_to_the_other_with_its_time_and_the_one_who_left_can_rejoin(
        tmp_path: Path, redis_url: str) -> None:
    path = browser_for_media()
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, **SFU) as server, async_playwright() as pw:
        demo = await seed_demo(server.app.state.ctx, echo=False)
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            client = await new_page(browser, demo["links"]["client"], "ar")
            await enter_room(client)
            prac = await new_page(browser, demo["links"]["practitioner"], "en")
            await enter_room(prac)
            await rising(prac, "video", "the practitioner")

            # "Leave" asks first; "Stay" keeps the session as it was
            await client.click("#leave")
            dialog = client.locator("#confirm-leave")
            await dialog.wait_for(state="visible")
            await client.screenshot(path=str(SHOTS / "people-leave-confirm-ar.png"))
            await assert_accessible(client, "the leave confirmation")
            await client.click("#leave-stay")
            await dialog.wait_for(state="hidden")
            assert await client.evaluate("window.roomDebug.state().view") == "room"

            await client.click("#leave")
            await client.click("#leave-yes")
            await client.locator("#gate-title", has_text="غادرت الجلسة على الساعة").wait_for(timeout=10_000)
            rejoin = client.locator("#rejoin")
            await rejoin.wait_for(state="visible")
            assert await client.evaluate("window.roomDebug.pc()") is None
            # the client may complain about the session, on a page of its own with the same link's token
            complaint = client.locator("#complaint-link")
            assert await complaint.inner_text() == "مشكلة في هذه الجلسة؟ قدّم شكوى"
            href = await complaint.get_attribute("href")
            assert href is not None and href.startswith(f"/complaint/{demo['booking_id']}?lang=ar#token=")
            await client.screenshot(path=str(SHOTS / "people-left-ar.png"))
            await assert_accessible(client, "the screen after leaving")

            # the practitioner is told who left and when, and no frozen frame stays on the screen
            await prac.locator("#waiting", has_text="Demo client left the session at").wait_for(timeout=10_000)
            await prac.locator("#remote-placeholder", has_text="Demo client left the session").wait_for()
            assert await prac.locator("#complaint-link").is_hidden()  # a client's page only
            assert (await prac.evaluate(PLAYING))["attached"] is False

            await rejoin.click()
            await client.locator("#room").wait_for(state="visible", timeout=10_000)
            await prac.locator("#remote-placeholder").wait_for(state="hidden", timeout=20_000)
            await rising(prac, "video", "the practitioner once the client is back")
            await rising(client, "video", "the client who came back")
            assert (await prac.evaluate(PLAYING))["visible"] is True
        finally:
            await browser.close()


async def test_a_room_not_open_yet_says_when_it_opens_and_opens_by_itself_with_the_camera_off_meanwhile(
        tmp_path: Path, redis_url: str) -> None:
    path = browser_for_media()
    from playwright.async_api import async_playwright

    clock = ManualClock(time.time())
    async with room_server(tmp_path, redis_url, clock=clock, room_open_before_s=60, **SFU) as server, \
            async_playwright() as pw:
        demo = await seed_demo(server.app.state.ctx, echo=False)
        opens_at = demo["starts_at"] - 60
        clock.set(opens_at - 3)
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            client = await new_page(browser, demo["links"]["client"], "ar")
            await client.locator("#gate-title", has_text="لم تُفتح الغرفة بعد").wait_for(timeout=10_000)
            assert "ستفتحها هذه الصفحة تلقائيًا" in await client.locator("#gate-text").inner_text()
            shown = await client.evaluate("window.roomDebug.state()")
            assert shown["view"] == "not_open" and shown["devices"]["checked"] is False  # no camera asked for
            assert await client.evaluate("document.getElementById('preview').srcObject") is None
            await client.screenshot(path=str(SHOTS / "people-not-open-ar.png"))
            await assert_accessible(client, "the room not open yet")

            clock.set(opens_at)  # the opening instant, by the server's clock
            await client.locator("#enter").wait_for(state="visible", timeout=15_000)
            assert await client.evaluate("window.roomDebug.state().view") == "lobby"
            await client.locator("#gate-text", has_text="المختص لم يصل بعد").wait_for()
            await client.screenshot(path=str(SHOTS / "people-opened-lobby-ar.png"))
        finally:
            await browser.close()


async def test_a_join_while_the_service_is_briefly_unavailable_says_so_calmly_and_comes_in_once_it_is_back(
        tmp_path: Path) -> None:
    """The server's Redis is frozen while the client opens the room: each join is refused with `unavailable`
    (and closed with 1013); the page says the service is briefly unavailable and when it tries again by itself,
    in the person's language, and is in the room's lobby once Redis answers again, with nobody touching it."""
    path = browser_for_media()
    from playwright.async_api import async_playwright

    directory = tmp_path / "external-redis"
    directory.mkdir()
    external = PrivateRedis(directory)
    await external.start()
    try:
        async with room_server(tmp_path, external.url, redis_socket_timeout_s=0.5, **SFU) as server, \
                async_playwright() as pw:
            demo = await seed_demo(server.app.state.ctx, echo=False)
            browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
            try:
                external.signal(signal.SIGSTOP)
                try:
                    client = await new_page(browser, demo["links"]["client"], "fr")
                    await client.locator("#gate-title", has_text="Service momentanément indisponible").wait_for(
                        timeout=20_000)
                    await client.locator(
                        "#gate-text", has_text="Nous vous reconnectons automatiquement dans 1 seconde").wait_for(
                        timeout=20_000)
                    # under its title, the text goes on from it rather than saying it again
                    assert "indisponible" not in await client.locator("#gate-text").inner_text()
                    assert await client.locator("#enter").is_hidden()
                    assert (await client.evaluate("window.roomDebug.state().devices"))["checked"] is False
                    await client.screenshot(path=str(SHOTS / "people-unavailable-fr.png"))
                    # it tries again by itself, and says so, then waits again while the service is still away
                    await client.locator("#gate-text", has_text="Nous essayons de vous reconnecter").wait_for(
                        timeout=20_000)
                    await client.locator("#gate-text", has_text="dans 1 seconde").wait_for(timeout=20_000)
                    await assert_accessible(client, "the service briefly unavailable")
                    await client.select_option("#lang", "ar")
                    await client.locator("#gate-title", has_text="الخدمة غير متاحة للحظات").wait_for(timeout=5_000)
                    await client.locator("#gate-text", has_text="تلقائيًا بعد ثانية").wait_for(timeout=20_000)
                    await client.screenshot(path=str(SHOTS / "people-unavailable-ar.png"))
                finally:
                    external.signal(signal.SIGCONT)
                # Redis answers again: the next try lets the client in, to the lobby, and the words are gone
                await client.locator("#enter").wait_for(state="visible", timeout=30_000)
                assert await client.evaluate("window.roomDebug.state().view") == "lobby"
                body = await client.locator("body").inner_text()
                assert "الخدمة غير متاحة" not in body, body
                await client.locator("#gate-text", has_text="المختص لم يصل بعد").wait_for()

                # the page loses its socket while Redis is away again: the same words, at the foot of the page
                # it stays on, until it is back in
                external.signal(signal.SIGSTOP)
                try:
                    await client.evaluate("window.roomDebug.dropSocket()")
                    await client.locator("#notice", has_text="سنحاول وصلك مجددًا تلقائيًا").wait_for(timeout=20_000)
                    assert await client.evaluate("window.roomDebug.state().view") == "lobby"
                    await client.screenshot(path=str(SHOTS / "people-unavailable-lobby-ar.png"))
                finally:
                    external.signal(signal.SIGCONT)
                await client.locator("#notice").wait_for(state="hidden", timeout=30_000)
                assert await client.evaluate("window.roomDebug.state().conn") == "connected"
            finally:
                await browser.close()
    finally:
        external.stop()


async def test_an_expired_or_missing_link_says_once_what_to_do_and_never_opens_the_camera(
        tmp_path: Path, redis_url: str) -> None:
    path = browser_for_media()
    from playwright.async_api import async_playwright

    clock = ManualClock(time.time())
    async with room_server(tmp_path, redis_url, clock=clock, **SFU) as server, async_playwright() as pw:
        ctx = server.app.state.ctx
        demo = await seed_demo(ctx, echo=False)
        token, _ = ctx.tokens.mint(sub=CLIENT_ID, name="Demo client", role=Role.CLIENT, ttl_s=60)
        clock.advance(120)
        room_url = demo["links"]["client"].split("#token=", 1)[0]
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 800})
            page = await context.new_page()
            asked: list[str] = []
            page.on("request", lambda r: asked.append(r.url) if "/v1/" in r.url else None)
            advice = "اطلب رابطًا جديدًا لجلستك من المنصة التي حجزت منها"
            for link in (f"{room_url}?lang=ar#token={token}", f"{room_url}?lang=ar"):
                await page.goto(link)
                await page.locator("#gate-title", has_text="لا يمكن استعمال هذا الرابط").wait_for(timeout=10_000)
                body = await page.locator("body").inner_text()
                assert body.count(advice) == 1, body  # said once, not in the status, a banner and a toast
                assert await page.locator("#notice").is_hidden()
                assert (await page.evaluate("window.roomDebug.state().devices"))["checked"] is False
                assert await page.locator("#enter").is_hidden() and await page.locator("#rejoin").is_hidden()
                name = "expired" if "token" in link else "missing"
                await page.screenshot(path=str(SHOTS / f"people-link-{name}-ar.png"))
                await assert_accessible(page, "the expired link")
                # a link that cannot be used asks for nothing more: no documents, at most one look for a
                # reschedule offer, refused, after which it stops asking
                await page.wait_for_load_state("networkidle")
                assert not [u for u in asked if "/documents" in u], asked
                assert len([u for u in asked if "/reschedule-offer" in u]) <= 1, asked
                asked.clear()
            # the server's other pages for people pass the same checks
            for url in (f"{server.url}/?lang=ar", f"{server.url}/?lang=en", f"{server.url}/docs/api"):
                await page.goto(url)
                await page.wait_for_load_state("networkidle")
                await assert_accessible(page, url)
            # the API page writes its descriptions' code as code, not as Markdown's backticks
            assert await page.locator("#description code", has_text="code").count() == 1
            assert "`" not in await page.locator("body").inner_text()
            await page.goto(f"{server.url}/?lang=ar")
            await page.screenshot(path=str(SHOTS / "people-home-ar.png"))
        finally:
            await browser.close()


@pytest.mark.parametrize("status, words", [
    ("cancelled", "The booking was cancelled and the room is closed."),
    ("rescheduled", "This session was moved to another time and this room is closed."),
])
async def test_a_link_to_a_closed_room_says_why_it_is_closed_and_never_opens_the_camera(
        tmp_path: Path, redis_url: str, status: str, words: str) -> None:
    path = browser_for_media()
    from playwright.async_api import async_playwright

    from session_server.bookings.model import BOOKING_KEY

    async with room_server(tmp_path, redis_url, **SFU) as server, async_playwright() as pw:
        ctx = server.app.state.ctx
        demo = await seed_demo(ctx, echo=False)
        await ctx.redis.hset(BOOKING_KEY.format(demo["booking_id"]), "status", status)
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            page = await new_page(browser, demo["links"]["client"], "en")
            await page.locator("body", has_text=words).wait_for(timeout=10_000)
            body = await page.locator("body").inner_text()
            assert body.count(words) == 1, body
            assert "over or was cancelled" not in body  # the generic words, when the page knows better
            assert (await page.evaluate("window.roomDebug.state().devices"))["checked"] is False
            assert await page.locator("#complaint-link").is_hidden()  # no session took place to complain about
            await page.screenshot(path=str(SHOTS / f"people-closed-{status}-en.png"))
            await assert_accessible(page, f"a {status} booking's room")
        finally:
            await browser.close()
