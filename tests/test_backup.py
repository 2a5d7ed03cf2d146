"""Backup and restore: a backup of a running server with live sessions, restored into a new data
directory, gives a new server that reads back every document and chat message, byte for byte."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from .conftest import MASTER_KEYS, auth
from .documents_support import PDF, PNG, TEXT, Minter
from .rooms_support import CLIENT, PRACTITIONER, Peer, ServerProcess, connect_peer, write_booking
from .support import eventually, free_port, require

BOOKING = "b-backup-1"


def _command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "session_server.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd="/")


async def _peer(server: ServerProcess, tok: str, **kw: Any) -> tuple[Peer, dict[str, Any]]:
    peer = await connect_peer(server, BOOKING, tok, **kw)  # type: ignore[arg-type]
    return peer, await peer.expect("joined")


async def _whole_history(server: ServerProcess, tok: str) -> list[dict[str, Any]]:
    """Every stored message, as a participant resuming from the start receives it (in pages)."""
    peer, joined = await _peer(server, tok, last_seq=0)
    try:
        messages = list(joined["chat"])
        more, seen = joined.get("chat_more", False), 0
        while more:
            page = await peer.expect("chat.history", after=seen)
            seen = peer.received.index(page) + 1
            messages += page["chat"]
            more = page["more"]
        return messages
    finally:
        await peer.close()


async def test_a_backup_of_a_live_server_restores_every_document_and_chat_message_byte_for_byte(
        tmp_path: Path, token: Minter) -> None:
    # no REDIS_URL: the embedded Redis, as a laptop runs it; chat as fast as the client can write
    source = ServerProcess(tmp_path, "", "source", chat_rate_per_s="10000", chat_burst="100000")
    await source.start()
    restored: ServerProcess | None = None
    try:
        await write_booking(f"unix://{tmp_path / 'source' / 'redis' / 'redis.sock'}", BOOKING)
        client_tok, prac_tok = token("client", CLIENT, name="Amina"), token("practitioner", PRACTITIONER)
        client, _ = await _peer(source, client_tok)
        prac, _ = await _peer(source, prac_tok)

        # chat through the room's socket, in the languages people write in
        sent: list[tuple[Peer, str]] = [
            (client, "لا أنام جيدا منذ شهر"), (prac, "Merci de me le dire. Depuis quand exactement ?"),
            (client, "since March 🙁 — and it gets worse"), (prac, "ن" * 1000),
        ]
        for n, (peer, text) in enumerate(sent):
            await peer.send({"type": "chat.send", "id": f"m{n}", "text": text})
            await peer.expect("chat.ack", lambda m, ref=f"m{n}": m["ref"] == ref)

        # documents through the HTTP API
        originals = {"worksheet.pdf": PDF + os.urandom(200_000), "exercice.txt": TEXT * 50,
                     "chart.png": PNG + os.urandom(70_000)}
        ids: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=source.url, timeout=30) as c:
            for name, content in originals.items():
                r = await c.post("/v1/documents", content=content, headers={**auth(prac_tok), "X-Filename": name})
                assert r.status_code == 201, r.text
                ids[name] = r.json()["id"]

        # the backup runs while both participants are in the room and the client goes on writing
        keep_writing = asyncio.Event()
        during: list[str] = []

        async def write_on() -> None:
            n = 0
            while not keep_writing.is_set():
                text = f"message {n} written during the backup"
                await client.send({"type": "chat.send", "id": f"d{n}", "text": text})
                await client.expect("chat.ack", lambda m, ref=f"d{n}": m["ref"] == ref, timeout=10)
                during.append(text)
                n += 1

        writer = asyncio.create_task(write_on())
        await asyncio.sleep(0)
        backup_dir = tmp_path / "backups" / "monday"
        done = await asyncio.to_thread(_command, source.env, "backup", str(backup_dir))
        keep_writing.set()
        await writer
        assert done.returncode == 0, done.stderr
        assert "master keys" in done.stdout
        keys = json.loads((backup_dir / "master-keys.json").read_text())
        assert {k: base64.b64decode(v) for k, v in keys["keys"].items()} == MASTER_KEYS
        assert oct((backup_dir / "master-keys.json").stat().st_mode & 0o777) == "0o600"
        assert await _whole_history(source, client_tok)  # the source still serves
        await client.close()
        await prac.close()

        # restore into a new data directory and start a new server there, with the same master keys
        new_dir = tmp_path / "restored"
        done = _command(source.env, "restore", str(backup_dir), "--into", str(new_dir))
        assert done.returncode == 0, done.stderr
        restored = ServerProcess(tmp_path, "", "restored")
        assert Path(restored.env["SESSION_SERVER_DATA_DIR"]) == new_dir
        await restored.start()

        async with httpx.AsyncClient(base_url=restored.url, timeout=30) as c:
            for name, content in originals.items():
                r = await c.get(f"/v1/documents/{ids[name]}/content", headers=auth(prac_tok))
                assert r.status_code == 200, r.text
                assert r.content == content, name
                r = await c.get(f"/v1/documents/{ids[name]}", headers=auth(prac_tok))
                assert r.json()["name"] == name

        history = await _whole_history(restored, client_tok)
        texts = [m["text"] for m in history]
        assert [m["seq"] for m in history] == list(range(1, len(history) + 1))  # no hole: a consistent cut
        assert texts[:len(sent)] == [text for _, text in sent]
        # what was written during the backup: a prefix of it, each message exactly as sent
        assert texts[len(sent):] == during[:len(texts) - len(sent)]
        senders = [m["sender"]["id"] for m in history[:len(sent)]]
        assert senders == [CLIENT, PRACTITIONER, CLIENT, PRACTITIONER]
    finally:
        await source.stop()
        if restored is not None:
            await restored.stop()


def test_restore_refuses_an_incomplete_backup_and_backup_refuses_a_stopped_server(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin")}
    backup = tmp_path / "backup"
    backup.mkdir()
    done = _command(env, "restore", str(backup), "--into", str(tmp_path / "new"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "not a complete backup" in done.stderr and "Traceback" not in done.stderr

    done = _command({**env, "SESSION_SERVER_DATA_DIR": str(tmp_path / "nothing-runs-here")}, "backup",
                    str(tmp_path / "b2"))
    assert done.returncode == 1 and "does not answer" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "b2").exists() and not (tmp_path / "nothing-runs-here" / "local-secrets.json").exists()


async def test_an_external_redis_is_backed_up_and_a_newer_snapshot_is_left_for_a_redis_of_its_version(
        tmp_path: Path, system_redis_url: str, token: Minter) -> None:
    """With REDIS_URL the snapshot comes from that Redis (here the machine's Redis 7, over TCP). The
    embedded Redis (6.2) cannot read a Redis 7 snapshot: restore says so in one line, and with
    --no-redis it restores the documents and keys, leaving the snapshot to be loaded by hand."""
    import redis as sync_redis

    sync_redis.Redis.from_url(system_redis_url).flushdb()
    source = ServerProcess(tmp_path, system_redis_url, "source")
    await source.start()
    try:
        async with httpx.AsyncClient(base_url=source.url, timeout=30) as c:
            prac = auth(token("practitioner", PRACTITIONER))
            r = await c.post("/v1/documents", content=PDF, headers={**prac, "X-Filename": "a.pdf"})
            assert r.status_code == 201
        done = _command(source.env, "backup", str(tmp_path / "backup"))
        assert done.returncode == 0, done.stderr
    finally:
        await source.stop()
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["redis"]["db"] == int(system_redis_url.rsplit("/", 1)[1])
    assert len(manifest["documents"]) == 1
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "something").write_text("")
    done = _command(source.env, "restore", str(tmp_path / "backup"), "--into", str(tmp_path / "occupied"))
    assert done.returncode == 1 and "not empty" in done.stderr
    if manifest["redis"]["rdb_version"] > 9:
        done = _command(source.env, "restore", str(tmp_path / "backup"), "--into", str(tmp_path / "new"))
        assert done.returncode == 1 and "--no-redis" in done.stderr and done.stderr.count("\n") == 1
        assert not (tmp_path / "new").exists()
    done = _command(source.env, "restore", str(tmp_path / "backup"), "--into", str(tmp_path / "new"), "--no-redis")
    assert done.returncode == 0, done.stderr
    assert "load" in done.stdout and "SESSION_SERVER_MASTER_KEYS" in done.stdout
    [file] = (tmp_path / "new" / "documents").iterdir()
    assert file.read_bytes() == (tmp_path / "backup" / "documents" / file.name).read_bytes()

    # the snapshot loaded into a Redis of its version as docs/operations.md says, a server on top of it
    redis7 = shutil.which("redis-server")
    require(redis7 is not None, "no redis-server of the snapshot's version on this machine")
    assert redis7 is not None
    volume = tmp_path / "redis-volume"
    volume.mkdir()
    shutil.copyfile(tmp_path / "backup" / "redis.rdb", volume / "dump.rdb")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    once = await _redis(redis7, volume, port, "--appendonly", "no")
    r = aioredis.Redis.from_url(url)
    try:
        await r.swapdb(manifest["redis"]["db"], 0)
        databases = int((await r.config_get("databases"))["databases"])
        await r.eval("for i = 1, tonumber(ARGV[1]) - 1 do redis.call('SELECT', i) redis.call('FLUSHDB') end", 0,
                     databases)
        await r.config_set("appendonly", "yes")

        async def rewritten() -> bool:
            info = await r.info("persistence")
            return bool(info["aof_enabled"] and not info["aof_rewrite_in_progress"]
                        and not info["aof_rewrite_scheduled"])

        await eventually(rewritten, timeout=30, what="the append-only file to be written")
        with contextlib.suppress(redis_errors.ConnectionError):
            await r.shutdown()
    finally:
        await r.aclose()
    await once.wait()
    again = await _redis(redis7, volume, port, "--appendonly", "yes", "--appendfsync", "always")
    restored = ServerProcess(tmp_path, url, "restored")
    restored.env["SESSION_SERVER_DATA_DIR"] = str(tmp_path / "new")
    try:
        await restored.start()
        async with httpx.AsyncClient(base_url=restored.url, timeout=30) as c:
            doc_id = file.name.removesuffix(".ssd")
            got = await c.get(f"/v1/documents/{doc_id}/content", headers=auth(token("practitioner", PRACTITIONER)))
            assert got.status_code == 200 and got.content == PDF
    finally:
        await restored.stop()
        again.terminate()
        await again.wait()


async def _redis(binary: str, directory: Path, port: int, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                                                str(directory), "--save", "", *args,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def answers() -> bool:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2)
        try:
            return bool(await client.ping())
        except (OSError, redis_errors.RedisError):
            return False
        finally:
            await client.aclose()

    await eventually(answers, timeout=20, what="the restored Redis to answer")
    return proc
