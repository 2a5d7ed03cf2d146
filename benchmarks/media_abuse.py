"""What one participant can take of the SFU's CPU by abusing its own RTCP, and what the other rooms feel.

    .venv/bin/python benchmarks/media_abuse.py [--rooms 5] [--seconds 6] [--rate 200] [--rounds 1]

N rooms of two forward the media benchmark's clip (benchmarks/media.py: pre-encoded VP8 at ~1 Mbit/s and
Opus, SRTP sent by the load generator itself) through one SFU process served as benchmarks/media.py serves
it. In room 0 one participant is the attacker. The phases, each `--seconds` long, run in one process of the
SFU, one after the other:

- `baseline`: nobody abuses anything;
- `nack`: the attacker sends `--rate` NACKs a second, each about 1,200 bytes listing 4,930 sequence numbers
  (290 items of 17) from well before the send history to well past it;
- `remb`: the attacker sends `--rate` REMBs a second, each naming its video stream 255 times with an absurd
  bitrate (alternately 0 and 10^15 bit/s).

For each phase: the SFU process's CPU (share of one core, from /proc), CPU per forwarded packet, the
neighbouring rooms' frame delivery and latency (p50/p99), and what the SFU retransmitted or passed on (its
counters). The ratios compare each attack with the baseline of the same run.

Those figures need a quiet machine: the load generator shares it, and when it falls behind (its loop lag is
printed) the neighbours' delivery and latency measure it rather than the SFU. So the run starts with a cost
phase that does not depend on scheduling: in this process, the SFU's own code (`_Peer.on_datagram`, real
libsrtp) handles a forwarded RTP packet (the baseline), a hostile NACK and a hostile REMB, and the CPU time
of each is read with `time.process_time`. The most one participant can take is then the RTCP rate limit
times the cost of its worst packet, as a share of one core.

The last line is one JSON object. It re-executes itself in a loopback-only network namespace, as
benchmarks/media.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_media_benchmark() -> Any:
    """benchmarks/media.py, under a name that does not shadow the `media` package."""
    spec = importlib.util.spec_from_file_location("media_benchmark", ROOT / "benchmarks" / "media.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["media_benchmark"] = module
    spec.loader.exec_module(module)
    return module


mb = load_media_benchmark()


class SeqWatch:
    """Stands in for the attacker's SRTP receiver: remembers the newest video sequence number it was sent."""

    def __init__(self, inner: Any, media_ssrc: int) -> None:
        self.inner = inner
        self.buf = inner.buf
        self.ssrc = struct.pack("!I", media_ssrc)
        self.newest = 0

    def unprotect(self, data: bytes) -> int:
        if data[8:12] == self.ssrc:
            self.newest = (data[2] << 8) | data[3]
        n: int = self.inner.unprotect(data)
        return n


