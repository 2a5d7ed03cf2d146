"""Document names made safe to show and to put in a Content-Disposition header.

A name is only ever a label: files on disk are named by document id. Arabic, French and every other
script are kept; path separators, traversal, control and bidirectional-override characters are removed.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

MAX_NAME_CHARS = 200

# Bidi overrides and isolates can make "gpj.exe" show as "exe.jpg"; Arabic text never needs them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


class UnsafeName(ValueError):
    """The name cannot be made safe (NUL, not UTF-8, or nothing left)."""

    code = "invalid_document_name"


def decode_header_name(raw: str) -> str:
    """A name sent in a header: RFC 5987 (`UTF-8''%D8%B1...`) or plain percent-encoded UTF-8."""
    value = raw.strip()
    if value.lower().startswith("utf-8''"):
        value = value[7:]
    try:
        return unquote(value, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise UnsafeName("the name is not percent-encoded UTF-8") from None


def safe_name(raw: str) -> str:
    """The name to store and show, or UnsafeName."""
    if "\x00" in raw:
        raise UnsafeName("the name contains a NUL character")
    name = unicodedata.normalize("NFC", raw)
    kept = []
    for ch in name:
        cat = unicodedata.category(ch)
        if ch in _BIDI_CONTROLS or cat in ("Cc", "Cs", "Co", "Cn") or (cat == "Cf" and ch != "\u200c"
                                                                          and ch != "\u200d"):
            continue
        kept.append(" " if cat in ("Zl", "Zp") else ch)
    name = "".join(kept)
    # Every path separator splits; traversal components and empty parts are dropped.
    parts = [p.strip() for p in name.replace("\\", "/").split("/")]
    parts = [p for p in parts if p and p not in (".", "..")]
    name = "_".join(parts).strip().lstrip(".").strip()
    name = " ".join(name.split())  # collapse runs of whitespace
    if not name:
        raise UnsafeName("the name is empty once path separators and control characters are removed")
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 10 and stem:
            name = stem[:MAX_NAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_NAME_CHARS]
    return name


def ascii_fallback(name: str) -> str:
    """A plain ASCII name for old clients (RFC 6266 `filename=`); the real one goes in `filename*`."""
    out = []
    for ch in unicodedata.normalize("NFKD", name):
        if ch.isascii() and (ch.isalnum() or ch in " ._-()"):
            out.append(ch)
        elif not unicodedata.combining(ch):
            out.append("_")
    text = "".join(out).strip() or "document"
    return text


def content_disposition(name: str, *, inline: bool = False) -> str:
    from urllib.parse import quote

    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_fallback(name)}\"; filename*=UTF-8''{quote(name, safe='')}"
