"""The command line as a new user meets it on a clean clone: the real `session-server` command in a
subprocess, its own embedded Redis under its data directory, real HTTP and WebSocket clients.

- `--demo` works every time, also after the demo room was used (both parties joined it);
- "listening on" is printed once it is true, never on a run that then fails;
- `session-server token` run from another directory never makes secrets of its own: it uses the
  server's, or refuses with a clear message and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from .rooms_support import Peer
from .support import eventually, free_port

START_TIMEOUT_S = 60  # a deadline for a failure's message, not a measure: the line is waited for
LISTENING = re.compile(r"^Session server listening on http://127\.0\.0\.1:(\d+) ")
LINK = re.compile(r"^\s+(practitioner|client):\s+(http://\S+/room/([0-9a-f]{32})(?:\?\S*)?#token=([\w.-]+))$")


def _command() -> list[str]:
    installed = Path(sys.executable).with_name("session-server")
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "session_server.cli"]


def _env(port: int, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVER_") and k != "REDIS_URL"}
    env.update({"SESSION_SERVER_PORT": str(port), "SESSION_SERVER_LOG_LEVEL": "warning"})
    env.update({"SESSION_SERVER_" + k.upper(): v for k, v in settings.items()})
    return env


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    stderr: Path
    lines: list[str] = field(default_factory=list)

    def links(self) -> dict[str, tuple[str, str, str]]:
        """role -> (link, booking id, token), from what the demo printed."""
        found = {}
        for line in self.lines:
            m = LINK.match(line)
            if m:
                found[m.group(1)] = (m.group(2), m.group(3), m.group(4))
        return found

    async def stop(self) -> int:
        """Ctrl-C, as in a terminal: the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return await asyncio.wait_for(self.proc.wait(), START_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"the server did not stop on Ctrl-C: {self.stderr.read_text()[-2000:]}") from None


@contextlib.asynccontextmanager
async def serving(args: list[str], *, port: int, cwd: Path, log: Path, job: bool = False,
                  **settings: str) -> AsyncIterator[Served]:
    """The command started, its standard output read until it says it listens (or it ends). `job`: in a
    process group of its own, as a shell starts a foreground job."""
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(*_command(), *args, env=_env(port, **settings), cwd=cwd,
                                                    stdout=asyncio.subprocess.PIPE, stderr=err,
                                                    start_new_session=job)
    served = Served(proc, log)
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            if not raw:
                code = await proc.wait()
                raise AssertionError(f"the server ended before it listened (exit {code}): {served.lines} "
                                     f"{log.read_text()[-3000:]}")  # noqa: ASYNC240 (a failure's message)
            served.lines.append(raw.decode().rstrip("\n"))
            if LISTENING.match(served.lines[-1]):
                break
        yield served
    finally:
        if proc.returncode is None:
            with contextlib.suppress(AssertionError):
                await served.stop()


async def _listens_now(port: int) -> None:
    """Right after the line: no retry, the line says it is true."""
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    assert r.status_code == 200


async def _use_the_room(port: int, booking_id: str, tokens: list[str]) -> None:
    """Both parties join the room over its WebSocket, until the booking is in session."""
    peers = []
    for token in tokens:
        ws = await connect(f"ws://127.0.0.1:{port}/v1/rooms/{booking_id}/ws",
                           subprotocols=["session.v1", "bearer." + token],  # type: ignore[list-item]
                           max_size=None, compression=None, open_timeout=10)
        peer = Peer(ws)
        await peer.send({"type": "join", "v": 1})
        await peer.expect("joined", timeout=10)
        peers.append(peer)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        async def in_session() -> bool:
            r = await http.get(f"/v1/bookings/{booking_id}", headers={"Authorization": f"Bearer {tokens[1]}"})
            return r.status_code == 200 and r.json()["status"] == "in_session"

        await eventually(in_session, timeout=20, what="the demo booking in session")
    for peer in peers:
        await peer.close()


