"""Sealed files on disk, written with aiofiles: a temp file in the same directory, fsync, rename.

A file is either complete under its final name or absent: a writer that fails or is cancelled removes
its temp file, and `sweep()` at start removes temp files a crashed process left behind. Only sealed
bytes reach this module; names on disk are document ids, never user input. Files are created 0600
inside a 0700 directory: only the server's own user reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiofiles
import aiofiles.os

SUFFIX = ".ssd"
TEMP_SUFFIX = ".part"
WRITE_BATCH = 512 * 1024  # fewer thread hops per write; bounded, so memory stays flat


class BlobWriter:
    """Batched writes with one write in flight: the caller prepares the next batch (sealing it) while
    the previous one is being written, so the CPU work hides behind the disk."""

    def __init__(self, file: aiofiles.threadpool.binary.AsyncBufferedIOBase) -> None:
        self._file = file
        self._buf = bytearray()
        self._inflight: asyncio.Task[int] | None = None
        self.written = 0

    async def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        if not self._buf and len(data) >= WRITE_BATCH:
            await self._submit(data)  # large enough already: no copy into the buffer
            return
        self._buf += data
        if len(self._buf) >= WRITE_BATCH:
            await self._flush()

    async def _submit(self, data: bytes | memoryview) -> None:
        await self._wait()
        self._inflight = asyncio.ensure_future(self._file.write(data))
        self.written += len(data)

    async def _wait(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    async def _flush(self) -> None:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            await self._submit(data)

    async def _commit(self) -> None:
        await self._flush()
        await self._wait()
        await self._file.flush()
        await asyncio.to_thread(os.fsync, self._file.fileno())

    async def _abandon(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            # The write runs in a thread and cannot be stopped: let it end before the file closes.
            with contextlib.suppress(BaseException):
                await asyncio.shield(task)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, blob_id: str) -> Path:
        if not blob_id or not all(c in "0123456789abcdefghijklmnopqrstuvwxyz-_" for c in blob_id):
            raise ValueError("a blob id is lower-case letters, digits, '-' and '_'")
        return self.root / f"{blob_id}{SUFFIX}"

    async def ensure(self) -> None:
        await aiofiles.os.makedirs(self.root, mode=0o700, exist_ok=True)

    @contextlib.asynccontextmanager
    async def create(self, blob_id: str) -> AsyncIterator[BlobWriter]:
        """Write a new blob; it appears under its name only if the block finishes without error."""
        final = self.path(blob_id)
        temp = self.root / f".{blob_id}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        done = False
        try:
            async with aiofiles.open(temp, "xb", opener=_owner_only) as f:
                writer = BlobWriter(f)
                try:
                    yield writer
                    await writer._commit()
                finally:
                    await writer._abandon()
            await aiofiles.os.rename(temp, final)
            await asyncio.to_thread(_fsync_dir, self.root)
            done = True
        finally:
            if not done:
                # Shielded so that a cancelled upload still removes what it started.
                await asyncio.shield(_unlink(temp))

    async def delete(self, blob_id: str) -> None:
        await _unlink(self.path(blob_id))

    async def exists(self, blob_id: str) -> bool:
        return await aiofiles.os.path.exists(self.path(blob_id))

    async def size(self, blob_id: str) -> int:
        return (await aiofiles.os.stat(self.path(blob_id))).st_size

    async def sweep(self) -> int:
        """Remove temp files left by a process that died mid-upload; returns how many."""
        def run() -> int:
            count = 0
            if not self.root.exists():
                return 0
            for entry in self.root.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                    entry.unlink(missing_ok=True)
                    count += 1
            return count
        return await asyncio.to_thread(run)

    def temp_files(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.endswith(TEMP_SUFFIX))

    @staticmethod
    async def read_range(path: Path, offset: int, length: int, block: int) -> AsyncIterator[bytes]:
        """`length` bytes from `offset`, in reads of `block` bytes (the last may be shorter)."""
        async with aiofiles.open(path, "rb") as f:
            await f.seek(offset)
            remaining = length
            while remaining > 0:
                data = await f.read(min(block, remaining))
                if not data:
                    return
                remaining -= len(data)
                yield data


def _owner_only(path: str, flags: int) -> int:
    """Create the file readable and writable by its owner only (0600), like the directory around it."""
    return os.open(path, flags, 0o600)


async def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        await aiofiles.os.remove(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
