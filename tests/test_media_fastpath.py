"""The contract media/fastpath.py has with aiortc and aioice internals. If these fail after an upgrade, the
SFU would silently fall back to aiortc's decode path or gather no candidate: fix fastpath.py first."""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCDtlsTransport, RTCPeerConnection

from media import fastpath
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
