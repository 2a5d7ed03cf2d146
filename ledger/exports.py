"""Files the ledger hands to the outside (the bank's transfer files, the payment gateway's refund files):
written whole or not at all, amounts in major units as people read them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_whole(target: Path, text: str) -> str:
    """Write a file handed to a bank or a gateway whole or not at all (a crash leaves the old one or none);
    its name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of its own: two writers of the same file never write into one another's
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target.name


def format_major(amount_minor: int, decimals: int = 2) -> str:
    whole, part = divmod(amount_minor, 10**decimals)
    return f"{whole}.{part:0{decimals}d}"
