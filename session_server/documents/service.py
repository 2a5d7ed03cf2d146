"""The document service: streamed sealed uploads, verified streamed downloads, shares, shredding, rekeying.

Plaintext lives only in memory, one chunk (plus one request read) at a time; the disk sees the sealed
stream. An upload that fails for any reason leaves neither a file nor metadata; a download sends only
bytes whose chunk tag verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import redis.asyncio as aioredis

from files import format as fmt
from files.blobs import BlobStore
from files.keyring import KeyRing
from files.names import UnsafeName, safe_name
from files.sniff import SNIFF_BYTES, TEXT, Refused, TextGuard, sniff
from session_server.auth import USER_ID, Identity
from session_server.batching import Batch
from session_server.bookings.errors import BookingNotFound
from session_server.bookings.model import Booking, load_booking
from session_server.clock import Clock, SystemClock
from session_server.settings import Settings

from . import rules
from .rules import DocumentMeta, Share, ShareKind
from .store import KEYRING_NODE_KEY, DocumentStore

log = logging.getLogger(__name__)

READ_CHUNKS = 8  # chunks per disk read on download (~512 KiB)
SEAL_BATCH = 1024 * 1024  # plaintext handed to the sealing thread at a time


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_bytes: int
    types: tuple[str, ...]
    idle_timeout_s: float


class _IdleWatch:
    """Abandons an upload whose client sent nothing for `idle_s`: one timer, not one per read."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.waiting_since: float | None = None
        self.fired = False
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: asyncio.Timeout | None = None

    def arm(self, deadline: asyncio.Timeout) -> None:
        self._deadline = deadline
        self._handle = self._loop.call_later(self.idle_s, self._check)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        since = self.waiting_since
        if since is not None and now - since >= self.idle_s:
            self.fired = True
            assert self._deadline is not None
            self._deadline.reschedule(now)
            return
        self._handle = self._loop.call_at((since if since is not None else now) + self.idle_s, self._check)

    async def next(self, it: AsyncIterator[bytes]) -> bytes | None:
        self.waiting_since = self._loop.time()
        try:
            return await it.__anext__()
        except StopAsyncIteration:
            return None
        finally:
            self.waiting_since = None


class _BatchSealer:
    """Checks, hashes and seals a batch of received reads (about SEAL_BATCH bytes, gathered by a `Batch`)
    in one go.

    Sealed batches go into two buffers used in turn: the writer keeps at most one write in flight, so
    a buffer is free again by the time it comes round.
    """

    def __init__(self, sealer: fmt.Sealer, guard: TextGuard | None) -> None:
        self.sealer = sealer
        self.guard = guard
        self.digest = hashlib.sha256()
        self._buffers = [bytearray(), bytearray()]
        self._turn = 0

    def feed(self, batch: list[bytes]) -> memoryview:
        need = fmt.Sealer.max_output(2 * fmt.CHUNK_SIZE, sum(len(d) for d in batch))
        out = self._buffers[self._turn]
        if len(out) < need:
            # Replaced, never resized: the previous sealed batch may still be on its way to the disk.
            out = self._buffers[self._turn] = bytearray(need)
        self._turn ^= 1
        pos = 0
        for data in batch:
            if self.guard is not None:
                self.guard.check(data, final=False)
            self.digest.update(data)
            pos += self.sealer.feed_into(data, out, pos)
        return memoryview(out)[:pos]

    def finish(self) -> bytes:
        if self.guard is not None:
            self.guard.check(b"", final=True)
        return self.sealer.finish()


@dataclass
class Download:
    """A verified start of a download: headers can be sent, the rest streams from `body`."""

    doc: DocumentMeta
    status: int
    start: int
    length: int
    body: AsyncIterator[bytes | memoryview]


