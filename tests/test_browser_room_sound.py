"""Sound on the room page when the browser will not play it by itself, and the page's answer to a weak
connection: real Chromium, the server's SFU, a real impairment of the network in the loopback-only
namespace.

Playwright's own `evaluate` (and every locator it resolves) runs as a user gesture in Chromium, which is
enough for the browser to allow sound: a test that reads the page that way before the click never meets a
blocked autoplay. The page is read here through the DevTools protocol instead (`Quiet`), which is no
gesture, until the person's one click."""

from __future__ import annotations

import asyncio
import base64
import shutil
from pathlib import Path
from typing import Any

import pytest

from session_server.demo import seed_demo
from session_server.rooms.media_bridge import SfuBridge

from .accessibility import assert_accessible
from .room_page_support import INBOUND, PLAYING, SFU, SHOTS, new_page, practitioner_in_the_room, rising
from .rooms_support import room_server
from .support import CHROMIUM_ARGS, browser_for_media, enter_room, eventually, require

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.usefixtures("no_stray_tasks")]

# A browser with no camera and no microphone, that plays sound only after a click in the document: what a
# tab restored after a restart meets (it goes back into the room with no click yet).
NO_SOUND_YET = ["--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream",
                "--autoplay-policy=document-user-activation-required"]
AUDIO_ENERGY = """(async () => {
  const pc = window.roomDebug.pc();
  if (!pc) return 0;
  let e = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") e = r.totalAudioEnergy || 0;
  });
  return e;
})()"""
# Every button a person can see, by its text.
VISIBLE_BUTTONS = """[...document.querySelectorAll("button")]
  .filter((b) => !b.hidden && b.offsetParent !== null && getComputedStyle(b).visibility === "visible")
  .map((b) => ({id: b.id, text: b.textContent.trim()}))"""


class Quiet:
    """Reads a page and photographs it through the DevTools protocol, without a user gesture."""

    def __init__(self, cdp: Any) -> None:
        self.cdp = cdp

    @classmethod
    async def attach(cls, page: Any) -> Quiet:
        return cls(await page.context.new_cdp_session(page))

    async def js(self, expression: str) -> Any:
        answer = await self.cdp.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                           "awaitPromise": True, "userGesture": False})
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    async def shot(self, path: Path) -> None:
        data = await self.cdp.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data["data"]))

    async def inbound(self, kind: str) -> int:
        return int(await self.js(f"({INBOUND})({kind!r})"))


