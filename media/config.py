"""Settings of the media SFU, independent of the process-wide settings object.

The session server maps its own settings onto this; media/ never reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # Addresses the SFU binds and announces as ICE host candidates. aioice leaves out 127.0.0.1 on
    # purpose, so in a loopback-only namespace this must say ("127.0.0.1",) or there is no candidate.
    # An empty tuple keeps aioice's own discovery of the machine's interfaces.
    announce_addresses: tuple[str, ...] = ()
    # 1:1 NAT (a cloud VM's private address behind a public one): (bound address, address to announce).
    # The answer's host candidates for the bound address carry the public one instead.
    nat_map: tuple[tuple[str, str], ...] = ()
    ice_servers: tuple[IceServer, ...] = ()
    # No datagram at all from a participant for this long: its media path is dead ("reconnecting").
    consent_timeout_s: float = 10.0
    # Datagrams still arrive (RTCP, consent) but no RTP for this long: "media_stopped".
    media_silence_timeout_s: float = 20.0
    # A peer connection that has not completed ICE+DTLS by then is closed with an error.
    connect_timeout_s: float = 20.0
    # At most one keyframe request per published video track per interval.
    keyframe_min_interval_s: float = 0.5
    # Quality reports are computed and pushed this often.
    quality_interval_s: float = 2.0
    # Consecutive poor reports after which the report suggests switching to audio only.
    poor_reports_before_audio_only: int = 3
    # The housekeeping tick (timeouts, pending keyframe requests).
    tick_s: float = 0.25
    # Hostile-input limits for offers.
    max_sdp_bytes: int = 64 * 1024
    max_media_sections: int = 8
    # Packets kept per forwarded video stream to answer NACKs with RTX.
    nack_history_size: int = 512
    # What one participant's feedback may cost (media/feedback.py). RTCP compound packets a second, and how
    # many may be saved up; what is over is dropped unread. A browser sends a few a second, dozens under loss.
    rtcp_rate_per_s: float = 100.0
    rtcp_burst: int = 100
    # NACK answers per subscriber video stream: the retransmitted payload is at most this share of the
    # payload forwarded on the stream, plus `rtx_burst_bytes` saved up (libwebrtc allows its whole rate).
    rtx_budget_share: float = 0.5
    rtx_burst_bytes: int = 64 * 1024
    # At most one REMB per forwarded stream per interval reaches the publisher; the last one held is sent late.
    remb_min_interval_s: float = 0.2
