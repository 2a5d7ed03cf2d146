"""TURN: each participant gets time-limited credentials of its own at join (coturn's shared-secret REST
scheme), and the compose file offers TURN over UDP, TCP and TLS on 443."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

from session_server.clock import ManualClock
from session_server.settings import SettingsError, load_settings
from session_server.turn import turn_server

from .rooms_support import CLIENT, PRACTITIONER, joined, room_server, write_booking
from .support import free_port, require

ROOT = Path(__file__).parent.parent

SECRET = "a-shared-secret-only-coturn-and-the-server-know"
URLS = ("turn:203.0.113.10:3478?transport=udp", "turn:203.0.113.10:3478?transport=tcp",
        "turns:turn.example.org:443?transport=tcp")
STUN = '[{"urls": ["stun:203.0.113.10:3478"]}]'


def coturn_accepts(secret: str, username: str, credential: str, now: float) -> bool:
    """What coturn does with `use-auth-secret`/`static-auth-secret` (and the default REST separator ':'):
    the number before the separator is the expiry, a past one is refused, and the password it expects
    is base64(HMAC-SHA1(secret, username))."""
    stamp, sep, _ = username.partition(":")
    if not sep or not stamp.isdigit() or int(stamp) < now:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return hmac.compare_digest(expected, credential)


def _turn(joined_msg: dict[str, Any]) -> dict[str, Any]:
    [entry] = [s for s in joined_msg["ice_servers"] if any(u.startswith("turn") for u in s["urls"])]
    return entry


async def test_each_participant_gets_turn_credentials_of_its_own_that_coturn_accepts_until_they_expire(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    booking = await write_booking(redis_url, "b1", starts_in_s=60, length_s=3600)
    start = float(int(time.time()))
    clock = ManualClock(start)
    ttl = 1800  # shorter than the room stays open: the TTL bounds the credentials
    async with room_server(tmp_path, redis_url, clock=clock, turn_urls=URLS, turn_secret=SECRET, turn_ttl_s=ttl,
                           ice_servers=load_settings({"SESSION_SERVER_ICE_SERVERS": STUN}).ice_servers) as server:
        _, client_joined = await joined(server, "b1", token("client", CLIENT))
        _, prac_joined = await joined(server, "b1", token("practitioner", PRACTITIONER))

    mine, theirs = _turn(client_joined), _turn(prac_joined)
    assert {"urls": ["stun:203.0.113.10:3478"]} in client_joined["ice_servers"]  # the configured ones stay
    assert mine["urls"] == list(URLS) and theirs["urls"] == list(URLS)  # UDP, TCP and TLS on 443
    assert mine["username"] == f"{int(start) + ttl}:{CLIENT}"
    assert theirs["username"] == f"{int(start) + ttl}:{PRACTITIONER}"
    assert mine["credential"] != theirs["credential"]
    assert SECRET not in str(client_joined) and SECRET not in str(prac_joined)

    for entry in (mine, theirs):
        assert coturn_accepts(SECRET, entry["username"], entry["credential"], now=start)
        assert coturn_accepts(SECRET, entry["username"], entry["credential"], now=start + ttl)
        assert not coturn_accepts(SECRET, entry["username"], entry["credential"], now=start + ttl + 1)  # expired
        assert not coturn_accepts("another-secret-of-another-server", entry["username"], entry["credential"],
                                  now=start)
    # one participant's credential does not open the relay under the other's name
    assert not coturn_accepts(SECRET, theirs["username"], mine["credential"], now=start)
    assert booking.ends_at > start + ttl


async def test_turn_credentials_end_when_the_room_closes_even_with_a_long_ttl(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    booking = await write_booking(redis_url, "b1", starts_in_s=60, length_s=1800)
    clock = ManualClock(float(int(time.time())))
    grace = 900
    async with room_server(tmp_path, redis_url, clock=clock, turn_urls=URLS, turn_secret=SECRET,
                           turn_ttl_s=7 * 86400, room_grace_after_s=grace) as server:
        _, msg = await joined(server, "b1", token("client", CLIENT))
    entry = _turn(msg)
    closes_at = booking.ends_at + grace
    assert entry["username"] == f"{closes_at}:{CLIENT}"
    assert coturn_accepts(SECRET, entry["username"], entry["credential"], now=closes_at)
    assert not coturn_accepts(SECRET, entry["username"], entry["credential"], now=closes_at + 1)


async def test_without_a_turn_secret_only_the_configured_ice_servers_are_handed_out(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, "b1")
    async with room_server(tmp_path, redis_url) as server:
        _, msg = await joined(server, "b1", token("client", CLIENT))
    assert msg["ice_servers"] == []


def test_turn_settings_come_together_and_name_turn_urls() -> None:
    env = {"SESSION_SERVER_TURN_URLS": ",".join(URLS), "SESSION_SERVER_TURN_SECRET": SECRET}
    s = load_settings(env)
    assert s.turn_urls == URLS and s.turn_secret == SECRET and s.turn_ttl_s == 86400
    with pytest.raises(SettingsError, match="SESSION_SERVER_TURN_SECRET"):
        load_settings({"SESSION_SERVER_TURN_URLS": ",".join(URLS)})
    with pytest.raises(SettingsError, match="SESSION_SERVER_TURN_SECRET"):
        load_settings({**env, "SESSION_SERVER_TURN_SECRET": "short"})
    with pytest.raises(SettingsError, match="SESSION_SERVER_TURN_URLS"):
        load_settings({**env, "SESSION_SERVER_TURN_URLS": "stun:203.0.113.10:3478"})
    with pytest.raises(SettingsError, match="SESSION_SERVER_TURN_TTL_S"):
        load_settings({**env, "SESSION_SERVER_TURN_TTL_S": "5"})


# --- a real coturn, configured as the compose file configures it ---------------------------------------


@contextlib.asynccontextmanager
async def coturn(tmp_path: Path) -> AsyncIterator[int]:
    """turnserver on loopback with the compose file's authentication (`use-auth-secret`)."""
    binary = shutil.which("turnserver")
    require(binary is not None, "coturn (turnserver) is not installed")
    assert binary is not None
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    auth_args = [a for a in compose["services"]["coturn"]["command"] if a == "--use-auth-secret"]
    assert auth_args, "the compose file's coturn checks credentials with a shared secret"
    port = free_port()
    relay = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        *auth_args, f"--static-auth-secret={SECRET}", "--realm=turn.example.org", "--no-tls", "--no-dtls",
        "--no-cli", f"--min-port={relay}", f"--max-port={relay + 1}", f"--pidfile={tmp_path / 'turn.pid'}",
        f"--userdb={tmp_path / 'turndb'}", "--log-file=stdout", "--simple-log",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        while b"(admin thread)" not in (line := await asyncio.wait_for(proc.stdout.readline(), 10)):
            assert line, "turnserver exited at start"
        drain = asyncio.create_task(proc.stdout.read())
        yield port
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        with contextlib.suppress(Exception):
            await drain


