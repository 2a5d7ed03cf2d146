"""The background tasks of one app, owned by its lifespan: started here, cancelled and awaited at stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class TaskSupervisor:
    """Runs named long-lived loops; a loop that crashes is logged and restarted after a pause."""

    def __init__(self, *, restart_delay_s: float = 1.0) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._restart_delay_s = restart_delay_s
        self._stopping = False

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        if self._stopping:
            raise RuntimeError("the app is stopping")
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already running")
        self._tasks[name] = asyncio.create_task(self._supervise(name, loop), name=name)

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s failed; restarting", name)
                await asyncio.sleep(self._restart_delay_s)

    @property
    def names(self) -> list[str]:
        return sorted(n for n, t in self._tasks.items() if not t.done())

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
