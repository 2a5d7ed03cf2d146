"""The sealed document format: round trips, ranges, and every kind of tampering is detected."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from files import format as fmt
from files.keyring import KeyRing, WrappedKey

CS = fmt.CHUNK_SIZE
STRIDE = fmt.CHUNK_SIZE + fmt.TAG_BYTES
H = fmt.FIXED_HEADER_BYTES


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing({"k1": b"\x01" * 32, "k2": b"\x02" * 32}, "k1")


def sealed(ring: KeyRing, plain: bytes) -> tuple[fmt.Header, bytes]:
    header, key = fmt.new_header(ring, os.urandom(16))
    return header, fmt.seal(header, key, plain)


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 3 * CS + 17])
def test_round_trip_at_chunk_edges(ring: KeyRing, size: int) -> None:
    plain = os.urandom(size)
    header, data = sealed(ring, plain)
    assert len(data) == fmt.sealed_size(size)
    assert fmt.open_all(ring, header, size, data) == plain


def test_streaming_sealer_matches_one_shot_for_any_feed_pattern(ring: KeyRing) -> None:
    plain = os.urandom(3 * CS + 5)
    header, key = fmt.new_header(ring, os.urandom(16))
    sealer = fmt.Sealer(header, key)
    out = sealer.preamble()
    pos = 0
    for step in (1, 7, CS - 8, CS, 3, CS + 100, 10**6):
        out += sealer.feed(plain[pos:pos + step])
        pos += step
    out += sealer.finish()
    assert fmt.open_all(ring, header, len(plain), out) == plain


def test_plaintext_does_not_appear_in_the_sealed_file(ring: KeyRing) -> None:
    plain = ("ملاحظات الجلسة: قلق شديد " * 3000).encode()
    _, data = sealed(ring, plain)
    assert plain[:64] not in data and "قلق".encode() not in data


@given(size=st.integers(1, 4 * CS + 3), data=st.data())
@settings(max_examples=40, deadline=None)
def test_any_range_decrypts_only_its_chunks_and_returns_exact_bytes(size: int, data: st.DataObject) -> None:
    ring = KeyRing({"k1": b"\x01" * 32}, "k1")
    plain = bytes(i % 251 for i in range(size))
    header, blob = sealed(ring, plain)
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start, size - 1))
    span = fmt.chunk_span(size, start, end)
    assert span.first == start // CS and span.last == end // CS
    opener = fmt.Opener(header, fmt.unwrap_data_key(ring, header), size)
    got = b"".join(opener.open_span(span, blob[span.file_offset:span.file_offset + span.file_length]))
    assert got == plain[start:end + 1]


# --- tampering ---------------------------------------------------------------------------------------

PLAIN = bytes(range(256)) * (3 * CS // 256) + b"tail"  # four chunks, the last one short


def test_truncation_at_a_chunk_boundary_is_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    cut = data[:H + 3 * STRIDE]
    # Even when told the shorter size, the new last chunk was sealed as "not last".
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, 3 * CS, cut)
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, len(PLAIN), cut)


def test_truncation_inside_a_chunk_and_of_the_tag_is_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    for cut in (len(data) - 1, len(data) - fmt.TAG_BYTES, H + STRIDE + 10, H):
        with pytest.raises(fmt.TamperedError):
            fmt.open_all(ring, header, len(PLAIN), data[:cut])


def test_dropping_every_chunk_but_the_first_is_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, CS, data[:H + STRIDE])


def test_reordered_chunks_are_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    c0, c1 = data[H:H + STRIDE], data[H + STRIDE:H + 2 * STRIDE]
    swapped = data[:H] + c1 + c0 + data[H + 2 * STRIDE:]
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, len(PLAIN), swapped)


def test_a_chunk_spliced_from_another_document_is_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    _, other = sealed(ring, PLAIN)
    spliced = data[:H + STRIDE] + other[H + STRIDE:H + 2 * STRIDE] + data[H + 2 * STRIDE:]
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, len(PLAIN), spliced)


def test_a_whole_file_swapped_for_another_documents_is_detected(ring: KeyRing) -> None:
    header, _ = sealed(ring, PLAIN)
    _, other = sealed(ring, PLAIN)
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, len(PLAIN), other)


def test_a_duplicated_chunk_is_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    c0 = data[H:H + STRIDE]
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, len(PLAIN), data[:H] + c0 + c0 + data[H + 2 * STRIDE:])


@pytest.mark.parametrize("offset", list(range(H)))
def test_a_flipped_bit_in_the_files_header_is_detected(ring: KeyRing, offset: int) -> None:
    header, data = sealed(ring, PLAIN)
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, len(PLAIN), flip(data, offset, offset % 8))


def test_a_flipped_bit_anywhere_in_the_stored_header_is_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    encoded = header.encode()
    for offset in range(len(encoded)):
        tampered = flip(encoded, offset, offset % 8)
        with pytest.raises((fmt.FormatError, ValueError)):
            fmt.open_all(ring, fmt.Header.decode(tampered), len(PLAIN), data)


@pytest.mark.parametrize("where", ["first chunk body", "middle chunk body", "last chunk body",
                                   "first tag", "last tag"])
def test_a_flipped_bit_in_body_or_tag_is_detected(ring: KeyRing, where: str) -> None:
    header, data = sealed(ring, PLAIN)
    offset = {
        "first chunk body": H + 5,
        "middle chunk body": H + 2 * STRIDE + 1000,
        "last chunk body": len(data) - fmt.TAG_BYTES - 2,
        "first tag": H + CS + 3,
        "last tag": len(data) - 1,
    }[where]
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, len(PLAIN), flip(data, offset, 7))


def test_a_flipped_bit_is_detected_when_only_that_chunk_is_read(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    bad = flip(data, H + STRIDE + 77)
    opener = fmt.Opener(header, fmt.unwrap_data_key(ring, header), len(PLAIN))
    span = fmt.chunk_span(len(PLAIN), CS + 10, CS + 20)
    with pytest.raises(fmt.TamperedError):
        list(opener.open_span(span, bad[span.file_offset:span.file_offset + span.file_length]))


def test_an_unknown_key_id_is_reported_as_a_missing_key(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    renamed = header.with_key(WrappedKey("k9", header.wrapped_key.blob))
    with pytest.raises(fmt.KeyUnavailable):
        fmt.open_all(ring, renamed, len(PLAIN), data)


def test_a_key_id_pointing_at_another_known_key_is_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    relabelled = header.with_key(WrappedKey("k2", header.wrapped_key.blob))
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, relabelled, len(PLAIN), data)


def test_a_key_slot_moved_from_another_document_is_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    other, _ = sealed(ring, PLAIN)
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header.with_key(other.wrapped_key), len(PLAIN), data)


def test_an_appended_byte_or_chunk_is_detected(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, len(PLAIN), data + b"\0")
    with pytest.raises(fmt.TamperedError):
        fmt.open_all(ring, header, len(PLAIN), data + data[H:H + STRIDE])


def test_rewrap_moves_the_key_to_the_active_master_key_and_keeps_contents(ring: KeyRing) -> None:
    header, data = sealed(ring, PLAIN)
    rotated_ring = KeyRing({"k1": b"\x01" * 32, "k2": b"\x02" * 32}, "k2")
    new = fmt.rewrap(rotated_ring, header)
    assert new.wrapped_key.key_id == "k2" and new.fixed == header.fixed
    assert fmt.open_all(KeyRing({"k2": b"\x02" * 32}, "k2"), new, len(PLAIN), data) == PLAIN
    assert fmt.rewrap(rotated_ring, new) is new


def test_header_encoding_round_trips_and_rejects_garbage(ring: KeyRing) -> None:
    header, _ = sealed(ring, b"x")
    assert fmt.Header.decode(header.encode()) == header
    for bad in (b"", b"SSDOC", header.encode()[:-1], header.encode() + b"\0", b"XXXXX" + header.encode()[5:]):
        with pytest.raises(fmt.TamperedError):
            fmt.Header.decode(bad)


@given(cuts=st.lists(st.integers(0, 3 * CS + 40), max_size=12), size=st.integers(0, 3 * CS + 40),
       mutable=st.booleans())
@settings(max_examples=60, deadline=None)
def test_any_split_of_the_stream_seals_to_a_readable_file(cuts: list[int], size: int, mutable: bool) -> None:
    ring = KeyRing({"k1": b"\x01" * 32}, "k1")
    plain = bytes(i % 253 for i in range(size))
    header, key = fmt.new_header(ring, os.urandom(16))
    sealer = fmt.Sealer(header, key)
    out = bytearray(sealer.preamble())
    buf = bytearray()
    bounds = sorted({min(c, size) for c in cuts} | {0, size})
    for a, b in itertools.pairwise(bounds):
        piece = bytearray(plain[a:b]) if mutable else plain[a:b]
        n = sealer.feed_into(piece, buf)  # type: ignore[arg-type]
        if mutable:
            piece[:] = b"\0" * len(piece)  # the caller reuses its buffer: sealed output must not change
        out += buf[:n]
    out += sealer.finish()
    assert fmt.open_all(ring, header, size, bytes(out)) == plain
