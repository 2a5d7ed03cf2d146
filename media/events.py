"""What the SFU tells the room layer. Frozen values, delivered through the MediaServer's `on_event`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from media.quality import DirectionStats, Quality


class MediaState(StrEnum):
    CONNECTING = "connecting"  # an offer was answered, ICE/DTLS under way
    CONNECTED = "connected"  # ICE and DTLS up, media can flow
    RECONNECTING = "reconnecting"  # the media path died or a new offer replaces it; the participant stays
    MEDIA_STOPPED = "media_stopped"  # the path is alive but no RTP arrives
    FAILED = "failed"  # ICE/DTLS never completed; the peer connection was closed
    CLOSED = "closed"  # removed by the room


@dataclass(frozen=True, slots=True)
class MediaStateChanged:
    room_id: str
    participant_id: str
    state: MediaState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class QualityReport:
    room_id: str
    participant_id: str
    quality: Quality  # the worse of both directions
    up: DirectionStats  # participant -> server
    down: DirectionStats  # server -> participant
    suggest_audio_only: bool
    at: float  # time.time()


MediaEvent = MediaStateChanged | QualityReport
