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
- aioice.ice.Connection.check_incoming(message, addr, protocol): called for each Binding request aioice
  authenticated (the peer's consent checks, RFC 7675);
- aioice.ice.Connection._nominated[1]: the selected CandidatePair (.protocol.transport, .remote_addr);
- aioice.ice.Connection._protocols (one StunProtocol per gathered socket), ._check_list (CandidatePair .state,
  .remote_nominated) and ._remote_candidates (._network_host, .port): who ICE has validated, for the guard;
- aioice.ice.StunProtocol.datagram_received(data, addr): the asyncio protocol callback;
- aiortc.RTCIceTransport._connection: the aioice Connection;
- aiortc.RTCDtlsTransport._rx_srtp / _tx_srtp: pylibsrtp Sessions, set when the handshake completes;
- aiortc.RTCDtlsTransport._send_rtp(data): where aiortc's own RTP/RTCP leaves;
- aiortc.RTCRtpReceiver's decoder thread attribute (only to observe, in tests, that nothing was decoded);
- pylibsrtp.Session._srtp / _cdata / _buffer and pylibsrtp._binding.lib: libsrtp called directly on the
  session's own buffer (the wrapper allocates and type-checks on every call: about 5 µs per packet);
- asyncio's selector datagram transport `_sock` and the selector loop's `_add_reader`/`_remove_reader`:
  sendto on the socket itself, skipping the transport's per-call bookkeeping (a full socket buffer drops
  the datagram, as the network would), and a reader that drains every waiting datagram per wake-up. Under
  uvloop (no `_sock`) the loop already reads in C and calls the protocol once per datagram, and its
  transport's sendto tries the send at once: the guard replaces the protocol's `datagram_received`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aioice
import aioice.ice
from aiortc import RTCDtlsTransport, RTCIceTransport, RTCPeerConnection
from pylibsrtp._binding import ffi, lib

