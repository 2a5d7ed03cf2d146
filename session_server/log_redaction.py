"""No log line holds a token, wherever a client put it.

Clients sometimes send their access token in a URL (`?token=`, `?access_token=`, a path segment). The
server refuses it, but uvicorn's access and error logs print the request line as received, and our own
log lines may quote a path parameter. A filter on every handler rewrites each record before it is
written: query strings are dropped to `?[redacted]` (they are never needed to read a log), and anything
shaped like a JWT, even cut short, becomes `[token]`. Exception texts go through the same rewrite.
"""

from __future__ import annotations

import logging
import re

# A JWT's header is base64url JSON, so it starts with `eyJ` ('{"'); a cut-off one is still a secret's
# beginning. `bearer.` is how the room socket's subprotocol carries one.
_JWT = re.compile(r"(?:bearer\.)?eyJ[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){0,2}", re.IGNORECASE)
# A query string in a request line or URL: from `?` to the end of the URL (space or quote).
_QUERY = re.compile(r"(?<=[^\s?'\"])\?[^\s'\"]+")
REDACTED_QUERY = "?[redacted]"
REDACTED_TOKEN = "[token]"


def redact(text: str) -> str:
    """`text` without query strings and JWT-shaped values."""
    return _JWT.sub(REDACTED_TOKEN, _QUERY.sub(REDACTED_QUERY, text))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and its exception text) through `redact`; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as logging does
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of `logger` (the root's by default), where every record ends."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
