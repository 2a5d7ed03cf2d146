"""The data directory must be usable before anything starts: one clear line instead of a traceback.

A container that mounts a volume its user cannot write (a root-owned named volume, a read-only bind
mount), a path under a file, a full or read-only disk: each would otherwise end deep in the start-up
with a `PermissionError` traceback, and under a restart policy in a loop of them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .settings import SettingsError, variable_name

# Where the server writes, under the data directory (when they exist already, they are checked too).
SUBDIRECTORIES = ("redis", "documents")


class DataDirUnusable(SettingsError):
    """The data directory cannot be created or written by this process; the message says which and why."""

    def __init__(self, path: Path, reason: str) -> None:
        ValueError.__init__(self, f"{variable_name('data_dir')}: the data directory {path} cannot be written by "
                                  f"this process (user id {os.getuid()}): {reason}")
        self.variable = variable_name("data_dir")


def check_writable(data_dir: Path) -> None:
    """Create `data_dir` if needed and prove that a file can be written in it (and in its subdirectories
    that exist); raise `DataDirUnusable` otherwise."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirUnusable(data_dir, exc.strerror or str(exc)) from None
    for directory in (data_dir, *(data_dir / sub for sub in SUBDIRECTORIES)):
        if directory != data_dir and not directory.exists():
            continue
        try:
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            raise DataDirUnusable(directory, exc.strerror or str(exc)) from None
