"""`session-server backup` and `session-server restore`: everything a server needs to come back.

A backup is a directory holding, from a running server:

* `redis.rdb`: a point-in-time snapshot of its Redis (bookings, rooms, chat, document metadata and
  wrapped data keys, events), taken the way a replica takes one (`redis-cli --rdb`): consistent, while
  the server goes on serving;
* `documents/`: the encrypted document files, copied *after* the snapshot, so every document the
  snapshot knows of is there (a document is written before its metadata, and its metadata deleted
  before its file);
* `master-keys.json` (and `local-secrets.json` when the server uses generated secrets): the key ring.
  Without it every document and every chat message in the backup is unreadable. It is written 0600;
  keep it apart from the rest, and safe;
* `manifest.json`: what was taken, when, from which Redis database, with SHA-256 sums.

The directory appears under its name only once complete (it is written as `<name>.partial` first).

`restore` builds a new data directory from a backup: the embedded Redis' append-only file, made by
loading the snapshot into a private `redis-server`, the documents and the generated secrets. A server
started on it (with the same master keys) reads everything back.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import redis

from .embedded_redis import EmbeddedRedis, die_with_parent, redis_server_binary
from .local_secrets import FILE_NAME as LOCAL_SECRETS
from .redis_client import redacted
from .settings import Settings

FORMAT = 1
SNAPSHOT = "redis.rdb"
DOCUMENTS = "documents"
MASTER_KEYS = "master-keys.json"
MANIFEST = "manifest.json"
DOCUMENT_SUFFIX = ".ssd"  # files/blobs.py: finished documents (temporary ones end in .part)
# The newest RDB format the embedded redis-server (6.2) reads; Redis 7.0 writes 10, 7.2 and later 11+.
EMBEDDED_RDB_VERSION = 9
SNAPSHOT_TIMEOUT_S = 600.0


class BackupError(RuntimeError):
    """A backup or restore cannot go on; the message says why and what to do."""


# --- the command line ------------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """Register `backup` and `restore` on the CLI's subparsers."""
    b = sub.add_parser("backup", help="take a consistent backup of a running server (Redis, documents, "
                                      "master keys) into a new directory")
    b.add_argument("destination", type=Path, help="the backup directory to create (must not exist)")
    r = sub.add_parser("restore", help="build a new data directory from a backup")
    r.add_argument("source", type=Path, help="a directory made by `session-server backup`")
    r.add_argument("--into", type=Path, default=None,
                   help="the new data directory (default: SESSION_SERVER_DATA_DIR); must be absent or empty")
    r.add_argument("--no-redis", action="store_true",
                   help="restore the documents and secrets only, and leave the Redis snapshot to be loaded "
                        "into an external Redis by hand (see docs/operations.md)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """`backup` or `restore`, with one line of error and status 1 when it cannot be done."""
    try:
        if args.command == "backup":
            backup(settings, args.destination)
        else:
            restore(args.source, args.into or settings.data_dir, with_redis=not args.no_redis)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


# --- backup ----------------------------------------------------------------------------------------


def backup(settings: Settings, destination: Path, *, out: Any = None) -> dict[str, Any]:
    """Write a complete backup of the server configured by `settings` (running) to `destination`."""
    say = out or sys.stdout
    destination = destination.absolute()
    if destination.exists():
        raise BackupError(f"{destination} already exists; a backup goes into a new directory")
    url, db = _redis_source(settings)
    keys = _master_keys(settings)
    partial = destination.with_name(destination.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, mode=0o700)
    try:
        started = time.time()
        _snapshot(url, partial / SNAPSHOT)
        documents = _copy_documents(settings.data_dir / DOCUMENTS, partial / DOCUMENTS)
        _write_private(partial / MASTER_KEYS, json.dumps(keys, indent=2))
        local = settings.data_dir / LOCAL_SECRETS
        if local.exists():
            _write_private(partial / LOCAL_SECRETS, local.read_text())
        manifest = {
            "format": FORMAT,
            "taken_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "redis": {"source": "embedded" if settings.redis_url is None else redacted(url), "db": db,
                      "rdb_version": _rdb_version(partial / SNAPSHOT), "sha256": _sha256(partial / SNAPSHOT)},
            "documents": documents,
            "master_key_ids": sorted(keys["keys"]),
            "active_master_key_id": keys["active"],
        }
        _write_private(partial / MANIFEST, json.dumps(manifest, indent=2))
        _fsync_tree(partial)
        partial.rename(destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(f"Backup written to {destination}: the Redis snapshot, {len(documents)} document file(s) and the "
          f"master keys ({', '.join(manifest['master_key_ids'])}). The master keys are in it: keep it "
          "as safe as the keys themselves.", file=say)
    return manifest


def _master_keys(settings: Settings) -> dict[str, Any]:
    keys: Mapping[str, bytes] = settings.master_keys
    active = settings.active_master_key_id
    if not keys:  # a server on generated secrets: read them, never create them here
        local = settings.data_dir / LOCAL_SECRETS
        try:
            data = json.loads(local.read_text())
            keys = {data["master_key_id"]: base64.b64decode(data["master_key"])}
            active = data["master_key_id"]
        except (OSError, ValueError, KeyError, TypeError):
            raise BackupError(f"no master keys: SESSION_SERVER_MASTER_KEYS is not set and {local} cannot be "
                              "read; run the backup with the server's own settings") from None
    return {"active": active, "keys": {kid: base64.b64encode(key).decode() for kid, key in keys.items()}}


def _redis_source(settings: Settings) -> tuple[str, int]:
    if settings.redis_url is None:
        url = EmbeddedRedis(settings.data_dir / "redis").url
        db = 0
    else:
        url = settings.redis_url
        parsed = urlparse(url)
        if parsed.scheme == "rediss":
            raise BackupError("the Redis is reached over TLS (rediss://), which the bundled redis-cli cannot "
                              "do: take its snapshot with `redis-cli --tls --rdb` (see docs/operations.md)")
        db = _db_index(url)
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        where = ("no embedded Redis is running for the data directory "
                 f"{settings.data_dir.absolute()}" if settings.redis_url is None else f"Redis at {redacted(url)}")
        raise BackupError(f"{where} does not answer ({type(exc).__name__}); back up a running server, with "
                          "its own settings (SESSION_SERVER_DATA_DIR, REDIS_URL)") from None
    finally:
        client.close()
    return url, db


def _db_index(url: str) -> int:
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return int(parse_qs(parsed.query).get("db", ["0"])[0])
    path = parsed.path.strip("/")
    return int(path) if path.isdigit() else int(parse_qs(parsed.query).get("db", ["0"])[0])


def redis_cli_binary() -> Path:
    return redis_server_binary().with_name("redis-cli")


def _snapshot(url: str, target: Path) -> None:
    """A point-in-time RDB of the whole Redis, over the replication protocol (no file on its side needed)."""
    parsed = urlparse(url)
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    args = [str(redis_cli_binary())]
    if parsed.scheme == "unix":
        args += ["-s", parsed.path]
    else:
        args += ["-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 6379)]
        if parsed.username:
            args += ["--user", parsed.username]
        if parsed.password:
            env["REDISCLI_AUTH"] = parsed.password  # never on the command line, where `ps` shows it
    args += ["--rdb", str(target)]
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=SNAPSHOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BackupError(f"the Redis snapshot took more than {SNAPSHOT_TIMEOUT_S:g} s") from None
    if done.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BackupError(f"the Redis snapshot failed: {last[0]}")
    os.chmod(target, 0o600)


def _copy_documents(source: Path, target: Path) -> list[dict[str, Any]]:
    target.mkdir(mode=0o700)
    copied: list[dict[str, Any]] = []
    if not source.exists():
        return copied
    for entry in sorted(source.iterdir()):
        if not entry.name.endswith(DOCUMENT_SUFFIX) or entry.name.startswith("."):
            continue  # unfinished uploads: their metadata does not exist
        try:
            shutil.copyfile(entry, target / entry.name)
        except FileNotFoundError:
            continue  # deleted since the snapshot: the document is gone
        os.chmod(target / entry.name, 0o600)
        copied.append({"file": entry.name, "bytes": (target / entry.name).stat().st_size,
                       "sha256": _sha256(target / entry.name)})
    return copied


# --- restore ---------------------------------------------------------------------------------------


def restore(source: Path, into: Path, *, with_redis: bool = True, out: Any = None) -> None:
    """Build the data directory `into` (absent or empty) from the backup in `source`."""
    say = out or sys.stdout
    manifest = _verified_manifest(source)
    into = into.absolute()
    if into.exists() and any(into.iterdir()):
        raise BackupError(f"{into} is not empty; restore into a new data directory")
    if with_redis and manifest["redis"]["rdb_version"] > EMBEDDED_RDB_VERSION:
        raise BackupError(f"the Redis snapshot is in RDB format {manifest['redis']['rdb_version']} (Redis 7 or "
                          f"later), which the embedded Redis cannot read; restore with --no-redis and load "
                          f"{source / SNAPSHOT} into a Redis of that version (see docs/operations.md)")
    into.mkdir(parents=True, exist_ok=True, mode=0o700)
    if with_redis:
        _rebuild_aof(source / SNAPSHOT, manifest["redis"]["db"], into / "redis")
    documents = into / DOCUMENTS
    documents.mkdir(mode=0o700)
    for entry in manifest["documents"]:
        shutil.copyfile(source / DOCUMENTS / entry["file"], documents / entry["file"])
        os.chmod(documents / entry["file"], 0o600)
    if (source / LOCAL_SECRETS).exists():
        _write_private(into / LOCAL_SECRETS, (source / LOCAL_SECRETS).read_text())
        keys_note = "the generated secrets are restored with it"
    else:
        keys_note = (f"start it with the master keys of the backup ({', '.join(manifest['master_key_ids'])}, "
                     f"in {source / MASTER_KEYS}) in SESSION_SERVER_MASTER_KEYS")
    _fsync_tree(into)
    redis_note = "" if with_redis else f"; load {source / SNAPSHOT} into its Redis by hand"
    print(f"Restored the backup of {manifest['taken_at']} into {into} ({len(manifest['documents'])} document "
          f"file(s)){redis_note}; {keys_note}.", file=say)


def _verified_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError):
        raise BackupError(f"{source} is not a complete backup (no readable {MANIFEST})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source} has backup format {manifest.get('format')!r}; this server reads {FORMAT}")
    if _sha256(source / SNAPSHOT) != manifest["redis"]["sha256"]:
        raise BackupError(f"{source / SNAPSHOT} does not match its checksum: the backup is damaged")
    for entry in manifest["documents"]:
        path = source / DOCUMENTS / entry["file"]
        if not path.exists() or _sha256(path) != entry["sha256"]:
            raise BackupError(f"{path} is missing or does not match its checksum: the backup is damaged")
    if not (source / MASTER_KEYS).exists():
        raise BackupError(f"{source} holds no {MASTER_KEYS}: without the master keys nothing in it can be read")
    return manifest


def _rebuild_aof(snapshot: Path, db: int, directory: Path) -> None:
    """Load the snapshot into a private redis-server, keep database `db` as database 0 (the embedded
    Redis' one), and have it write its append-only file into `directory`, where the embedded Redis of
    a server started on this data directory finds it."""
    directory.mkdir(mode=0o700)
    shutil.copyfile(snapshot, directory / "restore.rdb")
    with _private_redis(directory) as client:
        if db != 0:
            client.swapdb(db, 0)
        databases = int(str(client.config_get("databases")["databases"]))
        # the other databases of a shared external Redis belong to others: empty them (SELECT inside a
        # script changes that script's database only)
        client.eval("for i = 1, tonumber(ARGV[1]) - 1 do redis.call('SELECT', i) redis.call('FLUSHDB') end "
                    "return 1", 0, databases)
        client.config_set("appendonly", "yes")  # writes the whole dataset into a fresh AOF
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        while True:
            info = client.info("persistence")
            if (info.get("aof_enabled") == 1 and not info.get("aof_rewrite_in_progress")
                    and not info.get("aof_rewrite_scheduled")):
                break
            if time.monotonic() > deadline:
                raise BackupError("the restored Redis did not finish writing its append-only file in time")
            time.sleep(0.05)
        if info.get("aof_last_bgrewrite_status") != "ok":
            raise BackupError("the restored Redis could not write its append-only file")
    (directory / "restore.rdb").unlink()
    if not (directory / "appendonly.aof").exists():
        raise BackupError("the restored Redis wrote no append-only file")


@contextlib.contextmanager
def _private_redis(directory: Path) -> Iterator[redis.Redis]:
    sock = Path(tempfile.mkdtemp(prefix="session-restore-")) / "redis.sock"
    proc = subprocess.Popen(
        [str(redis_server_binary()), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--dir", str(directory), "--dbfilename", "restore.rdb", "--appendonly", "no", "--save", "",
         "--logfile", str(directory / "restore.log"), "--daemonize", "no"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent)
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=60)
    try:
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise BackupError(f"Redis could not load the snapshot: {_tail(directory / 'restore.log')}")
            try:
                client.ping()
                break
            except redis.BusyLoadingError:
                pass
            except (redis.ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise BackupError("Redis did not load the snapshot in time")
            time.sleep(0.02)
        yield client
        with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN closes the connection as it succeeds
            client.shutdown(nosave=True)
    finally:
        client.close()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(30)
        (directory / "restore.log").unlink(missing_ok=True)
        shutil.rmtree(sock.parent, ignore_errors=True)


# --- files -----------------------------------------------------------------------------------------


def _rdb_version(path: Path) -> int:
    with path.open("rb") as f:
        head = f.read(9)
    if not head.startswith(b"REDIS") or not head[5:].isdigit():
        raise BackupError(f"{path} is not a Redis snapshot")
    return int(head[5:])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-2:])
    except OSError:
        return "no log"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
