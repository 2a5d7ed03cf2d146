"""The background tasks of one app, owned by its lifespan: started here, drained, cancelled and awaited at stop.

Three shapes, one owner, so that shutdown is one path (drain, then cancel, then await):
- `spawn`: a long-lived loop (a stream consumer, a pub/sub listener); if it crashes it is logged and restarted;
- `every`: a periodic step (a presence tick, a job); a step that fails is logged and the next one runs;
- `start`: a short-lived child (a socket's writer, a peer's work); it runs once, a failure is logged.
`on_drain` registers what must happen before the cancellation (telling connected clients to go elsewhere).

A loop or step that keeps failing backs off: the pause doubles with each consecutive failure, up to
`max_restart_delay_s`, and falls back to the first pause after a success (a step that completes, a loop
that ran at least `max_restart_delay_s` before failing). `report` sees each failure first: when it
returns True the failure is already accounted for (a Redis outage, summarised by its own log lines)
and no traceback is written for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_delay(first_s: float, max_s: float, failures: int) -> float:
    """The pause after `failures` consecutive failures (1 or more): `first_s`, doubled each time, capped."""
    return min(max_s, first_s * 2.0 ** min(failures - 1, 32))


def _unreported(where: str, exc: BaseException) -> bool:
    return False


class TaskSupervisor:
    def __init__(self, *, restart_delay_s: float = 1.0, max_restart_delay_s: float = 5.0,
                 report: Callable[[str, BaseException], bool] = _unreported,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._children: set[asyncio.Task[Any]] = set()
        self._drains: list[Callable[[], Awaitable[None]]] = []
        self._restart_delay_s = restart_delay_s
        self._max_restart_delay_s = max(restart_delay_s, max_restart_delay_s)
        self._report = report
        self._sleep = sleep
        self._monotonic = monotonic
        self._stopping = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop` until it returns or the app stops; restart it after a pause if it raises."""
        self._check(name)
        self._tasks[name] = asyncio.create_task(self._supervise(name, loop), name=name)

    def every(self, name: str, interval_s: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` every `interval_s` seconds until the app stops; a failed step is logged, not fatal."""
        if interval_s <= 0:
            raise ValueError("the interval must be positive")

        async def periodic() -> None:
            failures = 0
            while True:
                try:
                    await step()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    pause = max(interval_s, backoff_delay(self._restart_delay_s, self._max_restart_delay_s, failures))
                    if not self._report(name, exc):
                        log.exception("periodic task %s failed; it runs again in %.1f s", name, pause)
                    await self._sleep(pause)
                    continue
                await self._sleep(interval_s)

        self.spawn(name, periodic)

    def start(self, name: str, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run a short-lived child task; stop() cancels it if it is still running then."""
        if self._stopping:
            coro.close()
            raise RuntimeError("the app is stopping")
        task = asyncio.create_task(coro, name=name)
        self._children.add(task)
        task.add_done_callback(self._child_done)
        return task

    def on_drain(self, drain: Callable[[], Awaitable[None]]) -> None:
        """Run `drain` at stop, before anything is cancelled."""
        self._drains.append(drain)

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        self._children.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self._report(task.get_name(), exc):
            log.error("task %s failed", task.get_name(), exc_info=exc)

    def _check(self, name: str) -> None:
        if self._stopping:
            raise RuntimeError("the app is stopping")
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already running")

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while not self._stopping:
            started = self._monotonic()
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._monotonic() - started >= self._max_restart_delay_s:
                    failures = 0  # it ran well for a while: this failure is a new story
                failures += 1
                pause = backoff_delay(self._restart_delay_s, self._max_restart_delay_s, failures)
                if not self._report(name, exc):
                    log.exception("background task %s failed; restarting in %.1f s", name, pause)
                await self._sleep(pause)

    @property
    def names(self) -> list[str]:
        return sorted(n for n, t in self._tasks.items() if not t.done())

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Drain, then cancel every loop and child and await their exit.

        A cancellation can be lost when it lands inside a Redis call (seen with redis-py on Python 3.11:
        the task stays "cancelling" and runs on), so cancel again until each task has really ended.
        """
        self._stopping = True
        for drain in self._drains:
            try:
                await asyncio.wait_for(drain(), timeout_s)
            except Exception:
                log.exception("a drain step failed; stopping anyway")
        pending = {t for t in [*self._tasks.values(), *self._children] if not t.done()}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
            if pending and asyncio.get_running_loop().time() > deadline:
                log.error("background tasks did not stop: %s", sorted(t.get_name() for t in pending))
                break
        self._tasks.clear()
        self._children.clear()
