"""The lifespan's task supervisor restarts crashed loops and always stops them, even when a cancel is lost."""

from __future__ import annotations

import asyncio

from session_server.tasks import TaskSupervisor


async def test_a_loop_that_loses_a_cancellation_is_still_stopped() -> None:
    lost = 0

    async def stubborn() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                # what a library that swallows CancelledError mid-call looks like from outside
                if lost == 0:
                    lost += 1
                    continue
                raise

    supervisor = TaskSupervisor()
    supervisor.spawn("stubborn", stubborn)
    await asyncio.sleep(0)
    assert supervisor.names == ["stubborn"]
    await supervisor.stop()
    assert lost == 1 and supervisor.names == []


async def test_a_crashed_loop_is_restarted() -> None:
    runs = 0
    second_run = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first run fails")
        second_run.set()
        await asyncio.Event().wait()

    supervisor = TaskSupervisor(restart_delay_s=0)
    supervisor.spawn("flaky", flaky)
    await asyncio.wait_for(second_run.wait(), 5)
    assert runs == 2
    await supervisor.stop()
