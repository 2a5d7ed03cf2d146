"""What a document really is, from its bytes: magic numbers first, never the name or the header.

`sniff(head)` decides the media type from the first bytes. Plain text is the only type that cannot be
told from a prefix, so a `TextGuard` checks every later chunk too: valid UTF-8 throughout, no NUL, no
control characters other than whitespace, and no markup that a browser would run (HTML, SVG, script).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

PDF = "application/pdf"
JPEG = "image/jpeg"
PNG = "image/png"
TEXT = "text/plain"

# Bytes needed to decide; a shorter document is judged on what it has.
SNIFF_BYTES = 4096

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", PDF),
    (b"\xff\xd8\xff", JPEG),
    (b"\x89PNG\r\n\x1a\n", PNG),
)

# Known formats that are refused by name in the error, so the uploader learns why.
_REFUSED: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "an ELF executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Java class or Mach-O universal binary"),
    (b"PK\x03\x04", "a zip archive (or office document)"),
    (b"PK\x05\x06", "a zip archive"),
    (b"PK\x07\x08", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"Rar!\x1a\x07", "a rar archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"#!", "a script"),
)

# Markup a browser would render or run, matched case-insensitively anywhere in a text document.
_MARKUP = re.compile(
    rb"<\s*(?:script|html|svg|iframe|object|embed|body|head|meta|link|style|img|a\s|form|xml|!doctype)"
    rb"|<\?xml|javascript:|<\s*[a-z][a-z0-9-]*\s[^>]*\bon[a-z]+\s*=",
    re.IGNORECASE,
)
_MARKUP_OVERLAP = 32  # longest marker, so one split across two chunks is still seen
_BAD_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")


class Refused(Exception):
    """The content is not an allowed document type; the message says what it looks like."""

    def __init__(self, message: str, code: str = "unsupported_document_type") -> None:
        super().__init__(message)
        self.code = code


def sniff(head: bytes, allowed: tuple[str, ...]) -> str:
    """The media type of a document starting with `head` (raises Refused if it is not allowed)."""
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            if media_type not in allowed:
                raise Refused(f"{media_type} documents are not accepted here")
            return media_type
    for magic, what in _REFUSED:
        if head.startswith(magic):
            raise Refused(f"the content is {what}, which is never accepted")
    if TEXT not in allowed:
        raise Refused("the content is not one of the accepted types: " + ", ".join(allowed))
    TextGuard().check(head, final=False)
    return TEXT


@dataclass
class TextGuard:
    """Checks a text document chunk by chunk, across chunk boundaries."""

    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="strict"))
    _tail: bytes = b""

    def check(self, data: bytes, *, final: bool) -> None:
        try:
            self._decoder.decode(data, final=final)
        except UnicodeDecodeError:
            raise Refused("the content is neither PDF, JPEG, PNG nor valid UTF-8 text") from None
        if _BAD_CONTROLS.search(data):
            raise Refused("the content holds binary control bytes, so it is not plain text")
        window = self._tail + data
        if _MARKUP.search(window):
            raise Refused("the text holds HTML, SVG or script markup, which is never accepted",
                          code="active_content")
        self._tail = window[-_MARKUP_OVERLAP:]
