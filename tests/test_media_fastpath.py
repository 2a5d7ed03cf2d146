"""The contract media/fastpath.py has with aiortc and aioice internals. If these fail after an upgrade, the
SFU would silently fall back to aiortc's decode path or gather no candidate: fix fastpath.py first."""

from __future__ import annotations

import asyncio
import logging
import re
import socket

import aioice.ice
import pytest
from aiortc import RTCDtlsTransport, RTCPeerConnection

from media import fastpath, guard
from media.server import MediaServer


def test_the_internals_the_fast_path_uses_are_still_there() -> None:
    fastpath.check_contract()
    # The SRTP sessions that DTLS creates are what the fast path encrypts and decrypts with.
    import inspect

    source = inspect.getsource(RTCDtlsTransport._setup_srtp)
    assert "self._rx_srtp = Session(" in source and "self._tx_srtp = Session(" in source
    assert "allow_repeat_tx" in source  # NACK answers are retransmissions under the RTX ssrc
    # aioice decides which interfaces to gather on in exactly this function.
    assert "get_host_addresses(" in inspect.getsource(aioice.ice.Connection.gather_candidates)


def test_announced_addresses_replace_discovery_only_inside_the_context() -> None:
    fastpath.install_announce_hook()
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)  # aioice's own rule
    with fastpath.announce(("127.0.0.1",)):
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)


async def test_a_tap_attaches_to_a_bundled_peer_connection_and_releases_it() -> None:
    offerer = RTCPeerConnection()
    offerer.addTransceiver("audio")
    offerer.addTransceiver("video")
    with fastpath.announce(("127.0.0.1",)):
        await offerer.setLocalDescription(await offerer.createOffer())
    pc = RTCPeerConnection()
    await pc.setRemoteDescription(offerer.localDescription)  # the answerer bundles on one transport
    seen: list[bytes] = []
    tap = fastpath.Tap(pc, seen.append)
    connection = pc.getTransceivers()[0].receiver.transport.transport._connection
    assert connection.data_received == tap._data_received
    assert tap.keys() is None  # no DTLS yet: nothing is diverted
    assert tap.sender() is None
    connection.data_received(b"\x80\x60" + b"\x00" * 20, 1)  # before keys: goes to aioice's queue
    assert seen == []
    tap.release()
    assert "data_received" not in vars(connection)
    await pc.close()
    await offerer.close()


async def test_server_start_checks_the_contract_and_stops_cleanly() -> None:
    from media.config import MediaConfig

    server = MediaServer(MediaConfig())
    await server.start()
    await server.stop()
    with pytest.raises(Exception) as info:
        await server.handle_offer("r", "p", "v=0")
    assert getattr(info.value, "code", None) == "server_stopped"


async def test_a_connection_closed_while_ice_completes_keeps_no_consent_checks_running() -> None:
    # A participant leaves just as ICE finishes: close() runs after the check list completed but before
    # connect() resumed to start the consent checks. Those checks must not start and run forever.
    fastpath.install_close_race_fix()
    a = aioice.ice.Connection(ice_controlling=True, use_ipv6=False)
    b = aioice.ice.Connection(ice_controlling=False, use_ipv6=False)
    with fastpath.announce(("127.0.0.1",)):
        await a.gather_candidates()
        await b.gather_candidates()
    for near, far in ((a, b), (b, a)):
        near.remote_username, near.remote_password = far.local_username, far.local_password
        for candidate in far.local_candidates:
            await near.add_remote_candidate(candidate)
        await near.add_remote_candidate(None)
    connecting = [asyncio.ensure_future(c.connect()) for c in (a, b)]
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while a._check_list_state.qsize() == 0:  # completed, and connect() not yet resumed
            assert not connecting[0].done(), "connect() resumed before the window could be observed"
            assert asyncio.get_running_loop().time() < deadline, "ICE did not complete on loopback"
            await asyncio.sleep(0)
        await a.close()
        await asyncio.wait([connecting[0]])
        assert a._query_consent_task is None
        consent = [
            t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "Connection.query_consent"
        ]
        await b.close()
        await asyncio.wait([connecting[1]])
        assert all(t.done() for t in consent), "consent checks still running after both sides closed"
    finally:
        for task in connecting:
            task.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        await a.close()
        await b.close()


async def test_the_guard_drops_junk_before_any_parser_on_asyncio_s_own_loop_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The network tests run on uvloop, as served; this one covers the selector loop's draining reader, which
    # a plain asyncio.run (the benchmark's load generator) gets. Nothing connects: no pair is validated yet.
    offerer = RTCPeerConnection()
    offerer.addTransceiver("audio")
    offerer.addTransceiver("video")
    with fastpath.announce(("127.0.0.1",)):
        await offerer.setLocalDescription(await offerer.createOffer())
    pc = RTCPeerConnection()
    await pc.setRemoteDescription(offerer.localDescription)
    dropped = dict.fromkeys(guard.REASONS, 0)
    seen: list[bytes] = []
    tap = fastpath.Tap(pc, seen.append, dropped)
    with fastpath.announce(("127.0.0.1",)):
        await pc.setLocalDescription(await pc.createAnswer())
    tap.guard()
    ports = re.findall(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", pc.localDescription.sdp)
    junk = [b"", b"\x80", b"\x80\xc8" + bytes(2000), b"\x16\xfe\xfd" + bytes(20), b"\x80\x60" + bytes(100)]
    junk.append(b"\xff" * 30)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for datagram in junk:
            stranger.sendto(datagram, ("127.0.0.1", int(ports[0])))
        deadline = asyncio.get_running_loop().time() + 10
        while sum(dropped.values()) < len(junk):
            assert asyncio.get_running_loop().time() < deadline, f"dropped so far: {dropped}"
            await asyncio.sleep(0.01)
        assert dropped == {**dict.fromkeys(guard.REASONS, 0), "empty": 1, "runt": 1, "oversize": 1,
                           "unvalidated": 2, "unknown": 1}
        assert seen == []
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        stranger.close()
        tap.release()
        await pc.close()
        await offerer.close()
