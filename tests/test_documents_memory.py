"""A 1 GiB document goes up and comes back through a real server with flat memory."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from .conftest import API_KEY_ID, API_SECRET, MASTER_KEYS
from .support import free_port

GIB = 1024**3
PIECE = 1024 * 1024
MAX_GROWTH = 64 * 1024 * 1024


def server_env(redis_url: str, data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVER_")}
    env.update({
        "REDIS_URL": redis_url,
        "SESSION_SERVER_DATA_DIR": str(data_dir),
        "SESSION_SERVER_PORT": str(port),
        "SESSION_SERVER_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
        "SESSION_SERVER_MASTER_KEYS": f"k1:{base64.b64encode(MASTER_KEYS['k1']).decode()}",
        "SESSION_SERVER_ACTIVE_MASTER_KEY_ID": "k1",
        "SESSION_SERVER_DOCUMENT_MAX_BYTES": str(2 * GIB),
        "SESSION_SERVER_LOG_LEVEL": "warning",
    })
    return env


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.peak = self.now()
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> int:
        assert self._task is not None
        self._task.cancel()
        with __import__("contextlib").suppress(asyncio.CancelledError):
            await self._task
        return max(self.peak, self.now())


@pytest.mark.slow
async def test_one_gib_up_and_down_grows_server_memory_by_less_than_64_mib(
        tmp_path: Path, redis_url: str, token: object) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "session_server.cli", "serve", env=server_env(redis_url, tmp_path / "data", port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the server did not become ready")
            tok = token("practitioner", "p1")  # type: ignore[operator]
            headers = {"Authorization": f"Bearer {tok}", "X-Filename": "big.pdf"}
            block = os.urandom(PIECE)
            # Warm up: the first upload and download load code paths and buffers once.
            warm = await http.post("/v1/documents", content=b"%PDF-1.4\n" + block, headers=headers)
            assert warm.status_code == 201
            assert len((await http.get(f"/v1/documents/{warm.json()['id']}/content",
                                       headers=headers)).content) == PIECE + 9

            rss = PeakRss(proc.pid)
            baseline = rss.now()
            rss.start()
            sent = hashlib.sha256()

            async def body() -> AsyncIterator[bytes]:
                for i in range(GIB // PIECE):
                    piece = (b"%PDF-1.4\n" + block[9:]) if i == 0 else block
                    sent.update(piece)
                    yield piece

            r = await http.post("/v1/documents", content=body(), headers=headers)
            assert r.status_code == 201, r.text
            assert r.json()["size"] == GIB and r.json()["sha256"] == sent.hexdigest()

            got = hashlib.sha256()
            received = 0
            async with http.stream("GET", f"/v1/documents/{r.json()['id']}/content", headers=headers) as resp:
                assert resp.status_code == 200
                async for part in resp.aiter_raw(PIECE):
                    got.update(part)
                    received += len(part)
            peak = await rss.stop()
            assert received == GIB and got.hexdigest() == sent.hexdigest()
            growth = peak - baseline
            print(f"server RSS baseline {baseline / 2**20:.1f} MiB, growth {growth / 2**20:.1f} MiB")
            assert growth < MAX_GROWTH, f"server RSS grew by {growth / 2**20:.1f} MiB"
    finally:
        proc.terminate()
        await proc.wait()
