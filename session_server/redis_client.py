"""Redis clients: one pooled client for commands, and dedicated connections for blocking reads.

The command client uses a *blocking* pool: when every connection is busy a request waits up to
`redis_pool_timeout_s` and then fails as a clean 503, never with "too many connections". Blocking
stream reads (XREADGROUP BLOCK) and pub/sub get clients of their own whose socket timeout is longer
than the block time, so the two timeouts never fight.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any
from urllib.parse import urlparse

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer

from .settings import Settings


class _SendWithinTimeout(AbstractConnection):
    """Bounds a send by `socket_timeout` with `asyncio.timeout` rather than `asyncio.wait_for`, which on
    Python 3.11 runs every send in a task of its own (a task, and a loop iteration, per command)."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        limit = self.socket_timeout
        if not limit:
            await super().send_packed_command(command, check_health)
            return
        try:
            async with asyncio.timeout(limit):
                self.socket_timeout = None  # the library's own send path then adds no timeout of its own
                try:
                    await super().send_packed_command(command, check_health)
                finally:
                    self.socket_timeout = limit
        except TimeoutError:
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None


class _PackInC(AbstractConnection):
    """Packs commands with hiredis (a declared dependency), as redis-py's synchronous client already does;
    its asyncio client packs in Python, argument by argument, which cost more than a booking script's run.
    The bytes are the same; a value that cannot be sent raises redis' DataError either way."""

    _packer = HiredisRespSerializer()  # type: ignore[no-untyped-call]  # untyped in redis-py 8

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)  # type: ignore[no-any-return]


def _lean(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    return type(f"Lean{cls.__name__}", (_SendWithinTimeout, _PackInC, cls), {})


class ContractError(RuntimeError):
    """redis-py no longer looks the way this module's connection subclass was written for."""


def check_contract() -> None:
    """Fails loudly, naming what is missing, if redis-py's connection no longer has what `_lean` overrides
    and reads: run when the command client is built and by the tests, so an upgrade cannot silently send
    commands unbounded or packed wrongly."""
    problems = []
    send = getattr(AbstractConnection, "send_packed_command", None)
    if not inspect.iscoroutinefunction(send):
        problems.append("AbstractConnection.send_packed_command (a coroutine)")
    elif list(inspect.signature(send).parameters)[:3] != ["self", "command", "check_health"]:
        problems.append("AbstractConnection.send_packed_command(command, check_health)")
    if not callable(getattr(AbstractConnection, "pack_command", None)):
        problems.append("AbstractConnection.pack_command")
    connection = aioredis.Connection(host="127.0.0.1", port=1, socket_timeout=1.5)
    if getattr(connection, "socket_timeout", None) != 1.5:
        problems.append("Connection.socket_timeout")
    pool = BlockingConnectionPool.from_url("redis://127.0.0.1:1")
    if not isinstance(getattr(pool, "connection_class", None), type):
        problems.append("BlockingConnectionPool.connection_class")
    try:
        lean_class: Any = _lean(aioredis.Connection)  # a TCP connection's class: its own arguments
        lean = lean_class(host="127.0.0.1", port=1)
        packed = b"".join(lean.pack_command("SET", "k", b"v\r\n", 7))
        if packed != b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n7\r\n":
            problems.append("HiredisRespSerializer.pack (packs other bytes)")
    except Exception as exc:
        problems.append(f"HiredisRespSerializer.pack ({type(exc).__name__}: {exc})")
    if problems:
        raise ContractError("session_server/redis_client.py needs, from redis-py: " + ", ".join(problems))


def command_client(url: str, settings: Settings) -> aioredis.Redis:
    check_contract()
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=min(2.0, settings.redis_socket_timeout_s),
        # Retried once when the connection is refused or broken (a pooled connection left from before a Redis
        # restart), never on a timeout: a command that timed out may have run, and sending it again could
        # apply a write twice; a frozen Redis would also double every request's wait before its 503.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), retries=1,
                    supported_errors=(redis.exceptions.ConnectionError,)),
        health_check_interval=30,
    )
    pool.connection_class = _lean(pool.connection_class)
    return aioredis.Redis(connection_pool=pool, decode_responses=False)


def blocking_client(url: str, settings: Settings, *, block_s: float) -> aioredis.Redis:
    """A client for blocking reads of up to `block_s` seconds (one connection per concurrent reader)."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=block_s + settings.redis_socket_timeout_s,
        socket_connect_timeout=min(2.0, settings.redis_socket_timeout_s),
        health_check_interval=30,
    )


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return parsed._replace(netloc=netloc).geturl()
