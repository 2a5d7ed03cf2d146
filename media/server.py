"""The SFU: one MediaServer per process, rooms of two participants, one peer connection per participant.

Imperative shell around the pure modules (sdp, rewrite, rtcp, keyframe, stats, quality, routing). The only
code that touches aiortc/aioice internals is media/fastpath.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pylibsrtp
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp
from av.frame import Frame
from prometheus_client.registry import CollectorRegistry

from media import errors, fastpath, feedback, rtcp
from media.config import MediaConfig
from media.errors import MediaError
from media.events import MediaEvent, MediaState, MediaStateChanged, QualityReport
from media.keyframe import KeyframeGate
from media.memory import MemoryReleaser
from media.metrics import Counters, register
from media.quality import DirectionStats, PoorStreak, classify, worst
from media.rewrite import SendHistory, SeqTsRewriter, build_rtx, patch_header, strip_extension, unwrap_rtx
from media.routing import MAX_PARTICIPANTS, PeerView, plan
from media.sdp import Description, Section, check_offer, map_candidates, read_description
from media.stats import InboundStats, StreamSnapshot, interval_loss

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
KINDS = ("audio", "video")


class _Placeholder(MediaStreamTrack):
    """Lets aiortc answer sendrecv without ever producing a frame: the SFU writes the RTP itself."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] | None = None

    async def recv(self) -> Frame:
        self._never = asyncio.get_running_loop().create_future()
        await self._never
        raise AssertionError("unreachable")


@dataclass(slots=True, eq=False)
class _In:
    """One stream a participant publishes (per kind) on one peer connection."""

    kind: str
    peer: _Peer
    clock_rate: int
    stats: InboundStats
    ssrc: int | None = None
    gate: KeyframeGate | None = None
    targets: list[_Out] = field(default_factory=list)
    prev: StreamSnapshot | None = None


@dataclass(slots=True, eq=False)
class _Out:
    """One stream the server sends a participant (per kind) on one peer connection."""

    kind: str
    peer: _Peer
    clock_rate: int
    ssrc: int
    rtx_ssrc: int | None
    pt_map: dict[str, int]  # publisher codec key -> this subscriber's payload type
    rtx_pt: dict[int, int]  # payload type -> its RTX payload type
    rewriter: SeqTsRewriter
    history: SendHistory | None
    source: _In | None = None
    rtx_seq: int = 0
    packets: int = 0
    octets: int = 0
    prev_octets: int = 0
    rtx_packets: int = 0
    rtx_octets: int = 0  # retransmitted payload bytes
    sr_sent: dict[int, float] = field(default_factory=dict)  # LSR -> time we sent that SR
    last_block: rtcp.ReportBlock | None = None
    retransmitter: feedback.Retransmitter | None = None  # NACK answers: window, once per RTT, budget
    remb: feedback.RembGate | None = None


