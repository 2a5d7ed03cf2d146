"""Prometheus metrics of the SFU, registered on a registry passed in (never a module-level global).

The forwarding path bumps plain integers; this collector turns them into counters at scrape time, which
keeps a lock and a label lookup off the per-packet path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry


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
    srtp_errors: int = 0
    peer_connections: int = 0
    rooms: int = 0
    memory_releases: int = 0  # times freed memory was handed back to the OS after rooms closed


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
        yield nacks
        yield CounterMetricFamily("media_srtp_errors", "datagrams that failed SRTP", value=c.srtp_errors)
        yield GaugeMetricFamily("media_peer_connections", "open peer connections", value=c.peer_connections)
        yield GaugeMetricFamily("media_rooms", "rooms with media", value=c.rooms)
        yield CounterMetricFamily("media_memory_releases", "times freed memory was handed back to the OS",
                                  value=c.memory_releases)


def register(registry: CollectorRegistry, counters: Counters) -> MediaCollector:
    collector = MediaCollector(counters)
    registry.register(collector)
    return collector
