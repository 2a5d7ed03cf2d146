"""The encrypted document format: a header and AES-256-GCM chunks (docs/file-format.md).

Pure code, no I/O. A document is encrypted with a random data key of its own, in chunks of a fixed
size. Each chunk's nonce is `nonce_prefix (7) || counter (4, big-endian) || last flag (1)` (the STREAM
construction), and the header's fixed part is the associated data of every chunk, so:

- truncation at a chunk boundary is caught because the new last chunk was sealed with flag 0;
- reordering is caught because a chunk moved to another position fails with that position's counter;
- a chunk spliced from another document fails under this document's key, nonce prefix and header;
- a flipped bit anywhere in a chunk (body or tag) fails its tag.

The header has two parts. The *fixed part* (magic, version, chunk size, document id, nonce prefix)
never changes and is also written at the start of the file. The *key slot* (master key id and the
wrapped data key) is wrapped with the fixed part as its own associated data; it lives in the metadata
store so that rotating master keys is one atomic update and deleting it shreds the document.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .keyring import KeyRing, KeyRingError, UnknownKeyId, WrappedKey

MAGIC = b"SSDOC"
VERSION = 1
CHUNK_SIZE = 64 * 1024
TAG_BYTES = 16
NONCE_PREFIX_BYTES = 7
DOC_ID_BYTES = 16
MAX_KEY_ID_BYTES = 64
MAX_CHUNKS = 2**32  # the counter is 32 bits: 256 TiB with 64 KiB chunks

# magic(5) version(1) chunk_size(4) document_id(16) nonce_prefix(7)
_FIXED = struct.Struct(f">{len(MAGIC)}sBI{DOC_ID_BYTES}s{NONCE_PREFIX_BYTES}s")
FIXED_HEADER_BYTES = _FIXED.size  # 33
_WRAP_CONTEXT = b"ss-document-key/v1|"


class FormatError(Exception):
    """The stored bytes are not a valid, authentic document; nothing of it may be returned."""

    code = "document_integrity_failed"


class TamperedError(FormatError):
    code = "document_tampered"


class KeyUnavailable(FormatError):
    code = "document_key_unavailable"


@dataclass(frozen=True, slots=True)
class FixedHeader:
    document_id: bytes
    nonce_prefix: bytes
    chunk_size: int = CHUNK_SIZE
    version: int = VERSION

    def encode(self) -> bytes:
        return _FIXED.pack(MAGIC, self.version, self.chunk_size, self.document_id, self.nonce_prefix)

    @classmethod
    def decode(cls, raw: bytes) -> FixedHeader:
        if len(raw) < FIXED_HEADER_BYTES:
            raise TamperedError("the header is truncated")
        magic, version, chunk_size, doc_id, prefix = _FIXED.unpack_from(raw)
        if magic != MAGIC:
            raise TamperedError("the header's magic bytes are wrong")
        if version != VERSION:
            raise TamperedError(f"unknown format version {version}")
        if chunk_size != CHUNK_SIZE:
            raise TamperedError("the header's chunk size is not the format's")
        return cls(document_id=doc_id, nonce_prefix=prefix, chunk_size=chunk_size, version=version)


@dataclass(frozen=True, slots=True)
class Header:
    """The whole header: the fixed part and the key slot (see the module docstring)."""

    fixed: FixedHeader
    wrapped_key: WrappedKey

    def encode(self) -> bytes:
        kid = self.wrapped_key.key_id.encode()
        blob = self.wrapped_key.blob
        return self.fixed.encode() + struct.pack(">B", len(kid)) + kid + struct.pack(">H", len(blob)) + blob

    @classmethod
    def decode(cls, raw: bytes) -> Header:
        fixed = FixedHeader.decode(raw)
        pos = FIXED_HEADER_BYTES
        try:
            (kid_len,) = struct.unpack_from(">B", raw, pos)
            kid_raw = raw[pos + 1:pos + 1 + kid_len]
            pos += 1 + kid_len
            (blob_len,) = struct.unpack_from(">H", raw, pos)
            blob = raw[pos + 2:pos + 2 + blob_len]
            pos += 2 + blob_len
            key_id = kid_raw.decode("ascii")
        except (struct.error, UnicodeDecodeError):
            raise TamperedError("the header's key slot is malformed") from None
        if len(kid_raw) != kid_len or len(blob) != blob_len or pos != len(raw) or not key_id:
            raise TamperedError("the header's key slot is malformed")
        return cls(fixed=fixed, wrapped_key=WrappedKey(key_id, blob))

    def with_key(self, wrapped_key: WrappedKey) -> Header:
        return Header(self.fixed, wrapped_key)


def wrap_context(fixed: FixedHeader) -> bytes:
    return _WRAP_CONTEXT + fixed.encode()


def new_header(keyring: KeyRing, document_id: bytes) -> tuple[Header, bytes]:
    """A fresh header for a new document and its (unwrapped) data key."""
    if len(document_id) != DOC_ID_BYTES:
        raise ValueError("a document id is 16 bytes")
    fixed = FixedHeader(document_id=document_id, nonce_prefix=os.urandom(NONCE_PREFIX_BYTES))
    data_key = keyring.new_data_key()
    return Header(fixed, keyring.wrap(data_key, wrap_context(fixed))), data_key


def unwrap_data_key(keyring: KeyRing, header: Header) -> bytes:
    try:
        return keyring.unwrap(header.wrapped_key, wrap_context(header.fixed))
    except UnknownKeyId:
        raise KeyUnavailable(f"the document's master key {header.wrapped_key.key_id!r} "
                             "is not in the key ring") from None
    except KeyRingError:
        raise TamperedError("the document's data key does not unwrap: the header was altered") from None


def rewrap(keyring: KeyRing, header: Header) -> Header:
    """The same header with its data key wrapped by the active master key (contents unchanged)."""
    if header.wrapped_key.key_id == keyring.active_key_id:
        return header
    data_key = unwrap_data_key(keyring, header)
    return header.with_key(keyring.wrap(data_key, wrap_context(header.fixed)))


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if counter >= MAX_CHUNKS:
        raise ValueError("the document has too many chunks for the nonce counter")
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def sealed_size(plain_size: int) -> int:
    """Bytes on disk for a document of `plain_size` bytes: fixed header, chunks and their tags."""
    chunks = max(1, -(-plain_size // CHUNK_SIZE))
    return FIXED_HEADER_BYTES + plain_size + chunks * TAG_BYTES


def chunk_count(plain_size: int) -> int:
    return max(1, -(-plain_size // CHUNK_SIZE))


class Sealer:
    """Encrypts a stream: `feed()` any amount, `finish()` once; both return bytes to append to the file.

    A full chunk is held back until more data arrives, because only the end of the stream tells which
    chunk is the last one. `feed_into()` seals into a buffer the caller reuses: at hundreds of MB/s,
    fresh allocations for every sealed chunk cost more than the cipher.
    """

    def __init__(self, header: Header, data_key: bytes) -> None:
        self._aead = AESGCM(data_key)
        self._aad = header.fixed.encode()
        self._prefix = header.fixed.nonce_prefix
        self._held: bytes | memoryview | bytearray | None = None  # a full chunk, maybe the last
        self._part = bytearray()  # fewer than CHUNK_SIZE bytes
        self._spare: bytearray | None = None
        self._counter = 0
        self._finished = False
        self.plain_size = 0

    def preamble(self) -> bytes:
        return self._aad

    @staticmethod
    def max_output(pending: int, data_len: int) -> int:
        return ((pending + data_len) // CHUNK_SIZE + 1) * (CHUNK_SIZE + TAG_BYTES)

    def _seal_held(self, out: memoryview, pos: int, last: bool) -> int:
        held = self._held
        assert held is not None
        n = len(held) + TAG_BYTES
        nonce = _nonce(self._prefix, self._counter, last)
        self._aead.encrypt_into(nonce, held, self._aad, out[pos:pos + n])
        self._counter += 1
        if isinstance(held, bytearray):
            held.clear()
            self._spare = held
        self._held = None
        return pos + n

    def feed_into(self, data: bytes, out: bytearray, offset: int = 0) -> int:
        """Seal what `data` completes into `out` from `offset` (grown if needed); returns the bytes written."""
        if self._finished:
            raise ValueError("the sealer is finished")
        self.plain_size += len(data)
        need = offset + self.max_output(len(self._part) + (CHUNK_SIZE if self._held is not None else 0),
                                        len(data))
        if len(out) < need:
            out.extend(bytes(need - len(out)))
        pos, end, written = 0, len(data), offset
        with memoryview(data) as view, memoryview(out) as target:
            while pos < end:
                full: bytes | memoryview | bytearray
                if not self._part and end - pos >= CHUNK_SIZE and isinstance(data, bytes):
                    full = view[pos:pos + CHUNK_SIZE]  # immutable bytes: safe to hold without a copy
                    pos += CHUNK_SIZE
                else:
                    take = min(CHUNK_SIZE - len(self._part), end - pos)
                    self._part += view[pos:pos + take]
                    pos += take
                    if len(self._part) < CHUNK_SIZE:
                        break
                    full = self._part
                if self._held is not None:
                    written = self._seal_held(target, written, False)
                if full is self._part:
                    self._part = self._spare if self._spare is not None else bytearray()
                    self._spare = None
                self._held = full
        return written - offset

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        n = self.feed_into(data, out)
        return bytes(out[:n])

    def finish(self) -> bytes:
        if self._finished:
            raise ValueError("the sealer is finished")
        self._finished = True
        out = bytearray(2 * (CHUNK_SIZE + TAG_BYTES))
        pos = 0
        with memoryview(out) as target:
            if self._part or self._held is None:
                if self._held is not None:
                    pos = self._seal_held(target, pos, False)
                self._held = bytes(self._part)
                self._part.clear()
            pos = self._seal_held(target, pos, True)
        return bytes(out[:pos])


def seal(header: Header, data_key: bytes, plaintext: bytes) -> bytes:
    """The whole file for `plaintext` (convenience for tests and small documents)."""
    sealer = Sealer(header, data_key)
    return sealer.preamble() + sealer.feed(plaintext) + sealer.finish()


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """Which stored chunks a byte range of the plaintext needs, and where they are in the file."""

    first: int  # chunk index
    last: int  # chunk index, inclusive
    file_offset: int
    file_length: int
    skip: int  # plaintext bytes to drop from the first chunk
    length: int  # plaintext bytes to return


def chunk_span(plain_size: int, start: int, end: int) -> ChunkSpan:
    """The chunks holding plaintext bytes [start, end] (inclusive) of a document of `plain_size`."""
    if not 0 <= start <= end < max(plain_size, 1):
        raise ValueError("the range is outside the document")
    first, last = start // CHUNK_SIZE, end // CHUNK_SIZE
    stride = CHUNK_SIZE + TAG_BYTES
    file_offset = FIXED_HEADER_BYTES + first * stride
    last_chunk = chunk_count(plain_size) - 1
    stop = (FIXED_HEADER_BYTES + plain_size + (last_chunk + 1) * TAG_BYTES if last == last_chunk
            else FIXED_HEADER_BYTES + (last + 1) * stride)
    return ChunkSpan(first, last, file_offset, stop - file_offset, start - first * CHUNK_SIZE,
                     end - start + 1)


class Opener:
    """Decrypts and verifies chunks of one document; never returns a byte whose tag did not verify."""

    def __init__(self, header: Header, data_key: bytes, plain_size: int) -> None:
        self._aead = AESGCM(data_key)
        self._aad = header.fixed.encode()
        self._prefix = header.fixed.nonce_prefix
        self.plain_size = plain_size
        self.chunks = chunk_count(plain_size)

    def check_file(self, fixed_on_disk: bytes, file_size: int) -> None:
        """The file starts with this document's fixed header and has exactly the expected length."""
        if fixed_on_disk != self._aad:
            raise TamperedError("the file's header does not match the document")
        if file_size != sealed_size(self.plain_size):
            raise TamperedError("the file's length does not match the document (truncated or extended)")

    def open_chunk(self, index: int, sealed: bytes | memoryview) -> bytes:
        last = index == self.chunks - 1
        expected = (self.plain_size - index * CHUNK_SIZE if last else CHUNK_SIZE) + TAG_BYTES
        if len(sealed) != expected:
            raise TamperedError(f"chunk {index} has the wrong length")
        try:
            return self._aead.decrypt(_nonce(self._prefix, index, last), sealed, self._aad)
        except InvalidTag:
            raise TamperedError(f"chunk {index} does not authenticate") from None

    def open_chunk_into(self, index: int, sealed: bytes | memoryview, out: memoryview) -> int:
        """Like open_chunk, into `out`. On failure `out` may hold unverified bytes: discard it."""
        last = index == self.chunks - 1
        expected = (self.plain_size - index * CHUNK_SIZE if last else CHUNK_SIZE) + TAG_BYTES
        if len(sealed) != expected:
            raise TamperedError(f"chunk {index} has the wrong length")
        n = expected - TAG_BYTES
        try:
            self._aead.decrypt_into(_nonce(self._prefix, index, last), sealed, self._aad, out[:n])
        except InvalidTag:
            raise TamperedError(f"chunk {index} does not authenticate") from None
        return n

    def open_span(self, span: ChunkSpan, sealed: bytes | memoryview) -> Iterator[bytes]:
        """Plaintext of `span` from its sealed bytes, chunk by chunk, each verified before it is yielded."""
        stride = CHUNK_SIZE + TAG_BYTES
        view = memoryview(sealed)
        remaining = span.length
        for n, index in enumerate(range(span.first, span.last + 1)):
            piece = view[n * stride:(n + 1) * stride]
            plain = self.open_chunk(index, piece)
            if n == 0 and span.skip:
                plain = plain[span.skip:]
            if len(plain) > remaining:
                plain = plain[:remaining]
            remaining -= len(plain)
            yield plain


def open_all(keyring: KeyRing, header: Header, plain_size: int, file_bytes: bytes) -> bytes:
    """Verify and decrypt a whole file in memory (tests and small documents)."""
    opener = Opener(header, unwrap_data_key(keyring, header), plain_size)
    opener.check_file(file_bytes[:FIXED_HEADER_BYTES], len(file_bytes))
    if plain_size == 0:
        return opener.open_chunk(0, file_bytes[FIXED_HEADER_BYTES:])
    span = chunk_span(plain_size, 0, plain_size - 1)
    return b"".join(opener.open_span(span, file_bytes[span.file_offset:span.file_offset + span.file_length]))
