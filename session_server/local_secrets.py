"""Secrets for a server started without any: generated once, kept in the data directory (mode 0600).

This is what lets one command start a working server on a fresh machine. A deployment sets
SESSION_SERVER_API_KEYS and SESSION_SERVER_MASTER_KEYS itself and never touches this file.

Only the server creates the file. The other commands (a development token, a key rotation)
use the server's secrets or refuse: new secrets made by a command run from another directory (the data
directory is relative to it by default) would sign tokens the server refuses and keys that open nothing.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
from pathlib import Path

from .settings import Settings

FILE_NAME = "local-secrets.json"


class SecretsMissing(Exception):
    """No secrets are configured and the data directory holds none; the message says where it looked."""


def _load_or_create(path: Path, *, create: bool) -> dict[str, str]:
    if path.exists():
        data = json.loads(path.read_text())
        if isinstance(data, dict) and {"api_key_id", "api_secret", "master_key_id", "master_key"} <= data.keys():
            return {k: str(v) for k, v in data.items()}
    if not create:
        raise SecretsMissing(
            f"no API key is configured and {path} does not exist, so this would not be the running server's "
            "key. Run the command from the directory the server was started in, or set SESSION_SERVER_DATA_DIR "
            "to the server's data directory (or SESSION_SERVER_API_KEYS and SESSION_SERVER_MASTER_KEYS).")
    data = {
        "api_key_id": "local",
        "api_secret": secrets.token_urlsafe(32),
        "master_key_id": "local-1",
        "master_key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    return data


def with_local_secrets(settings: Settings, *, create: bool = True) -> tuple[Settings, Path | None]:
    """Fill missing API keys and master keys from the data directory's secrets file, and say which file
    (None: the settings had them). Without `create`, a missing file is `SecretsMissing`."""
    if settings.api_keys and settings.master_keys:
        return settings, None
    path = (settings.data_dir / FILE_NAME).absolute()
    data = _load_or_create(path, create=create)
    changes: dict[str, object] = {}
    if not settings.api_keys:
        changes["api_keys"] = {data["api_key_id"]: data["api_secret"]}
    if not settings.master_keys:
        changes["master_keys"] = {data["master_key_id"]: base64.b64decode(data["master_key"])}
        changes["active_master_key_id"] = data["master_key_id"]
    return dataclasses.replace(settings, **changes), path  # type: ignore[arg-type]