class _Peer:
    """One peer connection of one participant (a reconnection makes a new one)."""

    def __init__(self, server: MediaServer, participant: _Participant, pc: RTCPeerConnection) -> None:
        self.server = server
        self.participant = participant
        self.pc = pc
        self.counters = server.counters
        self.created = time.monotonic()
        self.connected = False
        self.closed = False
        self.last_datagram = self.created
        self.last_rtp = self.created
        self.rx: pylibsrtp.Session | None = None
        self.tx: pylibsrtp.Session | None = None
        self.send: fastpath.Sender | None = None
        self.rx_codec: fastpath.Srtp | None = None
        self.tx_codec: fastpath.Srtp | None = None
        self.tap: fastpath.Tap | None = None
        self.rtcp_ssrc = random.randrange(1, 0xFFFFFFFF)
        self.ins: dict[str, _In] = {}
        self.outs: dict[str, _Out] = {}
        self.outs_by_ssrc: dict[int, _Out] = {}
        # payload type -> (stream, codec key, media payload type if this is RTX)
        self.pt_table: dict[int, tuple[_In, str, int | None]] = {}
        self.rtt_s: float | None = None
        self.prev_time = self.created
        self.feedback = feedback.FeedbackLimiter(server.config.rtcp_rate_per_s, server.config.rtcp_burst)

    # -- setup from the negotiated descriptions ---------------------------------------------------

    def configure(self, offer: Description, answer: Description, history_size: int, kf_interval: float) -> None:
        for section in answer.sections:
            if section.kind not in KINDS or section.port == 0:
                continue
            codecs = {c.payload_type: c for c in section.codecs.values()}
            media_codecs = [c for c in codecs.values() if c.name != "rtx"]
            if not media_codecs:
                continue
            clock = media_codecs[0].clock_rate
            offered = offer.section(section.kind)
            if section.direction in ("sendrecv", "recvonly"):
                inn = _In(section.kind, self, clock, InboundStats(clock))
                if section.kind == "video":
                    inn.gate = KeyframeGate(kf_interval)
                if offered is not None:
                    inn.ssrc = offered.media_ssrc
                self.ins[section.kind] = inn
                for c in media_codecs:
                    self.pt_table[c.payload_type] = (inn, c.key, None)
                for rtx_pt, apt in section.rtx_apt.items():
                    if apt in codecs:
                        self.pt_table[rtx_pt] = (inn, codecs[apt].key, apt)
            if section.direction in ("sendrecv", "sendonly") and section.media_ssrc is not None:
                out = _Out(
                    kind=section.kind,
                    peer=self,
                    clock_rate=clock,
                    ssrc=section.media_ssrc,
                    rtx_ssrc=section.rtx_ssrc,
                    pt_map={c.key: c.payload_type for c in reversed(media_codecs)},
                    rtx_pt={apt: rtx for rtx, apt in section.rtx_apt.items()},
                    rewriter=SeqTsRewriter(clock, random.randrange(0x10000), random.randrange(1 << 32)),
                    history=SendHistory(history_size) if section.kind == "video" else None,
                    rtx_seq=random.randrange(0x10000),
                )
                self.guard(out)
                self.outs[section.kind] = out
                self.outs_by_ssrc[out.ssrc] = out

    def view(self, audio_only: bool, video_held: bool = False) -> PeerView:
        return PeerView(
            receives=frozenset(self.outs) if self.connected else frozenset(),
            publishes=frozenset(self.ins) if self.connected else frozenset(),
            audio_only=audio_only,
            video_held=video_held,
        )

    def bind(self) -> bool:
        """Take the SRTP sessions and the selected pair once DTLS is up."""
        if self.tap is None or self.closed:
            return False
        keys = self.tap.keys()
        send = self.tap.sender()
        if keys is None or send is None:
            return False
        self.rx, self.tx = keys
        self.rx_codec = fastpath.Srtp(self.rx)
        self.tx_codec = fastpath.Srtp(self.tx)
        self.send = send
        return True

    # -- the forwarding path -------------------------------------------------------------------------

    def on_datagram(self, data: bytes) -> None:
        # The per-packet path: every line here costs microseconds times packets per second. media.guard let
        # only SRTP/SRTCP of at least 12 bytes from the selected pair's address through; liveness moves only
        # once SRTP authenticated it (RFC 7675), so junk sprayed at a dead participant's port does not.
        now = time.monotonic()
        codec = self.rx_codec
        if codec is None:
            if not self.bind():
                return
            codec = self.rx_codec
            assert codec is not None
        if 191 < data[1] < 224:
            self.on_rtcp(data, now)
            return
        n = codec.unprotect(data)
        if n < 12:
            self.counters.srtp_errors += 1
            return
        self.last_datagram = now
        plain: bytes = codec.buf[0:n]
        entry = self.pt_table.get(plain[1] & 0x7F)
        if entry is None:
            return
        inn, key, apt = entry
        if apt is not None:
            if inn.ssrc is None:
                return
            unwrapped = unwrap_rtx(plain, apt, inn.ssrc)
            if unwrapped is None:
                return
            plain = bytes(unwrapped)
        first, second, seq, ts, ssrc = _HEADER.unpack_from(plain)
        counters = self.counters
        counters.received_packets += 1
        if apt is None:
            if ssrc != inn.ssrc:
                self.new_source(inn, ssrc)
            inn.stats.update(seq, ts, now, n)
            self.last_rtp = now
        targets = inn.targets
        if not targets:
            return
        if first & 0x10:
            # Extension ids are negotiated per peer connection (and sdes:mid names the publisher's m-line):
            # dropped; the subscriber demultiplexes by the SSRCs of its answer.
            plain = strip_extension(plain)
            first &= 0xEF
        size = len(plain)
        marker = second & 0x80
        kind = inn.kind
        for out in targets:
            out_pt = out.pt_map.get(key)
            sub = out.peer
            tx = sub.tx_codec
            if out_pt is None or tx is None:
                continue
            out_seq, out_ts = out.rewriter.map(ssrc, seq, ts, now)
            buf = tx.buf
            buf[0:size] = plain
            _HEADER.pack_into(buf, 0, first, marker | out_pt, out_seq, out_ts, out.ssrc)
            if out.history is not None:
                out.history.store(out_seq, plain, out_pt, out_ts)
            packet = tx.protect(size)
            if packet is None:
                counters.srtp_errors += 1
                continue
            sub.send(packet)  # type: ignore[misc]
            out.packets += 1
            out.octets += size - 12
            counters.forwarded_packets[kind] += 1
            counters.forwarded_bytes[kind] += size

    def on_consent(self) -> None:
        """An authenticated consent check (STUN) from the selected address: the participant is there."""
        self.last_datagram = time.monotonic()

    def new_source(self, inn: _In, ssrc: int) -> None:
        inn.ssrc = ssrc
        inn.stats.reset_source()
        inn.prev = None

    # -- RTCP ----------------------------------------------------------------------------------------

    def send_rtcp(self, packet: bytes) -> None:
        if self.tx is None or self.send is None or self.closed:
            return
        with contextlib.suppress(pylibsrtp.Error):
            self.send(self.tx.protect_rtcp(packet))

    def on_rtcp(self, data: bytes, now: float) -> None:
        assert self.rx is not None
        try:
            plain = self.rx.unprotect_rtcp(data)
        except (pylibsrtp.Error, ValueError):
            self.counters.srtp_errors += 1
            return
        self.last_datagram = now
        self.on_feedback(plain, now)

    def forward_sender_report(self, sr: rtcp.SenderReport, now: float) -> None:
        # The publisher's NTP time is kept (lip sync between its audio and video depends on it); its RTP
        # time is moved onto the subscriber's timeline.
        for inn in self.ins.values():
            if inn.ssrc != sr.ssrc:
                continue
            for out in inn.targets:
                if out.rewriter.source != sr.ssrc:
                    continue
                rewritten = rtcp.SenderReport(out.ssrc, sr.ntp, out.rewriter.map_ts(sr.rtp_ts), out.packets, out.octets)
                out.sr_sent[(sr.ntp >> 16) & 0xFFFFFFFF] = now
                if len(out.sr_sent) > 8:
                    del out.sr_sent[next(iter(out.sr_sent))]
                out.peer.send_rtcp(rtcp.build_sr(rewritten))

    def on_report_blocks(self, blocks: Iterable[rtcp.ReportBlock], now: float) -> None:
        for block in blocks:
            out = self.outs_by_ssrc.get(block.ssrc)
            if out is None:
                continue
            out.last_block = block
            sent = out.sr_sent.get(block.lsr) if block.lsr else None
            if sent is not None:
                rtt = max(0.0, now - sent - block.dlsr / 65536)
                self.rtt_s = rtt if self.rtt_s is None else 0.8 * self.rtt_s + 0.2 * rtt
            src = out.source
            if src is None or src.ssrc is None or out.rewriter.source != src.ssrc:
                continue
            # The subscriber's loss and delay reach the publisher as a report about its own stream; LSR and
            # DLSR refer to the publisher's own SR (forwarded with its NTP), so its RTT is end to end.
            highest = (block.highest_seq & 0xFFFF0000) | out.rewriter.unmap_seq(block.highest_seq & 0xFFFF)
            passed = rtcp.ReportBlock(
                src.ssrc,
                block.fraction_lost,
                block.packets_lost,
                highest,
                block.jitter,
                block.lsr,
                block.dlsr,
            )
            src.peer.send_rtcp(rtcp.build_rr(src.peer.rtcp_ssrc, (passed,)))

    # -- what a participant's feedback may cost (media/feedback.py) ---------------------------------------

    def guard(self, out: _Out) -> None:
        cfg = self.server.config
        if out.history is not None:
            out.retransmitter = feedback.Retransmitter(cfg.nack_history_size, cfg.rtx_budget_share,
                                                       cfg.rtx_burst_bytes)
        out.remb = feedback.RembGate(cfg.remb_min_interval_s)

    def on_feedback(self, plain: bytes, now: float) -> None:
        """One authenticated compound RTCP packet: rate limited, reduced to what it asks for, then acted on."""
        counters = self.counters
        if not self.feedback.take(now):
            counters.rtcp_rate_limited += 1
            return
        d = feedback.digest(rtcp.parse(plain))
        counters.rtcp_duplicates += d.collapsed
        for sr in d.sender_reports.values():
            self.forward_sender_report(sr, now)
        self.on_report_blocks(d.report_blocks.values(), now)
        for media_ssrc in d.keyframes:
            out = self.outs_by_ssrc.get(media_ssrc)
            if out is not None and out.source is not None:
                self.server.request_keyframe(out.source, now)
        for media_ssrc, lost in d.nacks.items():
            self.on_nack(media_ssrc, lost, now)
        if d.remb is not None:
            counters.rembs_clamped += d.remb_clamped
            self.on_remb(d.remb, now)

    def on_nack(self, media_ssrc: int, lost: list[int], now: float) -> None:
        out = self.outs_by_ssrc.get(media_ssrc)
        if out is None or self.tx is None or self.send is None:
            return
        counters = self.counters
        counters.nacks_received += len(lost)
        if out.retransmitter is None:
            return
        plan = out.retransmitter.plan(
            lost,
            now=now,
            rtt_s=self.rtt_s,
            newest=out.rewriter.last_seq,
            sent=out.packets,
            forwarded_octets=out.octets,
            history=out.history,
        )
        counters.nacks_unknown += plan.unknown
        counters.nacks_repeated += plan.repeated
        counters.nacks_over_budget += plan.over_budget
        missing = plan.pass_on
        for seq, body, pt, ts in plan.resend:
            rtx_pt = out.rtx_pt.get(pt)
            if rtx_pt is None or out.rtx_ssrc is None:
                missing.append(seq)
                continue
            # A plain resend of the same sequence number would fail the receiver's SRTP replay check.
            original = bytearray(body)
            patch_header(original, pt, seq, ts, out.ssrc)
            rtx = build_rtx(original, rtx_pt, out.rtx_seq, out.rtx_ssrc)
            out.rtx_seq = (out.rtx_seq + 1) & 0xFFFF
            with contextlib.suppress(pylibsrtp.Error):
                self.send(self.tx.protect(bytes(rtx)))
            counters.nacks_answered += 1
            counters.rtx_bytes += len(rtx) - 12
            out.rtx_packets += 1
            out.rtx_octets += len(rtx) - 12
        src = out.source
        if missing and src is not None and src.ssrc is not None and out.rewriter.source == src.ssrc:
            lost_there = [out.rewriter.unmap_seq(s) for s in missing]
            src.peer.send_rtcp(rtcp.build_nack(src.peer.rtcp_ssrc, src.ssrc, lost_there))
            counters.nacks_passed_on += len(missing)

    def on_remb(self, remb: rtcp.Remb, now: float) -> None:
        for ssrc in remb.ssrcs:
            out = self.outs_by_ssrc.get(ssrc)
            if out is None or out.remb is None:
                continue
            bitrate = out.remb.offer(remb.bitrate, now)
            if bitrate is None:
                self.counters.rembs_held += 1
            else:
                self.send_remb(out, bitrate)

    def send_remb(self, out: _Out, bitrate: int) -> None:
        src = out.source
        if src is not None and src.ssrc is not None:
            src.peer.send_rtcp(rtcp.build_remb(src.peer.rtcp_ssrc, bitrate, (src.ssrc,)))
            self.counters.rembs_forwarded += 1

    def release_held_feedback(self, now: float) -> None:
        """REMBs held back by the interval go out once it is over (a tick's work)."""
        for out in self.outs.values():
            bitrate = out.remb.due(now) if out.remb is not None else None
            if bitrate is not None:
                self.send_remb(out, bitrate)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.connected = False
        self.rx = self.tx = None
        self.rx_codec = self.tx_codec = None
        self.send = None
        for inn in self.ins.values():
            inn.targets = []
        if self.tap is not None:
            self.tap.release()
        self.pc.remove_all_listeners()
        await self.pc.close()
        self.server.counters.peer_connections -= 1


