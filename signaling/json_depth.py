"""A bound on how deeply a JSON text nests, checked before any decoder sees it.

JSON decoders recurse once per level of nesting, so a small frame of 100,000 `[` makes them raise
RecursionError (or exhaust the stack) instead of a refusal. No message or body of ours nests more than
a few levels; anything deeper is refused by counting, without decoding. Shared by the room protocol's
decoder and the server's HTTP and notification edges.
"""

from __future__ import annotations

import itertools
import re

MAX_JSON_DEPTH = 32

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class TooDeep(ValueError):
    """The JSON text nests deeper than the bound."""


def check_depth(raw: str | bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise TooDeep if `raw` nests arrays and objects deeper than `limit`; malformed text is left to the
    decoder, which refuses it."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return  # the common case: too few openers to be too deep, whatever the strings hold
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    if max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit:
        raise TooDeep(f"the JSON nests deeper than {limit} levels")