async def _allocate(port: int, username: str, credential: str) -> tuple[str, int]:
    """A TURN allocation over UDP, as a browser makes it; the relayed address coturn gives."""
    transport, _ = await create_turn_endpoint(asyncio.DatagramProtocol, ("127.0.0.1", port), username,
                                              credential)
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


async def test_coturn_allocates_a_relay_with_the_credentials_minted_at_join_and_refuses_expired_ones(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, "b1")
    async with room_server(tmp_path, redis_url, turn_urls=URLS, turn_secret=SECRET, turn_ttl_s=600) as server:
        _, client_joined = await joined(server, "b1", token("client", CLIENT))
        _, prac_joined = await joined(server, "b1", token("practitioner", PRACTITIONER))
    async with coturn(tmp_path) as port:
        for entry in (_turn(client_joined), _turn(prac_joined)):
            host, _ = await _allocate(port, entry["username"], entry["credential"])
            assert host == "127.0.0.1"
        mine = _turn(client_joined)
        with pytest.raises(TransactionFailed):  # someone else's name with this credential
            await _allocate(port, _turn(prac_joined)["username"], mine["credential"])
        expired = turn_server(URLS, SECRET, CLIENT, now=int(time.time()) - 7200, valid_until=int(time.time()),
                              ttl_s=60)
        assert expired.username is not None and expired.credential is not None
        with pytest.raises(TransactionFailed):
            await _allocate(port, expired.username, expired.credential)
