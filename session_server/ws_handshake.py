"""One handshake policy for every WebSocket route: what a socket must show before it is accepted.

A browser always sends `Origin` on a WebSocket handshake and cannot forge it, and a WebSocket is not
bound by CORS: without this check any page a user visits could open a socket with the user's token
(in a cookie-less design, only if it has the token, but a leaked link is enough). A present `Origin` must
be one of the settings' origins (`allowed_origins`, or the public base URL's); a client that is not a
browser sends none and is let through, its token being checked next. A refused socket is closed before
it is accepted, which the client sees as HTTP 403.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.websockets import WebSocket

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403


class HandshakePolicy:
    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(o.rstrip("/") for o in origins)

    def origin_allowed(self, origin: str | None) -> bool:
        return origin is None or origin.rstrip("/") in self.origins

    async def admit(self, ws: WebSocket, route: str) -> bool:
        """True when the socket may go on; otherwise it is refused (403) and False."""
        if self.origin_allowed(ws.headers.get("origin")):
            return True
        log.info("%s socket refused: origin not allowed", route)
        await ws.close(CLOSE_FORBIDDEN)
        return False
