"""Hostile datagrams on a participant's media port: dropped, counted, never logged, and harmless to the media.

The network tests run on uvloop, the loop `session-server` serves on (tests/conftest.py runs every netns test
on it), so the path they exercise is the one that is served.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator

import pytest
import uvloop
from aiortc import RTCSessionDescription
from prometheus_client import CollectorRegistry

from media import guard
from media.config import MediaConfig
from media.events import MediaEvent, MediaState, MediaStateChanged
from media.server import MediaServer
from tests.media_helpers import LOOPBACK, Client, cut_media, require_loopback_namespace, wait_for

# -- the classifier alone ------------------------------------------------------------------------------------


def _stun(length: int = 0, cookie: bytes = guard.STUN_MAGIC_COOKIE) -> bytes:
    return struct.pack("!HH", 0x0001, length) + cookie + os.urandom(12) + os.urandom(length)


@pytest.mark.parametrize(
    ("datagram", "verdict"),
    [
        (b"", guard.EMPTY),
        (b"\x80", guard.RUNT),
        (b"\x80\xc8" + bytes(9), guard.RUNT),
        (b"\x80\x60" + bytes(10), guard.MEDIA),
        (b"\x80\xc8" + bytes(1498), guard.MEDIA),
        (b"\x80\xc8" + bytes(1499), guard.OVERSIZE),
        (bytes(64 * 1024), guard.OVERSIZE),
        (b"\x16", guard.RUNT),
        (b"\x15\xfe\xfd" + bytes(10), guard.DTLS),
        (b"\x00", guard.RUNT),
        (_stun(), guard.STUN),
        (_stun(8), guard.STUN),
        (_stun(8)[:-1], guard.MALFORMED),
        (_stun(cookie=b"\x00\x00\x00\x00"), guard.MALFORMED),
        (b"\x04" + bytes(30), guard.UNKNOWN),
        (b"\x40" + bytes(30), guard.UNKNOWN),
        (b"\x7f" + bytes(30), guard.UNKNOWN),
        (b"\xc0" + bytes(30), guard.UNKNOWN),
        (b"\xff" * 30, guard.UNKNOWN),
    ],
)
def test_each_datagram_is_sorted_by_its_size_and_first_byte(datagram: bytes, verdict: str) -> None:
    assert guard.classify(datagram) == verdict


def test_every_drop_reason_is_a_metric_label_and_nothing_raises_on_any_first_byte() -> None:
    rng = random.Random(14)
    for first in range(256):
        for size in (1, 2, 12, 19, 20, 100, 1500, 1501):
            verdict = guard.classify(bytes([first]) + rng.randbytes(size - 1))
            assert verdict in (*guard.REASONS, guard.STUN, guard.DTLS, guard.MEDIA)


# -- real peers in a loopback-only namespace -----------------------------------------------------------------


@pytest.fixture
def loopback_only() -> None:
    require_loopback_namespace()


@pytest.mark.netns
async def test_the_network_tests_run_on_the_loop_session_server_serves_on(loopback_only: None) -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


def server_port(answer_sdp: str) -> int:
    """The UDP port of the server's host candidate in an answer: the participant's media port."""
    ports = {int(m) for m in re.findall(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", answer_sdp)}
    assert len(ports) == 1, answer_sdp
    return ports.pop()


def port_of(client: Client) -> int:
    return server_port(client.pc.remoteDescription.sdp)


def junk(rng: random.Random) -> Iterator[bytes]:
    """Every kind of datagram a port on the internet gets, in turn."""
    kinds: list[Callable[[], bytes]] = [
        lambda: b"",
        lambda: bytes([rng.randrange(256)]),
        lambda: b"\x80\xc8" + rng.randbytes(rng.randrange(1500, 4000)),  # RTCP-looking, over the MTU
        lambda: rng.randbytes(rng.randrange(1, 1500)),
        lambda: b"\x80" + bytes([rng.randrange(96, 128)]) + rng.randbytes(rng.randrange(10, 1200)),  # "SRTP"
        lambda: b"\x81\xc9" + rng.randbytes(rng.randrange(6, 100)),  # "SRTCP"
        lambda: bytes([rng.randrange(20, 64)]) + rng.randbytes(rng.randrange(0, 200)),  # "DTLS"
        lambda: _stun(rng.randrange(0, 50) * 4),  # STUN-shaped garbage
    ]
    while True:
        for make in kinds:
            yield make()


async def spray(port: int, stop: asyncio.Event, sent: list[int], sockets: int = 4, burst: int = 100) -> None:
    """Junk at 127.0.0.1:port from several local sockets, in bursts, until stopped."""
    rng = random.Random(1414)
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    for s in senders:
        s.setblocking(False)
    source = junk(rng)
    try:
        while not stop.is_set():
            for i in range(burst):
                try:
                    senders[i % sockets].sendto(next(source), ("127.0.0.1", port))
                    sent[0] += 1
                except OSError:  # EMSGSIZE for the largest, or a full buffer: a flood loses some too
                    pass
            await asyncio.sleep(0.005)  # pacing the flood, about 20,000 datagrams a second at most
    finally:
        for s in senders:
            s.close()


class LogTally(logging.Handler):
    """Every log record of the process, at INFO and above, while it is installed."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()[:200]}"
            for r in self.records
            if r.exc_info or "Traceback" in r.getMessage()
        ]

    def __enter__(self) -> LogTally:
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.INFO)
        root.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)


