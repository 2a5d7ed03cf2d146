"""Prometheus metrics of the SFU, registered on a registry passed in (never a module-level global).

The forwarding path bumps plain integers; this collector turns them into counters at scrape time, which
keeps a lock and a label lookup off the per-packet path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from media.guard import REASONS


@dataclass(slots=True)
class Counters:
    forwarded_packets: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    forwarded_bytes: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    received_packets: int = 0
    keyframe_requests: int = 0  # PLIs sent to publishers
    keyframe_triggers: int = 0  # reasons to want one (subscriber PLI/FIR, new subscriber), before limiting
    nacks_received: int = 0  # sequence numbers NACKed by subscribers
    nacks_answered: int = 0  # ... answered with RTX from the send history
    nacks_passed_on: int = 0  # ... passed on to the publisher
    nacks_unknown: int = 0  # ... ignored: outside the send history's window
    nacks_repeated: int = 0  # ... ignored: already answered within the round trip
    nacks_over_budget: int = 0  # ... ignored: the stream's retransmission budget was spent
    rtx_bytes: int = 0  # payload bytes retransmitted
    rtcp_rate_limited: int = 0  # participants' RTCP packets dropped over their rate
    rtcp_duplicates: int = 0  # duplicate items in one RTCP packet, collapsed
    rembs_forwarded: int = 0
    rembs_held: int = 0  # arrived inside the interval: held back (a later one may replace it)
    rembs_clamped: int = 0  # bitrate outside the range a video stream can mean
    srtp_errors: int = 0
    peer_connections: int = 0
    rooms: int = 0
    memory_releases: int = 0  # times freed memory was handed back to the OS after rooms closed
    # datagrams dropped on a media port before any parser saw them, by reason (media/guard.py)
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))


class MediaCollector(Collector):
    def __init__(self, counters: Counters) -> None:
        self._c = counters

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self._c
        pkts = CounterMetricFamily("media_forwarded_packets", "RTP packets forwarded", labels=["kind"])
        octets = CounterMetricFamily("media_forwarded_bytes", "RTP bytes forwarded", labels=["kind"])
        for kind in ("audio", "video"):
            pkts.add_metric([kind], c.forwarded_packets[kind])
            octets.add_metric([kind], c.forwarded_bytes[kind])
        yield pkts
        yield octets
        yield CounterMetricFamily("media_received_packets", "RTP packets received", value=c.received_packets)
        yield CounterMetricFamily("media_plis", "PLIs sent to publishers", value=c.keyframe_requests)
        nacks = CounterMetricFamily("media_nacks", "NACKed sequence numbers", labels=["outcome"])
        nacks.add_metric(["rtx"], c.nacks_answered)
        nacks.add_metric(["passed_on"], c.nacks_passed_on)
        nacks.add_metric(["received"], c.nacks_received)
        nacks.add_metric(["unknown"], c.nacks_unknown)
        nacks.add_metric(["repeated"], c.nacks_repeated)
        nacks.add_metric(["over_budget"], c.nacks_over_budget)
        yield nacks
        yield CounterMetricFamily("media_rtx_bytes", "payload bytes retransmitted as RTX", value=c.rtx_bytes)
        yield CounterMetricFamily("media_rtcp_rate_limited", "participants' RTCP packets dropped over their rate",
                                  value=c.rtcp_rate_limited)
        yield CounterMetricFamily("media_rtcp_duplicates", "duplicate items in RTCP packets, collapsed",
                                  value=c.rtcp_duplicates)
        rembs = CounterMetricFamily("media_rembs", "REMB bitrates from subscribers", labels=["outcome"])
        rembs.add_metric(["forwarded"], c.rembs_forwarded)
        rembs.add_metric(["held"], c.rembs_held)
        rembs.add_metric(["clamped"], c.rembs_clamped)
        yield rembs
        yield CounterMetricFamily("media_srtp_errors", "datagrams that failed SRTP", value=c.srtp_errors)
        yield GaugeMetricFamily("media_peer_connections", "open peer connections", value=c.peer_connections)
        yield GaugeMetricFamily("media_rooms", "rooms with media", value=c.rooms)
        dropped = CounterMetricFamily(
            "media_dropped_datagrams", "datagrams dropped on a media port before any parser", labels=["reason"]
        )
        for reason, count in c.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield CounterMetricFamily("media_memory_releases", "times freed memory was handed back to the OS",
                                  value=c.memory_releases)


def register(registry: CollectorRegistry, counters: Counters) -> MediaCollector:
    collector = MediaCollector(counters)
    registry.register(collector)
    return collector
