"""Where offers, answers and ICE candidates go: the `MediaBridge` seam between signaling and media.

In `relay` mode (today) each party's offer, answer and candidates go to the other party, so the two
browsers connect directly. A `media` mode implements the same protocol on top of the SFU: an offer
is answered by the server (`handle_offer`), candidates go to `add_candidate`, a participant who
leaves is `remove_participant`-ed, and what the SFU pushes (renegotiation offers, quality reports)
is sent to a participant through the `send` callback it is given; a participant who chooses audio only
gets no video and sends none (`audio_only`). The WebSocket edge has already
authorised the sender's role and target before it calls a bridge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

from .bus import envelope
from .messages import Answer, Candidate, IdSource, Offer, Quality, RelayedAnswer, RelayedCandidate, RelayedOffer

Signal = Offer | Answer | Candidate
# publish(room_id, envelope) puts a notice on the room's bus.
Publish = Callable[[str, str], Awaitable[None]]


class MediaBridge(Protocol):
    mode: str

    async def signal(self, room_id: str, sender: str, target: str, message: Signal) -> None: ...

    async def quality(self, room_id: str, sender: str, report: Quality) -> None: ...

    async def participant_left(self, room_id: str, participant_id: str) -> None: ...

    async def audio_only(self, room_id: str, participant_id: str, on: bool) -> None:
        """The participant chose audio only (or video again): their video stops (or resumes) both ways."""
        ...


class RelayBridge:
    """Peer to peer: pass each signal, unchanged but for its sender, to the other party."""

    mode = "relay"

    def __init__(self, publish: Publish, ids: IdSource) -> None:
        self._publish = publish
        self._ids = ids

    async def signal(self, room_id: str, sender: str, target: str, message: Signal) -> None:
        out: RelayedOffer | RelayedAnswer | RelayedCandidate
        if isinstance(message, Offer):
            out = RelayedOffer(id=self._ids(), sdp=message.sdp, from_=sender)
        elif isinstance(message, Answer):
            out = RelayedAnswer(id=self._ids(), sdp=message.sdp, from_=sender)
        else:
            out = RelayedCandidate(id=self._ids(), candidate=message.candidate, from_=sender)
        await self._publish(room_id, envelope(msgspec.to_builtins(out), to=target))

    async def quality(self, room_id: str, sender: str, report: Quality) -> None:
        # Browsers measure their direct connection themselves; support monitoring reads these later.
        return None

    async def participant_left(self, room_id: str, participant_id: str) -> None:
        return None

    async def audio_only(self, room_id: str, participant_id: str, on: bool) -> None:
        # The browsers connect directly: the page that chose audio only stops sending and showing video.
        return None
