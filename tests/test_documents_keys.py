"""`session-server keys rotate`: every data key re-wrapped under the new master key, contents untouched,
while the server keeps serving."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

from files import format as fmt

from .conftest import API_KEY_ID, API_SECRET, MASTER_KEYS
from .documents_support import Minter, docs_env


def cli_env(redis_url: str, data_dir: Path, active: str, keys: dict[str, bytes]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVER_")}
    env.update({
        "REDIS_URL": redis_url,
        "SESSION_SERVER_DATA_DIR": str(data_dir),
        "SESSION_SERVER_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
        "SESSION_SERVER_MASTER_KEYS": ",".join(f"{k}:{base64.b64encode(v).decode()}" for k, v in keys.items()),
        "SESSION_SERVER_ACTIVE_MASTER_KEY_ID": active,
    })
    return env


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "session_server.cli", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_rotation_rewraps_every_key_without_touching_files_while_serving(
        tmp_path: Path, redis_url: str, token: Minter) -> None:
    async with docs_env(tmp_path, redis_url) as env:
        tok = token("practitioner", "p1")
        contents = [b"%PDF-1.4\n" + os.urandom(n) for n in (10, 200_000, 1_000_000)]
        ids = [await env.uploaded(tok, c) for c in contents]
        before = {i: (env.root / f"{i}.ssd").read_bytes() for i in ids}

        async def keep_downloading() -> int:
            count = 0
            for _ in range(30):
                for doc_id, content in zip(ids, contents, strict=True):
                    r = await env.download(tok, doc_id)
                    assert r.status_code == 200 and r.content == content
                    count += 1
            return count

        downloads = asyncio.create_task(keep_downloading())
        code, out = await run_cli(cli_env(redis_url, env.settings.data_dir, "k2", MASTER_KEYS), "keys", "rotate")
        assert code == 0, out
        assert "re-wrapped 3 document key(s)" in out
        assert await downloads > 0

        for doc_id in ids:
            header = fmt.Header.decode(await env.redis.hget(f"ss:doc:{doc_id}", "header") or b"")
            assert header.wrapped_key.key_id == "k2"
            assert await env.redis.hget(f"ss:doc:{doc_id}", "key_id") == b"k2"
            assert (env.root / f"{doc_id}.ssd").read_bytes() == before[doc_id]
        assert len(await env.events("document.rekeyed")) == 3

        code, out = await run_cli(cli_env(redis_url, env.settings.data_dir, "k2", MASTER_KEYS), "keys", "rotate")
        assert code == 0 and "re-wrapped 0" in out and "3 already current" in out

    # With the old master key retired, a server holding only the new one reads every document.
    async with docs_env(tmp_path, redis_url, master_keys={"k2": MASTER_KEYS["k2"]},
                        active_master_key_id="k2") as env:
        for doc_id, content in zip(ids, contents, strict=True):
            assert (await env.download(tok, doc_id)).content == content


async def test_a_document_deleted_during_rotation_is_skipped_not_resurrected(
        tmp_path: Path, redis_url: str, token: Minter) -> None:
    from files.keyring import KeyRing
    from session_server.documents.service import rotate_keys

    async with docs_env(tmp_path, redis_url) as env:
        tok = token("practitioner", "p1")
        doc_id = await env.uploaded(tok)
        await env.http.delete(f"/v1/documents/{doc_id}", headers={"Authorization": f"Bearer {tok}"})
        report = await rotate_keys(env.redis, KeyRing(MASTER_KEYS, "k2"))
        assert report.rewrapped == 0
        assert await env.redis.hget(f"ss:doc:{doc_id}", "header") is None


async def test_rotation_is_refused_while_a_running_server_lacks_the_new_key(
        tmp_path: Path, redis_url: str, token: Minter) -> None:
    async with docs_env(tmp_path, redis_url, master_keys={"k1": MASTER_KEYS["k1"]},
                        active_master_key_id="k1") as env:
        tok = token("practitioner", "p1")
        doc_id = await env.uploaded(tok)
        code, out = await run_cli(cli_env(redis_url, env.settings.data_dir, "k2", MASTER_KEYS), "keys", "rotate")
        assert code == 2 and "do not hold master key 'k2'" in out and "nothing was changed" in out
        assert await env.redis.hget(f"ss:doc:{doc_id}", "key_id") == b"k1"
        assert (await env.download(tok, doc_id)).status_code == 200
