"""Time-limited TURN credentials: coturn's shared-secret REST scheme (`use-auth-secret`).

The server and coturn share one secret; nobody else learns it. Each participant gets, at join, a
username `<expiry unix time>:<participant id>` and the credential base64(HMAC-SHA1(secret, username)).
coturn recomputes the credential from the username and refuses it once the expiry has passed, so a
credential copied out of one page opens the relay for that participant only, and only for a while
(draft-uberti-behave-turn-rest, as coturn implements it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from .settings import IceServer


def turn_credential(secret: str, username: str) -> str:
    """What coturn expects as the password of `username` under `static-auth-secret=<secret>`."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def turn_server(urls: tuple[str, ...], secret: str, participant_id: str, *, now: int, valid_until: int,
                ttl_s: int) -> IceServer:
    """The TURN entry for one participant: valid until `valid_until` (the room's closing, when the relay is
    no longer needed), and never longer than `ttl_s` from `now`."""
    expiry = min(valid_until, now + ttl_s)
    username = f"{max(expiry, now + 60)}:{participant_id}"
    return IceServer(urls, username, turn_credential(secret, username))
