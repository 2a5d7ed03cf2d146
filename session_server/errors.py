"""Typed domain errors with a stable code and an HTTP status hint, and the catalogue of them all.

Every refusal the server makes is one of these. The HTTP edge turns them into RFC 9457 problem
documents, the WebSocket edge into `error` messages; both keep `code` stable so that clients can
branch on it. A raised error means nothing was changed.

A subclass that states its own `code` registers itself in the catalogue (`catalogue()`), with its
status, title and the first line of its docstring as its meaning: the OpenAPI document and the error
tables of docs/api.md and docs/protocol.md are checked against that one list. One code has one class:
the WebSocket and HTTP edges raise the same class for the same refusal (tests/test_openapi_catalogue.py
checks it; a second class that gives a known code another status is refused here at import).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .money import DEFAULT_LANGUAGE, format_money


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    code: str
    status: int
    title: str
    meaning: str
    error: type[DomainError]


_CATALOGUE: dict[str, CatalogueEntry] = {}


def _meaning(cls: type) -> str:
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def _register(cls: type[DomainError]) -> None:
    # a class without a docstring of its own has no meaning yet: tests/test_openapi_catalogue.py lists them
    entry = CatalogueEntry(cls.code, cls.status, cls.title, _meaning(cls), cls)
    known = _CATALOGUE.get(cls.code)
    if known is not None and known.status != cls.status:
        raise TypeError(f"{cls.__qualname__} gives code {cls.code!r} status {cls.status}, "
                        f"but {known.error.__qualname__} gives it {known.status}")
    if known is None or _same_class(known.error, cls):
        _CATALOGUE[cls.code] = entry  # a module imported again replaces its own entry


def _same_class(a: type, b: type) -> bool:
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def catalogue() -> list[CatalogueEntry]:
    """Every refusal the server can make, by code (what is imported so far: import the app first)."""
    return sorted(_CATALOGUE.values(), key=lambda e: e.code)


def lookup(code: str) -> CatalogueEntry | None:
    return _CATALOGUE.get(code)


def default_title(code: str) -> str:
    """The title of a code whose class gives none: the code in words (`slot_taken`: "Slot taken")."""
    return code.replace("_", " ").capitalize()


class DomainError(Exception):
    """The request is malformed."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            if "title" not in cls.__dict__:
                # the title names the problem type, which is the code: never a parent's, shared with others
                cls.title = default_title(cls.code)
            _register(cls)

    def __init__(self, message: str, **extra: Any) -> None:
        # A refusal's code, status and title are its class's: a new kind of refusal is a new subclass,
        # so that the catalogue (and the OpenAPI document and docs built from it) knows every code.
        clash = _FIXED.intersection(extra)
        if clash:
            raise TypeError(f"{type(self).__qualname__}: {sorted(clash)} come from the class, not the call")
        super().__init__(message)
        self.message = message
        self.extra = extra


    def detail(self, lang: str) -> str:
        """What the problem document's `detail` says to a reader of `lang`: the message, in English, unless
        the refusal is worded in more languages (`WordedError`)."""
        return self.message


_register(DomainError)
# What a problem document takes from the class: an `extra` of the same name would overwrite it.
_FIXED = frozenset({"code", "status", "title", "type", "detail", "instance"})


class WordedError(DomainError):
    """A refusal said in the reader's language (ar, fr, en), the amounts it names formatted for them.

    `texts` gives the sentence per language with `{name}` for each amount; the call gives the amounts in
    minor units with their currency. The message (logs, WebSocket) is the English sentence.
    """

    texts: ClassVar[Mapping[str, str]] = {}

    def __init__(self, *, amounts: Mapping[str, tuple[int, str]], **extra: Any) -> None:
        self.amounts = dict(amounts)
        super().__init__(self.detail(DEFAULT_LANGUAGE), **extra)

    def detail(self, lang: str) -> str:
        text = self.texts.get(lang) or self.texts[DEFAULT_LANGUAGE]
        return text.format(**{name: format_money(minor, currency, lang)
                              for name, (minor, currency) in self.amounts.items()})


class InvalidInput(DomainError):
    """The body, query or path does not have the expected shape (`errors` says where)."""

    status, code, title = 422, "invalid_input", "Invalid input"


class Unauthenticated(DomainError):
    """No valid credentials."""

    status, code, title = 401, "unauthenticated", "Unauthenticated"


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(DomainError):
    """No such resource, or not one the caller may see."""

    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(DomainError):
    """The path exists, but not with this method (`Allow` lists those it has)."""

    status, code, title = 405, "method_not_allowed", "Method not allowed"


class Conflict(DomainError):
    """The resource's current state does not allow this."""

    status, code, title = 409, "conflict", "Conflict"


class Gone(DomainError):
    """The resource existed and is gone for good."""

    status, code, title = 410, "gone", "Gone"


class PayloadTooLarge(DomainError):
    """The body is larger than the server accepts (`SESSION_SERVER_MAX_BODY_BYTES`)."""

    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(DomainError):
    """The body's media type is not one this route reads."""

    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RateLimited(DomainError):
    """Too many requests or messages: slow down (`retry_after_s` or `Retry-After` says how long)."""

    status, code, title = 429, "rate_limited", "Too many requests"


class InternalError(DomainError):
    """An unexpected error; it has been logged. Never a refusal: a defect."""

    status, code, title = 500, "internal_error", "Internal error"


class Unavailable(DomainError):
    """The service cannot answer now; try again later."""

    status, code, title = 503, "unavailable", "Service unavailable"


class RedisUnavailable(Unavailable):
    """The data store is not reachable; try again after `Retry-After`."""

    code, title = "redis_unavailable", "Redis unavailable"
