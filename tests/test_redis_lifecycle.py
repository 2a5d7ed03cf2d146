"""Redis comes and goes: the embedded one survives a SIGKILL with its data, an external one may vanish."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis.asyncio as aioredis

from session_server.app import create_app

from .conftest import API_KEY_ID, API_SECRET, METRICS_TOKEN, auth, make_settings, metrics_auth, running
from .documents_support import PDF, Minter
from .redis_support import PrivateRedis
from .support import eventually, free_port
from .test_http_errors import BrokenFeature


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    r = PrivateRedis(tmp_path)
    await r.start()
    yield r
    if r.proc and r.proc.poll() is None:
        r.stop()


async def test_readyz_follows_redis_down_and_up_without_a_restart(tmp_path: Path,
                                                                  private_redis: PrivateRedis) -> None:
    app = create_app(make_settings(tmp_path, private_redis.url), features=[BrokenFeature()])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/t/count")).status_code == 200

        private_redis.stop()
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["code"] == "redis_unavailable"
        r = await c.get("/t/count")
        assert r.status_code == 503 and r.json()["code"] == "redis_unavailable"
        assert (await c.get("/healthz")).status_code == 200  # alive, just not ready
        metrics = (await c.get("/metrics", headers=metrics_auth())).text
        assert "session_redis_up 0.0" in metrics

        await private_redis.start()

        async def ready() -> bool:
            return (await c.get("/readyz")).status_code == 200

        await eventually(ready, what="/readyz to recover")
        assert (await c.get("/t/count")).status_code == 200


def _server_env(data_dir: Path, port: int) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin"), "SESSION_SERVER_DATA_DIR": str(data_dir),
            "SESSION_SERVER_PORT": str(port), "SESSION_SERVER_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
            "SESSION_SERVER_LOG_LEVEL": "warning", "SESSION_SERVER_METRICS_TOKEN": METRICS_TOKEN}


async def _start_server(data_dir: Path, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "session_server.cli", "serve", env=_server_env(data_dir, port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(ready, timeout=30, what="the server process to be ready")
    return proc


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


async def test_embedded_redis_keeps_acknowledged_writes_across_a_sigkill_and_leaves_no_orphan(
        tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    server = await _start_server(data_dir, port)
    redis_pid = int((data_dir / "redis" / "redis.pid").read_text())
    client = aioredis.Redis(unix_socket_path=str(data_dir / "redis" / "redis.sock"))
    await client.set("acknowledged", "yes")
    await client.aclose()

    server.send_signal(signal.SIGKILL)
    await server.wait()

    async def redis_gone() -> bool:
        return not _alive(redis_pid)

    await eventually(redis_gone, what="the embedded redis to stop with its parent")

    server = await _start_server(data_dir, port)
    new_pid = int((data_dir / "redis" / "redis.pid").read_text())
    client = aioredis.Redis(unix_socket_path=str(data_dir / "redis" / "redis.sock"))
    assert await client.get("acknowledged") == b"yes"
    await client.aclose()

    server.send_signal(signal.SIGTERM)
    assert await server.wait() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean stop

    async def new_redis_gone() -> bool:
        return not _alive(new_pid)

    await eventually(new_redis_gone, what="the embedded redis to stop on a clean shutdown")
    assert not (data_dir / "redis" / "redis.sock").exists()


def _embedded_redis_child(server_pid: int, data_dir: Path) -> int:
    """The pid of the server's embedded redis-server: the pid file's, checked to be the server's child."""
    pid = int((data_dir / "redis" / "redis.pid").read_text())
    children = psutil.Process(server_pid).children()
    assert pid in [c.pid for c in children], f"redis pid {pid} is not a child of the server {children}"
    assert "redis-server" in psutil.Process(pid).name()
    return pid


