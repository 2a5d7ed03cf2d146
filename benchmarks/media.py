"""Media forwarding benchmark: our SFU vs a naive aiortc MediaRelay (decode + re-encode) vs Janus VideoRoom.

    .venv/bin/python benchmarks/media.py [--rooms 10] [--seconds 8] [--rounds 3] [--max-rooms 60] [--skip-janus]

N rooms of two participants each publish pre-encoded VP8 (30 fps, ~1 Mbit/s) and Opus from a clip encoded
once with PyAV; the load generator never encodes or decodes: it packetises the clip itself and sends SRTP
straight on the ICE pair of its aiortc peer connections (media/fastpath.py), and measures what arrives by
payload identity (the SFUs forward payloads unchanged). Each server runs in its own process, and its CPU
time is read from /proc.

Everything runs in a fresh loopback-only network namespace (the script re-executes itself under
`unshare -n`); Janus also gets an `ifb` device with 127.0.0.2 because libnice ignores loopback interfaces.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fractions
import gc
import json
import os
import pickle
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "benchmarks" / "out"  # git-ignored
CLIP = CACHE / "clip-vp8-opus-v2.pickle"
FPS = 30
VIDEO_BITRATE = 1_000_000
CLIP_SECONDS = 10
MTU_PAYLOAD = 1100
LOOPBACK = ("127.0.0.1",)


# ---------------------------------------------------------------------------------------------------------
# The clip: encoded once, by PyAV, and cached.


def make_clip() -> dict[str, list[Any]]:
    if CLIP.exists():
        with CLIP.open("rb") as f:
            clip: dict[str, list[Any]] = pickle.load(f)
            return clip
    import av

    width, height = 640, 480
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height = width, height
    enc.pix_fmt = "yuv420p"
    enc.bit_rate = VIDEO_BITRATE
    enc.framerate = fractions.Fraction(FPS, 1)
    enc.time_base = fractions.Fraction(1, FPS)
    enc.gop_size = 2 * FPS
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    video: list[tuple[bytes, bool]] = []
    rng = random.Random(7)
    for i in range(CLIP_SECONDS * FPS):
        frame = av.VideoFrame(width, height, "yuv420p")
        # A moving pattern with some noise, so the encoder has work and frames differ.
        row = bytes((x + 3 * i) & 0xFF for x in range(width))
        noise = rng.randbytes(width * height // 16)  # detail the encoder must spend its bit budget on
        frame.planes[0].update(row * (height * 15 // 16) + noise)
        for plane in frame.planes[1:]:
            plane.update(bytes([(128 + i) & 0xFF]) * plane.buffer_size)
        frame.pts = i
        frame.time_base = enc.time_base
        for packet in enc.encode(frame):
            video.append((bytes(packet), bool(packet.is_keyframe)))
    for packet in enc.encode(None):
        video.append((bytes(packet), bool(packet.is_keyframe)))

    aenc = av.CodecContext.create("libopus", "w")
    aenc.sample_rate = 48000
    aenc.layout = "stereo"
    aenc.format = "s16"
    aenc.bit_rate = 32000
    aenc.time_base = fractions.Fraction(1, 48000)
    audio: list[bytes] = []
    import math

    for i in range(CLIP_SECONDS * 50):
        aframe = av.AudioFrame(format="s16", layout="stereo", samples=960)
        pcm = struct.pack(
            "<1920h", *(int(6000 * math.sin(2 * math.pi * 440 * (i * 960 + n // 2) / 48000)) for n in range(1920))
        )
        aframe.planes[0].update(pcm)
        aframe.sample_rate = 48000
        aframe.pts = i * 960
        aframe.time_base = aenc.time_base
        audio.extend(bytes(p) for p in aenc.encode(aframe))
    CACHE.mkdir(parents=True, exist_ok=True)
    clip = {"video": video, "audio": audio}
    with CLIP.open("wb") as f:
        pickle.dump(clip, f)
    return clip


# ---------------------------------------------------------------------------------------------------------
# Servers under test (our SFU and the MediaRelay baseline run as child processes of this script).


async def serve(kind: str, port: int) -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from media import fastpath
    from media.config import MediaConfig
    from media.errors import MediaError
    from media.server import MediaServer

    sfu: MediaServer | None = None
    if kind == "sfu":
        sfu = MediaServer(MediaConfig(announce_addresses=LOOPBACK))
        await sfu.start()

    relay_rooms: dict[str, dict[str, Any]] = {}

    async def relay_offer(room: str, who: str, sdp: str) -> str:
        from aiortc.contrib.media import MediaRelay
        from aiortc.mediastreams import MediaStreamTrack

        state = relay_rooms.setdefault(room, {"relay": MediaRelay(), "tracks": {}, "waiters": []})

        class Switch(MediaStreamTrack):
            """Sends the other participant's track, once it exists: decoded frames, re-encoded by aiortc."""

            def __init__(self, kind: str, me: str) -> None:
                super().__init__()
                self.kind = kind
                self.me = me
                self.source: Any = None

            async def recv(self) -> Any:
                while self.source is None:
                    for (owner, k), track in state["tracks"].items():
                        if owner != self.me and k == self.kind:
                            self.source = state["relay"].subscribe(track)
                    if self.source is None:
                        await asyncio.sleep(0.05)
                return await self.source.recv()

        pc = RTCPeerConnection()
        state.setdefault("pcs", []).append(pc)

        @pc.on("track")
        def on_track(track: Any) -> None:
            state["tracks"][(who, track.kind)] = track

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for t in pc.getTransceivers():
            pc.addTrack(Switch(t.kind, who))
        with fastpath.announce(LOOPBACK):
            await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            req = json.loads(line)
            if req.get("stats"):
                counters = dataclasses.asdict(sfu.counters) if sfu is not None else {}
                if lag_log:
                    ordered = sorted(lag_log)
                    counters["loop_lag_ms"] = {
                        "p50": round(ordered[len(ordered) // 2] * 1000, 2),
                        "p99": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
                        "max": round(ordered[-1] * 1000, 2),
                    }
                    lag_log.clear()
                if gc_log:
                    by_gen: dict[int, list[float]] = {}
                    for gen, took, _ in gc_log:
                        by_gen.setdefault(gen, []).append(took)
                    counters["gc"] = {
                        g: (len(v), round(max(v) * 1000, 2), round(sum(v) * 1000, 1)) for g, v in by_gen.items()
                    }
                    gc_log.clear()
                if sfu is not None and os.environ.get("MEDIA_BENCH_DEBUG"):
                    counters["peers"] = {
                        f"{r}/{p}": [str(sfu.state(r, p)), sfu.forwarded_to(r, p)]
                        for r, ps in sfu.rooms().items()
                        for p in ps
                    }
                writer.write(json.dumps(counters, default=str).encode() + b"\n")
                await writer.drain()
                continue
            try:
                if sfu is not None:
                    answer = await sfu.handle_offer(req["room"], req["who"], req["sdp"])
                else:
                    answer = await relay_offer(req["room"], req["who"], req["sdp"])
                writer.write(json.dumps({"sdp": answer}).encode() + b"\n")
            except MediaError as exc:
                writer.write(json.dumps({"error": exc.code}).encode() + b"\n")
            await writer.drain()
        writer.close()

    gc_log: list[tuple[int, float, int]] = []
    lag_log: list[float] = []
    if os.environ.get("MEDIA_BENCH_DEBUG"):

        async def lag_monitor() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lag_log.append(time.perf_counter() - t - 0.001)

        asyncio.create_task(lag_monitor())  # noqa: RUF006
        if os.environ.get("MEDIA_BENCH_DEBUG") == "slow":
            import logging

            logging.basicConfig(level=logging.WARNING)
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = 0.003
        started: list[float] = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                gc_log.append((info["generation"], time.perf_counter() - started[0], info["collected"]))

        gc.callbacks.append(on_gc)
    if os.environ.get("MEDIA_BENCH_GC_FREEZE", "1") == "1":
        # What the session server's entry point does once imports and startup are done (docs/media.md):
        # the ~45k objects of the imported libraries leave the collector's reach, so a full collection
        # no longer stalls forwarding for tens of milliseconds. MEDIA_BENCH_GC_FREEZE=0 measures without.
        gc.collect()
        gc.freeze()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------------------------------------------
# The load generator.


@dataclass
class Measure:
    window: bool = False
    received: int = 0
    latencies: list[float] = field(default_factory=list)
    frames_sent: dict[tuple[int, int], int] = field(default_factory=dict)  # (publisher, frame) -> packets
    frames_got: dict[tuple[int, int], int] = field(default_factory=dict)
    video_frames_received: int = 0  # for the transcoding baseline: complete frames, by marker
    lags: list[float] = field(default_factory=list)  # the load generator's own event-loop lateness
    sent: int = 0
    victims: frozenset[int] = frozenset({0, 1})  # room 0's publishers: the attacked room
    victim_latencies: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.received = self.video_frames_received = 0
        self.latencies, self.victim_latencies, self.lags = [], [], []
        self.frames_sent, self.frames_got = {}, {}


async def loop_lag(m: Measure, stop: asyncio.Event) -> None:
    """How late the load generator's loop wakes up: a floor under every latency it measures."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        if m.window:
            m.lags.append(time.perf_counter() - t - 0.001)


class Peer:
    """One aiortc peer connection of the load generator; media bypasses aiortc in both directions."""

    def __init__(self, index: int, m: Measure, sends: bool) -> None:
        from aiortc import RTCPeerConnection

        from media.server import _Placeholder

        self.index = index
        self.m = m
        self.pc = RTCPeerConnection()
        self.sends = sends
        self.tap: Any = None
        self.rx: Any = None
        self.tx: Any = None
        self.send: Any = None
        self.ssrc: dict[str, int] = {}
        self.pt: dict[str, int] = {}
        self.video_pts: set[int] = set()
        self.sent_keys: dict[bytes, tuple[float, tuple[int, int]]] | None = None
        self.peer_keys: dict[bytes, tuple[float, tuple[int, int]]] = {}
        self.seq = {"audio": random.randrange(0x10000), "video": random.randrange(0x10000)}
        self.ts = {"audio": random.randrange(1 << 32), "video": random.randrange(1 << 32)}
        self.picture_id = random.randrange(0x8000)
        self.frame_no = 0
        self.placeholder = _Placeholder
        self.server_addr: tuple[str, int] | None = None  # the server's media port for this peer

    def add_tracks(self, direction: str) -> None:
        for kind in ("audio", "video"):
            if direction == "sendrecv" or direction == "sendonly":
                self.pc.addTransceiver(self.placeholder(kind), direction=direction)
            else:
                self.pc.addTransceiver(kind, direction=direction)

    def attach(self) -> None:
        from media import fastpath

        self.tap = fastpath.Tap(self.pc, self.on_datagram)

    def learn(self, local_sdp: str, remote_sdp: str) -> None:
        from media.sdp import read_description

        local = read_description(local_sdp)
        remote = read_description(remote_sdp)
        for host, port in re.findall(r"a=candidate:\S+ 1 udp \d+ (127\.0\.0\.\d+) (\d+) typ host", remote_sdp):
            self.server_addr = (host, int(port))
        for kind in ("audio", "video"):
            section = local.section(kind)
            if section is not None and section.media_ssrc is not None:
                self.ssrc[kind] = section.media_ssrc
            rsection = remote.section(kind)
            if rsection is not None:
                want = "vp8" if kind == "video" else "opus"
                for pt, codec in rsection.codecs.items():
                    if codec.name == want:
                        self.pt.setdefault(kind, pt)
                        if kind == "video":
                            self.video_pts.add(pt)

    async def connected(self) -> None:
        from media import fastpath

        deadline = time.monotonic() + 30
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise RuntimeError(f"peer {self.index} never connected ({self.pc.connectionState})")
            await asyncio.sleep(0.02)
        while True:
            keys = self.tap.keys()
            send = self.tap.sender()
            if keys is not None and send is not None:
                # The load generator uses the same direct libsrtp path as the SFU: it must cost little,
                # or its own lateness would be what the benchmark measures.
                self.rx, self.tx = fastpath.Srtp(keys[0]), fastpath.Srtp(keys[1])
                self.send = send
                self.read_with_kernel_timestamps()
                return
            await asyncio.sleep(0.02)

    def read_with_kernel_timestamps(self) -> None:
        """Arrival times from the kernel (SO_TIMESTAMPNS), not from when this busy loop got round to it.

        Without this, the load generator's own event-loop lateness would be measured as server latency.
        Benchmark-only reach into asyncio: the selector loop's reader for the pair's socket is replaced.
        """
        protocol = self.tap.selected_protocol()
        transport = protocol.transport
        sock = transport._sock
        loop = transport._loop
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        aioice_received = type(protocol).datagram_received
        on_datagram = self.on_datagram

        def drain() -> None:
            for _ in range(64):
                try:
                    data, ancillary, _flags, addr = sock.recvmsg(2048, 64)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                if data and 127 < data[0] < 192:
                    arrival = None
                    for level, kind, cdata in ancillary:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = struct.unpack_from("qq", cdata)
                            arrival = sec + nsec * 1e-9
                    on_datagram(data, arrival)
                else:
                    aioice_received(protocol, data, addr)

        fd = sock.fileno()
        loop._remove_reader(fd)
        loop._add_reader(fd, drain)

    def on_datagram(self, data: bytes, arrival: float | None = None) -> None:
        rx = self.rx
        if rx is None or 191 < data[1] < 224:
            return
        now = arrival if arrival is not None else time.time()
        m = self.m
        # Every packet is unprotected, measured or not: the SRTP rollover counter must see the sequence
        # numbers wrap, or every packet after an unseen wrap fails authentication.
        n = rx.unprotect(data)
        if n < 12 or not m.window:
            return
        plain = rx.buf[0:n]
        m.received += 1
        first, second = plain[0], plain[1]
        if (second & 0x7F) not in self.video_pts:
            return
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            start += 4 + 4 * ((plain[start + 2] << 8) | plain[start + 3])
        if second & 0x80:
            m.video_frames_received += 1
        hit = self.peer_keys.get(plain[start : min(start + 20, n)] + plain[max(start, n - 12) : n])
        if hit is not None:
            (m.victim_latencies if hit[1][0] in m.victims else m.latencies).append(now - hit[0])
            m.frames_got[hit[1]] = m.frames_got.get(hit[1], 0) + 1

    def send_video(self, chunks: list[bytes]) -> None:
        if self.send is None or "video" not in self.pt:
            return
        pid = self.picture_id
        self.picture_id = (pid + 1) & 0x7FFF
        ts = self.ts["video"]
        self.ts["video"] = (ts + 90000 // FPS) & 0xFFFFFFFF
        frame_id = (self.index, self.frame_no)
        self.frame_no += 1
        m = self.m
        record = m.window and self.sent_keys is not None
        if record:
            m.frames_sent[frame_id] = len(chunks)
        now = time.time()  # the kernel stamps arrivals with this clock (CLOCK_REALTIME)
        tx = self.tx
        buf = tx.buf
        pt = self.pt["video"]
        ssrc = self.ssrc["video"]
        last = len(chunks) - 1
        for i, chunk in enumerate(chunks):
            seq = self.seq["video"]
            self.seq["video"] = (seq + 1) & 0xFFFF
            size = 16 + len(chunk)
            _RTP_VP8.pack_into(
                buf,
                0,
                0x80,
                (0x80 if i == last else 0) | pt,
                seq,
                ts,
                ssrc,
                0x90 if i == 0 else 0x80,
                0x80,
                0x8000 | pid,
            )
            buf[16:size] = chunk
            if record:
                assert self.sent_keys is not None
                self.sent_keys[buf[12 : min(32, size)] + buf[max(12, size - 12) : size]] = (now, frame_id)
            packet = tx.protect(size)
            if packet is not None:
                self.send(packet)
                m.sent += 1

    def send_audio(self, packet: bytes) -> None:
        if self.send is None or "audio" not in self.pt:
            return
        seq = self.seq["audio"]
        self.seq["audio"] = (seq + 1) & 0xFFFF
        ts = self.ts["audio"]
        self.ts["audio"] = (ts + 960) & 0xFFFFFFFF
        tx = self.tx
        _RTP.pack_into(tx.buf, 0, 0x80, self.pt["audio"], seq, ts, self.ssrc["audio"])
        size = 12 + len(packet)
        tx.buf[12:size] = packet
        out = tx.protect(size)
        if out is not None:
            self.send(out)


_RTP = struct.Struct("!BBHII")
SO_TIMESTAMPNS = 35  # Linux; the control message type is the same number
_RTP_VP8 = struct.Struct("!BBHIIBBH")  # RTP header + VP8 descriptor (X, I, M: 15-bit picture id)


def split(frame: bytes) -> list[bytes]:
    """Equal-sized packets, as browsers packetise (no tiny last packet)."""
    count = -(-len(frame) // MTU_PAYLOAD)
    size = -(-len(frame) // count)
    return [frame[i : i + size] for i in range(0, len(frame), size)]


async def pump(publishers: list[Peer], clip: dict[str, list[Any]], stop: asyncio.Event) -> None:
    """Send every publisher's clip in real time, with publishers spread over the frame interval."""
    video = [split(v) for v, _ in clip["video"]]
    audio = clip["audio"]
    start = time.perf_counter()
    phase = {p.index: random.random() / FPS for p in publishers}
    vnext = {p.index: start + phase[p.index] for p in publishers}
    anext = {p.index: start + phase[p.index] for p in publishers}
    # Each publisher starts at its own point of the clip: keyframes (every 2 s) are not synchronised across
    # publishers, as they would not be between real clients.
    vi = {k: random.randrange(len(video)) for k in vnext}
    ai = {k: random.randrange(len(audio)) for k in anext}
    while not stop.is_set():
        now = time.perf_counter()
        soonest = now + 0.005
        for p in publishers:
            k = p.index
            while vnext[k] <= now:
                p.send_video(video[vi[k] % len(video)])
                vi[k] += 1
                vnext[k] += 1 / FPS
            while anext[k] <= now:
                p.send_audio(audio[ai[k] % len(audio)])
                ai[k] += 1
                anext[k] += 0.02
            soonest = min(soonest, vnext[k], anext[k])
        await asyncio.sleep(max(0.0, soonest - time.perf_counter()))


def udp_errors() -> tuple[int, int]:
    """(receive-buffer drops, send-buffer drops) of this network namespace."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    row = dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=True))
    return row["RcvbufErrors"], row["SndbufErrors"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LineClient:
    def __init__(self, port: int) -> None:
        self.port = port

    async def stats(self) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b'{"stats": true}\n')
        await writer.drain()
        reply: dict[str, Any] = json.loads(await reader.readline())
        writer.close()
        return reply

    async def offer(self, room: str, who: str, sdp: str) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(json.dumps({"room": room, "who": who, "sdp": sdp}).encode() + b"\n")
        await writer.drain()
        reply = json.loads(await reader.readline())
        writer.close()
        if "sdp" not in reply:
            raise RuntimeError(reply)
        return str(reply["sdp"])


async def connect_line(port: int, rooms: int, m: Measure) -> tuple[list[Peer], list[Peer]]:
    from aiortc import RTCSessionDescription

    from media import fastpath

    client = LineClient(port)
    peers: list[Peer] = []
    for r in range(rooms):
        pair = []
        for w in range(2):
            peer = Peer(len(peers), m, sends=True)
            peer.add_tracks("sendrecv")
            with fastpath.announce(LOOPBACK):
                await peer.pc.setLocalDescription(await peer.pc.createOffer())
            answer = await client.offer(f"room-{r}", f"p{w}", peer.pc.localDescription.sdp)
            await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            peer.attach()
            peer.learn(peer.pc.localDescription.sdp, answer)
            pair.append(peer)
            peers.append(peer)
        a, b = pair
        a.sent_keys, b.sent_keys = {}, {}
        a.peer_keys, b.peer_keys = b.sent_keys, a.sent_keys
    await asyncio.gather(*(p.connected() for p in peers))
    return peers, peers


# ---------------------------------------------------------------------------------------------------------
# Janus.

JANUS_PRELOAD_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>
#ifndef IP_UNICAST_IF
#define IP_UNICAST_IF 50
#endif
typedef int (*real_t)(int, int, int, const void *, socklen_t);
int setsockopt(int fd, int level, int name, const void *value, socklen_t len) {
    static real_t real;
    if (!real) real = (real_t)dlsym(RTLD_NEXT, "setsockopt");
    if (level == IPPROTO_IP && name == IP_UNICAST_IF) return 0;  /* let libnice's packets go over lo */
    return real(fd, level, name, value, len);
}
"""


def install_janus() -> None:
    """Debian's `janus`, installed before the run fences itself off the network (apt needs it)."""
    if shutil.which("janus") is None:
        print("Installing Janus from Debian (the benchmark's anchor)...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "janus"], check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def janus_setup(workdir: Path) -> tuple[list[str], dict[str, str]]:
    if shutil.which("janus") is None:
        raise SystemExit("janus is not installed: run the benchmark from outside a network namespace once, "
                         "or `apt-get install janus`")
    libdir = Path("/usr/lib/x86_64-linux-gnu/janus")
    for sub in ("plugins", "transports", "events", "loggers", "conf"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / "plugins" / "libjanus_videoroom.so").symlink_to(libdir / "plugins" / "libjanus_videoroom.so")
    (workdir / "transports" / "libjanus_http.so").symlink_to(libdir / "transports" / "libjanus_http.so")
    conf = workdir / "conf"
    (conf / "janus.jcfg").write_text(
        f"""general: {{
    configs_folder = "{conf}"
    plugins_folder = "{workdir / "plugins"}"
    transports_folder = "{workdir / "transports"}"
    events_folder = "{workdir / "events"}"
    loggers_folder = "{workdir / "loggers"}"
    debug_level = 3
    admin_secret = "{os.urandom(8).hex()}"
}}
media: {{
    rtp_port_range = "20000-40000"
}}
nat: {{
    ice_enforce_list = "ifb0"
    full_trickle = false
    ice_lite = false
}}
"""
    )
    (conf / "janus.transport.http.jcfg").write_text(
        """general: { json = "indented" base_path = "/janus" http = true port = 8088 ip = "127.0.0.1" https = false }
admin: { admin_base_path = "/admin" admin_http = false }
"""
    )
    (conf / "janus.plugin.videoroom.jcfg").write_text("general: { }\n")
    shim_c = workdir / "shim.c"
    shim_c.write_text(JANUS_PRELOAD_C)
    shim = workdir / "shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(shim_c), "-ldl"], check=True)
    for cmd in (
        "ip link add ifb0 type ifb",
        "ip addr add 127.0.0.2/32 dev ifb0",
        "ip link set ifb0 up",
    ):
        subprocess.run(cmd.split(), check=False, capture_output=True)
    env = dict(os.environ, LD_PRELOAD=str(shim))
    return ["janus", "-F", str(conf), "-C", str(conf / "janus.jcfg")], env


class Janus:
    def __init__(self) -> None:
        import httpx

        self.http = httpx.AsyncClient(base_url="http://127.0.0.1:8088/janus", timeout=30)

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body, transaction=os.urandom(6).hex())
        res = await self.http.post(path, json=body)
        data: dict[str, Any] = res.json()
        if data.get("janus") == "error":
            raise RuntimeError(data)
        return data

    async def session(self) -> int:
        return int((await self.call("", {"janus": "create"}))["data"]["id"])

    async def attach(self, session: int) -> int:
        data = await self.call(f"/{session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return int(data["data"]["id"])

    async def message(
        self, session: int, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        data = await self.call(f"/{session}/{handle}", msg)
        if data.get("janus") == "success":
            return data
        # Asynchronous answer: long-poll the session for this handle's event.
        while True:
            res = await self.http.get(f"/{session}", params={"maxev": 1})
            event = res.json()
            if event.get("sender") == handle and event.get("janus") == "event":
                return dict(event)

    async def keepalive(self, session: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await self.call(f"/{session}", {"janus": "keepalive"})
            await asyncio.sleep(10)


async def connect_janus(rooms: int, m: Measure, stop: asyncio.Event) -> tuple[list[Peer], list[Peer], list[Any]]:
    from aiortc import RTCSessionDescription

    from media import fastpath

    janus = Janus()
    session = await janus.session()
    extra: list[Any] = [asyncio.create_task(janus.keepalive(session, stop))]
    publishers: list[Peer] = []
    everyone: list[Peer] = []
    n = 0
    rooms_pubs: list[tuple[int, list[tuple[Peer, Any]]]] = []
    for r in range(rooms):
        room_id = 1000 + r
        admin = await janus.attach(session)
        await janus.message(
            session,
            admin,
            {
                "request": "create",
                "room": room_id,
                "publishers": 2,
                "videocodec": "vp8",
                "audiocodec": "opus",
                "bitrate": 0,
                "fir_freq": 0,
                "notify_joining": False,
            },
        )
        pubs = []
        for w in range(2):
            peer = Peer(n, m, sends=True)
            n += 1
            peer.add_tracks("sendonly")
            with fastpath.announce(LOOPBACK):
                await peer.pc.setLocalDescription(await peer.pc.createOffer())
            handle = await janus.attach(session)
            event = await janus.message(
                session,
                handle,
                {
                    "request": "joinandconfigure",
                    "room": room_id,
                    "ptype": "publisher",
                    "display": f"p{w}",
                    "audio": True,
                    "video": True,
                },
                {"type": "offer", "sdp": peer.pc.localDescription.sdp},
            )
            answer = event["jsep"]["sdp"]
            feed = event["plugindata"]["data"]["id"]
            await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            peer.attach()
            peer.learn(peer.pc.localDescription.sdp, answer)
            pubs.append((peer, feed))
            publishers.append(peer)
            everyone.append(peer)
        rooms_pubs.append((room_id, pubs))
    # Janus accepts subscribers only for feeds whose PeerConnection is up.
    await asyncio.gather(*(p.connected() for p in publishers))
    for room_id, pubs in rooms_pubs:
        for w in range(2):
            other_peer, other_feed = pubs[1 - w]
            sub = Peer(n, m, sends=False)
            n += 1
            handle = await janus.attach(session)
            event = await janus.message(
                session, handle, {"request": "join", "room": room_id, "ptype": "subscriber", "feed": other_feed}
            )
            if "jsep" not in event:
                raise RuntimeError(f"janus refused a subscriber: {event}")
            offer = event["jsep"]["sdp"]
            await sub.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            with fastpath.announce(LOOPBACK):
                await sub.pc.setLocalDescription(await sub.pc.createAnswer())
            sub.attach()
            sub.learn(sub.pc.localDescription.sdp, offer)
            await janus.message(
                session,
                handle,
                {"request": "start", "room": room_id},
                {"type": "answer", "sdp": sub.pc.localDescription.sdp},
            )
            everyone.append(sub)
            if other_peer.sent_keys is None:
                other_peer.sent_keys = {}
            sub.peer_keys = other_peer.sent_keys
    await asyncio.gather(*(p.connected() for p in everyone))
    extra.append(janus.http)
    return publishers, everyone, extra


# ---------------------------------------------------------------------------------------------------------
# One run.


def junk_pool(rng: random.Random, size: int = 1024) -> list[bytes]:
    """What a port on the internet gets: empty, 1-byte, oversize, random, and RTP/RTCP/DTLS/STUN look-alikes."""
    makers: list[Callable[[], bytes]] = [
        lambda: b"",
        lambda: bytes([rng.randrange(256)]),
        lambda: b"\x80\xc8" + rng.randbytes(rng.randrange(1500, 4000)),
        lambda: rng.randbytes(rng.randrange(1, 1500)),
        lambda: b"\x80" + bytes([rng.randrange(96, 128)]) + rng.randbytes(rng.randrange(10, 1200)),
        lambda: b"\x81\xc9" + rng.randbytes(rng.randrange(6, 100)),
        lambda: bytes([rng.randrange(20, 64)]) + rng.randbytes(rng.randrange(0, 200)),
        lambda: struct.pack("!HHI", 1, 0, 0x2112A442) + rng.randbytes(12),
    ]
    return [makers[i % len(makers)]() for i in range(size)]


async def attack(target: tuple[str, int], rate: float, stop: asyncio.Event, sent: list[int]) -> None:
    """Junk at `rate` datagrams per second at one participant's media port, from four sockets of its own."""
    pool = junk_pool(random.Random(14))
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    for sock in socks:
        sock.setblocking(False)
    start = time.perf_counter()
    i = 0
    try:
        while not stop.is_set():
            due = int((time.perf_counter() - start) * rate)  # a fixed rate, whatever this loop's lateness
            while i < due:
                with contextlib.suppress(OSError):  # a full buffer loses junk, as the network would
                    socks[i & 3].sendto(pool[i % len(pool)], target)
                    sent[0] += 1
                i += 1
            await asyncio.sleep(0.005)
    finally:
        for sock in socks:
            sock.close()


def _p(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] * 1000 if ordered else None


async def measure_window(server: str, pid: int, m: Measure, seconds: float) -> dict[str, Any]:
    """One measured window: the server's CPU, what arrived, frames complete, latency (room 0 apart)."""
    m.reset()
    m.window = True
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    udp0 = udp_errors()
    await asyncio.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.perf_counter()
    udp1 = udp_errors()
    received = m.received
    frames_sent = dict(m.frames_sent)
    vframes = m.video_frames_received
    await asyncio.sleep(0.5)  # what was in flight at the end of the window
    m.window = False
    elapsed = t1 - t0

    def complete(frames: dict[tuple[int, int], int]) -> float:
        return sum(1 for f, n in frames.items() if m.frames_got.get(f, 0) >= n) / max(1, len(frames))

    if os.environ.get("MEDIA_BENCH_DEBUG"):
        bad = [(f, n, m.frames_got.get(f, 0)) for f, n in frames_sent.items() if m.frames_got.get(f, 0) < n]
        order = {f: i for i, f in enumerate(frames_sent)}
        dead = sorted({f[0] for f, n, got in bad if got == 0})
        print("  publishers with frames never received:", dead, flush=True)
        print("  incomplete:", len(bad), [(order[f], n, got) for f, n, got in bad[:30]], flush=True)
    # The baseline re-encodes, so its payloads cannot be matched: it counts complete frames instead.
    delivery = vframes / max(1, len(frames_sent)) if server == "relay" else complete(frames_sent)
    everyone = m.latencies + m.victim_latencies
    return {
        "us_per_pkt": (cpu1 - cpu0) / max(1, received) * 1e6,
        "pkts_per_s": received / elapsed,
        "cpu_share": (cpu1 - cpu0) / elapsed,
        "delivery": min(1.0, delivery),
        "neighbour_delivery": complete({f: n for f, n in frames_sent.items() if f[0] not in m.victims}),
        "victim_delivery": complete({f: n for f, n in frames_sent.items() if f[0] in m.victims}),
        "latency_p50_ms": statistics.median(everyone) * 1000 if everyone else None,
        "latency_p99_ms": _p(everyone, 0.99),
        "neighbour_latency_p99_ms": _p(m.latencies, 0.99),
        "victim_latency_p99_ms": _p(m.victim_latencies, 0.99),
        "udp_drops": (udp1[0] - udp0[0]) + (udp1[1] - udp0[1]),
        "loadgen_lag_p99_ms": _p(m.lags, 0.99),
    }


async def run_one(
    server: str, rooms: int, seconds: float, clip: dict[str, list[Any]], loop: str = "uvloop", attack_rate: float = 0
) -> dict[str, Any]:
    """One server at `rooms` rooms: a clean window, then (attack_rate > 0) a window with room 0's first
    participant's media port under a junk flood of attack_rate datagrams per second."""
    m = Measure()
    stop = asyncio.Event()
    extra: list[Any] = []
    workdir = Path(tempfile.mkdtemp(prefix=f"media-bench-{server}-"))
    port = 0
    if server == "janus":
        cmd, env = janus_setup(workdir)
        log = open(workdir / "janus.log", "wb")  # noqa: SIM115, ASYNC230 - setup, before any measurement
        proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 8088), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("janus did not start: " + (workdir / "janus.log").read_text()[-2000:])
            await asyncio.sleep(0.1)
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            server,
            "--port",
            str(port),
            "--loop",
            loop,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
        )
        assert proc.stdout is not None
        await proc.stdout.readline()
    try:
        if server == "janus":
            publishers, everyone, extra = await connect_janus(rooms, m, stop)
        else:
            publishers, everyone = await connect_line(port, rooms, m)
        pump_task = asyncio.create_task(pump(publishers, clip, stop))
        lag_task = asyncio.create_task(loop_lag(m, stop))
        await asyncio.sleep(3.0 if server != "relay" else 5.0)  # keyframes, decoders and BWE settle
        # The load generator's own collector pauses would show up as latency of whichever server is measured.
        gc.collect()
        gc.freeze()
        gc.disable()
        if server == "sfu" and os.environ.get("MEDIA_BENCH_DEBUG"):
            await LineClient(port).stats()  # resets the server's collector log: count the window only
        result: dict[str, Any] = {"server": server, "rooms": rooms, "loop": None if server == "janus" else loop}
        result.update(await measure_window(server, proc.pid, m, seconds))
        if attack_rate > 0:
            target = publishers[0].server_addr
            assert target is not None, "no host candidate in the answer"
            attack_stop = asyncio.Event()
            sent = [0]
            flood = asyncio.create_task(attack(target, attack_rate, attack_stop, sent))
            await asyncio.sleep(1.0)
            before = sent[0]
            t0 = time.perf_counter()
            under = await measure_window(server, proc.pid, m, seconds)
            result["attack_rate"] = (sent[0] - before) / (time.perf_counter() - t0)
            attack_stop.set()
            await flood
            result.update({f"attack_{key}": value for key, value in under.items()})
        gc.enable()
        gc.unfreeze()
        stop.set()
        await pump_task
        await lag_task
        if server == "sfu":
            print("  sfu counters:", await LineClient(port).stats(), "loadgen sent:", m.sent, flush=True)
    finally:
        stop.set()
        for p in locals().get("everyone", []):
            with contextlib.suppress(Exception):
                await p.pc.close()
        for e in extra:
            if isinstance(e, asyncio.Task):
                e.cancel()
            elif hasattr(e, "aclose"):
                await e.aclose()
        proc.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
        if server == "janus":
            subprocess.run(["ip", "link", "del", "ifb0"], check=False, capture_output=True)  # noqa: ASYNC221
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def fmt(r: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "   n/a" if v is None else f"{v:6.2f}"

    name = r["server"] if r.get("loop") in (None, "uvloop") else f"{r['server']}@{r['loop']}"
    line = (
        f"{name:11} rooms={r['rooms']:3} us/pkt={r['us_per_pkt']:7.1f} pkts/s={r['pkts_per_s']:8.0f} "
        f"cpu={r['cpu_share']:5.2f} delivery={r['delivery']:.4f} p50={ms(r['latency_p50_ms'])} "
        f"p99={ms(r['latency_p99_ms'])} loadgen-lag-p99={ms(r.get('loadgen_lag_p99_ms'))} udp-drops={r['udp_drops']}"
    )
    if "attack_us_per_pkt" in r:
        line += (
            f"\n{'':11} under attack ({r['attack_rate']:.0f} junk/s at room 0): us/pkt={r['attack_us_per_pkt']:7.1f} "
            f"pkts/s={r['attack_pkts_per_s']:8.0f} cpu={r['attack_cpu_share']:5.2f} "
            f"neighbours: delivery={r['attack_neighbour_delivery']:.4f} p99={ms(r['attack_neighbour_latency_p99_ms'])}"
            f"; attacked room: delivery={r['attack_victim_delivery']:.4f} "
            f"p99={ms(r['attack_victim_latency_p99_ms'])} udp-drops={r['attack_udp_drops']}"
        )
    return line


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field median over rounds (None where a field has no value)."""
    out: dict[str, Any] = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in runs if r.get(key) is not None]
            out[key] = statistics.median(values) if values else None
    return out


async def bench(args: argparse.Namespace) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    clip = make_clip()
    print(f"our SFU runs on {args.loop}" + (" (as session-server serves it)" if args.loop == "uvloop" else
          " (session-server serves on uvloop)"), flush=True)
    results: dict[str, dict[str, Any]] = {}
    # Each entry: (label, server, event loop). "sfu" is the served configuration.
    order: list[tuple[str, str, str]] = [("sfu", "sfu", args.loop), ("janus", "janus", "")]
    if args.compare_loop:
        other = "asyncio" if args.loop == "uvloop" else "uvloop"
        order.append((f"sfu-{other}", "sfu", other))
    if args.skip_janus:
        order = [o for o in order if o[0] != "janus"]
    # SFU and Janus alternate for several rounds: the machine's background load drifts, and each figure is
    # the median of its rounds (the ratio is the median of per-round ratios, both halves of a round having
    # run back to back under the same load).
    rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in order}
    for _ in range(args.rounds):
        for label, server, loop in order:
            r = await run_one(server, args.rooms, args.seconds, clip, loop=loop, attack_rate=args.attack_rate)
            rounds[label].append(r)
            print(fmt(r), flush=True)
    if not args.skip_relay:  # the transcoding baseline saturates a core: one round says enough
        r = await run_one("relay", args.rooms, args.seconds, clip, loop=args.loop)
        rounds["relay"] = [r]
        print(fmt(r), flush=True)
    for label, runs in rounds.items():
        results[label] = median_run(runs)

    def per_round(key: str, other: str = "janus") -> float | None:
        ratios = [a[key] / b[key] for a, b in zip(rounds["sfu"], rounds.get(other, []), strict=False)
                  if a.get(key) and b.get(key)]
        return round(statistics.median(ratios), 3) if ratios else None

    max_clean = 0
    ramp: list[dict[str, Any]] = []
    rooms = args.rooms
    while rooms <= args.max_rooms:
        if rooms == args.rooms:
            r = rounds["sfu"][0]
        else:
            r = await run_one("sfu", rooms, args.seconds, clip, loop=args.loop)
            print(fmt(r), flush=True)
        ramp.append(r)
        if r["delivery"] < 0.99:
            break
        max_clean = rooms
        rooms += args.step
    sfu = results["sfu"]
    janus = results.get("janus", {})
    relay = results.get("relay", {})

    def get(r: dict[str, Any], key: str, digits: int = 3) -> float | None:
        value = r.get(key)
        return round(value, digits) if isinstance(value, (int, float)) else None

    summary = {
        "rooms": args.rooms,
        "loop": args.loop,
        "us_per_pkt": get(sfu, "us_per_pkt", 2),
        "janus_us_per_pkt": get(janus, "us_per_pkt", 2),
        "baseline_us_per_pkt": get(relay, "us_per_pkt", 2),
        "pkts_per_s": get(sfu, "pkts_per_s", 0),
        "janus_pkts_per_s": get(janus, "pkts_per_s", 0),
        "baseline_pkts_per_s": get(relay, "pkts_per_s", 0),
        "latency_p50_ms": get(sfu, "latency_p50_ms"),
        "latency_p99_ms": get(sfu, "latency_p99_ms"),
        "janus_latency_p50_ms": get(janus, "latency_p50_ms"),
        "janus_latency_p99_ms": get(janus, "latency_p99_ms"),
        "delivery": get(sfu, "delivery", 4),
        "janus_delivery": get(janus, "delivery", 4),
        "baseline_delivery": get(relay, "delivery", 4),
        "max_rooms_clean": max_clean,
        "ratio_vs_janus": per_round("us_per_pkt"),
        "attack_rate": get(sfu, "attack_rate", 0),
        "attack_us_per_pkt": get(sfu, "attack_us_per_pkt", 2),
        "janus_attack_us_per_pkt": get(janus, "attack_us_per_pkt", 2),
        "attack_ratio_vs_janus": per_round("attack_us_per_pkt"),
        "attack_delivery": get(sfu, "attack_neighbour_delivery", 4),
        "attack_latency_p99_ms": get(sfu, "attack_neighbour_latency_p99_ms"),
        "attack_victim_delivery": get(sfu, "attack_victim_delivery", 4),
        "janus_attack_delivery": get(janus, "attack_neighbour_delivery", 4),
        "janus_attack_latency_p99_ms": get(janus, "attack_neighbour_latency_p99_ms"),
        "janus_attack_victim_delivery": get(janus, "attack_victim_delivery", 4),
        "rounds": args.rounds,
        "load_average": os.getloadavg()[0],
        "ratio_vs_baseline": round(sfu["us_per_pkt"] / relay["us_per_pkt"], 3) if relay else None,
    }
    for label in rounds:
        if label.startswith("sfu-"):
            other_loop = results[label]
            summary[f"{label[4:]}_us_per_pkt"] = get(other_loop, "us_per_pkt", 2)
            summary[f"{label[4:]}_attack_us_per_pkt"] = get(other_loop, "attack_us_per_pkt", 2)
            summary[f"{label[4:]}_latency_p99_ms"] = get(other_loop, "latency_p99_ms")
            summary[f"ratio_{args.loop}_vs_{label[4:]}"] = per_round("us_per_pkt", label)
    print(json.dumps(summary), flush=True)


def only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--max-rooms", type=int, default=60)
    parser.add_argument("--step", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="SFU/Janus rounds at --rooms (medians)")
    parser.add_argument("--skip-janus", action="store_true")
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument("--attack-rate", type=float, default=5000,
                        help="junk datagrams per second at one participant's port in the attack phase (0: none)")
    parser.add_argument("--compare-loop", action="store_true",
                        help="also run our SFU on the other event loop each round (why the served loop is the one)")
    parser.add_argument("--serve", choices=["sfu", "relay"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="event loop of the Python servers (session-server serves on uvloop)")
    args = parser.parse_args()
    if args.serve:
        profile = os.environ.get("MEDIA_BENCH_PROFILE")
        if profile:  # a developer's aid: where does the server spend its time?
            import cProfile
            import signal

            profiler = cProfile.Profile()

            def dump(*_: Any) -> None:
                profiler.disable()
                profiler.dump_stats(f"{profile}.{args.serve}")
                os._exit(0)

            signal.signal(signal.SIGTERM, dump)
            profiler.enable()
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(serve(args.serve, args.port))
        else:
            asyncio.run(serve(args.serve, args.port))
        return
    if not only_loopback():
        if not args.skip_janus:
            install_janus()
        # Fence everything (servers, clients, Janus) into a namespace where only lo exists.
        argv = " ".join(["exec", sys.executable, *map(_quote, sys.argv)])
        os.execvp("unshare", ["unshare", "-n", "sh", "-c", f"ip link set lo up; {argv}"])
    asyncio.run(bench(args))


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


if __name__ == "__main__":
    main()