class DocumentService:
    def __init__(self, redis: aioredis.Redis, keyring: KeyRing, root: Path, limits: UploadLimits,
                 clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.store = DocumentStore(redis, clock=self.clock)
        self.redis = redis
        self.keyring = keyring
        self.blobs = BlobStore(root)
        self.limits = limits

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, keyring: KeyRing, settings: Settings,
                      clock: Clock | None = None) -> DocumentService:
        return cls(redis, keyring, settings.data_dir / "documents",
                   UploadLimits(settings.document_max_bytes, settings.document_types,
                                settings.upload_idle_timeout_s), clock)

    async def start(self) -> None:
        await self.blobs.ensure()
        removed = await self.blobs.sweep()
        if removed:
            log.info("removed %d unfinished upload(s) left by an earlier run", removed)

    # --- upload ----------------------------------------------------------------------------------

    async def upload(self, owner: Identity, stream: AsyncIterator[bytes], *, raw_name: str,
                     declared_type: str | None, declared_length: int | None,
                     now: int | None = None) -> DocumentMeta:
        rules.require_uploader(owner)
        try:
            name = safe_name(raw_name)
        except UnsafeName as exc:
            raise rules.InvalidDocumentName(str(exc)) from None
        rules.check_name(name)
        limit = self.limits.max_bytes
        if declared_length is not None and declared_length > limit:
            raise rules.DocumentTooLarge(f"documents are limited to {limit} bytes")
        rules.check_not_multipart(declared_type)
        watch = _IdleWatch(self.limits.idle_timeout_s)
        try:
            async with asyncio.timeout(None) as deadline:
                watch.arm(deadline)
                try:
                    meta, header = await self._receive(owner, stream, watch, name=name,
                                                       declared_type=declared_type, now=now)
                finally:
                    watch.disarm()
        except TimeoutError:
            if watch.fired:
                raise rules.UploadIdle(f"no data arrived for {watch.idle_s:g} s; "
                                       "the upload was abandoned") from None
            raise
        try:
            await asyncio.shield(self.store.create(meta, header))
        except BaseException:
            await asyncio.shield(self.blobs.delete(meta.id))
            raise
        log.info("document %s uploaded (%s, %d bytes)", meta.id, meta.media_type, meta.size)
        return meta

    async def _receive(self, owner: Identity, stream: AsyncIterator[bytes], watch: _IdleWatch, *,
                       name: str, declared_type: str | None,
                       now: int | None) -> tuple[DocumentMeta, fmt.Header]:
        limit = self.limits.max_bytes
        it = stream.__aiter__()
        head = bytearray()
        while len(head) < SNIFF_BYTES and (chunk := await watch.next(it)) is not None:
            head += chunk
            if len(head) > limit:
                raise rules.DocumentTooLarge(f"documents are limited to {limit} bytes")
        if not head:
            raise rules.EmptyDocument("the document is empty")
        try:
            media_type = sniff(bytes(head[:SNIFF_BYTES]), self.limits.types)
        except Refused as exc:
            raise rules.type_refused(exc) from None
        rules.check_declared_type(declared_type, media_type)

        doc_id = uuid.uuid4()
        header, data_key = fmt.new_header(self.keyring, doc_id.bytes)
        seal = _BatchSealer(fmt.Sealer(header, data_key), TextGuard() if media_type == TEXT else None)
        size = len(head)
        try:
            async with self.blobs.create(doc_id.hex) as out:
                await out.write(seal.sealer.preamble())
                received: Batch[bytes] = Batch(SEAL_BATCH, len)
                received.add(bytes(head))
                while (chunk := await watch.next(it)) is not None:
                    size += len(chunk)
                    if size > limit:
                        raise rules.DocumentTooLarge(f"documents are limited to {limit} bytes")
                    if received.add(chunk):
                        await out.write(seal.feed(received.drain()))
                await out.write(seal.feed(received.drain()))
                await out.write(seal.finish())
        except Refused as exc:
            raise rules.type_refused(exc) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise rules.StorageFull("the document store is full; nothing was saved") from None
            raise
        meta = DocumentMeta(id=doc_id.hex, owner_id=owner.sub, name=name, media_type=media_type, size=size,
                            sha256=seal.digest.hexdigest(),
                            created_at=int(now if now is not None else self.clock.now()))
        return meta, header

    # --- reading ---------------------------------------------------------------------------------

    async def _bookings(self, shares: list[Share]) -> dict[str, Booking | None]:
        ids = {s.booking_id for s in shares if s.kind is ShareKind.BOOKING and s.active}
        return {b: await load_booking(self.redis, b) for b in ids}

    async def readable(self, identity: Identity, document_id: str) -> DocumentMeta:
        if not rules.DOCUMENT_ID.match(document_id):
            raise rules.DocumentNotFound("no such document")
        doc = await self.store.get(document_id)
        shares = await self.store.shares_of(document_id) if doc is not None else []
        return rules.require_reader(identity, doc, shares, await self._bookings(shares))

    async def owned(self, identity: Identity, document_id: str) -> DocumentMeta:
        if not rules.DOCUMENT_ID.match(document_id):
            raise rules.DocumentNotFound("no such document")
        return rules.require_owner(identity, await self.store.get(document_id))

    async def open_download(self, identity: Identity, document_id: str,
                            range_header: str | None, *, now: int | None = None) -> Download:
        doc = await self.readable(identity, document_id)
        header = await self.store.header(doc.id)
        if header is None:
            raise rules.DocumentDeleted("the document was deleted")
        try:
            if header.fixed.document_id != uuid.UUID(hex=doc.id).bytes:
                raise fmt.TamperedError("the header belongs to another document")
            opener = fmt.Opener(header, fmt.unwrap_data_key(self.keyring, header), doc.size)
        except fmt.KeyUnavailable as exc:
            log.error("document %s cannot be opened: %s", doc.id, exc.code)
            raise rules.integrity_error(
                exc, "the master key protecting this document is not configured on this server") from None
        except fmt.FormatError as exc:
            log.error("document %s cannot be opened: %s", doc.id, exc.code)
            raise rules.integrity_error(
                exc, "the stored document failed its integrity check; nothing of it is sent") from None
        byte_range = rules.parse_range(range_header, doc.size)
        start, end = byte_range if byte_range is not None else (0, doc.size - 1)
        span = fmt.chunk_span(doc.size, start, end)
        path = self.blobs.path(doc.id)
        try:
            f = await aiofiles.open(path, "rb")
        except FileNotFoundError:
            log.error("document %s has metadata but no file", doc.id)
            raise rules.DocumentMissing("the stored document is missing") from None
        try:
            fixed = await f.read(fmt.FIXED_HEADER_BYTES)
            size = (await aiofiles.os.stat(path)).st_size
            opener.check_file(fixed, size)
            body = self._decrypt(f, opener, span)
            first = await body.__anext__()  # verify before any header is sent
        except fmt.FormatError as exc:
            await f.close()
            log.error("document %s failed verification: %s", doc.id, exc)
            raise rules.integrity_error(
                exc, "the stored document failed its integrity check; nothing of it is sent") from None
        except BaseException:
            await f.close()
            raise
        await self.store.record_download(doc, user_id=identity.sub, role=identity.role.value,
                                         at=int(now if now is not None else self.clock.now()),
                                         byte_range=byte_range)
        return Download(doc, 206 if byte_range is not None else 200, start, span.length,
                        _prepend(first, body, doc.id))

    async def _decrypt(self, f: Any, opener: fmt.Opener,
                       span: fmt.ChunkSpan) -> AsyncIterator[bytes | memoryview]:
        """Verified plaintext of `span`, a block of chunks at a time; the next block is read from disk
        while this one is decrypted. A block is yielded only once every chunk in it verified."""
        stride = fmt.CHUNK_SIZE + fmt.TAG_BYTES
        pending: asyncio.Future[bytes] | None = None
        try:
            await f.seek(span.file_offset)
            remaining = span.length
            index = span.first
            n = min(READ_CHUNKS, span.last - index + 1)
            pending = asyncio.ensure_future(f.read(n * stride))
            while index <= span.last:
                assert pending is not None
                sealed = await pending
                pending = None
                following = index + n
                n_next = min(READ_CHUNKS, span.last - following + 1)
                if n_next > 0:
                    pending = asyncio.ensure_future(f.read(n_next * stride))
                out = bytearray(n * fmt.CHUNK_SIZE)
                pos = 0
                with memoryview(sealed) as view, memoryview(out) as target:
                    for k in range(n):
                        pos += opener.open_chunk_into(index + k, view[k * stride:(k + 1) * stride],
                                                      target[pos:])
                start = span.skip if index == span.first else 0
                length = min(pos - start, remaining)
                remaining -= length
                index, n = following, n_next
                yield memoryview(out)[start:start + length]
        finally:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(pending)
            await f.close()

    # --- listing ---------------------------------------------------------------------------------

    async def list_owned(self, identity: Identity) -> list[dict[str, Any]]:
        docs = await self.store.owned(identity.sub)
        out = []
        for d in docs:
            shares = [s.public() for s in await self.store.shares_of(d.id) if s.active]
            out.append({**d.public(), "shares": shares})
        return out

    async def list_shared_with(self, identity: Identity) -> list[dict[str, Any]]:
        """What was shared with a client: by name, or with a booking of theirs."""
        mine = [s for s in await self.store.shares_for_client(identity.sub) if s.active]
        return await self._visible(identity, mine)

    async def list_for_booking(self, identity: Identity, booking_id: str) -> list[dict[str, Any]]:
        booking = await load_booking(self.redis, booking_id) if USER_ID.fullmatch(booking_id) else None
        if booking is None or booking.party(identity.sub, identity.role) is None:
            raise BookingNotFound("no such booking among yours")
        shares = [s for s in await self.store.shares_for_booking(booking_id) if s.active]
        return await self._visible(identity, shares, {booking_id: booking})

    async def _visible(self, identity: Identity, shares: list[Share],
                       bookings: dict[str, Booking | None] | None = None) -> list[dict[str, Any]]:
        docs = {d.id: d for d in await self.store.get_many(sorted({s.document_id for s in shares}))}
        known = dict(bookings or {})
        known.update({k: v for k, v in (await self._bookings(shares)).items() if k not in known})
        out: dict[str, dict[str, Any]] = {}
        for s in sorted(shares, key=lambda s: s.created_at):
            doc = docs.get(s.document_id)
            if doc is None or s.document_id in out:
                continue
            if rules.may_read(identity, doc, [s], known):
                out[doc.id] = {"id": doc.id, "name": doc.name, "media_type": doc.media_type,
                               "size": doc.size, "owner_id": doc.owner_id, "shared_at": s.created_at,
                               "booking_id": s.booking_id or None,
                               "download_url": f"/v1/documents/{doc.id}/content"}
        return sorted(out.values(), key=lambda d: -int(d["shared_at"]))

    # --- sharing ---------------------------------------------------------------------------------

    async def share(self, identity: Identity, document_id: str, *, booking_id: str | None,
                    client_ids: list[str], now: int | None = None) -> list[dict[str, Any]]:
        doc = await self.owned(identity, document_id)
        at = int(now if now is not None else self.clock.now())
        targets: list[tuple[ShareKind, str, str]] = []
        if booking_id is not None:
            booking = rules.check_booking_for_share(await load_booking(self.redis, booking_id), doc.owner_id)
            targets.append((ShareKind.BOOKING, booking.client_id, booking.id))
        targets.extend((ShareKind.CLIENT, c, "") for c in dict.fromkeys(client_ids))
        results = []
        for kind, client_id, bid in targets:
            status, share_id = await self.store.share(doc, kind=kind, client_id=client_id, booking_id=bid,
                                                      now=at)
            if status == "gone":
                raise rules.DocumentDeleted("the document was deleted")
            results.append({"share_id": share_id, "kind": kind.value, "client_id": client_id,
                            "booking_id": bid or None, "created": status == "ok"})
        return results

    async def shares(self, identity: Identity, document_id: str) -> list[Share]:
        doc = await self.owned(identity, document_id)
        return await self.store.shares_of(doc.id)

    async def revoke(self, identity: Identity, document_id: str, share_id: str,
                     now: int | None = None) -> None:
        doc = await self.owned(identity, document_id)
        found = [s for s in await self.store.shares_of(doc.id) if s.id == share_id]
        if not found:
            raise rules.ShareNotFound("no such share of this document")
        result = await self.store.revoke(found[0], owner_id=doc.owner_id,
                                         now=int(now if now is not None else self.clock.now()))
        if result == "revoked":
            raise rules.ShareRevoked("the share was already revoked")
        if result != "ok":
            raise rules.ShareNotFound("no such share of this document")

    # --- deletion, audit, keys ---------------------------------------------------------------------

    async def delete(self, identity: Identity, document_id: str, now: int | None = None) -> None:
        doc = await self.owned(identity, document_id)
        if not await self.store.delete(doc, now=int(now if now is not None else self.clock.now())):
            raise rules.DocumentDeleted("the document was deleted")
        # The data key is gone with the metadata: the file is unreadable from here on; remove it too.
        await self.blobs.delete(doc.id)

    async def audit(self, identity: Identity, document_id: str, limit: int) -> list[dict[str, Any]]:
        doc = await self.store.get(document_id) if rules.DOCUMENT_ID.match(document_id) else None
        if doc is None or not rules.may_read_audit(identity, doc.owner_id):
            raise rules.DocumentNotFound("no such document")
        return await self.store.audit(doc.id, limit)