async def test_a_document_acknowledged_over_http_survives_a_sigkill_of_server_and_redis_at_once(
        tmp_path: Path, token: Minter) -> None:
    """A 201 means the write is in the AOF, even if nobody gets to shut Redis down.

    A killed process loses nothing the kernel already has, whatever the fsync policy, so this shows the
    AOF is on and written before the answer; `appendfsync always`, checked here, is what carries the
    write through a power loss as well, which no test on a running machine can cut."""
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {**auth(token("practitioner", "p1")), "X-Filename": "fiche.pdf"}
    content = PDF
    server = await _start_server(data_dir, port)
    pids = [server.pid]
    try:
        redis_pid = _embedded_redis_child(server.pid, data_dir)
        pids.append(redis_pid)
        direct = aioredis.Redis(unix_socket_path=str(data_dir / "redis" / "redis.sock"), decode_responses=True)
        assert await direct.config_get("appendonly") == {"appendonly": "yes"}
        assert await direct.config_get("appendfsync") == {"appendfsync": "always"}
        await direct.aclose()
        async with httpx.AsyncClient(base_url=base) as c:
            r = await c.post("/v1/documents", content=content, headers=headers)
        assert r.status_code == 201, r.text
        doc_id = r.json()["id"]

        # Redis first, so the kernel's SIGTERM on the server's death can never give it a clean stop.
        os.kill(redis_pid, signal.SIGKILL)
        server.send_signal(signal.SIGKILL)
        assert await server.wait() == -signal.SIGKILL

        async def redis_gone() -> bool:
            return not _alive(redis_pid)

        await eventually(redis_gone, what="the killed redis-server to be gone")

        server = await _start_server(data_dir, port)
        pids = [server.pid]
        new_redis_pid = _embedded_redis_child(server.pid, data_dir)
        pids.append(new_redis_pid)
        async with httpx.AsyncClient(base_url=base) as c:
            r = await c.get(f"/v1/documents/{doc_id}", headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["name"] == "fiche.pdf" and r.json()["size"] == len(content)
            r = await c.get(f"/v1/documents/{doc_id}/content", headers=headers)
            assert r.status_code == 200 and r.content == content

        server.send_signal(signal.SIGTERM)
        assert await server.wait() in (0, -signal.SIGTERM)

        async def new_redis_gone() -> bool:
            return not _alive(new_redis_pid)

        await eventually(new_redis_gone, what="the embedded redis to stop on a clean shutdown")
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if server.returncode is None:
            await server.wait()


async def test_a_stale_socket_and_pid_file_do_not_stop_the_next_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "redis").mkdir(parents=True)
    (data_dir / "redis" / "redis.sock").write_text("stale")
    (data_dir / "redis" / "redis.pid").write_text(f"{os.getpid()}\n")  # alive, but not a redis-server
    app = create_app(make_settings(tmp_path, None))
    async with running(app):
        assert await app.state.ctx.redis.ping()
    assert _alive(os.getpid())


async def test_a_redis_that_stops_reading_fails_a_write_within_the_socket_timeout_and_the_client_recovers(
        tmp_path: Path, private_redis: PrivateRedis) -> None:
    from session_server.redis_client import command_client

    client = command_client(private_redis.url, make_settings(tmp_path, private_redis.url, redis_socket_timeout_s=0.5))
    assert private_redis.proc is not None
    try:
        assert await client.set("before", b"1")
        os.kill(private_redis.proc.pid, signal.SIGSTOP)  # hung: it accepts nothing more and answers nothing
        try:
            # far more than the socket buffers hold, so the send itself cannot complete
            with pytest.raises(aioredis.RedisError) as info:
                await client.set("big", b"x" * (64 << 20))
            assert str(info.value) == "Timeout writing to socket"
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        assert await client.get("before") == b"1"
        assert await client.get("big") is None
    finally:
        await client.aclose()


async def test_the_command_client_sends_every_kind_of_value_as_redis_py_would_and_refuses_the_rest(
        tmp_path: Path, redis_url: str) -> None:
    from redis.exceptions import DataError

    from session_server.redis_client import command_client

    client = command_client(redis_url, make_settings(tmp_path, redis_url))
    try:
        values: list[str | bytes | int | float] = [
            "نص عربي ✓", b"\x00\xff raw", 0, -7, 2**70, 1.5, 0.1, 1e16, float("inf"), "x" * 200_000, ""]
        for i, value in enumerate(values):
            await client.set(f"kind:{i}", value)
        stored = await client.mget([f"kind:{i}" for i in range(len(values))])
        assert stored == [b"\xd9\x86\xd8\xb5 \xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a \xe2\x9c\x93", b"\x00\xff raw", b"0",
                          b"-7", b"1180591620717411303424", b"1.5", b"0.1", b"1e+16", b"inf", b"x" * 200_000, b""]
        script = client.register_script("return {KEYS[1], ARGV[1], ARGV[2]}")
        assert await script(keys=["k"], args=["é", 3]) == [b"k", "é".encode(), b"3"]
        for bad in (None, True, [1], {"a": 1}):
            with pytest.raises(DataError):
                await client.set("kind:bad", bad)  # type: ignore[arg-type]
        assert await client.exists("kind:bad") == 0
    finally:
        await client.aclose()
