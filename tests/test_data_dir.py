"""A data directory the server cannot write stops `session-server` at once, with one line naming it.

The container case: the image runs as `nobody` and a volume arrives owned by root, that is by another
user than the server's. The test starts the real command on a directory owned by another user; run as
root, it drops the capabilities that let root write anywhere (a chmod alone does not stop root), so the
operating system refuses the write as it does in the container.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import API_KEY_ID, API_SECRET
from .support import eventually, free_port

OTHER_USER = 65534  # nobody, as the volume's owner
# root writes anywhere through these capabilities; without them it meets file permissions as others do
AS_AN_ORDINARY_PROCESS = (["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
                          if os.geteuid() == 0 else [])


def _env(data_dir: Path, port: int) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin"), "SESSION_SERVER_DATA_DIR": str(data_dir),
            "SESSION_SERVER_PORT": str(port), "SESSION_SERVER_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
            "SESSION_SERVER_LOG_LEVEL": "warning"}


def _command() -> list[str]:
    if AS_AN_ORDINARY_PROCESS:
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to run the server without root's powers"
    return [*AS_AN_ORDINARY_PROCESS, sys.executable, "-m", "session_server.cli", "serve"]


def _serve(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(), env=_env(data_dir, free_port()), capture_output=True, text=True,
                          timeout=60, cwd="/")


def _assert_one_clear_line(done: subprocess.CompletedProcess[str], data_dir: Path, reason: str) -> None:
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "listening" not in lines[0].lower()
    assert str(data_dir) in lines[0] and reason in lines[0], lines[0]
    assert lines[0].startswith("error: ") and "SESSION_SERVER_DATA_DIR" in lines[0]


def test_a_data_directory_under_a_file_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    (tmp_path / "not-a-directory").write_text("")
    data_dir = tmp_path / "not-a-directory" / "data"
    _assert_one_clear_line(_serve(data_dir), data_dir, "Not a directory")


def _volume(tmp_path: Path, owner: int) -> Path:
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o755)
    if os.geteuid() == 0:
        os.chown(volume, owner, owner)
    else:
        volume.chmod(0o555 if owner != os.geteuid() else 0o755)  # what another owner's 0755 means to us
    return volume


def test_a_volume_owned_by_another_user_stops_the_server_with_one_line(tmp_path: Path) -> None:
    volume = _volume(tmp_path, OTHER_USER)
    _assert_one_clear_line(_serve(volume), volume, "Permission denied")
    assert list(volume.iterdir()) == []  # nothing was written


async def test_the_same_volume_owned_by_the_servers_user_serves(tmp_path: Path) -> None:
    """The image's fix: /data belongs to the user the server runs as; then the same start succeeds."""
    volume = _volume(tmp_path, os.geteuid())
    port = free_port()
    proc = await asyncio.create_subprocess_exec(*_command(), env=_env(volume, port),
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE, cwd="/")
    try:
        async def ready() -> bool:
            if proc.returncode is not None:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"the server exited: {err.decode()}")
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=30, what="the server to be ready")
        assert (volume / "redis" / "appendonly.aof").exists()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