# A flood of tens of thousands of junk datagrams may cost at most this many log lines in the whole process
# (a line per datagram was the bug); none of them may carry a traceback.
MAX_LOG_LINES_PER_FLOOD = 10


def dropped(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("media_dropped_datagrams_total", {"reason": reason}) or 0.0


async def with_server(
    scenario: Callable[[MediaServer, list[MediaEvent], CollectorRegistry], Awaitable[None]], **config: float
) -> None:
    events: list[MediaEvent] = []
    registry = CollectorRegistry()
    server = MediaServer(MediaConfig(announce_addresses=LOOPBACK, **config), registry=registry, on_event=events.append)
    await server.start()
    try:
        await scenario(server, events, registry)
    finally:
        await server.stop()


@pytest.mark.netns
@pytest.mark.usefixtures("no_stray_tasks")
async def test_a_junk_flood_at_a_participants_port_is_dropped_silently_and_both_rooms_keep_decoding(
    loopback_only: None,
) -> None:
    async def scenario(server: MediaServer, events: list[MediaEvent], registry: CollectorRegistry) -> None:
        alice, bob, carol, dave = Client("alice"), Client("bob"), Client("carol"), Client("dave")
        stop = asyncio.Event()
        flood: asyncio.Task[None] | None = None
        try:
            await alice.join(server, "victim")
            await bob.join(server, "victim")
            await carol.join(server, "next-door")
            await dave.join(server, "next-door")
            everyone = (alice, bob, carol, dave)
            await wait_for(lambda: all(c.got.frames >= 5 for c in everyone), "all four decoding")
            sent = [0]
            with LogTally() as logs:
                flood = asyncio.create_task(spray(port_of(alice), stop, sent))
                await wait_for(lambda: sent[0] >= 2000, "the flood under way")
                before = {c.name: c.got.frames for c in everyone}
                # Alice's own camera reaches Bob through the flooded port, and everyone else's still arrives.
                await wait_for(
                    lambda: all(c.got.frames >= before[c.name] + 30 for c in everyone) and sent[0] >= 20_000,
                    lambda: f"frames during a flood of {sent[0]}: {[(c.name, c.got.frames) for c in everyone]}",
                    within=60,
                )
                stop.set()
                await flood
            print(f"log lines during a flood of {sent[0]} datagrams: {len(logs.records)}", end=" ")
            assert logs.tracebacks() == []
            assert len(logs.records) <= MAX_LOG_LINES_PER_FLOOD, [r.getMessage()[:100] for r in logs.records]
            for reason in (guard.EMPTY, guard.RUNT, guard.OVERSIZE, guard.UNKNOWN, guard.UNVALIDATED):
                assert dropped(registry, reason) > 0, reason
            assert MediaState.RECONNECTING not in [e.state for e in events if isinstance(e, MediaStateChanged)]
        finally:
            stop.set()
            if flood is not None:
                await asyncio.gather(flood, return_exceptions=True)
            for c in (alice, bob, carol, dave):
                await c.close()

    await with_server(scenario, consent_timeout_s=15.0)


@pytest.mark.netns
@pytest.mark.usefixtures("no_stray_tasks")
async def test_junk_sprayed_at_a_dead_participants_port_does_not_keep_them_alive(loopback_only: None) -> None:
    async def scenario(server: MediaServer, events: list[MediaEvent], registry: CollectorRegistry) -> None:
        alice, bob = Client("alice"), Client("bob")
        stop = asyncio.Event()
        flood: asyncio.Task[None] | None = None
        try:
            await alice.join(server, "dead")
            await bob.join(server, "dead")
            await wait_for(lambda: alice.got.frames >= 5 and bob.got.frames >= 5, "media both ways")
            sent = [0]
            flood = asyncio.create_task(spray(port_of(alice), stop, sent, burst=20))
            await wait_for(lambda: sent[0] >= 200, "the spray under way")
            cut_media(alice.pc)  # alice's network died; the junk goes on
            await wait_for(
                lambda: server.state("dead", "alice") is MediaState.RECONNECTING,
                lambda: f"alice declared reconnecting (now {server.state('dead', 'alice')}, {sent[0]} junk sent)",
                within=2.0 + 10,
            )
            assert sent[0] > 200 and not stop.is_set()  # still spraying when she was declared
            assert server.state("dead", "bob") is MediaState.CONNECTED
        finally:
            stop.set()
            if flood is not None:
                await asyncio.gather(flood, return_exceptions=True)
            await alice.close()
            await bob.close()

    await with_server(scenario, consent_timeout_s=2.0)


def dtls_alert() -> bytes:
    """A DTLS 1.2 fatal handshake_failure alert, epoch 0."""
    return struct.pack("!BHH6sH", 21, 0xFEFD, 0, bytes(6), 2) + bytes([2, 40])


def dtls_client_hello() -> bytes:
    """A DTLS 1.2 ClientHello in one record, as a stranger's handshake would start."""
    body = (
        struct.pack("!H", 0xFEFD)
        + os.urandom(32)
        + b"\x00"  # session id
        + b"\x00"  # cookie
        + struct.pack("!HH", 2, 0xC02B)
        + b"\x01\x00"
    )
    handshake = struct.pack("!B", 1) + len(body).to_bytes(3, "big") + struct.pack("!H", 0)
    handshake += (0).to_bytes(3, "big") + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH6sH", 22, 0xFEFD, 0, bytes(6), len(handshake)) + handshake


@pytest.mark.netns
@pytest.mark.usefixtures("no_stray_tasks")
@pytest.mark.parametrize("setup", ["actpass", "active"])
async def test_a_stray_dtls_record_from_another_port_before_the_handshake_does_not_stop_the_participant(
    loopback_only: None, setup: str
) -> None:
    # actpass: what browsers (and aiortc) offer; the server answers active and starts the handshake.
    # active: the participant starts it, and the server is the DTLS server a stray ClientHello would engage.
    async def scenario(server: MediaServer, events: list[MediaEvent], registry: CollectorRegistry) -> None:
        alice, bob = Client("alice"), Client("bob")
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await alice.join(server, "dtls")
            offer = (await bob.offer()).replace("a=setup:actpass", f"a=setup:{setup}")
            answer = await server.handle_offer("dtls", "bob", offer)
            port = server_port(answer)
            # Between the answer and the real handshake, from a port ICE never validated: on loopback each
            # datagram is in the server's socket buffer when sendto returns, ahead of anything Bob sends.
            for record in (dtls_alert(), dtls_client_hello(), dtls_alert()):
                stranger.sendto(record, ("127.0.0.1", port))
            await bob.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await wait_for(
                lambda: server.state("dtls", "bob") is MediaState.CONNECTED,
                lambda: f"bob connected (server sees {server.state('dtls', 'bob')}, client {bob.pc.connectionState})",
            )
            await wait_for(lambda: alice.got.frames >= 5 and bob.got.frames >= 5, "media both ways")
            assert dropped(registry, guard.UNVALIDATED) >= 3
        finally:
            stranger.close()
            await alice.close()
            await bob.close()

    await with_server(scenario)