@dataclass(slots=True, eq=False)
class _Participant:
    room: _Room
    id: str
    state: MediaState = MediaState.CONNECTING
    peer: _Peer | None = None
    audio_only: bool = False
    video_held: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    streak: PoorStreak | None = None
    last_report: QualityReport | None = None


@dataclass(slots=True, eq=False)
class _Room:
    id: str
    participants: dict[str, _Participant] = field(default_factory=dict)


EventCallback = Callable[[MediaEvent], None]


class TaskStarter(Protocol):
    """Who owns the SFU's tasks: the application's task supervisor, so that its shutdown cancels and
    awaits them with everything else. It may refuse (RuntimeError, closing the coroutine) once stopping."""

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...


class _OwnTasks:
    """The SFU on its own (tests, benchmarks): plain asyncio tasks, awaited by `MediaServer.stop`."""

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=name)


class MediaServer:
    """The process's SFU. Create one, `await start()`, call from the room layer, `await stop()`."""

    def __init__(
        self,
        config: MediaConfig,
        *,
        registry: CollectorRegistry | None = None,
        on_event: EventCallback | None = None,
        tasks: TaskStarter | None = None,
    ) -> None:
        self.config = config
        self._owner: TaskStarter = tasks if tasks is not None else _OwnTasks()
        self.counters = Counters()
        self._on_event = on_event
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tick_task: asyncio.Task[None] | None = None
        self._running = False
        self._last_quality = time.monotonic()
        self._memory = MemoryReleaser()
        self._rooms_closed = False  # since memory was last released
        if registry is not None:
            register(registry, self.counters)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        fastpath.check_contract()
        fastpath.install_announce_hook()
        fastpath.install_close_race_fix()
        self._running = True
        self._tick_task = self._owner.start("media-tick", self._tick_loop())

    async def stop(self) -> None:
        self._running = False
        for room_id in list(self._rooms):
            await self.close_room(room_id)
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the room layer's API ------------------------------------------------------------------------

    async def handle_offer(self, room_id: str, participant_id: str, sdp: str) -> str:
        """Answer a participant's offer. A new offer from a known participant replaces its peer connection
        (renegotiation or reconnection after its media path died); the room sees `reconnecting`."""
        if not self._running:
            raise MediaError(errors.SERVER_STOPPED)
        cfg = self.config
        offer = check_offer(sdp, max_bytes=cfg.max_sdp_bytes, max_sections=cfg.max_media_sections)
        room = self._rooms.get(room_id)
        participant = room.participants.get(participant_id) if room is not None else None
        if participant is None and room is not None and len(room.participants) >= MAX_PARTICIPANTS:
            raise MediaError(errors.ROOM_FULL, f"at most {MAX_PARTICIPANTS} participants with media")
        if room is None:
            room = _Room(room_id)
        if participant is None:
            participant = _Participant(room, participant_id)
            participant.streak = PoorStreak(self.config.poor_reports_before_audio_only)
        async with participant.lock:
            peer, answer = await self._negotiate(participant, offer, sdp)
            if not self._running:
                await peer.close()
                raise MediaError(errors.SERVER_STOPPED)
            # Two first offers to a new room negotiate at once (both pages open together): the room the
            # first one registered is the room, and the second joins it rather than a room of its own.
            registered = self._rooms.get(room_id)
            if registered is None:
                self._rooms[room_id] = room
                self.counters.rooms += 1
            elif registered is not room:
                room = participant.room = registered
            if participant.id in room.participants and room.participants[participant.id] is not participant:
                await peer.close()
                raise MediaError(errors.NEGOTIATION_FAILED, "participant was replaced")
            if participant.id not in room.participants and len(room.participants) >= MAX_PARTICIPANTS:
                await peer.close()
                raise MediaError(errors.ROOM_FULL)
            room.participants[participant.id] = participant
            old = participant.peer
            participant.peer = peer
            if old is not None:
                await old.close()
                self._set_state(participant, MediaState.RECONNECTING, "new offer")
                self._reroute(room)
            elif participant.state is not MediaState.CONNECTING:
                self._set_state(participant, MediaState.RECONNECTING, "new offer")
            else:
                self._emit(MediaStateChanged(room.id, participant.id, MediaState.CONNECTING))
            return answer

    async def add_candidate(
        self,
        room_id: str,
        participant_id: str,
        candidate: str | None,
        sdp_mid: str | None = None,
        sdp_mline_index: int | None = None,
    ) -> None:
        """A trickled ICE candidate from the participant ('' or None: end of candidates)."""
        peer = self._peer(room_id, participant_id)
        if not candidate:
            with contextlib.suppress(Exception):
                await peer.pc.addIceCandidate(None)
            return
        text = candidate[len("candidate:") :] if candidate.startswith("candidate:") else candidate
        if len(text) > 512:
            raise MediaError(errors.INVALID_CANDIDATE, "too long")
        try:
            parsed = candidate_from_sdp(text)
            parsed.sdpMid = sdp_mid
            parsed.sdpMLineIndex = sdp_mline_index if sdp_mid is None else None
            if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
                parsed.sdpMLineIndex = 0
            await peer.pc.addIceCandidate(parsed)
        except Exception as exc:
            raise MediaError(errors.INVALID_CANDIDATE, str(exc)[:100]) from exc

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        room = self._rooms.get(room_id)
        participant = room.participants.pop(participant_id, None) if room is not None else None
        if room is None or participant is None:
            return
        async with participant.lock:
            if participant.peer is not None:
                await participant.peer.close()
                participant.peer = None
        self._set_state(participant, MediaState.CLOSED, "removed")
        self._reroute(room)
        if not room.participants and self._rooms.get(room_id) is room:
            del self._rooms[room_id]
            self.counters.rooms -= 1
            self.release_memory_soon()

    async def close_room(self, room_id: str) -> None:
        room = self._rooms.get(room_id)
        if room is None:
            return
        for participant_id in list(room.participants):
            await self.remove_participant(room_id, participant_id)
        if self._rooms.get(room_id) is room:
            del self._rooms[room_id]
            self.counters.rooms -= 1
            self.release_memory_soon()

    def release_memory_soon(self) -> None:
        """Hand freed memory back to the OS on the next housekeeping tick, as after a room closes."""
        self._rooms_closed = True

    def set_audio_only(self, room_id: str, participant_id: str, audio_only: bool) -> None:
        """Stop (or resume) forwarding video *to* this participant."""
        room = self._rooms.get(room_id)
        participant = room.participants.get(participant_id) if room is not None else None
        if room is None or participant is None:
            raise MediaError(errors.UNKNOWN_PARTICIPANT)
        if participant.audio_only != audio_only:
            participant.audio_only = audio_only
            self._reroute(room)

    def hold_video(self, room_id: str, participant_id: str, held: bool) -> None:
        """Stop (or resume) forwarding this participant's video *to the others*; with `set_audio_only`,
        video stops both ways for a participant who chose audio only."""
        room = self._rooms.get(room_id)
        participant = room.participants.get(participant_id) if room is not None else None
        if room is None or participant is None:
            raise MediaError(errors.UNKNOWN_PARTICIPANT)
        if participant.video_held != held:
            participant.video_held = held
            self._reroute(room)

    def quality(self, room_id: str, participant_id: str) -> QualityReport | None:
        room = self._rooms.get(room_id)
        participant = room.participants.get(participant_id) if room is not None else None
        return participant.last_report if participant is not None else None

    def state(self, room_id: str, participant_id: str) -> MediaState | None:
        room = self._rooms.get(room_id)
        participant = room.participants.get(participant_id) if room is not None else None
        return participant.state if participant is not None else None

    def forwarded_to(self, room_id: str, participant_id: str) -> dict[str, int]:
        """Packets forwarded to the participant's current peer connection, per kind."""
        room = self._rooms.get(room_id)
        participant = room.participants.get(participant_id) if room is not None else None
        if participant is None or participant.peer is None:
            return {}
        return {kind: out.packets for kind, out in participant.peer.outs.items()}

    def retransmitted_to(self, room_id: str, participant_id: str) -> dict[str, int]:
        """What the participant's current peer connection was sent on its video stream: the media payload
        bytes (`media_bytes`), and the RTX packets and payload bytes that answered its NACKs."""
        room = self._rooms.get(room_id)
        participant = room.participants.get(participant_id) if room is not None else None
        out = participant.peer.outs.get("video") if participant is not None and participant.peer else None
        if out is None:
            return {}
        return {"media_bytes": out.octets, "rtx_packets": out.rtx_packets, "rtx_bytes": out.rtx_octets}

    def rooms(self) -> dict[str, list[str]]:
        return {rid: list(room.participants) for rid, room in self._rooms.items()}

    def peer_connections(self) -> list[RTCPeerConnection]:
        participants = [p for room in self._rooms.values() for p in room.participants.values()]
        return [p.peer.pc for p in participants if p.peer is not None]

    # -- negotiation ---------------------------------------------------------------------------------

    async def _negotiate(self, participant: _Participant, offer: Description, sdp: str) -> tuple[_Peer, str]:
        servers = [
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in self.config.ice_servers
        ]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.counters.peer_connections += 1
        peer = _Peer(self, participant, pc)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            for transceiver in pc.getTransceivers():
                section = offer.section(transceiver.kind)
                if section is not None and section.direction in ("sendrecv", "recvonly"):
                    pc.addTrack(_Placeholder(transceiver.kind))
            peer.tap = fastpath.Tap(pc, peer.on_datagram, self.counters.dropped, peer.on_consent)
            with fastpath.announce(self.config.announce_addresses):
                await pc.setLocalDescription(await pc.createAnswer())
            peer.tap.guard()  # before the answer (and with it the ports) leaves
            answer_sdp = map_candidates(pc.localDescription.sdp, self.config.nat_map)
            answer = read_description(answer_sdp)
        except MediaError:
            await peer.close()
            raise
        except Exception as exc:
            await peer.close()
            raise MediaError(errors.NEGOTIATION_FAILED, f"{type(exc).__name__}: {str(exc)[:120]}") from exc
        if not any(_has_codec(s) for s in answer.sections):
            await peer.close()
            raise MediaError(errors.NO_SUPPORTED_CODEC, "no codec in common")
        peer.configure(offer, answer, self.config.nack_history_size, self.config.keyframe_min_interval_s)

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            self._on_pc_state(peer)

        return peer, answer_sdp

    def _on_pc_state(self, peer: _Peer) -> None:
        participant = peer.participant
        state = peer.pc.connectionState
        if participant.peer is not peer or peer.closed:
            return
        if state == "connected" and not peer.connected:
            if not peer.bind():
                return
            peer.connected = True
            now = time.monotonic()
            peer.last_datagram = peer.last_rtp = now
            self._set_state(participant, MediaState.CONNECTED)
            self._reroute(participant.room)
        elif state in ("failed", "closed"):
            self._spawn(self._drop_peer(peer, MediaState.RECONNECTING, f"peer connection {state}"))

    async def _drop_peer(self, peer: _Peer, state: MediaState, reason: str) -> None:
        participant = peer.participant
        async with participant.lock:
            if participant.peer is not peer:
                return
            participant.peer = None
            await peer.close()
        self._set_state(participant, state, reason)
        self._reroute(participant.room)

    def _peer(self, room_id: str, participant_id: str) -> _Peer:
        room = self._rooms.get(room_id)
        participant = room.participants.get(participant_id) if room is not None else None
        if participant is None or participant.peer is None:
            raise MediaError(errors.UNKNOWN_PARTICIPANT)
        return participant.peer

    # -- routing and keyframes -----------------------------------------------------------------------

    def _reroute(self, room: _Room) -> None:
        peers = {p.id: p.peer for p in room.participants.values() if p.peer is not None and not p.peer.closed}
        views = {pid: peer.view(room.participants[pid].audio_only, room.participants[pid].video_held)
                 for pid, peer in peers.items()}
        decided = plan(views)
        now = time.monotonic()
        for (pub_id, kind), subs in decided.items():
            inn = peers[pub_id].ins[kind]
            new_targets = [peers[sub_id].outs[kind] for sub_id in subs]
            added = [out for out in new_targets if out not in inn.targets]
            for out in added:
                # Resume right after the last packet this subscriber got: a pause (audio only, a publisher
                # away) must not look like a burst of loss that the subscriber would NACK.
                out.rewriter.restart()
            for out in new_targets:
                out.source = inn
            inn.targets = new_targets
            if added and kind == "video":
                self.request_keyframe(inn, now)
        # Streams whose publisher left keep no source.
        for peer in peers.values():
            for out in peer.outs.values():
                if out.source is not None and out not in out.source.targets:
                    out.source = None

    def request_keyframe(self, inn: _In, now: float) -> None:
        self.counters.keyframe_triggers += 1
        if inn.gate is not None and inn.gate.request(now):
            self._send_pli(inn)

    def _send_pli(self, inn: _In) -> None:
        if inn.ssrc is None or inn.peer.tx is None:
            if inn.gate is not None:
                inn.gate.request(float("-inf"))  # keep it pending until the stream is known
            return
        inn.peer.send_rtcp(rtcp.build_pli(inn.peer.rtcp_ssrc, inn.ssrc))
        self.counters.keyframe_requests += 1

    # -- housekeeping ----------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                self._tick(time.monotonic())
            except Exception:  # one bad room must not stop timeouts for all the others
                logger.exception("media tick failed")

    def _tick(self, now: float) -> None:
        cfg = self.config
        if self._rooms_closed:
            self._rooms_closed = False
            self._memory.release()
            self.counters.memory_releases += 1
        report = now - self._last_quality >= cfg.quality_interval_s
        if report:
            self._last_quality = now
        for room in list(self._rooms.values()):
            for participant in list(room.participants.values()):
                peer = participant.peer
                if peer is None or peer.closed:
                    continue
                if not peer.connected:
                    if peer.pc.connectionState == "connected":
                        self._on_pc_state(peer)  # keys or the pair were not ready at the event: retry
                    if not peer.connected and now - peer.created > cfg.connect_timeout_s:
                        self._spawn(self._drop_peer(peer, MediaState.FAILED, "ICE/DTLS did not complete"))
                    continue
                if now - peer.last_datagram > cfg.consent_timeout_s:
                    self._spawn(self._drop_peer(peer, MediaState.RECONNECTING, "consent timeout"))
                    continue
                silent = bool(peer.ins) and now - peer.last_rtp > cfg.media_silence_timeout_s
                if silent and participant.state is MediaState.CONNECTED:
                    self._set_state(participant, MediaState.MEDIA_STOPPED, "no RTP")
                elif not silent and participant.state is MediaState.MEDIA_STOPPED:
                    self._set_state(participant, MediaState.CONNECTED, "RTP resumed")
                for inn in peer.ins.values():
                    if inn.gate is not None and inn.gate.due(now):
                        self._send_pli(inn)
                peer.release_held_feedback(now)
                if report:
                    self._report_quality(participant, peer, now)

    def _report_quality(self, participant: _Participant, peer: _Peer, now: float) -> None:
        dt = max(1e-3, now - peer.prev_time)
        peer.prev_time = now
        rtt_ms = peer.rtt_s * 1000 if peer.rtt_s is not None else None
        up_loss, up_jitter, up_bytes, up_received = 0.0, 0.0, 0, 0
        for inn in peer.ins.values():
            snap = inn.stats.snapshot()
            up_loss = max(up_loss, interval_loss(inn.prev, snap))
            if inn.kind == "audio" or "audio" not in peer.ins:
                # Video packets leave the encoder in bursts, one frame at a time, so their "jitter" measures
                # frame size; network jitter is judged on audio, as telephony does.
                up_jitter = max(up_jitter, snap.jitter_s * 1000)
            up_bytes += snap.bytes - (inn.prev.bytes if inn.prev else 0)
            up_received += snap.received - (inn.prev.received if inn.prev else 0)
            inn.prev = snap
        up = DirectionStats(rtt_ms, up_loss, up_jitter, up_bytes * 8 / dt, up_received > 0 or not peer.ins)
        down_loss, down_jitter, down_bytes, fed = 0.0, 0.0, 0, False
        for out in peer.outs.values():
            down_bytes += out.octets - out.prev_octets
            out.prev_octets = out.octets
            fed = fed or out.source is not None
            if out.last_block is not None:
                down_loss = max(down_loss, out.last_block.fraction_lost / 256)
                if out.kind == "audio" or "audio" not in peer.outs:
                    down_jitter = max(down_jitter, out.last_block.jitter / out.clock_rate * 1000)
        down = DirectionStats(rtt_ms, down_loss, down_jitter, down_bytes * 8 / dt, down_bytes > 0 or not fed)
        verdict = worst(classify(up), classify(down))
        assert participant.streak is not None
        suggest = participant.streak.observe(verdict) and not participant.audio_only
        report = QualityReport(participant.room.id, participant.id, verdict, up, down, suggest, time.time())
        participant.last_report = report
        self._emit(report)

    # -- plumbing ------------------------------------------------------------------------------------------

    def _set_state(self, participant: _Participant, state: MediaState, reason: str = "") -> None:
        if participant.state is state:
            return
        participant.state = state
        self._emit(MediaStateChanged(participant.room.id, participant.id, state, reason))

    def _emit(self, event: MediaEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            logger.exception("media event callback failed")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str = "media-peer") -> None:
        try:
            task = self._owner.start(name, coro)
        except RuntimeError:
            coro.close()  # the app is stopping, and stop() closes every room anyway
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _has_codec(section: Section) -> bool:
    return section.port != 0 and any(c.name != "rtx" for c in section.codecs.values())
