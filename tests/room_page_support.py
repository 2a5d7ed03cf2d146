"""What the room page tests share: the server's settings for them, reading the page's media, where the
screenshots go."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .support import eventually

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
