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

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel every loop and await its exit.

        A cancellation can be lost when it lands inside a Redis call (seen with redis-py on Python 3.11:
        the task stays "cancelling" and runs on), so cancel again until each task has really ended.
        """
        self._stopping = True
        pending = {t for t in self._tasks.values() if not t.done()}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
            if pending and asyncio.get_running_loop().time() > deadline:
                log.error("background tasks did not stop: %s", sorted(t.get_name() for t in pending))
                break
        self._tasks.clear()
