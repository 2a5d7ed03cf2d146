"""Every reach into aiortc and aioice internals lives here, and nowhere else.

Why: aiortc turns every received RTP packet into a parsed object, queues it, runs a jitter buffer and hands
complete frames to a decoder thread; its sender re-packetises frames. An SFU needs none of that. Once ICE
and DTLS are up we take SRTP datagrams straight off the ICE connection, unprotect them with the DTLS
transport's own SRTP session, rewrite the header and protect and send them with the subscriber's session on
its selected candidate pair. aiortc still owns ICE, DTLS and the SDP, which is what it is good at.

What we rely on (checked by `check_contract`, run by MediaServer.start and by tests/test_media_fastpath.py,
so an aiortc or aioice upgrade fails loudly instead of silently decoding):

- aioice.ice.get_host_addresses(use_ipv4, use_ipv6): where aioice decides which addresses to gather on;
- aioice.ice.Connection.data_received(data, component): called for every non-STUN datagram;
- aioice.ice.Connection._nominated[1]: the selected CandidatePair (.protocol.transport, .remote_addr);
- aioice.ice.StunProtocol.datagram_received(data, addr): the asyncio protocol callback;
- aiortc.RTCIceTransport._connection: the aioice Connection;
- aiortc.RTCDtlsTransport._rx_srtp / _tx_srtp: pylibsrtp Sessions, set when the handshake completes;
- aiortc.RTCDtlsTransport._send_rtp(data): where aiortc's own RTP/RTCP leaves;
- aiortc.RTCRtpReceiver's decoder thread attribute (only to observe, in tests, that nothing was decoded).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aioice.ice
from aiortc import RTCDtlsTransport, RTCIceTransport, RTCPeerConnection

_announced: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "media_announced_addresses", default=None
)
_original_get_host_addresses: Callable[[bool, bool], list[str]] | None = None
_install_lock = threading.Lock()


class ContractError(RuntimeError):
    """aiortc/aioice no longer look the way media/fastpath.py was written for."""


def check_contract() -> None:
    problems = []
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        problems.append("aioice.ice.get_host_addresses")
    for cls, name in (
        (aioice.ice.Connection, "data_received"),
        (aioice.ice.Connection, "gather_candidates"),
        (aioice.ice.StunProtocol, "datagram_received"),
        (RTCDtlsTransport, "_send_rtp"),
    ):
        if not callable(getattr(cls, name, None)):
            problems.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    try:
        conn = aioice.ice.Connection(ice_controlling=False)
        if not isinstance(getattr(conn, "_nominated", None), dict):
            problems.append("aioice.ice.Connection._nominated")
    except Exception as exc:  # pragma: no cover - only on a broken aioice
        problems.append(f"aioice.ice.Connection(): {exc}")
    if problems:
        raise ContractError("media/fastpath.py needs " + ", ".join(problems))


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    announced = _announced.get()
    if announced is not None:
        return list(announced)
    assert _original_get_host_addresses is not None
    return _original_get_host_addresses(use_ipv4, use_ipv6)


def install_announce_hook() -> None:
    """Route aioice's address discovery through `announce()`; idempotent, inert outside the context."""
    global _original_get_host_addresses
    with _install_lock:
        if _original_get_host_addresses is None:
            _original_get_host_addresses = aioice.ice.get_host_addresses
            aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def announce(addresses: tuple[str, ...]) -> Iterator[None]:
    """Peer connections that gather candidates inside this context bind and announce exactly `addresses`.

    aioice gathers inside setLocalDescription, in tasks that copy this context, so only those connections
    see it; an empty tuple keeps aioice's own discovery.
    """
    install_announce_hook()
    token = _announced.set(addresses or None)
    try:
        yield
    finally:
        _announced.reset(token)


Sender = Callable[[bytes], None]


