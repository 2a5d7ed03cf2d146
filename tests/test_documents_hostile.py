"""Hostile uploads: each is refused with a clear error and leaves no file, no metadata and no event."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import os
import subprocess
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from session_server.app import create_app
from session_server.documents import DocumentsFeature

from .conftest import LiveServer, auth, make_settings
from .documents_support import PDF, PNG, TEXT, DocsEnv, Minter, docs, docs_env, problem_code
from .support import eventually

__all__ = ["docs"]


async def assert_nothing_left(env: DocsEnv) -> None:
    assert env.files_on_disk() == []
    assert await env.document_count() == 0
    assert await env.events("document.uploaded") == []


def zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("report.pdf", b"\0" * (50 * 1024 * 1024))
    return buf.getvalue()


REFUSED = [
    ("windows executable named .pdf", b"MZ\x90\x00\x03" + b"\0" * 500, "invoice.pdf", "application/pdf",
     415, "unsupported_document_type"),
    ("ELF executable named .pdf", b"\x7fELF\x02\x01\x01" + b"\0" * 500, "report.pdf", None,
     415, "unsupported_document_type"),
    ("shell script named .txt", b"#!/bin/sh\nrm -rf ~\n", "notes.txt", "text/plain",
     415, "unsupported_document_type"),
    ("HTML with a script named .txt", b"Hello\n<html><body><script>alert(document.cookie)</script>",
     "notes.txt", "text/plain", 415, "active_content"),
    ("SVG with a script named .png",
     b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
     "photo.png", "image/png", 415, "active_content"),
    ("SVG without the XML prolog", b'<svg onload="alert(1)"/>', "image.txt", None, 415, "active_content"),
    ("zip archive bomb disguised as a PDF", None, "bilan.pdf", "application/pdf",
     415, "unsupported_document_type"),
    ("UTF-16 text (NUL bytes)", "مرحبا".encode("utf-16"), "a.txt", None, 415, "unsupported_document_type"),
    ("a content type that lies", PNG, "scan.pdf", "application/pdf", 415, "content_type_mismatch"),
    ("a multipart form instead of the document",
     b"%PDF-1.4\n--x\r\nContent-Disposition: form-data; name=f\r\n\r\n", "f.pdf",
     "multipart/form-data; boundary=x", 415, "multipart_refused"),
    ("zero bytes", b"", "empty.pdf", None, 422, "empty_document"),
    ("a NUL in the name", PDF, "fiche\0.pdf", None, 422, "invalid_document_name"),
    ("a name that is only traversal", PDF, "../../..", None, 422, "invalid_document_name"),
]


@pytest.mark.parametrize(("what", "body", "name", "ctype", "status", "code"), REFUSED,
                         ids=[r[0] for r in REFUSED])
async def test_hostile_upload_is_refused_and_leaves_nothing(
        docs: DocsEnv, token: Minter, what: str, body: bytes | None, name: str, ctype: str | None,
        status: int, code: str) -> None:
    content = zip_bomb() if body is None else body
    r = await docs.upload(token("practitioner", "p1"), content, name, content_type=ctype)
    assert (r.status_code, problem_code(r)) == (status, code), what
    assert r.json()["detail"]
    await assert_nothing_left(docs)


async def test_a_gzip_bomb_sent_with_content_encoding_is_never_inflated(docs: DocsEnv, token: Minter) -> None:
    bomb = gzip.compress(PDF + b"\0" * (20 * 1024 * 1024))
    r = await docs.upload(token("practitioner", "p1"), bomb, "x.pdf",
                          headers={"Content-Encoding": "gzip"})
    assert r.status_code == 415 and problem_code(r) == "content_encoding_refused"
    await assert_nothing_left(docs)


async def test_invalid_text_far_into_the_stream_removes_the_partial_file(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    for tail in (b"\xff\xfe broken utf-8", b"<scr" + b"ipt>alert(1)</script>", b"\0"):
        async def body(tail: bytes = tail) -> AsyncIterator[bytes]:
            yield TEXT * 3000  # about 300 KB of clean text first: the temp file exists by now
            yield b"x" * 10 + tail[:3]
            yield tail[3:]

        r = await docs.upload(tok, body(), "journal.txt")
        assert r.status_code == 415, tail
        await assert_nothing_left(docs)


async def test_markup_split_across_two_reads_is_caught(docs: DocsEnv, token: Minter) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield TEXT + b"a" * 5000 + b"<sv"
        yield b"g onload=alert(1)>"

    r = await docs.upload(token("practitioner", "p1"), body(), "x.txt")
    assert r.status_code == 415 and problem_code(r) == "active_content"
    await assert_nothing_left(docs)


async def test_traversal_and_control_characters_are_removed_from_names(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    cases = {
        "../../etc/passwd.pdf": "etc_passwd.pdf",
        "..\\..\\windows\\system.ini.pdf": "windows_system.ini.pdf",
        "/abs/../ملف.pdf": "abs_ملف.pdf",
        "fac\u202eture\u202cfdp.exe.pdf": "facturefdp.exe.pdf",
        "a\r\nb\tc.pdf": "abc.pdf",
        "...hidden.pdf": "hidden.pdf",
    }
    for raw, safe in cases.items():
        r = await docs.upload(tok, PDF, raw)
        assert r.status_code == 201 and r.json()["name"] == safe, raw
    on_disk = docs.files_on_disk()
    assert len(on_disk) == len(cases) and all(n.endswith(".ssd") for n in on_disk)
    assert not (docs.settings.data_dir / "etc").exists()


async def test_a_body_one_byte_over_the_limit_is_refused(tmp_path: Path, redis_url: str,
                                                        token: Minter) -> None:
    async with docs_env(tmp_path, redis_url, document_max_bytes=100_000) as env:
        tok = token("practitioner", "p1")
        body = b"%PDF-1.4\n" + b"a" * (100_000 - 9)
        assert (await env.upload(tok, body, "exact.pdf")).status_code == 201
        await env.http.delete(f"/v1/documents/{(await env.redis.smembers('ss:docs:all')).pop().decode()}",
                              headers=auth(tok))
        await env.redis.delete("ss:events")
        over = body + b"b"
        r = await env.upload(tok, over, "over.pdf")
        assert r.status_code == 413 and problem_code(r) == "document_too_large"

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: caught while streaming
            for i in range(0, len(over), 7000):
                yield over[i:i + 7000]

        r = await env.upload(tok, chunked(), "over.pdf")
        assert r.status_code == 413 and problem_code(r) == "document_too_large"
        assert env.files_on_disk() == [] and await env.events("document.uploaded") == []


async def test_a_type_left_out_of_the_settings_is_refused(tmp_path: Path, redis_url: str,
                                                         token: Minter) -> None:
    async with docs_env(tmp_path, redis_url, document_types=("application/pdf",)) as env:
        r = await env.upload(token("practitioner", "p1"), TEXT, "a.txt")
        assert r.status_code == 415 and problem_code(r) == "unsupported_document_type"
        await assert_nothing_left(env)


async def test_clients_and_support_cannot_upload(docs: DocsEnv, token: Minter) -> None:
    for role in ("client", "support"):
        r = await docs.upload(token(role, "u1"), PDF)
        assert r.status_code == 403
    r = await docs.http.post("/v1/documents", content=PDF, headers={"X-Filename": "a.pdf"})
    assert r.status_code == 401
    await assert_nothing_left(docs)


# --- through a real server: slow, cut and full-disk uploads ----------------------------------------------


@contextlib.asynccontextmanager
async def live_docs(tmp_path: Path, redis_url: str, **overrides: object) -> AsyncIterator[
        tuple[LiveServer, DocsEnv]]:
    settings = make_settings(tmp_path, redis_url, **overrides)
    server = LiveServer(create_app(settings, features=[DocumentsFeature()]))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            import redis.asyncio as aioredis

            r = aioredis.Redis.from_url(redis_url)
            try:
                yield server, DocsEnv(server.app, http, r, settings)
            finally:
                await r.aclose()
    finally:
        await server.stop()


async def raw_request_head(port: int, tok: str, length: int) -> tuple[asyncio.StreamReader,
                                                                      asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST /v1/documents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n"
                  f"X-Filename: {quote('slow.pdf')}\r\nContent-Length: {length}\r\n\r\n").encode())
    await writer.drain()
    return reader, writer


async def test_an_upload_trickling_slower_than_the_idle_timeout_is_dropped(
        tmp_path: Path, redis_url: str, token: Minter) -> None:
    async with live_docs(tmp_path, redis_url, upload_idle_timeout_s=0.3) as (server, env):
        reader, writer = await raw_request_head(server.port, token("practitioner", "p1"), 1_000_000)
        writer.write(b"%PDF-1.4\n" + b"a" * 100_000)  # enough for the temp file to exist
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert b" 408 " in status_line
        rest = await asyncio.wait_for(reader.read(), 10)
        assert b"upload_idle_timeout" in rest
        writer.close()
        await eventually(lambda: asyncio.sleep(0, env.files_on_disk() == []), what="no file left")
        await assert_nothing_left(env)


async def test_an_upload_cut_off_mid_stream_leaves_no_document_and_no_file(
        tmp_path: Path, redis_url: str, token: Minter) -> None:
    async with live_docs(tmp_path, redis_url) as (server, env):
        _reader, writer = await raw_request_head(server.port, token("practitioner", "p1"), 5_000_000)
        writer.write(b"%PDF-1.4\n" + os.urandom(1_500_000))
        await writer.drain()
        await eventually(lambda: asyncio.sleep(0, bool(env.files_on_disk())), what="upload in progress")
        writer.transport.abort()
        await eventually(lambda: asyncio.sleep(0, env.files_on_disk() == []), what="temp file removed")
        await assert_nothing_left(env)
        # The server is fine afterwards.
        assert (await env.upload(token("practitioner", "p1"), PDF)).status_code == 201


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str) -> AsyncIterator[None]:  # type: ignore[misc]
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=700", "tmpfs", str(path)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("mounting a small filesystem needs privileges this run does not have")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_disk_gives_a_clear_error_and_nothing_half_written(
        tmp_path: Path, redis_url: str, token: Minter) -> None:
    documents_dir = tmp_path / "data" / "documents"
    with tiny_filesystem(documents_dir, "1m"):
        async with docs_env(tmp_path, redis_url) as env:
            tok = token("practitioner", "p1")
            r = await env.upload(tok, b"%PDF-1.4\n" + os.urandom(3 * 1024 * 1024), "big.pdf")
            assert r.status_code == 507 and problem_code(r) == "storage_full"
            await assert_nothing_left(env)
            assert (await env.upload(tok, PDF, "small.pdf")).status_code == 201
