"""Two headless Chromium pages talk through the SFU in a loopback-only namespace; getStats() is the truth.

The page here is a minimal stand-in served by a tiny Starlette app inside the test; the rooms' real page
replaces it once signaling is integrated.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiortc.rtcrtpreceiver
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from media.config import MediaConfig
from media.errors import MediaError
from media.events import MediaEvent, MediaState, MediaStateChanged
from media.server import MediaServer
from tests.media_helpers import LOOPBACK, require_loopback_namespace, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("no_stray_tasks")]

CHROMIUM_ARGS = [
    "--allow-loopback-in-peer-connection",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>media test</title>
<script>
const params = new URLSearchParams(location.search);
let stream = null;
async function connect() {
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(resolve => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
  });
  const res = await fetch("/offer?" + params, {method: "POST", body: pc.localDescription.sdp});
  const body = await res.json();
  if (!res.ok) throw new Error(body.code);
  await pc.setRemoteDescription({type: "answer", sdp: body.sdp});
  window.pc = pc;
}
window.ready = (async () => {
  stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 320, height: 240}});
  await connect();
})();
// The media path died: the page builds a new peer connection over the same signaling channel.
window.rebuild = async () => { window.pc.close(); await connect(); };
window.inbound = async () => {
  const out = {};
  (await window.pc.getStats()).forEach(s => {
    if (s.type === "inbound-rtp") out[s.kind] = {
      framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0,
      packetsReceived: s.packetsReceived || 0, totalSamplesReceived: s.totalSamplesReceived || 0,
    };
  });
  return out;
};
</script>
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    require_loopback_namespace()


@pytest.fixture
def decoder_calls() -> Iterator[list[str]]:
    calls: list[str] = []
    original = aiortc.rtcrtpreceiver.get_decoder  # type: ignore[attr-defined]

    def recording(codec: Any) -> Any:
        calls.append(threading.current_thread().name)
        return original(codec)

    aiortc.rtcrtpreceiver.get_decoder = recording  # type: ignore[attr-defined]
    try:
        yield calls
    finally:
        aiortc.rtcrtpreceiver.get_decoder = original  # type: ignore[attr-defined]


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, MediaServer, list[MediaEvent]]]:
    events: list[MediaEvent] = []
    media = MediaServer(MediaConfig(announce_addresses=LOOPBACK), on_event=events.append)
    await media.start()

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def offer(request: Request) -> JSONResponse:
        sdp = (await request.body()).decode()
        try:
            answer = await media.handle_offer(request.query_params["room"], request.query_params["who"], sdp)
        except MediaError as exc:
            return JSONResponse({"code": exc.code}, status_code=400)
        return JSONResponse({"sdp": answer})

    app = Starlette(routes=[Route("/", page), Route("/offer", offer, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started, "the test page server")
    try:
        yield f"http://127.0.0.1:{port}", media, events
    finally:
        server.should_exit = True
        await task
        await media.stop()


async def test_two_chromium_pages_decode_each_other_through_the_sfu_which_decodes_nothing(
    site: tuple[str, MediaServer, list[MediaEvent]], decoder_calls: list[str]
) -> None:
    from playwright.async_api import async_playwright

    base, media, _ = site
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            pages = []
            for who in ("client", "practitioner"):
                context = await browser.new_context()
                page = await context.new_page()
                await page.goto(f"{base}/?room=session-1&who={who}")
                await page.evaluate("window.ready")
                pages.append(page)

            stats: list[dict[str, Any]] = [{}, {}]

            async def poll() -> bool:
                for i, page in enumerate(pages):
                    stats[i] = await page.evaluate("window.inbound()")
                return all(
                    s.get("video", {}).get("framesDecoded", 0) > 30
                    and s["video"]["frameWidth"] > 0
                    and s.get("audio", {}).get("packetsReceived", 0) > 50
                    for s in stats
                )

            deadline = asyncio.get_running_loop().time() + 30
            while not await poll():
                assert asyncio.get_running_loop().time() < deadline, f"no two-way media: {stats}"
                await asyncio.sleep(0.2)
            before = [s["video"]["framesDecoded"] for s in stats]
            deadline = asyncio.get_running_loop().time() + 30
            while not (
                await poll() and all(s["video"]["framesDecoded"] > b for s, b in zip(stats, before, strict=True))
            ):
                assert asyncio.get_running_loop().time() < deadline, f"decoding stalled: {stats}"
                await asyncio.sleep(0.2)
        finally:
            await browser.close()
    # Nothing in this process ever asked aiortc for a decoder: the SFU forwarded without decoding.
    assert decoder_calls == []
    assert media.counters.forwarded_packets["video"] > 0


async def test_a_chromium_page_that_rebuilds_its_connection_decodes_again_and_so_does_the_other(
    site: tuple[str, MediaServer, list[MediaEvent]],
) -> None:
    from playwright.async_api import async_playwright

    base, media, events = site
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            pages = []
            for who in ("client", "practitioner"):
                page = await (await browser.new_context()).new_page()
                await page.goto(f"{base}/?room=session-2&who={who}")
                await page.evaluate("window.ready")
                pages.append(page)

            async def decoded(page: Any) -> int:
                stats = await page.evaluate("window.inbound()")
                return int(stats.get("video", {}).get("framesDecoded", 0))

            async def until(what: str, check: Any) -> None:
                deadline = asyncio.get_running_loop().time() + 30
                while not await check():
                    assert asyncio.get_running_loop().time() < deadline, what
                    await asyncio.sleep(0.2)

            async def both_decoding() -> bool:
                return all([await decoded(pg) > 10 for pg in pages])

            await until("both decoding", both_decoding)
            other_before = await decoded(pages[1])
            await pages[0].evaluate("window.rebuild()")  # a new RTCPeerConnection: its counters restart

            async def both_again() -> bool:
                return await decoded(pages[0]) > 10 and await decoded(pages[1]) > other_before + 30

            await until("both decoding after the rebuild", both_again)
            assert sorted(media.rooms()["session-2"]) == ["client", "practitioner"]
            seen = [e.state for e in events if isinstance(e, MediaStateChanged) and e.participant_id == "client"]
            assert seen[-2:] == [MediaState.RECONNECTING, MediaState.CONNECTED], seen
            assert MediaState.CLOSED not in seen
        finally:
            await browser.close()
