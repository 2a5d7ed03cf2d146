"""Helpers for the media tests (no conftest: the lead merges fixtures later).

WebRTC tests must run in a network namespace that has only `lo`, so that no packet can leave the machine:
    unshare -n sh -c 'ip link set lo up; exec .venv/bin/python -m pytest -m netns tests/test_media_*.py'
Outside such a namespace they skip, except under CI=true, where a skip would hide a broken runner: there they
fail.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from media import fastpath
from media.server import MediaServer

LOOPBACK = ("127.0.0.1",)


def only_loopback() -> bool:
    """True inside a network namespace whose only interface is an up `lo`."""
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        return False
    with open("/sys/class/net/lo/operstate") as f:
        state = f.read().strip()
    return state in ("unknown", "up")


def require_loopback_namespace() -> None:
    if only_loopback():
        return
    message = (
        "needs a loopback-only network namespace: "
        "unshare -n sh -c 'ip link set lo up; exec .venv/bin/python -m pytest -m netns ...'"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


async def wait_for(
    predicate: Callable[[], bool], what: str | Callable[[], str], within: float = 20.0, step: float = 0.05
) -> None:
    """Poll until predicate() holds; on the deadline, fail saying what was missing."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {within:.0f} s waiting for: {text}")
        await asyncio.sleep(step)


class PatternVideoTrack(VideoStreamTrack):
    """A camera stand-in: frames of a fixed size, encoded by the *client* (as a browser would)."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self.n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        shade = (self.n * 7) % 255
        for i, plane in enumerate(frame.planes):
            plane.update(bytes([shade if i == 0 else 128]) * plane.buffer_size)
        self.n += 1
        frame.pts = pts
        frame.time_base = time_base
        return frame


class ToneAudioTrack(AudioStreamTrack):
    """A microphone stand-in: a 440 Hz tone, so received audio is distinguishable from silence."""

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        assert isinstance(frame, av.AudioFrame)
        samples = frame.samples
        start = frame.pts or 0
        data = array.array("h", (int(math.sin(2 * math.pi * 440 * (start + i) / 48000) * 8000) for i in range(samples)))
        tone = av.AudioFrame(format="s16", layout="mono", samples=samples)
        tone.planes[0].update(data.tobytes())
        tone.sample_rate = 48000
        tone.pts = frame.pts
        tone.time_base = fractions.Fraction(1, 48000)
        return tone


@dataclass
class Received:
    frames: int = 0
    width: int = 0
    height: int = 0
    audio_frames: int = 0
    loud_audio_frames: int = 0


@dataclass
class Client:
    """A participant's browser, played by aiortc: publishes a camera and a mic, plays what it receives."""

    name: str
    video: bool = True
    audio: bool = True
    width: int = 320
    height: int = 240
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    got: Received = field(default_factory=Received)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    video_sender_track: PatternVideoTrack | None = None

    def __post_init__(self) -> None:
        if self.video:
            self.video_sender_track = PatternVideoTrack(self.width, self.height)
            self.pc.addTrack(self.video_sender_track)
        else:
            self.pc.addTransceiver("video", direction="recvonly")
        if self.audio:
            self.pc.addTrack(ToneAudioTrack())
        else:
            self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.got.frames += 1
                    self.got.width, self.got.height = frame.width, frame.height
                elif isinstance(frame, av.AudioFrame):
                    self.got.audio_frames += 1
                    pcm = array.array("h", bytes(frame.planes[0]))
                    if pcm and max(abs(x) for x in pcm[:2000]) > 1000:
                        self.got.loud_audio_frames += 1
        except Exception:
            return

    async def offer(self) -> str:
        with fastpath.announce(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def join(self, server: MediaServer, room: str) -> None:
        answer = await server.handle_offer(room, self.name, await self.offer())
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.pc.close()


def cut_media(pc: RTCPeerConnection) -> None:
    """Make a client's media path go dead both ways (a train entering a tunnel), without any goodbye.

    Test-only reach into aioice: outgoing datagrams on the selected pair are dropped, and incoming ones
    are swallowed before aiortc sees them.
    """
    transceiver = pc.getTransceivers()[0]
    connection = transceiver.sender.transport.transport._connection
    pair = connection._nominated[1]
    protocol = pair.protocol

    async def send_nothing(*args: object) -> None:
        return None

    # On the protocol rather than its transport: uvloop's transports have read-only methods.
    protocol.send_data = send_nothing
    protocol.send_stun = lambda *args: None
    protocol.datagram_received = lambda *args: None
    connection._query_consent_task and connection._query_consent_task.cancel()
