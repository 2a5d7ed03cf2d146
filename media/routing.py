"""Pure decision of who receives what in a room.

A room is a session between two people, so every participant receives the other one's audio and video on
the transceivers of its own offer. A subscriber in audio-only mode receives no video; a publisher whose video
is held (it chose audio only) sends its video to nobody; a subscriber that did not offer a kind receives
nothing of that kind. Codec compatibility is per packet (payload type maps): a
packet whose codec the subscriber did not negotiate is not forwarded, because the SFU never transcodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MAX_PARTICIPANTS = 2


@dataclass(frozen=True, slots=True)
class PeerView:
    """What routing needs to know about one participant's current peer connection."""

    receives: frozenset[str]  # kinds it has a transceiver to receive on: {"audio", "video"}
    publishes: frozenset[str]  # kinds it sends
    audio_only: bool = False
    video_held: bool = False  # its video goes to nobody (the participant chose audio only)


def plan(peers: Mapping[str, PeerView]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(publisher id, kind) -> subscriber ids, for every published kind."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for pub_id, pub in peers.items():
        for kind in sorted(pub.publishes):
            if kind == "video" and pub.video_held:
                out[(pub_id, kind)] = ()
                continue
            subs = tuple(
                sub_id
                for sub_id, sub in peers.items()
                if sub_id != pub_id and kind in sub.receives and not (kind == "video" and sub.audio_only)
            )
            out[(pub_id, kind)] = subs
    return out
