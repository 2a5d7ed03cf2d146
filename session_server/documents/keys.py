"""`session-server keys rotate`: re-wrap every document's data key under the active master key.

Runs beside a live server: it talks to the same Redis (REDIS_URL, or the embedded Redis's socket under
the data directory), and each document is one compare-and-set, so downloads and uploads carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import redis.asyncio as aioredis

from files.keyring import KeyRing
from session_server.embedded_redis import EmbeddedRedis
from session_server.settings import Settings

from .service import RotationReport, rotate_keys, servers_lacking


async def _rotate(settings: Settings) -> RotationReport:
    keyring = KeyRing(settings.master_keys, settings.active_master_key_id)
    async with contextlib.AsyncExitStack() as stack:
        if settings.redis_url is not None:
            url = settings.redis_url
        else:
            embedded = EmbeddedRedis(settings.data_dir / "redis")
            url = embedded.url
            probe = aioredis.Redis.from_url(url, socket_connect_timeout=1)
            try:
                await probe.ping()
            except (aioredis.RedisError, OSError):
                # No server is running: start the embedded Redis for the time of the rotation.
                url = await embedded.start()
                stack.push_async_callback(embedded.stop)
            finally:
                await probe.aclose()
        client = aioredis.Redis.from_url(url, socket_timeout=10)
        stack.push_async_callback(client.aclose)
        lacking = await servers_lacking(client, keyring.active_key_id)
        if lacking:
            raise RotationRefused(
                f"{lacking} running server(s) do not hold master key {keyring.active_key_id!r}: add it to "
                "SESSION_SERVER_MASTER_KEYS on every server and restart them, then rotate")
        return await rotate_keys(client, keyring)


class RotationRefused(Exception):
    pass


def run_rotate(settings: Settings) -> int:
    if not settings.master_keys:
        print("error: no master key is configured (SESSION_SERVER_MASTER_KEYS)", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_rotate(settings))
    except RotationRefused as exc:
        print(f"error: {exc}; nothing was changed", file=sys.stderr)
        return 2
    print(f"re-wrapped {report.rewrapped} document key(s) under master key "
          f"{settings.active_master_key_id!r}; {report.already_current} already current; "
          f"{report.skipped} skipped (deleted meanwhile or unreadable: run again or see the log)")
    return 0 if report.skipped == 0 else 1
