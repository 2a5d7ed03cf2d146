"""What the SFU reports is recorded for the features that follow (outage detection, support): every media
state change, and every change of a participant's quality verdict, as events on the stream."""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from media.config import MediaConfig
from media.events import MediaState, MediaStateChanged, QualityReport
from media.quality import DirectionStats, Quality
from session_server.events import Event
from session_server.rooms.media_bridge import QUALITY, SfuBridge
from signaling.messages import IdSource

from .bookings_support import events

GOOD = DirectionStats(rtt_ms=40.0, loss=0.0, jitter_ms=5.0, bitrate_bps=900_000.0, receiving=True)
BAD = DirectionStats(rtt_ms=None, loss=0.3, jitter_ms=80.0, bitrate_bps=12_000.0, receiving=False)


def report(pid: str, quality: Quality, up: DirectionStats = GOOD) -> QualityReport:
    return QualityReport("b1", pid, quality, up, GOOD, quality is Quality.POOR, time.time())


async def media_events(redis: aioredis.Redis) -> list[Event]:
    return [e for e in await events(redis) if e.type.startswith("media.")]


async def test_state_changes_and_changes_of_verdict_are_events_and_the_room_is_told_each_time(
        redis_client: aioredis.Redis) -> None:
    pushed: list[tuple[str, Any]] = []

    async def publish(room: str, raw: str) -> None:
        pushed.append((room, json.loads(raw)))

    bridge = SfuBridge(MediaConfig(announce_addresses=("127.0.0.1",)), redis=redis_client, publish=publish,
                       ids=IdSource(), node_id="n1")
    await bridge.record(MediaStateChanged("b1", "alice", MediaState.CONNECTED))
    for q in (Quality.GOOD, Quality.GOOD, Quality.POOR, Quality.POOR, Quality.GOOD):
        await bridge.record(report("alice", q, up=GOOD if q is Quality.GOOD else BAD))
    await bridge.record(report("bob", Quality.EXCELLENT))
    await bridge.record(MediaStateChanged("b1", "alice", MediaState.RECONNECTING, "ice_disconnected"))

    recorded = await media_events(redis_client)
    assert [(e.type, e.body["participant_id"], e.body.get("state") or e.body.get("quality"),
             e.body.get("previous")) for e in recorded] == [
        ("media.state_changed", "alice", "connected", None),
        ("media.quality_changed", "alice", "good", None),
        ("media.quality_changed", "alice", "poor", "good"),
        ("media.quality_changed", "alice", "good", "poor"),
        ("media.quality_changed", "bob", "excellent", None),
        ("media.state_changed", "alice", "reconnecting", None),
    ]
    assert all(e.body["booking_id"] == "b1" and e.version == 1 for e in recorded)
    assert recorded[-1].body["reason"] == "ice_disconnected" and recorded[-1].body["node_id"] == "n1"
    poor = recorded[2].body
    assert poor["up"] == {"rtt_ms": None, "loss": 0.3, "jitter_ms": 80.0, "bitrate_bps": 12000, "receiving": False}
    assert poor["suggest_audio_only"] is True
    # support's record is the latest report, whatever the events
    stored = await redis_client.hgetall(QUALITY.format("b1"))
    assert {k: json.loads(v)["quality"] for k, v in stored.items()} == {b"alice": "good", b"bob": "excellent"}
    # the room was told of every report and state, changed or not
    kinds = [env["m"]["type"] for _, env in pushed]
    assert kinds.count("quality") == 6 and kinds.count("media.status") == 2
