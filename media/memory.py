"""Hand memory that closed sessions freed back to the operating system.

A peer connection allocates encoders' and transports' buffers from C (OpenSSL, libsrtp, PyAV) in worker
threads, and glibc's allocator keeps what is freed in per-thread arenas for reuse. Over a day of sessions
that shows as resident memory that only ever grows, though nothing is live. `malloc_trim(0)` returns the
free pages; it walks the heap, so the media server calls it once after rooms closed, not per packet.
Elsewhere than glibc (musl, macOS) there is nothing to call and releasing does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryReleaser:
    """Call `release()` when much was freed at once (a room closed)."""

    def __init__(self) -> None:
        self._trim = _find_malloc_trim()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def release(self) -> None:
        if self._trim is not None:
            self._trim(0)
