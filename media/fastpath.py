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
- aiortc.RTCRtpReceiver's decoder thread attribute (only to observe, in tests, that nothing was decoded);
- pylibsrtp.Session._srtp / _cdata / _buffer and pylibsrtp._binding.lib: libsrtp called directly on the
  session's own buffer (the wrapper allocates and type-checks on every call: about 5 µs per packet);
- asyncio's selector datagram transport `_sock` and the selector loop's `_add_reader`/`_remove_reader`:
  sendto on the socket itself, skipping the transport's per-call bookkeeping (a full socket buffer drops
  the datagram, as the network would), and a reader that drains every waiting datagram per wake-up.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aioice.ice
from aiortc import RTCDtlsTransport, RTCIceTransport, RTCPeerConnection
from pylibsrtp._binding import ffi, lib

_announced: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "media_announced_addresses", default=None
)
_original_get_host_addresses: Callable[[bool, bool], list[str]] | None = None
_original_connect: Callable[[Any], Awaitable[None]] | None = None
_install_lock = threading.Lock()


class ContractError(RuntimeError):
    """aiortc/aioice no longer look the way media/fastpath.py was written for."""


def check_contract() -> None:
    problems = []
    import pylibsrtp

    for name in ("srtp_protect", "srtp_unprotect"):
        if not hasattr(lib, name):
            problems.append(f"pylibsrtp._binding.lib.{name}")
    policy = pylibsrtp.Policy(key=bytes(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    session = pylibsrtp.Session(policy)
    for name in ("_srtp", "_cdata", "_buffer"):
        if not hasattr(session, name):
            problems.append(f"pylibsrtp.Session.{name}")
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
    if not callable(getattr(aioice.ice.Connection, "connect", None)):
        problems.append("aioice.ice.Connection.connect")
    try:
        conn = aioice.ice.Connection(ice_controlling=False)
        if not isinstance(getattr(conn, "_nominated", None), dict):
            problems.append("aioice.ice.Connection._nominated")
        if getattr(conn, "_closing", None) is not False:
            problems.append("aioice.ice.Connection._closing")
        if not hasattr(conn, "_query_consent_task"):
            problems.append("aioice.ice.Connection._query_consent_task")
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


async def _connect_then_honour_close(connection: Any) -> None:
    assert _original_connect is not None
    await _original_connect(connection)
    # aioice starts its consent checks when connect() resumes. A close() that ran between the check list
    # completing and that resumption (the participant left while ICE was finishing) found no checks to
    # stop, so they would run, every few seconds, for the life of the process.
    if connection._closing:
        task = connection._query_consent_task
        connection._query_consent_task = None
        if task is not None and not task.done():
            task.cancel()


def install_close_race_fix() -> None:
    """A connection closed while ICE completes must not keep its consent checks running; idempotent."""
    global _original_connect
    with _install_lock:
        if _original_connect is None:
            _original_connect = aioice.ice.Connection.connect
            aioice.ice.Connection.connect = _connect_then_honour_close  # type: ignore[method-assign,assignment]


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


class Srtp:
    """libsrtp on a pylibsrtp Session's own buffer: write the packet into `buf`, call, read `buf` back.

    One buffer per session is safe because everything runs on the event loop thread and nothing awaits
    between filling the buffer and reading the result.
    """

    __slots__ = ("_cdata", "_len", "_srtp", "buf")

    def __init__(self, session: Any) -> None:
        self._srtp = session._srtp[0]
        self._cdata = session._cdata
        self.buf: Any = session._buffer  # a writable cffi buffer (struct.pack_into works on it)
        self._len = ffi.new("int *")

    def unprotect(self, data: bytes) -> int:
        """Decrypt `data` into buf; the plaintext length, or -1 if authentication or replay check fails."""
        n = len(data)
        if n > 1400:
            return -1
        self.buf[0:n] = data
        length = self._len
        length[0] = n
        if lib.srtp_unprotect(self._srtp, self._cdata, length):
            return -1
        return int(length[0])

    def protect(self, n: int) -> bytes | None:
        """Encrypt the `n` plaintext bytes already written into buf; the SRTP packet, or None on failure."""
        length = self._len
        length[0] = n
        if lib.srtp_protect(self._srtp, self._cdata, length):
            return None
        return bytes(self.buf[0 : length[0]])


class Tap:
    """Intercepts the SRTP datagrams of one bundled peer connection and sends datagrams on its pair.

    `handler(datagram)` receives every SRTP/SRTCP datagram once DTLS has produced keys; DTLS and STUN still
    go to aiortc/aioice. Before the keys exist nothing is diverted, and after they exist nothing SRTP reaches
    aiortc, so aiortc's receivers never see a packet and never create a decoder.
    """

    __slots__ = ("_connection", "_dtls", "_fast_protocol", "_handler", "_orig_data_received")
    _handler: Callable[[bytes], None]

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
        sock = getattr(transport, "_sock", None)
        if sock is None:  # not a selector transport: go through asyncio

            def send(data: bytes) -> None:
                if not transport.is_closing():
                    transport.sendto(data, addr)

        else:
            sendto = sock.sendto

            def send(data: bytes) -> None:
                try:  # noqa: SIM105 - contextlib.suppress costs a context manager per packet
                    sendto(data, addr)
                except OSError:  # full buffer or closed socket: the datagram is lost, as on a network
                    pass

        self._go_fast(pair.protocol)
        return send

    def _go_fast(self, protocol: Any) -> None:
        """Read the selected pair's socket ourselves: every datagram waiting, per wake-up.

        asyncio reads one datagram per readiness callback and aioice first tries to parse each as STUN (an
        exception per RTP packet). Draining the socket in one callback serves a burst of packets (a video
        frame is several) for one trip through the event loop; STUN and DTLS still go to aioice.
        """
        if self._fast_protocol is protocol:
            return
        self._fast_protocol = protocol
        original = protocol.datagram_received
        dtls = self._dtls
        tap = self
        transport = protocol.transport
        sock = getattr(transport, "_sock", None)
        loop = getattr(transport, "_loop", None)
        if sock is None or not hasattr(loop, "_add_reader") or not hasattr(loop, "_remove_reader"):

            def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
                if 127 < data[0] < 192 and dtls._rx_srtp is not None:
                    tap._handler(data)
                else:
                    original(data, addr)

            protocol.datagram_received = datagram_received
            return

        recvfrom = sock.recvfrom

        def drain() -> None:
            for _ in range(64):  # then let other sockets have a turn
                try:
                    data, addr = recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    protocol.error_received(exc)
                    return
                if data and 127 < data[0] < 192 and dtls._rx_srtp is not None:
                    tap._handler(data)
                else:
                    original(data, addr)

        fd = sock.fileno()
        assert loop is not None
        loop._remove_reader(fd)
        loop._add_reader(fd, drain)

    def release(self) -> None:
        """Drop references to the handler so a closed peer connection can be collected.

        The drained socket's reader goes away when aiortc closes the transport."""
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
