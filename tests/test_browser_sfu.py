"""Acceptance in a real browser, `sfu` mode: the client's and the practitioner's pages each hold one peer
connection to the server, see each other's video through it, and are shown the server's quality verdicts.
The server's own counters prove the media went through it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from session_server.demo import seed_demo
from session_server.events import EVENTS_STREAM, Event
from session_server.rooms.media_bridge import MEDIA_NODE, QUALITY, SfuBridge

from .rooms_support import room_server
from .support import (
    CHROMIUM_ARGS,
    chromium_path,
    enter_room,
    eventually,
    in_loopback_namespace,
    open_room_pages,
    require,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.browser,
    pytest.mark.usefixtures("no_stray_tasks"),
]

INBOUND_VIDEO = """async () => {
  const pc = window.roomDebug.pc();
  if (!pc) return {frames: 0, width: 0};
  let out = {frames: 0, width: 0};
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      out = {frames: r.framesDecoded || 0, width: r.frameWidth || 0};
    }
  });
  return out;
}"""


async def test_pages_see_each_others_video_through_the_server_and_its_quality_verdicts(
        tmp_path: Path, redis_url: str) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, heartbeat_interval_s=2.0, heartbeat_timeout_s=10.0,
                           media_mode="sfu", media_announce_addresses=("127.0.0.1",)) as server, \
            async_playwright() as pw:
        ctx = server.app.state.ctx
        bridge = ctx.rooms.bridge
        assert isinstance(bridge, SfuBridge)
        demo = await seed_demo(ctx, echo=False)
        room_id = demo["booking_id"]
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            pages = await open_room_pages(browser, demo["links"])
            ids = {}
            for who, page in pages.items():
                async def in_room(p: Any = page) -> bool:
                    return bool(await p.evaluate("window.roomDebug.state().me !== null"))

                await eventually(in_room, timeout=10, what=f"the {who} joined")
                ids[who] = await page.evaluate("window.roomDebug.state().me.id")
                assert await page.evaluate("window.roomDebug.mediaMode()") == "sfu"

            async def video(p: Any) -> dict[str, int]:
                out: dict[str, int] = await p.evaluate(INBOUND_VIDEO)
                return out

            for who, page in pages.items():
                async def decoded(p: Any = page) -> int:
                    return (await video(p))["frames"]

                first = await eventually(decoded, timeout=30, what=f"a first frame decoded by the {who}")

                async def rising(p: Any = page, f: int = first) -> bool:
                    return (await video(p))["frames"] > f + 10

                await eventually(rising, timeout=20, what=f"framesDecoded rising for the {who}")
                assert (await video(page))["width"] > 0

            # the server forwarded both participants' media: it went through the SFU, not browser to browser
            for who, pid in ids.items():
                forwarded = bridge.media.forwarded_to(room_id, pid)
                assert forwarded.get("video", 0) > 0 and forwarded.get("audio", 0) > 0, (who, forwarded)

            # each page is shown its own and the other's quality, and that its own media is connected
            for who, page in pages.items():
                async def both_reported(p: Any = page) -> bool:
                    seen = await p.evaluate("window.roomDebug.quality()")
                    return set(seen) == set(ids.values())

                await eventually(both_reported, timeout=15, what=f"quality reports on the {who}'s page")
                # media states are pushed as they change: a page sees its own; the other's only if it
                # changed after this page joined
                states = await page.evaluate("window.roomDebug.mediaStates()")
                assert states[ids[who]] == "connected"
                assert set(states.values()) == {"connected"}
                indicator = page.locator("#quality")
                await indicator.wait_for(state="visible", timeout=5_000)
                assert "connection" in (await indicator.inner_text()).lower()

            # support's record: the latest report per participant, and the node that runs the room's media
            r = aioredis.Redis.from_url(redis_url)
            try:
                stored = await r.hgetall(QUALITY.format(room_id))
                assert {k.decode() if isinstance(k, bytes) else k for k in stored} == set(ids.values())
                assert all(json.loads(v)["quality"] in ("excellent", "good", "poor", "lost")
                           for v in stored.values())
                assert await r.ttl(QUALITY.format(room_id)) > 0
                assert (await r.get(MEDIA_NODE.format(room_id))) == bridge.node_id.encode()
                # and the record for the features that follow: each participant's media connected, and their
                # verdicts as events, the last of which is the one support sees (read in one transaction)
                pipe = r.pipeline(transaction=True)
                pipe.hgetall(QUALITY.format(room_id))
                pipe.xrange(EVENTS_STREAM)
                latest, entries = await pipe.execute()
                recorded = [e for e in (Event.from_fields(f) for _, f in entries)
                            if e.type.startswith("media.") and e.body["booking_id"] == room_id]
                for pid in ids.values():
                    states = [e.body["state"] for e in recorded
                              if e.type == "media.state_changed" and e.body["participant_id"] == pid]
                    assert "connected" in states, (pid, states)
                    verdicts = [e.body for e in recorded
                                if e.type == "media.quality_changed" and e.body["participant_id"] == pid]
                    assert verdicts and verdicts[0]["previous"] is None
                    assert verdicts[-1]["quality"] == json.loads(latest[pid.encode()])["quality"]
            finally:
                await r.aclose()
        finally:
            await browser.close()


async def test_a_page_on_another_node_gets_its_media_from_the_node_that_runs_the_rooms_media(
        tmp_path: Path, redis_url: str) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    media = {"media_mode": "sfu", "media_announce_addresses": ("127.0.0.1",), "heartbeat_interval_s": 2.0,
             "heartbeat_timeout_s": 10.0}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with room_server(tmp_path / "a", redis_url, **media) as node_a, \
            room_server(tmp_path / "b", redis_url, **media) as node_b, async_playwright() as pw:
        demo = await seed_demo(node_a.app.state.ctx, echo=False)
        room_id = demo["booking_id"]
        bridges = [n.app.state.ctx.rooms.bridge for n in (node_a, node_b)]
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            # the client's socket is on node A, the practitioner's on node B
            links = {"client": demo["links"]["client"],
                     "practitioner": demo["links"]["practitioner"].replace(
                         f"127.0.0.1:{node_a.port}", f"127.0.0.1:{node_b.port}", 1)}
            pages = []
            for who in ("client", "practitioner"):
                context = await browser.new_context()
                page = await context.new_page()
                await page.goto(links[who])
                await enter_room(page)
                pages.append(page)

            for page in pages:
                async def decoding(p: Any = page) -> bool:
                    v: dict[str, int] = await p.evaluate(INBOUND_VIDEO)
                    return v["frames"] > 10 and v["width"] > 0

                await eventually(decoding, timeout=40, what="frames decoded through the other node's SFU")

            # one node runs the room's media for both participants, and forwarded to each of them
            owners = [b for b in bridges if room_id in b.media.rooms()]
            assert len(owners) == 1
            assert sorted(owners[0].media.rooms()[room_id]) == ["demo-client", "demo-practitioner"]
            for pid in ("demo-client", "demo-practitioner"):
                assert owners[0].media.forwarded_to(room_id, pid).get("video", 0) > 0
        finally:
            await browser.close()


async def test_the_other_page_says_so_when_a_participants_media_stops_and_clears_it_when_it_resumes(
        tmp_path: Path, redis_url: str) -> None:
    require(in_loopback_namespace(), "this test runs inside a loopback-only network namespace")
    browser_path = chromium_path()
    require(browser_path is not None, "Chromium is not installed")
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, heartbeat_interval_s=2.0, heartbeat_timeout_s=10.0,
                           media_mode="sfu", media_announce_addresses=("127.0.0.1",),
                           media_silence_timeout_s=2.0) as server, async_playwright() as pw:
        demo = await seed_demo(server.app.state.ctx, echo=False)
        browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            pages = []
            for who in ("client", "practitioner"):
                context = await browser.new_context()
                page = await context.new_page()
                await page.goto(demo["links"][who].replace("#token=", "?lang=en#token=", 1))
                await enter_room(page)
                pages.append(page)
            client, prac = pages

            async def decoding(p: Any = prac) -> bool:
                v: dict[str, int] = await p.evaluate(INBOUND_VIDEO)
                return v["frames"] > 10

            await eventually(decoding, timeout=30, what="the practitioner decoding the client's video")
            # the client's tracks stop sending while its connection stays up (RTCP and consent go on)
            await client.evaluate("""async () => {
              const pc = window.roomDebug.pc();
              window.savedTracks = pc.getSenders().map((s) => [s, s.track]);
              for (const [s] of window.savedTracks) await s.replaceTrack(null);
            }""")
            banner = prac.locator("#media-status")
            await banner.filter(has_text="stopped arriving").wait_for(state="visible", timeout=15_000)
            await client.evaluate("""async () => {
              for (const [s, t] of window.savedTracks) await s.replaceTrack(t);
            }""")
            await banner.wait_for(state="hidden", timeout=15_000)
            states = await prac.evaluate("window.roomDebug.mediaStates()")
            assert states["demo-client"] == "connected"
        finally:
            await browser.close()
