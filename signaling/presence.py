"""Presence decisions: pure functions of what was last heard and when (no I/O, no clock).

A connection that stops answering goes `connected -> reconnecting -> gone`; a socket that drops
without a `leave` goes straight to `reconnecting` and is `gone` when its deadline passes unless the
participant comes back. A node that stops refreshing its heartbeat key takes all its participants
with it. Timings come from the settings' heartbeat interval and timeout:

- a node refreshes its liveness key every `tick` and the key lives `timeout / 2`, and every node sweeps
  every `tick`, so a dead node's participants are gone within `timeout / 2 + tick <= 3/4 timeout`;
- a connection silent for longer than `1.5 * interval` (it missed a ping) is shown reconnecting, and one
  silent for `timeout` is closed and gone.

The tick divides the interval exactly, so a ping goes out every `interval` and not at the next tick
after it (with a 7.5 s tick and a 10 s interval, pings went every 15 s, and a connection that answered
every one of them was silent 15 s = 1.5 intervals before each ping: shown reconnecting though healthy).
A ping is due half a tick early, so a tick that runs a little late does not push it a whole tick on.
A healthy connection is then never silent for much more than one interval when it is judged.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Liveness(enum.Enum):
    FINE = "fine"
    RECONNECTING = "reconnecting"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Timings:
    interval_s: float
    timeout_s: float

    @property
    def tick_s(self) -> float:
        """The largest whole fraction of the interval that is at most a quarter of the timeout."""
        return self.interval_s / max(1, math.ceil(self.interval_s / (self.timeout_s / 4)))

    @property
    def node_ttl_s(self) -> float:
        return self.timeout_s / 2

    @property
    def silence_reconnecting_s(self) -> float:
        return min(1.5 * self.interval_s, 0.75 * self.timeout_s)


def ping_due(timings: Timings, last_ping: float, now: float) -> bool:
    return now - last_ping >= timings.interval_s - timings.tick_s / 2


def connection_liveness(timings: Timings, last_heard: float, now: float) -> Liveness:
    silent = now - last_heard
    if silent >= timings.timeout_s:
        return Liveness.GONE
    if silent >= timings.silence_reconnecting_s:
        return Liveness.RECONNECTING
    return Liveness.FINE


@dataclass(frozen=True, slots=True)
class Entry:
    """One participant's presence record as every node sees it."""

    participant_id: str
    conn: str
    node: str
    state: str  # connected | reconnecting
    deadline_ms: int  # for reconnecting: gone after this moment


def expired(entries: list[Entry], live_nodes: set[str], now_ms: int) -> list[tuple[Entry, str]]:
    """Entries to remove now, with the reason: their node died, or their reconnect deadline passed."""
    out = []
    for e in entries:
        if e.state == "reconnecting":
            # its node already let go of the socket: only the deadline counts, so a node that stops
            # cleanly does not cut short its participants' time to come back elsewhere
            if e.deadline_ms <= now_ms:
                out.append((e, "timeout"))
        elif e.node not in live_nodes:
            out.append((e, "node_lost"))
    return out