class Tap:
    """Intercepts the SRTP datagrams of one bundled peer connection and sends datagrams on its pair.

    `handler(datagram)` receives every SRTP/SRTCP datagram once DTLS has produced keys; DTLS and STUN still
    go to aiortc/aioice. Before the keys exist nothing is diverted, and after they exist nothing SRTP reaches
    aiortc, so aiortc's receivers never see a packet and never create a decoder.
    """

    __slots__ = ("_connection", "_dtls", "_fast_protocol", "_handler", "_orig_data_received")

    def __init__(self, pc: RTCPeerConnection, handler: Callable[[bytes], None]) -> None:
        transceivers = pc.getTransceivers()
        if not transceivers:
            raise ValueError("no transceivers")
        dtls: RTCDtlsTransport = transceivers[0].receiver.transport
        for t in transceivers[1:]:
            if t.receiver.transport is not dtls:
                raise ValueError("media is not bundled on one transport")
        ice: RTCIceTransport = dtls.transport
        self._dtls = dtls
        self._connection: Any = ice._connection
        self._handler = handler
        self._fast_protocol: Any = None
        self._orig_data_received = self._connection.data_received
        self._connection.data_received = self._data_received  # type: ignore[method-assign]
        self._suppress_placeholder_reports()

    def _data_received(self, data: bytes, component: int) -> None:
        if 127 < data[0] < 192 and self._dtls._rx_srtp is not None:
            self._handler(data)
        else:
            self._orig_data_received(data, component)

    def _suppress_placeholder_reports(self) -> None:
        # The server's senders carry placeholder tracks that never produce a frame, so aiortc's periodic
        # sender reports say NTP 0, RTP 0, 0 packets. Forwarded streams get the publisher's reports
        # (rewritten) instead; aiortc's empty ones would only confuse the subscriber's RTT and lip sync.
        original: Callable[[bytes], Awaitable[None]] = self._dtls._send_rtp

        async def send_rtp(data: bytes) -> None:
            if len(data) >= 16 and data[1] == 200 and not any(data[8:16]):
                return
            await original(data)

        self._dtls._send_rtp = send_rtp  # type: ignore[method-assign]

    def keys(self) -> tuple[Any, Any] | None:
        """(rx, tx) pylibsrtp sessions once DTLS is up."""
        rx, tx = self._dtls._rx_srtp, self._dtls._tx_srtp
        if rx is None or tx is None:
            return None
        return rx, tx

    def sender(self) -> Sender | None:
        """A function sending one datagram on the selected pair, bypassing aiortc's send chain."""
        pair = self._connection._nominated.get(1)
        if pair is None:
            return None
        transport = pair.protocol.transport
        addr = pair.remote_addr
        sendto = transport.sendto

        def send(data: bytes) -> None:
            if not transport.is_closing():
                sendto(data, addr)

        self._go_fast(pair.protocol)
        return send

    def _go_fast(self, protocol: Any) -> None:
        # Skip aioice's STUN parse attempt (an exception per RTP packet) for RTP/RTCP first bytes.
        if self._fast_protocol is protocol:
            return
        self._fast_protocol = protocol
        original = protocol.datagram_received
        dtls = self._dtls
        handler = self._handler

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            if 127 < data[0] < 192 and dtls._rx_srtp is not None:
                handler(data)
            else:
                original(data, addr)

        protocol.datagram_received = datagram_received

    def release(self) -> None:
        """Drop references to the handler so a closed peer connection can be collected."""
        self._handler = _drop
        if self._fast_protocol is not None:
            with contextlib.suppress(AttributeError):
                del self._fast_protocol.datagram_received
            self._fast_protocol = None
        with contextlib.suppress(AttributeError):
            del self._connection.data_received


def _drop(data: bytes) -> None:
    return None


def decoder_threads(pc: RTCPeerConnection) -> list[threading.Thread]:
    """The decoder threads of a peer connection's receivers (for tests that prove nothing was decoded)."""
    threads = []
    for receiver in (t.receiver for t in pc.getTransceivers()):
        thread = getattr(receiver, "_RTCRtpReceiver__decoder_thread", None)
        if isinstance(thread, threading.Thread):
            threads.append(thread)
    return threads


__all__ = [
    "ContractError",
    "Tap",
    "announce",
    "check_contract",
    "decoder_threads",
    "install_announce_hook",
]
