"""Uploading and downloading documents through the HTTP API: streamed, sealed at rest, safe headers."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import AsyncIterator
from urllib.parse import quote

from files import format as fmt
from files.sniff import PNG as PNG_TYPE

from .conftest import auth
from .documents_support import JPEG, PDF, PNG, TEXT, DocsEnv, Minter, docs, problem_code

__all__ = ["docs"]


async def test_a_practitioner_uploads_a_pdf_and_gets_its_metadata(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    r = await docs.upload(tok, PDF, "fiche.pdf", content_type="application/pdf")
    assert r.status_code == 201
    body = r.json()
    assert body["name"] == "fiche.pdf" and body["media_type"] == "application/pdf"
    assert body["size"] == len(PDF) and body["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert body["owner_id"] == "p1" and r.headers["location"] == f"/v1/documents/{body['id']}"
    [event] = await docs.events("document.uploaded")
    assert event.body["document_id"] == body["id"] and "name" not in event.body


async def test_each_allowed_type_is_recognised_by_its_bytes(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    for content, media_type in ((PDF, "application/pdf"), (PNG, PNG_TYPE), (JPEG, "image/jpeg"),
                                (TEXT, "text/plain")):
        r = await docs.upload(tok, content, "sans-extension")
        assert r.status_code == 201 and r.json()["media_type"] == media_type


async def test_the_file_on_disk_holds_no_plaintext(docs: DocsEnv, token: Minter) -> None:
    secret = ("ملف سري: تشخيص القلق. Diagnostic confidentiel. " * 5000).encode()
    doc_id = await docs.uploaded(token("practitioner", "p1"), secret, "notes.txt")
    path = docs.root / f"{doc_id}.ssd"
    stored = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the server's user alone reads it
    assert stat.S_IMODE(docs.root.stat().st_mode) == 0o700
    assert len(stored) == fmt.sealed_size(len(secret))
    assert "تشخيص".encode() not in stored and b"Diagnostic" not in stored
    assert docs.files_on_disk() == [f"{doc_id}.ssd"]


async def test_download_returns_the_exact_bytes_with_safe_headers(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    content = b"%PDF-1.5\n" + os.urandom(300_000)
    name = "ورقة عمل — séance 1.pdf"
    doc_id = await docs.uploaded(tok, content, name)
    r = await docs.download(tok, doc_id)
    assert r.status_code == 200 and r.content == content
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-length"] == str(len(content))
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["accept-ranges"] == "bytes"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=\"")
    assert f"filename*=UTF-8''{quote(name, safe='')}" in disposition


async def test_arabic_and_french_names_survive_both_header_encodings(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    name = "تمارين الأسبوع – été.txt"
    r = await docs.upload(tok, TEXT, headers={"X-Filename": "UTF-8''" + quote(name, safe="")})
    assert r.status_code == 201 and r.json()["name"] == name
    r = await docs.http.post("/v1/documents", params={"name": name}, content=TEXT, headers=auth(tok))
    assert r.status_code == 201 and r.json()["name"] == name


async def test_range_requests_return_exactly_the_asked_bytes(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    content = b"%PDF-1.5\n" + os.urandom(3 * fmt.CHUNK_SIZE + 1234)
    doc_id = await docs.uploaded(tok, content)
    size = len(content)
    cases = {
        "bytes=0-9": (0, 9),
        f"bytes={fmt.CHUNK_SIZE - 5}-{fmt.CHUNK_SIZE + 5}": (fmt.CHUNK_SIZE - 5, fmt.CHUNK_SIZE + 5),
        "bytes=-100": (size - 100, size - 1),
        f"bytes={2 * fmt.CHUNK_SIZE}-": (2 * fmt.CHUNK_SIZE, size - 1),
        f"bytes=10-{size * 2}": (10, size - 1),
    }
    for spec, (start, end) in cases.items():
        r = await docs.download(tok, doc_id, Range=spec)
        assert r.status_code == 206, spec
        assert r.content == content[start:end + 1], spec
        assert r.headers["content-range"] == f"bytes {start}-{end}/{size}"
    r = await docs.download(tok, doc_id, Range=f"bytes={size}-")
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    r = await docs.download(tok, doc_id, Range="bytes=0-1,5-6")
    assert r.status_code == 200 and r.content == content


async def test_a_streamed_upload_of_many_chunks_round_trips(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    parts = [b"%PDF-1.4\n"] + [os.urandom(n) for n in (1, 70_000, 65_536, 3, 200_000)]

    async def body() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    r = await docs.upload(tok, body(), "long.pdf")
    assert r.status_code == 201
    joined = b"".join(parts)
    assert r.json()["sha256"] == hashlib.sha256(joined).hexdigest()
    assert (await docs.download(tok, r.json()["id"])).content == joined


async def test_practitioner_lists_their_documents_and_reads_metadata(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    first = await docs.uploaded(tok, PDF, "a.pdf")
    second = await docs.uploaded(tok, TEXT, "b.txt")
    await docs.uploaded(token("practitioner", "p2"), PDF, "other.pdf")
    listed = (await docs.http.get("/v1/documents", headers=auth(tok))).json()["documents"]
    assert [d["id"] for d in listed] == [second, first] or {d["id"] for d in listed} == {first, second}
    assert all(d["shares"] == [] for d in listed)
    r = await docs.http.get(f"/v1/documents/{first}", headers=auth(tok))
    assert r.json()["name"] == "a.pdf" and r.json()["download_url"] == f"/v1/documents/{first}/content"


async def test_a_tampered_file_fails_the_download_with_a_clear_error(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    doc_id = await docs.uploaded(tok, b"%PDF-1.5\n" + os.urandom(100_000))
    path = docs.root / f"{doc_id}.ssd"
    data = bytearray(path.read_bytes())
    data[fmt.FIXED_HEADER_BYTES + 100] ^= 0x01
    path.write_bytes(bytes(data))
    r = await docs.download(tok, doc_id)
    assert r.status_code == 500 and problem_code(r) == "document_tampered"
    assert b"%PDF" not in r.content


async def test_a_truncated_file_fails_the_download(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    doc_id = await docs.uploaded(tok, b"%PDF-1.5\n" + os.urandom(3 * fmt.CHUNK_SIZE))
    path = docs.root / f"{doc_id}.ssd"
    path.write_bytes(path.read_bytes()[:fmt.FIXED_HEADER_BYTES + 2 * (fmt.CHUNK_SIZE + fmt.TAG_BYTES)])
    r = await docs.download(tok, doc_id)
    assert r.status_code == 500 and problem_code(r) == "document_tampered"


async def test_a_header_altered_in_the_store_fails_the_download(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    doc_id = await docs.uploaded(tok)
    key = f"ss:doc:{doc_id}"
    header = bytearray(await docs.redis.hget(key, "header") or b"")
    header[-3] ^= 0x80
    await docs.redis.hset(key, "header", bytes(header))
    r = await docs.download(tok, doc_id)
    assert r.status_code == 500 and problem_code(r) == "document_tampered"


async def test_a_document_whose_master_key_left_the_ring_is_reported(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    doc_id = await docs.uploaded(tok)
    stored = fmt.Header.decode(await docs.redis.hget(f"ss:doc:{doc_id}", "header") or b"")
    from files.keyring import WrappedKey

    moved = stored.with_key(WrappedKey("retired-2019", stored.wrapped_key.blob))
    await docs.redis.hset(f"ss:doc:{doc_id}", "header", moved.encode())
    r = await docs.download(tok, doc_id)
    assert r.status_code == 500 and problem_code(r) == "document_key_unavailable"


async def test_tampering_past_the_first_block_cuts_the_response_short(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    content = b"%PDF-1.5\n" + os.urandom(40 * fmt.CHUNK_SIZE)
    doc_id = await docs.uploaded(tok, content)
    path = docs.root / f"{doc_id}.ssd"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # in the last chunk's tag, far past what is verified before headers go out
    path.write_bytes(bytes(data))
    received = bytearray()
    failed = False
    try:
        async with docs.http.stream("GET", f"/v1/documents/{doc_id}/content", headers=auth(tok)) as r:
            async for part in r.aiter_raw():
                received += part
    except Exception:
        failed = True
    assert failed or len(received) < len(content)
    # Whatever arrived is a verified prefix: never a corrupted byte.
    assert content.startswith(bytes(received))
    assert len(received) <= len(content) - (len(content) % fmt.CHUNK_SIZE)
