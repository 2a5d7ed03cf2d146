"""The room protocol's messages, version 1: typed values tagged by `type`, decoded strictly.

Every client message carries a `type` and an `id` (the client's own, echoed as `ref` in replies; for
`chat.send` it is also the idempotency key). Unknown fields are refused, so a typo is an error rather
than a silently ignored value. docs/protocol.md is the reference with a complete example exchange.
"""

from __future__ import annotations

import itertools
import os
from typing import Annotated, Any, Literal

import msgspec

from .json_depth import TooDeep, check_depth

PROTOCOL_VERSION = 1
SUBPROTOCOL = "session.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
MAX_FRAME_BYTES = 64 * 1024
MAX_SDP_CHARS = 48 * 1024

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ParticipantId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Sdp = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SDP_CHARS)]
Number = Annotated[float, msgspec.Meta(ge=0, le=1e9)]


class _Client(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    id: Id


# --- client -> server ------------------------------------------------------------------------------


class Join(_Client, tag="join"):
    v: int = PROTOCOL_VERSION
    token: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    last_seq: Seq | None = None  # resume: every chat message after this one is sent once, in order
    audio_only: bool = False


class Leave(_Client, tag="leave"):
    pass


class Ping(_Client, tag="ping"):
    pass


class Pong(_Client, tag="pong"):
    ref: Id | None = None


class Offer(_Client, tag="offer"):
    sdp: Sdp
    to: ParticipantId | None = None


class Answer(_Client, tag="answer"):
    sdp: Sdp
    to: ParticipantId | None = None


class IceCandidate(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    """As the browser's RTCIceCandidate.toJSON() gives it."""

    candidate: Annotated[str, msgspec.Meta(max_length=1024)]
    sdp_mid: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    sdp_m_line_index: Annotated[int, msgspec.Meta(ge=0, le=64)] | None = msgspec.field(
        default=None, name="sdpMLineIndex")
    username_fragment: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class Candidate(_Client, tag="candidate"):
    candidate: IceCandidate | None  # null: end of candidates
    to: ParticipantId | None = None


class ChatSend(_Client, tag="chat.send"):
    text: Annotated[str, msgspec.Meta(min_length=1)]


class ChatReceived(_Client, tag="chat.received"):
    seq: Seq


class Typing(_Client, tag="typing"):
    active: bool


class MediaState(_Client, tag="media.state"):
    audio: bool  # the microphone is on
    video: bool  # the camera is on
    audio_only: bool = False  # no video either way (in `sfu` mode the server stops forwarding it)
    camera: bool = True  # false: this browser has no camera it may use (none, or permission refused)
    microphone: bool = True  # false: no microphone it may use


class Quality(_Client, tag="quality"):
    rtt_ms: Number | None = None
    jitter_ms: Number | None = None
    packets_lost: Number | None = None
    frames_decoded: Number | None = None
    bitrate_kbps: Number | None = None


class ProblemReport(_Client, tag="problem.report"):
    kind: Literal["audio", "video", "connection", "other"] = "other"
    note: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class EndTechnical(_Client, tag="session.end_technical"):
    """The practitioner ends a session that a technical problem broke: "technical problem, reschedule"."""


class TokenRefresh(_Client, tag="token.refresh"):
    token: Annotated[str, msgspec.Meta(max_length=8192)]


ClientMessage = (Join | Leave | Ping | Pong | Offer | Answer | Candidate | ChatSend | ChatReceived | Typing
                 | MediaState | Quality | ProblemReport | EndTechnical | TokenRefresh)
CLIENT_TYPES: frozenset[str] = frozenset(
    str(t.__struct_config__.tag) for t in ClientMessage.__args__)


class _Peek(msgspec.Struct):
    type: Any = None
    id: Any = None


class ProtocolError(Exception):
    """A message that cannot be accepted; `ref` is its id when it had a readable one."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


_peek = msgspec.json.Decoder(_Peek)
_decoder = msgspec.json.Decoder(ClientMessage)


def decode(raw: str | bytes) -> ClientMessage:
    """One client frame as a typed message, or a ProtocolError naming what is wrong (never the value)."""
    try:
        check_depth(raw)
    except TooDeep as exc:
        raise ProtocolError("json_too_deep", str(exc)) from None
    try:
        message: ClientMessage = _decoder.decode(raw)
        return message
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass  # find out precisely what is wrong, below
    try:
        head = _peek.decode(raw)
    except msgspec.ValidationError:  # a subclass of DecodeError: valid JSON, wrong shape
        raise ProtocolError("invalid_message", "the message must be a JSON object") from None
    except msgspec.DecodeError:
        raise ProtocolError("invalid_json", "the message is not valid JSON") from None
    ref = head.id if isinstance(head.id, str) and 0 < len(head.id) <= 64 else None
    if not isinstance(head.type, str):
        raise ProtocolError("invalid_message", "the message needs a string `type`", ref)
    if head.type not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", "this message type is not part of protocol v1", ref)
    try:
        _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        # msgspec names the field and the expectation, never the offending value
        raise ProtocolError("invalid_message", str(exc), ref) from None
    raise ProtocolError("invalid_message", "the message does not decode", ref)


# --- server -> client ------------------------------------------------------------------------------


class _Server(msgspec.Struct, tag_field="type", omit_defaults=True):
    id: str


class Participant(msgspec.Struct, omit_defaults=False):
    id: str
    name: str
    role: str
    state: str = "connected"  # connected | reconnecting
    audio: bool = True
    video: bool = True
    audio_only: bool = False
    camera: bool = True  # false: no camera this participant may use
    microphone: bool = True  # false: no microphone this participant may use
    joined_at: int = 0  # epoch ms of this connection's join


class RoomInfo(msgspec.Struct):
    id: str
    state: str  # empty | waiting_for_practitioner | waiting_for_client | in_session
    opens_at: int
    closes_at: int
    starts_at: int
    ends_at: int
    started_at: int | None = None


class ChatMessage(_Server, tag="chat.message"):
    seq: int
    time: int  # epoch ms, server clock
    sender: Participant | dict[str, str]
    text: str
    ref: str = ""  # the sender's message id


class Joined(_Server, tag="joined"):
    ref: str
    v: int
    room: RoomInfo
    you: Participant
    participants: list[Participant]
    ice_servers: list[dict[str, Any]]
    chat: list[ChatMessage]
    chat_seq: int
    media_mode: str
    heartbeat_interval_s: float
    limits: dict[str, float]
    chat_more: bool = False  # the history goes on in `chat.history` frames, before anything live


class ChatHistory(_Server, tag="chat.history"):
    """The next page of a resumed history, each frame within the frame limit."""

    chat: list[ChatMessage]
    more: bool


class ParticipantJoined(_Server, tag="participant.joined"):
    participant: Participant
    resumed: bool = False


class ParticipantLeft(_Server, tag="participant.left"):
    participant_id: str
    reason: str


class ParticipantReconnecting(_Server, tag="participant.reconnecting"):
    participant_id: str


class ParticipantUpdated(_Server, tag="participant.updated"):
    participant: Participant


class SessionStarted(_Server, tag="session.started"):
    at: int


class RelayedOffer(_Server, tag="offer"):
    sdp: str
    from_: str = msgspec.field(name="from")


class RelayedAnswer(_Server, tag="answer"):
    sdp: str
    from_: str = msgspec.field(name="from")


class RelayedCandidate(_Server, tag="candidate"):
    candidate: IceCandidate | None
    from_: str = msgspec.field(name="from")


class ChatAck(_Server, tag="chat.ack"):
    ref: str
    seq: int
    duplicate: bool = False


class ChatDelivered(_Server, tag="chat.delivered"):
    seq: int
    by: str


class TypingNotice(_Server, tag="typing"):
    participant_id: str
    active: bool


class ServerPing(_Server, tag="ping"):
    pass


class ServerPong(_Server, tag="pong"):
    ref: str = ""


class Ack(_Server, tag="ack"):
    ref: str


class RoomClosing(_Server, tag="room.closing"):
    reason: str  # for people; `code` is for the page
    code: str  # session_over | booking_cancelled | booking_rescheduled | practitioner_suspended | booking_ended
    #            | session_ended


class Outage(_Server, tag="outage"):
    """Media between the parties is down past the threshold (`ongoing`), back (`resolved`), or the session's
    verdict is written (`ended`, just before `room.closing`). Outages' notices travel on the room's push
    channel as the same JSON; `ended` is sent by each node to its own members."""

    state: str  # ongoing | resolved | ended
    since: int | None = None  # epoch ms the media stopped (ongoing, resolved)
    side: str | None = None  # platform | client_connection | practitioner_connection | unknown
    gives_up_at: int | None = None  # epoch ms the room stops waiting (ongoing)
    verdict: str | None = None  # ended: the session's verdict


class SupportUpdate(_Server, tag="support.update"):
    """To the participant who reported a problem: where their ticket stands (no agent's note)."""

    ticket_id: str
    status: str  # open | acknowledged | resolved | unresolvable


class TokenRefreshed(_Server, tag="token.refreshed"):
    ref: str  # the client's token.refresh, or "" when the server renewed the token by itself
    expires_at: int  # epoch seconds: the connection is closed (4401) then unless refreshed again
    token: str | None = None  # the server's renewal: the token to rejoin with from now on


class Error(_Server, tag="error"):
    code: str
    message: str
    ref: str | None = None
    retry_after_s: float | None = None
    reason: str | None = None  # room_closed: why, with a `room.closing` code (the page says which)


ServerMessage = (ChatMessage | ChatHistory | Joined | ParticipantJoined | ParticipantLeft | ParticipantReconnecting
                 | ParticipantUpdated | SessionStarted | RelayedOffer | RelayedAnswer | RelayedCandidate
                 | ChatAck | ChatDelivered | TypingNotice | ServerPing | ServerPong | Ack | RoomClosing | TokenRefreshed
                 | Outage | SupportUpdate | Error)

_encoder = msgspec.json.Encoder()


def encode(message: ServerMessage | dict[str, Any]) -> str:
    return _encoder.encode(message).decode()


def to_builtins(message: ServerMessage) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(message)
    return out


class IdSource:
    """Server message ids: unique per process start, cheap, never reused within a connection."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return f"s{self._prefix}{next(self._count):x}"


# Close codes (the 4xxx range is ours; see docs/protocol.md).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_SLOW_CONSUMER = 4008
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_HEARTBEAT_TIMEOUT = 4408
CLOSE_REPLACED = 4409
CLOSE_ROOM_CLOSED = 4410
CLOSE_BAD_HANDSHAKE = 4400
CLOSE_NOT_OPEN_YET = 4425
CLOSE_TOO_MANY = 4429
