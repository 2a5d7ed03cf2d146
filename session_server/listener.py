"""The server's listening socket, and what every connection accepted on it inherits.

`TCP_NOTSENT_LOWAT` bounds the bytes a connection's kernel buffer holds that the peer has not taken yet
(not those in flight: a healthy reader's throughput is the same). Without it Linux grows a send buffer
up to `net.ipv4.tcp_wmem`'s maximum (4 MiB by default) for a reader that stopped reading, so a write
waits only after megabytes: the room socket's slow-reader rule (docs/protocol.md) could not see such
a reader for minutes at the rates the protocol allows. With it, writes wait after about this many bytes
plus the transport's own buffer, and the rule acts within seconds.
"""

from __future__ import annotations

import contextlib
import socket

import uvicorn

NOTSENT_LOWAT_BYTES = 64 * 1024
# Linux's value; Python names it from 3.12 on (macOS has its own, 0x201)
_TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


def tune(sock: socket.socket) -> socket.socket:
    """Set on a listening socket what the connections it accepts from then on inherit."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # a kernel without it: slow readers are found later, by the heartbeat
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, NOTSENT_LOWAT_BYTES)
    return sock


def listening_socket(config: uvicorn.Config) -> socket.socket:
    """Bind as uvicorn would for `config`, tuned as `session-server serve` tunes its own."""
    return tune(config.bind_socket())
