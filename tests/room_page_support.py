"""What the room page tests share: the server's settings for them, a demo session with the practitioner in
its room, reading the page's media, where the screenshots go."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from session_server.demo import seed_demo

from .rooms_support import room_server
from .support import CHROMIUM_ARGS, browser_for_media, enter_room, eventually

SHOTS = Path(os.environ.get("ROOM_SCREENSHOT_DIR", "/tmp"))
SFU = {"media_mode": "sfu", "media_announce_addresses": ("127.0.0.1",), "heartbeat_interval_s": 2.0,
       "heartbeat_timeout_s": 10.0}
INBOUND = """async (kind) => {
  const pc = window.roomDebug.pc();
  if (!pc) return 0;
  let n = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type !== "inbound-rtp" || r.kind !== kind) return;
    n = kind === "video" ? r.framesDecoded || 0 : r.totalSamplesReceived || 0;
  });
  return n;
}"""
PLAYING = """() => { const v = document.getElementById("remote-video");
  return {paused: v.paused, muted: v.muted, volume: v.volume, attached: v.srcObject !== null,
          visible: getComputedStyle(v).visibility === "visible"}; }"""


async def rising(page: Any, kind: str, what: str, by: int = 10) -> None:
    """Wait until the page receives `by` more video frames (or audio samples, times 1,000) than now."""
    async def count() -> int:
        return int(await page.evaluate(INBOUND, kind))

    first = await eventually(count, timeout=30, what=f"{what}: a first {kind} from the server")
    step = by if kind == "video" else by * 1000

    async def more() -> bool:
        return await count() > first + step

    await eventually(more, timeout=30, what=f"{what}: {kind} still arriving")


async def new_page(browser: Any, link: str, lang: str) -> Any:
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    await page.goto(link.replace("#token=", f"?lang={lang}#token=", 1))
    return page


@asynccontextmanager
async def practitioner_in_the_room(tmp_path: Path, redis_url: str, client_args: list[str],
                                   lang: str) -> AsyncIterator[tuple[dict[str, Any], Any, Any]]:
    """The demo session on a server in SFU mode, its practitioner in the room (a browser with a camera and a
    microphone, the page in `lang`), and a second browser for the client launched with `client_args`: the
    demo, the practitioner's page and the client's browser."""
    path = browser_for_media()
    from playwright.async_api import async_playwright

    async with room_server(tmp_path, redis_url, **SFU) as server, async_playwright() as pw:
        demo = await seed_demo(server.app.state.ctx, echo=False)
        with_devices = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        client_browser = await pw.chromium.launch(executable_path=path, args=client_args)
        try:
            prac = await new_page(with_devices, demo["links"]["practitioner"], lang)
            await enter_room(prac)
            yield demo, prac, client_browser
        finally:
            await client_browser.close()
            await with_devices.close()
