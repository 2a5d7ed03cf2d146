"""Typed media errors. `code` is stable: the signaling layer sends it to clients as is."""

from __future__ import annotations


class MediaError(Exception):
    """A media request was refused; nothing changed for any other participant or room."""

    code: str = "media_error"

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


# The catalogue of codes (docs/media.md lists what each means).
SDP_TOO_LARGE = "sdp_too_large"
SDP_MALFORMED = "sdp_malformed"
TOO_MANY_MEDIA = "too_many_media"
MISSING_ICE_CREDENTIALS = "missing_ice_credentials"
MISSING_FINGERPRINT = "missing_fingerprint"
BUNDLE_REQUIRED = "bundle_required"
NO_SUPPORTED_CODEC = "no_supported_codec"
NO_MEDIA = "no_media"
ROOM_FULL = "room_full"
UNKNOWN_PARTICIPANT = "unknown_participant"
INVALID_CANDIDATE = "invalid_candidate"
NEGOTIATION_FAILED = "negotiation_failed"
SERVER_STOPPED = "server_stopped"
INVALID_ICE_CREDENTIALS = "invalid_ice_credentials"
INVALID_FINGERPRINT = "invalid_fingerprint"
INVALID_DTLS_SETUP = "invalid_dtls_setup"
INVALID_SSRC = "invalid_ssrc"
INVALID_PAYLOAD_TYPE = "invalid_payload_type"
INVALID_CLOCK_RATE = "invalid_clock_rate"
INVALID_EXTMAP = "invalid_extmap"
UNSUPPORTED_TRANSPORT = "unsupported_transport"
RTCP_MUX_REQUIRED = "rtcp_mux_required"

CODES = frozenset(
    {
        SDP_TOO_LARGE,
        SDP_MALFORMED,
        TOO_MANY_MEDIA,
        MISSING_ICE_CREDENTIALS,
        MISSING_FINGERPRINT,
        BUNDLE_REQUIRED,
        NO_SUPPORTED_CODEC,
        NO_MEDIA,
        ROOM_FULL,
        UNKNOWN_PARTICIPANT,
        INVALID_CANDIDATE,
        NEGOTIATION_FAILED,
        SERVER_STOPPED,
        INVALID_ICE_CREDENTIALS,
        INVALID_FINGERPRINT,
        INVALID_DTLS_SETUP,
        INVALID_SSRC,
        INVALID_PAYLOAD_TYPE,
        INVALID_CLOCK_RATE,
        INVALID_EXTMAP,
        UNSUPPORTED_TRANSPORT,
        RTCP_MUX_REQUIRED,
    }
)
