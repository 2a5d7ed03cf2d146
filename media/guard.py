"""What may arrive on a participant's media port: one decision per datagram, before anything parses it.

A media port faces the open internet. Anyone can send it anything, from any address, and the parsers behind
it (aioice's STUN reader, OpenSSL's DTLS state machine, libsrtp) were written for well-formed traffic from
the peer. So every datagram is first sorted by its size and first byte (RFC 7983 demultiplexing: STUN 0-3,
DTLS 20-63, RTP/RTCP 128-191). Anything else, anything empty, shorter than the smallest packet of its kind
or larger than a network's 1,500-byte MTU, is dropped here, with a reason that only a counter records: a
flood of junk must cost a few comparisons per datagram and never a log line.

Whether the sender may be heard (DTLS and SRTP only from the address ICE validated) is decided by the caller,
media/fastpath.py, which knows the candidate pairs; this module stays pure.
"""

from __future__ import annotations

from typing import Final

# An IP packet on an Ethernet path carries at most 1,500 bytes, so a bigger datagram never came from a browser
# (WebRTC keeps its RTP around 1,200); Janus drops RTP and RTCP over 1,500 bytes too.
MAX_DATAGRAM: Final = 1500

STUN_MAGIC_COOKIE: Final = b"\x21\x12\xa4\x42"
STUN_HEADER: Final = 20
DTLS_RECORD_HEADER: Final = 13
RTP_HEADER: Final = 12

# What a datagram is (passed on) ...
STUN: Final = "stun"
DTLS: Final = "dtls"
MEDIA: Final = "media"  # SRTP or SRTCP

# ... or why it was dropped: the `reason` label of media_dropped_datagrams_total.
EMPTY: Final = "empty"
RUNT: Final = "runt"  # shorter than the smallest packet of its kind
OVERSIZE: Final = "oversize"  # over MAX_DATAGRAM
UNKNOWN: Final = "unknown"  # a first byte that is none of STUN, DTLS, RTP/RTCP
MALFORMED: Final = "malformed"  # STUN-shaped but not STUN (no magic cookie, wrong length, unparsable)
UNVALIDATED: Final = "unvalidated"  # DTLS, SRTP or STUN from an address ICE has not validated
EARLY: Final = "early"  # SRTP from the validated address before DTLS produced the keys

REASONS: Final = (EMPTY, RUNT, OVERSIZE, UNKNOWN, MALFORMED, UNVALIDATED, EARLY)


def classify(data: bytes) -> str:
    """STUN, DTLS or MEDIA for a datagram that may be looked at further, else the reason to drop it."""
    n = len(data)
    if n == 0:
        return EMPTY
    if n > MAX_DATAGRAM:
        return OVERSIZE
    first = data[0]
    if 127 < first < 192:  # the common case first: media
        return MEDIA if n >= RTP_HEADER else RUNT
    if first < 4:
        if n < STUN_HEADER:
            return RUNT
        # RFC 8489: the cookie, and a length that covers the rest of the datagram in 4-byte words.
        if data[4:8] != STUN_MAGIC_COOKIE or ((data[2] << 8) | data[3]) != n - STUN_HEADER or n % 4:
            return MALFORMED
        return STUN
    if 19 < first < 64:
        return DTLS if n >= DTLS_RECORD_HEADER else RUNT
    return UNKNOWN


__all__ = [
    "DTLS",
    "EARLY",
    "EMPTY",
    "MALFORMED",
    "MAX_DATAGRAM",
    "MEDIA",
    "OVERSIZE",
    "REASONS",
    "RUNT",
    "STUN",
    "UNKNOWN",
    "UNVALIDATED",
    "classify",
]
