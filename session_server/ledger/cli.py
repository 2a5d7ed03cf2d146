"""`session-server ledger`: the ledger's consumer and payout job, apart from the server."""

from __future__ import annotations

import asyncio
import logging

from ..settings import Settings
from .worker import run_apart


def main(settings: Settings, consumer: str | None) -> int:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_apart(settings, consumer))
    return 0
