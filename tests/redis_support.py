"""A redis-server of the test's own, on a fixed loopback port, that the test can stop, freeze, kill and
start again (never the machine's shared Redis)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import redis.asyncio as aioredis

from session_server.embedded_redis import redis_server_binary

from .support import eventually, free_port


class PrivateRedis:
    def __init__(self, directory: Path, *, aof: bool = False) -> None:
        self.port = free_port()
        self.directory = directory
        self.aof = aof  # with an append-only file (fsync always), so what it acknowledged survives a kill
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - starts at once; readiness is awaited below
            [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", *persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        async def answers() -> bool:
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=1)
            try:
                return bool(await client.ping())
            except (OSError, aioredis.RedisError):
                return False
            finally:
                await client.aclose()

        await eventually(answers, what="the private redis to answer")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        """End it as an operator would (a frozen one is thawed first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)