async def _prepend(first: bytes | memoryview, rest: AsyncIterator[bytes | memoryview],
                   document_id: str) -> AsyncIterator[bytes | memoryview]:
    try:
        yield first
        async for block in rest:
            yield block
    except fmt.FormatError as exc:
        # Headers are sent: the only honest signal left is to cut the response short.
        log.error("document %s failed verification mid-download: %s", document_id, exc)
        raise
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


class KeyRingBeacon:
    """Tells `keys rotate` which master key ids this running server holds (ids only, never keys).

    Rotating to a key that a running server lacks would make every rotated document unreadable there,
    so the command refuses until every live server announces the active key.
    """

    def __init__(self, redis: aioredis.Redis, keyring: KeyRing, *, ttl_s: int = 30) -> None:
        self.redis = redis
        self.key = KEYRING_NODE_KEY.format(uuid.uuid4().hex)
        self.value = ",".join(sorted(keyring.key_ids))
        self.ttl_s = ttl_s

    async def announce(self) -> None:
        await self.redis.set(self.key, self.value, ex=self.ttl_s)

    @property
    def interval_s(self) -> float:
        """How often to announce again: well within the announcement's lifetime."""
        return self.ttl_s / 3

    async def withdraw(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.delete(self.key)


async def servers_lacking(redis: aioredis.Redis, key_id: str) -> int:
    """How many live servers do not hold master key `key_id`."""
    lacking = 0
    async for key in redis.scan_iter(match=KEYRING_NODE_KEY.format("*"), count=100):
        ids: bytes | None = await redis.get(key)  # type: ignore[assignment]
        if ids is not None and key_id not in ids.decode().split(","):
            lacking += 1
    return lacking


@dataclass(frozen=True, slots=True)
class RotationReport:
    rewrapped: int
    already_current: int
    skipped: int


async def rotate_keys(redis: aioredis.Redis, keyring: KeyRing) -> RotationReport:
    """Re-wrap every document's data key under the active master key; contents are not touched.

    Safe while the server runs: each document is one compare-and-set in Redis, and a document deleted
    or changed meanwhile is left as it is (skipped), so running it again finishes the job.
    """
    store = DocumentStore(redis)
    rewrapped = current = skipped = 0
    for doc_id in await store.all_ids():
        header = await store.header(doc_id)
        if header is None:
            skipped += 1
            continue
        if header.wrapped_key.key_id == keyring.active_key_id:
            current += 1
            continue
        try:
            new = fmt.rewrap(keyring, header)
        except fmt.FormatError as exc:
            log.error("document %s cannot be re-wrapped: %s", doc_id, exc.code)
            skipped += 1
            continue
        result = await store.rekey(doc_id, header, new)
        if result == "ok":
            rewrapped += 1
        else:
            skipped += 1
    return RotationReport(rewrapped, current, skipped)