async def test_a_restored_tab_whose_browser_blocks_sound_plays_the_picture_muted_and_one_click_brings_the_sound(
        tmp_path: Path, redis_url: str) -> None:
    async with practitioner_in_the_room(tmp_path, redis_url, NO_SOUND_YET, "en") as (
            demo, _prac, blocking):
        # the client's tab, restored: its session storage says it had entered, so it goes straight in
        context = await blocking.new_context(viewport={"width": 1100, "height": 800})
        client = await context.new_page()
        await client.add_init_script(f"sessionStorage.setItem('room:{demo['booking_id']}:entered', 'full')")
        quiet = await Quiet.attach(client)
        await client.goto(demo["links"]["client"].replace("#token=", "?lang=ar#token=", 1))

        async def frames() -> int:
            return await quiet.inbound("video")

        first = await eventually(frames, timeout=30, what="a first video frame in the restored tab")

        async def more_frames() -> bool:
            return await frames() > first + 10

        await eventually(more_frames, timeout=30, what="the practitioner's picture still arriving")

        async def button_shown() -> bool:
            return bool(await quiet.js("!document.getElementById('start-sound').hidden"))

        await eventually(button_shown, timeout=15, what="the start-sound button")
        # the picture plays, without sound, and one button says how to hear it
        assert await quiet.js(f"({PLAYING})()") == {
            "paused": False, "muted": True, "volume": 1, "attached": True, "visible": True}
        assert await quiet.js("window.roomDebug.state().soundBlocked") is True
        assert await quiet.js(VISIBLE_BUTTONS + ".filter((b) => b.id === 'start-sound').length") == 1
        sound = [b for b in await quiet.js(VISIBLE_BUTTONS) if b["text"] in ("تشغيل الصوت", "Activer le son")]
        assert sound == [{"id": "start-sound", "text": "تشغيل الصوت"}], sound
        await quiet.shot(SHOTS / "sound-blocked-ar.png")

        # the same screen in French (switched without a click: still no gesture in this document)
        await quiet.js("(() => { const s = document.getElementById('lang'); s.value = 'fr';"
                       " s.dispatchEvent(new Event('change')); })()")
        buttons = await quiet.js(VISIBLE_BUTTONS)
        assert [b for b in buttons if b["id"] == "start-sound"] == [{"id": "start-sound", "text": "Activer le son"}]
        await quiet.shot(SHOTS / "sound-blocked-fr.png")
        assert (await quiet.js(f"({PLAYING})()"))["muted"] is True

        await assert_accessible(client, "the room with the start-sound button")
        # (axe ran as a gesture, yet the page does not turn the sound on by itself: the button does)
        assert (await quiet.js(f"({PLAYING})()"))["muted"] is True

        await client.click("#start-sound")  # the one click
        await client.locator("#start-sound").wait_for(state="hidden", timeout=5_000)
        assert await client.evaluate(PLAYING) == {
            "paused": False, "muted": False, "volume": 1, "attached": True, "visible": True}
        assert await client.evaluate("window.roomDebug.state().soundBlocked") is False

        # and the practitioner is heard: their sound keeps arriving, with energy in it
        await rising(client, "audio", "the client who turned the sound on")
        clicked = float(await quiet.js(AUDIO_ENERGY))

        async def louder() -> bool:
            return float(await quiet.js(AUDIO_ENERGY)) > clicked

        await eventually(louder, timeout=20, what="the practitioner's sound energy rising")
        assert (await client.evaluate(PLAYING))["muted"] is False
        await quiet.shot(SHOTS / "sound-on-fr.png")


