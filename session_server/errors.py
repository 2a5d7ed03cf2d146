"""Typed domain errors with a stable code and an HTTP status hint.

Every refusal the server makes is one of these. The HTTP edge turns them into RFC 9457 problem
documents, the WebSocket edge into `error` messages; both keep `code` stable so that clients can
branch on it. A raised error means nothing was changed.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal with a stable machine-readable code."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type(self) is DomainError:  # a refusal of its own kind: its title names it ("Slot taken")
            self.title = self.code.replace("_", " ").capitalize()
        self.extra = extra


class InvalidInput(DomainError):
    status, code, title = 422, "invalid_input", "Invalid input"


class Unauthenticated(DomainError):
    status, code, title = 401, "unauthenticated", "Unauthenticated"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class Gone(DomainError):
    status, code, title = 410, "gone", "Gone"


class PayloadTooLarge(DomainError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(DomainError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RateLimited(DomainError):
    status, code, title = 429, "rate_limited", "Too many requests"


class Unavailable(DomainError):
    status, code, title = 503, "unavailable", "Service unavailable"