async def test_the_demo_works_again_after_its_room_was_used(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    async with serving(["--demo"], port=port, cwd=tmp_path, log=tmp_path / "first.log",
                       data_dir=str(data_dir)) as first:
        await _listens_now(port)
        links = first.links()
        assert set(links) == {"practitioner", "client"}, first.lines
        booking_id = links["client"][1]
        await _use_the_room(port, booking_id, [links["practitioner"][2], links["client"][2]])
        assert await first.stop() == 0
    port = free_port()
    async with serving(["--demo"], port=port, cwd=tmp_path, log=tmp_path / "second.log",
                       data_dir=str(data_dir)) as second:
        await _listens_now(port)
        links = second.links()
        assert set(links) == {"practitioner", "client"}, second.lines
        new_id = links["client"][1]
        assert new_id != booking_id
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for role in ("practitioner", "client"):
                r = await http.get(f"/v1/bookings/{new_id}", headers={"Authorization": f"Bearer {links[role][2]}"})
                assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
            # the new room can be used as the first one was
        await _use_the_room(port, new_id, [links["practitioner"][2], links["client"][2]])
        assert await second.stop() == 0
    for log in ("first.log", "second.log"):
        assert "Traceback" not in (tmp_path / log).read_text()
    # and a third time, the second room used too
    port = free_port()
    async with serving(["--demo"], port=port, cwd=tmp_path, log=tmp_path / "third.log",
                       data_dir=str(data_dir)) as third:
        assert set(third.links()) == {"practitioner", "client"}, third.lines
        assert third.links()["client"][1] not in (booking_id, new_id)


def test_a_port_already_taken_prints_no_listening_line_and_exits_non_zero(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run([*_command(), "--demo"], env=_env(port, data_dir=str(tmp_path / "data")),
                              cwd=tmp_path, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert done.returncode != 0
    assert "listening" not in done.stdout.lower() and "/room/" not in done.stdout, done.stdout
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert errors[0] == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another " \
                        "with --port or SESSION_SERVER_PORT, or stop what listens there", errors[0]
    assert "SESSION_SERVER_PORT" in errors[0]
    # nothing was started for nothing: no embedded Redis, no demo written
    assert not (tmp_path / "data" / "redis").exists()


async def test_a_token_minted_from_another_directory_is_accepted_or_refused_loudly(tmp_path: Path) -> None:
    server_dir, elsewhere = tmp_path / "clinic", tmp_path / "elsewhere"
    server_dir.mkdir()
    elsewhere.mkdir()
    port = free_port()
    token_args = ["token", "--role", "client", "--sub", "c-1", "--name", "Amina"]

    def mint(cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_command(), *token_args], env=_env(port, **settings), cwd=cwd,
                              capture_output=True, text=True, timeout=START_TIMEOUT_S)

    # the README's way: started in its directory with the default data directory (./data)
    async with serving([], port=port, cwd=server_dir, log=tmp_path / "server.log"), \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        async def me(token: str) -> httpx.Response:
            return await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})

        refused = mint(elsewhere)
        assert refused.returncode != 0 and refused.stdout == ""
        assert str(elsewhere / "data" / "local-secrets.json") in refused.stderr
        assert "SESSION_SERVER_DATA_DIR" in refused.stderr and "Traceback" not in refused.stderr
        assert not (elsewhere / "data").exists(), "no secrets were made"

        pointed = mint(elsewhere, data_dir=str(server_dir / "data"))
        assert pointed.returncode == 0, pointed.stderr
        r = await me(pointed.stdout.strip())
        assert r.status_code == 200 and r.json()["sub"] == "c-1", r.text

        beside = mint(server_dir)
        assert beside.returncode == 0, beside.stderr
        assert (await me(beside.stdout.strip())).status_code == 200

        # the README's example as it is written, run by a shell where the server was started
        shown = _readme_token_example()
        script = shown.replace(".venv/bin/session-server", " ".join(_command())).replace(
            "http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
        done = await asyncio.to_thread(subprocess.run, ["sh", "-c", "set -e\n" + script], env=_env(port),
                                       cwd=server_dir, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        assert '"sub":"c-1"' in done.stdout.replace(" ", ""), (shown, done.stdout, done.stderr)


def _readme_token_example() -> str:
    """The README's shell block that mints a development token and uses it."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "session-server token" in b]
    return block


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"


async def test_ctrl_c_at_the_terminal_stops_the_server_quietly_and_its_redis_last(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to the whole foreground job, the server's children included: the server
    must still be the one that stops its embedded Redis, after its consumers and rooms let go of it, so a
    plain stop logs no outage, no retry and no warning, and leaves no redis-server behind."""
    port = free_port()
    log = tmp_path / "stderr.log"
    async with serving(["--demo"], port=port, cwd=tmp_path, log=log, job=True) as served:
        await _listens_now(port)
        redis_pid = int((tmp_path / "data" / "redis" / "redis.pid").read_text())
        os.killpg(served.proc.pid, signal.SIGINT)
        assert await asyncio.wait_for(served.proc.wait(), START_TIMEOUT_S) == 0
    said = log.read_text()
    assert "WARNING" not in said and "ERROR" not in said and "Traceback" not in said, said
    assert not _alive(redis_pid), f"the embedded redis-server (pid {redis_pid}) outlived the server"