# A weak network, for real: inside the test's loopback-only namespace, a classic BPF filter on `lo` sends a
# random quarter of the UDP datagrams (all the media; the signaling is TCP) to a class that keeps none. The
# kernels this runs on have no `netem`; HTB, the u32/BPF classifiers and pfifo are enough. Classic BPF:
# load the IP protocol (byte 23 behind the 14-byte link header), not UDP -> no match; load a random 32-bit
# number; below 3/4 of 2^32 -> no match, otherwise the filter's class.
LOSS_FILTER = "6,48 0 0 23,21 0 3 17,32 0 0 4294963256,53 0 1 3221225472,6 0 0 4294967295,6 0 0 0"
IMPAIR = [
    ["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "0"],
    ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:2", "htb", "rate", "8kbit"],
    ["qdisc", "add", "dev", "lo", "parent", "1:2", "handle", "20:", "pfifo", "limit", "0"],
    ["filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "bpf", "bytecode", LOSS_FILTER,
     "classid", "1:2"],
]


async def tc(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec("tc", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def dropped_by_tc() -> int:
    """Datagrams the impairment has dropped so far (the drop class's counter)."""
    _, out = await tc("-s", "qdisc", "show", "dev", "lo", "parent", "1:2")
    words = out.replace("(", " ").replace(",", " ").split()
    return int(words[words.index("dropped") + 1]) if "dropped" in words else 0


async def test_a_weak_connection_suggests_sound_only_in_each_persons_language_and_it_is_accepted_or_kept_away(
        tmp_path: Path, redis_url: str) -> None:
    path = browser_for_media()
    require(shutil.which("tc") is not None, "`tc` (iproute2) is not installed")
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, **SFU) as server, async_playwright() as pw:
        bridge = server.app.state.ctx.rooms.bridge
        assert isinstance(bridge, SfuBridge)
        demo = await seed_demo(server.app.state.ctx, echo=False)
        room = demo["booking_id"]
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        impaired = False
        try:
            client = await new_page(browser, demo["links"]["client"], "ar")
            await enter_room(client)
            prac = await new_page(browser, demo["links"]["practitioner"], "fr")
            await enter_room(prac)
            for page, who in ((client, "client"), (prac, "practitioner")):
                await rising(page, "video", who)
                assert await page.locator("#suggest").is_hidden()

            for command in IMPAIR:
                code, out = await tc(*command)
                require(code == 0, f"this kernel cannot impair the loopback: tc {' '.join(command[:3])}: {out}")
                impaired = True

            # the server finds both connections poor, report after report, and says so in each one's language
            suggest_ar = client.locator("#suggest", has_text="اتصالك ضعيف. هل تنتقل إلى الصوت فقط لمواصلة الحديث؟")
            suggest_fr = prac.locator("#suggest", has_text="Votre connexion est faible. Passer au son seulement")
            await suggest_ar.wait_for(state="visible", timeout=60_000)
            await suggest_fr.wait_for(state="visible", timeout=60_000)
            assert await dropped_by_tc() > 0
            mine = (await client.evaluate("window.roomDebug.quality()"))["demo-client"]
            assert mine["quality"] == "poor" and mine["suggest_audio_only"] is True, mine
            assert max(mine["up"]["loss"], mine["down"]["loss"]) > 0.05, mine
            await client.screenshot(path=str(SHOTS / "suggest-sound-only-ar.png"))
            await prac.screenshot(path=str(SHOTS / "suggest-sound-only-fr.png"))
            await assert_accessible(client, "the room suggesting sound only")

            # the client accepts: sound only, and the server forwards no video to or from the client
            await client.click("#suggest-yes")
            await suggest_ar.wait_for(state="hidden", timeout=2_000)
            assert await client.locator("#toggle-audio-only").get_attribute("aria-pressed") == "true"
            await prac.locator("#remote-flags", has_text="son seulement").wait_for(timeout=10_000)
            await client.locator("#remote-placeholder", has_text="الصوت فقط").wait_for()
            ids = {"client": "demo-client", "practitioner": "demo-practitioner"}

            async def sound_goes_on() -> None:
                before = {who: bridge.media.forwarded_to(room, pid) for who, pid in ids.items()}

                async def more() -> bool:
                    return all(bridge.media.forwarded_to(room, pid).get("audio", 0) > before[who]["audio"] + 100
                               for who, pid in ids.items())

                await eventually(more, timeout=30, what="sound forwarded both ways on the weak network")

            await sound_goes_on()  # the switch is applied by now; what was in flight before it has landed
            video = {who: bridge.media.forwarded_to(room, pid)["video"] for who, pid in ids.items()}
            await sound_goes_on()
            assert {who: bridge.media.forwarded_to(room, pid)["video"] for who, pid in ids.items()} == video

            # the practitioner says "not now": the suggestion stays away while the server goes on suggesting
            await prac.click("#suggest-no")
            await suggest_fr.wait_for(state="hidden", timeout=2_000)
            seen: set[float] = set()

            async def three_more_suggestions() -> bool:
                report = (await prac.evaluate("window.roomDebug.quality()"))["demo-practitioner"]
                assert await prac.locator("#suggest").is_hidden(), "the dismissed suggestion came back"
                if report["suggest_audio_only"]:
                    seen.add(report["at"])
                return len(seen) > 3

            await eventually(three_more_suggestions, timeout=60, interval=0.2,
                             what="more reports suggesting sound only to the practitioner")
            await prac.screenshot(path=str(SHOTS / "suggest-dismissed-fr.png"))
        finally:
            if impaired:
                await tc("qdisc", "del", "dev", "lo", "root")
            await browser.close()