from media import guard

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
        (aioice.ice.Connection, "check_incoming"),
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
        for name in ("_protocols", "_check_list", "_remote_candidates"):
            if not isinstance(getattr(conn, name, None), list):
                problems.append(f"aioice.ice.Connection.{name}")
        if not hasattr(aioice.ice.CandidatePair, "State") or not hasattr(aioice.ice.CandidatePair.State, "SUCCEEDED"):
            problems.append("aioice.ice.CandidatePair.State.SUCCEEDED")
        candidate = aioice.Candidate("f", 1, "udp", 1, "127.0.0.1", 9, "host")
        pair = aioice.ice.CandidatePair(None, candidate)  # type: ignore[arg-type]  # only the remote side is read
        if getattr(pair, "remote_nominated", None) is not False or pair.remote_addr != ("127.0.0.1", 9):
            problems.append("aioice.ice.CandidatePair.remote_nominated/remote_addr")
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
    """Guards the sockets of one bundled peer connection, intercepts its SRTP and sends on its selected pair.

    `guard()` (once gathering is done) puts `media.guard` in front of every socket the peer connection
    gathered: junk is dropped and counted before any parser sees it, DTLS is passed to aiortc only from an
    address ICE validated, and SRTP/SRTCP from the selected pair's address goes to `handler(datagram)` once
    DTLS has produced keys. STUN still goes to aioice, which authenticates it. After the keys exist nothing
    SRTP reaches aiortc, so aiortc's receivers never see a packet and never create a decoder.
    """

    __slots__ = (
        "_connection",
        "_dropped",
        "_dtls",
        "_fast_protocol",
        "_guarded",
        "_handler",
        "_on_consent",
        "_orig_data_received",
        "_sel_host",
        "_sel_port",
        "_sel_protocol",
    )
    _handler: Callable[[bytes], None]

    def __init__(
        self,
        pc: RTCPeerConnection,
        handler: Callable[[bytes], None],
        dropped: dict[str, int] | None = None,
        on_consent: Callable[[], None] | None = None,
    ) -> None:
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
        self._dropped = dropped if dropped is not None else dict.fromkeys(guard.REASONS, 0)
        self._fast_protocol: Any = None
        self._guarded: list[Any] = []
        self._sel_protocol: Any = None
        self._sel_host: str | None = None
        self._sel_port: int | None = None
        self._on_consent = on_consent
        self._orig_data_received = self._connection.data_received
        self._connection.data_received = self._data_received  # type: ignore[method-assign]
        if on_consent is not None:
            self._watch_consent()
        self._suppress_placeholder_reports()

    def _watch_consent(self) -> None:
        # aioice calls check_incoming only for a Binding request it authenticated (the ICE password's
        # message integrity). Such a request from the selected pair's address is the peer's consent check
        # (RFC 7675): proof of life, like authenticated media, that no stranger can forge.
        connection = self._connection
        original = connection.check_incoming
        tap = self

        def check_incoming(message: Any, addr: tuple[Any, ...], protocol: Any) -> None:
            original(message, addr, protocol)
            pair = tap._select()
            if pair is not None and protocol is pair.protocol and _same(addr, pair.remote_addr):
                assert tap._on_consent is not None
                tap._on_consent()

        connection.check_incoming = check_incoming

    def _data_received(self, data: bytes, component: int) -> None:
        # What aioice hands on as "not STUN". Through a guarded socket that is only DTLS from a validated
        # address; anything else (a STUN-shaped datagram aioice could not parse, or whatever reached a socket
        # before guard()) must not wait in aioice's unbounded queue for the DTLS transport to read it.
        if data and 19 < data[0] < 64:
            self._orig_data_received(data, component)
        else:
            self._dropped[guard.MALFORMED] += 1

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

    # -- the guard ------------------------------------------------------------------------------------

    def guard(self) -> None:
        """Put media.guard in front of every socket gathered so far; idempotent.

        Call it once the local description is set (aiortc gathers every candidate inside
        setLocalDescription): the peer learns the ports from the answer, so nothing legitimate arrives earlier.
        """
        for protocol in list(self._connection._protocols):
            if not any(p is protocol for p in self._guarded):
                self._guard(protocol)
                self._guarded.append(protocol)

    def _guard(self, protocol: Any) -> None:
        tap = self
        dtls = self._dtls
        dropped = self._dropped
        classify = guard.classify
        media, stun, dtls_kind = guard.MEDIA, guard.STUN, guard.DTLS
        rtp_min, mtu = guard.RTP_HEADER, guard.MAX_DATAGRAM
        aioice_received = protocol.datagram_received
        component = protocol.local_candidate.component
        to_dtls = self._orig_data_received

        def receive(data: bytes, addr: tuple[Any, ...]) -> None:
            # Per datagram, so the common case (SRTP from the selected pair, keys ready) comes first; the
            # inline test is classify()'s MEDIA verdict, without a call for every forwarded packet.
            kind = media if rtp_min <= len(data) <= mtu and 127 < data[0] < 192 else classify(data)
            if kind == media:
                if (
                    protocol is tap._sel_protocol
                    and addr[1] == tap._sel_port
                    and addr[0] == tap._sel_host
                    and dtls._rx_srtp is not None
                ):
                    tap._handler(data)
                else:
                    tap._media_elsewhere(protocol, data, addr)
            elif kind == stun:
                tap._stun(protocol, aioice_received, data, addr)
            elif kind == dtls_kind:
                if tap._validated(protocol, addr):
                    to_dtls(data, component)
                else:
                    dropped[guard.UNVALIDATED] += 1
            else:
                dropped[kind] += 1

        transport = protocol.transport
        sock = getattr(transport, "_sock", None)
        loop = getattr(transport, "_loop", None)
        if sock is None or not hasattr(loop, "_add_reader") or not hasattr(loop, "_remove_reader"):
            # uvloop (what session-server serves on) and TURN: the loop reads the socket in C and calls the
            # protocol once per datagram, so the guard is that call.
            protocol.datagram_received = receive
            return
        # asyncio's selector loop reads one datagram per readiness callback; read every waiting datagram per
        # wake-up instead (a video frame is several packets), then let other sockets have a turn.
        recvfrom = sock.recvfrom

        def drain() -> None:
            for _ in range(64):
                try:
                    data, addr = recvfrom(2048)  # anything longer is cut to 2,048 bytes, and dropped as oversize
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    protocol.error_received(exc)
                    return
                receive(data, addr)

        fd = sock.fileno()
        assert loop is not None
        loop._remove_reader(fd)
        loop._add_reader(fd, drain)

    def _select(self) -> Any:
        """The selected (nominated) candidate pair, or None; refreshes what the per-datagram check compares."""
        pair = self._connection._nominated.get(1)
        if pair is not None:
            self._sel_protocol = pair.protocol
            self._sel_host, self._sel_port = pair.remote_addr
        return pair

    def _media_elsewhere(self, protocol: Any, data: bytes, addr: tuple[Any, ...]) -> None:
        pair = self._select()
        if pair is None or protocol is not pair.protocol or not _same(addr, pair.remote_addr):
            self._dropped[guard.UNVALIDATED] += 1
        elif self._dtls._rx_srtp is None:
            self._dropped[guard.EARLY] += 1
        else:
            self._handler(data)

    def _validated(self, protocol: Any, addr: tuple[Any, ...]) -> bool:
        """May DTLS from `addr` on this socket reach the handshake? Only from the ICE-validated address.

        Once a pair is selected, only its remote address. Before, a pair on this socket whose check succeeded
        or that the peer nominated (an authenticated check with USE-CANDIDATE): the peer's DTLS may overtake
        the end of our own checks. A stray alert or ClientHello from any other port would otherwise be fed to
        the handshake and end it.
        """
        pair = self._select()
        if pair is not None:
            return protocol is pair.protocol and _same(addr, pair.remote_addr)
        succeeded = aioice.ice.CandidatePair.State.SUCCEEDED
        return any(
            p.protocol is protocol and (p.state == succeeded or p.remote_nominated) and _same(addr, p.remote_addr)
            for p in self._connection._check_list
        )

    def _stun(self, protocol: Any, aioice_received: Callable[[bytes, Any], None], data: bytes, addr: Any) -> None:
        # aioice authenticates STUN itself (and must hear checks from addresses it has not seen yet, to learn
        # peer-reflexive candidates). Once a pair is selected, STUN from an address that is none of the peer's
        # candidates is junk: dropped rather than answered with an error.
        if self._select() is not None and not any(
            _same(addr, (c._network_host, c.port)) for c in self._connection._remote_candidates
        ):
            self._dropped[guard.UNVALIDATED] += 1
            return
        try:
            aioice_received(data, addr)
        except Exception:  # aioice's reader raises on some malformed attributes: junk, not a server error
            self._dropped[guard.MALFORMED] += 1

    # -- sending --------------------------------------------------------------------------------------

    def sender(self) -> Sender | None:
        """A function sending one datagram on the selected pair, bypassing aiortc's send chain."""
        pair = self._select()
        if pair is None:
            return None
        self.guard()
        self._fast_protocol = pair.protocol
        transport = pair.protocol.transport
        addr = pair.remote_addr
        sock = getattr(transport, "_sock", None)
        if sock is None:  # uvloop (or TURN): its transport tries the send at once, in C

            def send(data: bytes) -> None:
                if not transport.is_closing():
                    transport.sendto(data, addr)

            return send
        sendto = sock.sendto

        def send_direct(data: bytes) -> None:
            try:  # noqa: SIM105 - contextlib.suppress costs a context manager per packet
                sendto(data, addr)
            except OSError:  # full buffer or closed socket: the datagram is lost, as on a network
                pass

        return send_direct

    def selected_protocol(self) -> Any:
        """The asyncio protocol of the selected pair once `sender()` returned one (benchmarks read it)."""
        return self._fast_protocol

    def release(self) -> None:
        """Drop references to the handler so a closed peer connection can be collected.

        A drained socket's reader goes away when aiortc closes the transport."""
        self._handler = _drop
        self._on_consent = _nothing
        for protocol in self._guarded:
            with contextlib.suppress(AttributeError):
                del protocol.datagram_received
        self._guarded = []
        self._fast_protocol = self._sel_protocol = None
        for name in ("data_received", "check_incoming"):
            with contextlib.suppress(AttributeError):
                delattr(self._connection, name)


def _same(addr: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
    return bool(addr[0] == other[0] and addr[1] == other[1])


def _drop(data: bytes) -> None:
    return None


def _nothing() -> None:
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