class Attacker:
    def __init__(self, peer: Any) -> None:
        from media.sdp import read_description

        video = read_description(peer.pc.remoteDescription.sdp).section("video")
        assert video is not None and video.media_ssrc is not None
        self.media_ssrc = video.media_ssrc
        self.peer = peer
        self.srtp = peer.tap.keys()[1]  # the attacker's own outbound session: its RTCP is authenticated
        self.watch = SeqWatch(peer.rx, self.media_ssrc)
        peer.rx = self.watch
        self.sent = 0

    def nack(self) -> bytes:
        from media import rtcp

        around = self.watch.newest
        items = b"".join(struct.pack("!HH", (around - 600 + 17 * i) & 0xFFFF, 0xFFFF) for i in range(290))
        body = struct.pack("!II", 0x5EED, self.media_ssrc) + items
        return struct.pack("!BBH", 0x80 | rtcp.FMT_NACK, rtcp.RTPFB, len(body) // 4) + body

    def remb(self) -> bytes:
        from media import rtcp

        return rtcp.build_remb(0x5EED, 0 if self.sent % 2 else 10**15, (self.media_ssrc,) * 255)

    async def flood(self, kind: str, rate: float, stop: asyncio.Event) -> None:
        start = time.perf_counter()
        first = self.sent
        while not stop.is_set():
            due = start + (self.sent - first) / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            packet = self.nack() if kind == "nack" else self.remb()
            self.peer.send(self.srtp.protect_rtcp(packet))
            self.sent += 1


def packet_costs(repeat: int = 1000) -> dict[str, float]:
    """CPU µs the SFU spends on one forwarded RTP packet, one hostile NACK and one hostile REMB (in process)."""
    import pylibsrtp
    from aiortc import RTCPeerConnection

    from media import fastpath, rtcp
    from media.config import MediaConfig
    from media.sdp import read_description
    from media.server import MediaServer, _Participant, _Peer, _Room

    offer = (ROOT / "tests" / "corpus" / "sdp" / "aiortc-offer.sdp").read_bytes().decode().replace("\r\n", "\n")
    desc = read_description(offer.replace("\n", "\r\n"))
    config = MediaConfig()
    server = MediaServer(config)
    room = _Room("cost")
    key = bytes(range(30))
    sent = [0]

    def send(datagram: bytes) -> None:
        sent[0] += 1

    peers = []
    for who in ("pub", "sub"):
        peer = _Peer(server, _Participant(room, who), RTCPeerConnection())
        peer.configure(desc, desc, config.nack_history_size, config.keyframe_min_interval_s)
        outbound = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        inbound = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
        peer.tx, peer.tx_codec, peer.send = outbound, fastpath.Srtp(outbound), send
        peer.rx, peer.rx_codec = inbound, fastpath.Srtp(inbound)
        peers.append(peer)
    pub, sub = peers
    for kind, inn in pub.ins.items():
        inn.targets = [sub.outs[kind]]
        sub.outs[kind].source = inn
    video_pt = next(pt for pt, (inn, key_, apt) in pub.pt_table.items() if inn.kind == "video" and apt is None)
    video_in = pub.ins["video"]
    assert video_in.ssrc is not None
    publisher = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    subscriber = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    payload = bytes(range(256)) * 4 + bytes(76)  # 1,100 bytes, as the clip's packets
    rtp = [publisher.protect(struct.pack("!BBHII", 0x80, video_pt, seq & 0xFFFF, seq * 3000, video_in.ssrc)
                             + payload) for seq in range(repeat + 600)]
    out = sub.outs["video"]
    for data in rtp[:600]:  # fill the send history
        pub.on_datagram(data)
    remb = rtcp.build_remb(0x5EED, 10**15, (out.ssrc,) * 255)
    costs = {}
    t = time.process_time()
    for data in rtp[600:]:
        pub.on_datagram(data)
    costs["rtp"] = (time.process_time() - t) / repeat * 1e6
    newest = out.rewriter.last_seq  # the NACK names the numbers the subscriber was sent, not the publisher's
    items = b"".join(struct.pack("!HH", (newest - 600 + 17 * i) & 0xFFFF, 0xFFFF) for i in range(290))
    body = struct.pack("!II", 0x5EED, out.ssrc) + items
    nack = struct.pack("!BBH", 0x80 | rtcp.FMT_NACK, rtcp.RTPFB, len(body) // 4) + body
    for name, packet in (("nack", nack), ("remb", remb)):
        protected = [subscriber.protect_rtcp(packet) for _ in range(repeat)]
        sent[0] = 0
        if hasattr(sub, "feedback"):  # the rate limit aside: the cost of a packet that passes it
            sub.feedback = type(sub.feedback)(1e9, 1e9)
        t = time.process_time()
        for data in protected:
            sub.on_datagram(data)
        costs[name] = (time.process_time() - t) / repeat * 1e6
        costs[f"{name}_datagrams_sent"] = sent[0] / repeat
    costs["rtcp_rate_per_s"] = getattr(config, "rtcp_rate_per_s", 0.0)  # 0: no limit (an older SFU)
    return costs


def neighbours(m: Any, attacked: set[int]) -> tuple[float, int]:
    sent = {f: n for f, n in m.frames_sent.items() if f[0] not in attacked}
    complete = sum(1 for f, n in sent.items() if m.frames_got.get(f, 0) >= n)
    return complete / max(1, len(sent)), len(sent)


async def phase(name: str, args: argparse.Namespace, proc: Any, port: int, m: Any, attacker: Attacker,
                attacked: set[int]) -> dict[str, Any]:
    stop = asyncio.Event()
    flood = asyncio.create_task(attacker.flood(name, args.rate, stop)) if name != "baseline" else None
    await asyncio.sleep(1.0)  # the flood reaches its rate; the window starts on a steady state
    before = await mb.LineClient(port).stats()
    m.frames_sent.clear()
    m.frames_got.clear()
    m.latencies.clear()
    m.received = 0
    m.window = True
    m.lags.clear()
    attacks0 = attacker.sent
    udp0 = mb.udp_errors()
    cpu0, t0 = mb.cpu_seconds(proc.pid), time.perf_counter()
    await asyncio.sleep(args.seconds)
    cpu1, t1 = mb.cpu_seconds(proc.pid), time.perf_counter()
    udp1 = mb.udp_errors()
    received = m.received
    attacks = attacker.sent - attacks0
    after = await mb.LineClient(port).stats()
    if os.environ.get("MEDIA_BENCH_DEBUG"):
        print("  sfu peers:", after.get("peers"), flush=True)
    await asyncio.sleep(0.5)  # what was in flight at the end of the window
    m.window = False
    stop.set()
    if flood is not None:
        await flood
    delivery, frames = neighbours(m, attacked)
    lat = sorted(m.latencies)
    elapsed = t1 - t0

    def delta(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))

    return {
        "phase": name,
        "cpu_share": (cpu1 - cpu0) / elapsed,
        "us_per_pkt": (cpu1 - cpu0) / max(1, received) * 1e6,
        "attack_packets_per_s": attacks / elapsed,
        "neighbour_delivery": delivery,
        "neighbour_frames": frames,
        "neighbour_p50_ms": statistics.median(lat) * 1000 if lat else None,
        "neighbour_p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else None,
        "forwarded_per_s": sum(after["forwarded_packets"].values()) / elapsed
        - sum(before["forwarded_packets"].values()) / elapsed,
        "udp_drops": (udp1[0] - udp0[0]) + (udp1[1] - udp0[1]),
        "loadgen_lag_p99_ms": sorted(m.lags)[int(0.99 * (len(m.lags) - 1))] * 1000 if m.lags else None,
        "rtx_per_s": delta("nacks_answered") / elapsed,
        "rtx_bytes_per_s": delta("rtx_bytes") / elapsed,
        "nacks_passed_on_per_s": delta("nacks_passed_on") / elapsed,
        "rembs_forwarded_per_s": delta("rembs_forwarded") / elapsed,
        "rtcp_rate_limited_per_s": delta("rtcp_rate_limited") / elapsed,
    }


def fmt(r: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    return (
        f"{r['phase']:8} cpu={r['cpu_share']:.3f} us/pkt={r['us_per_pkt']:6.1f} "
        f"attack/s={r['attack_packets_per_s']:6.0f} neighbours: delivery={r['neighbour_delivery']:.4f} "
        f"p50={ms(r['neighbour_p50_ms'])} p99={ms(r['neighbour_p99_ms'])} | fwd/s={r['forwarded_per_s']:.0f} "
        f"udp-drops={r['udp_drops']} loadgen-lag-p99={ms(r['loadgen_lag_p99_ms'])} rtx/s={r['rtx_per_s']:.0f} "
        f"rtx_B/s={r['rtx_bytes_per_s']:.0f} passed_on/s={r['nacks_passed_on_per_s']:.0f} "
        f"remb_fwd/s={r['rembs_forwarded_per_s']:.1f} rtcp_limited/s={r['rtcp_rate_limited_per_s']:.0f}"
    )


async def bench(args: argparse.Namespace) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    costs = packet_costs()
    worst = max(costs["nack"], costs["remb"])
    print(f"cost     rtp={costs['rtp']:.1f} us  nack={costs['nack']:.1f} us ({costs['nack'] / costs['rtp']:.1f}x)  "
          f"remb={costs['remb']:.1f} us ({costs['remb'] / costs['rtp']:.1f}x)  at most "
          f"{costs['rtcp_rate_per_s'] * worst / 1e6:.3f} of a core per participant", flush=True)
    clip = mb.make_clip()
    m = mb.Measure()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = ROOT if args.server_root is None else args.server_root
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(root / "benchmarks" / "media.py"), "--serve", "sfu", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, cwd=str(root),
    )
    assert proc.stdout is not None
    await proc.stdout.readline()
    stop = asyncio.Event()
    everyone: list[Any] = []
    try:
        publishers, everyone = await mb.connect_line(port, args.rooms, m)
        attacked = {0, 1}  # room 0's two participants: the attacker (index 1) and its victim
        attacker = Attacker(everyone[1])
        pump_task = asyncio.create_task(mb.pump(publishers, clip, stop))
        lag_task = asyncio.create_task(mb.loop_lag(m, stop))
        await asyncio.sleep(3.0)  # keyframes and the SFU's first reports settle
        gc.collect()
        gc.freeze()
        results: dict[str, list[dict[str, Any]]] = {"baseline": [], "nack": [], "remb": []}
        for _ in range(args.rounds):
            for name in results:
                r = await phase(name, args, proc, port, m, attacker, attacked)
                results[name].append(r)
                print(fmt(r), flush=True)
        stop.set()
        await pump_task
        await lag_task
    finally:
        stop.set()
        for p in everyone:
            with contextlib.suppress(Exception):
                await p.pc.close()
        proc.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
    med = {name: mb.median_run(runs) for name, runs in results.items()}
    base = med["baseline"]

    def r3(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    summary: dict[str, Any] = {"rtp_us": r3(costs["rtp"]), "nack_us": r3(costs["nack"]),
                               "remb_us": r3(costs["remb"]), "nack_cost_ratio": r3(costs["nack"] / costs["rtp"]),
                               "remb_cost_ratio": r3(costs["remb"] / costs["rtp"]),
                               "max_attacker_cpu_share": r3(costs["rtcp_rate_per_s"] * worst / 1e6),
                               "rooms": args.rooms, "seconds": args.seconds, "attack_rate": args.rate,
                               "rounds": args.rounds, "baseline_cpu_share": r3(base["cpu_share"]),
                               "baseline_us_per_pkt": r3(base["us_per_pkt"]),
                               "baseline_neighbour_delivery": r3(base["neighbour_delivery"]),
                               "baseline_neighbour_p99_ms": r3(base["neighbour_p99_ms"])}
    for name in ("nack", "remb"):
        r = med[name]
        summary.update({
            f"{name}_cpu_share": r3(r["cpu_share"]),
            f"{name}_cpu_ratio": r3(r["cpu_share"] / base["cpu_share"]),
            f"{name}_attacker_cpu_share": r3(r["cpu_share"] - base["cpu_share"]),
            f"{name}_us_per_pkt": r3(r["us_per_pkt"]),
            f"{name}_neighbour_delivery": r3(r["neighbour_delivery"]),
            f"{name}_neighbour_p99_ms": r3(r["neighbour_p99_ms"]),
        })
    summary["nack_rtx_per_s"] = r3(med["nack"]["rtx_per_s"])
    summary["nack_rtx_bytes_per_s"] = r3(med["nack"]["rtx_bytes_per_s"])
    summary["remb_forwarded_per_s"] = r3(med["remb"]["rembs_forwarded_per_s"])
    summary["load_average"] = os.getloadavg()[0]
    print(json.dumps(summary), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=float, default=200.0, help="attack packets per second")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the three phases (medians)")
    parser.add_argument("--server-root", help="serve the SFU of another checkout of the project (before/after)")
    parser.add_argument("--cost-repeat", type=int, default=1000, help="packets of each kind in the cost phase")
    parser.add_argument("--cost-only", action="store_true",
                        help="only the in-process cost of each packet kind (of --server-root's code if given)")
    args = parser.parse_args()
    if args.server_root is not None:
        args.server_root = Path(args.server_root).resolve()
    if args.cost_only:
        if args.server_root is not None:  # measure another checkout's SFU code in this process
            sys.path.insert(0, str(args.server_root))
        costs = packet_costs(args.cost_repeat)
        print(json.dumps({k: round(v, 3) for k, v in costs.items()}), flush=True)
        return
    if not mb.only_loopback():
        argv = " ".join(["exec", sys.executable, *map(mb._quote, sys.argv)])
        os.execvp("unshare", ["unshare", "-n", "sh", "-c", f"ip link set lo up; {argv}"])
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
