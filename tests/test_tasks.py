"""The lifespan's task supervisor restarts crashed loops and always stops them, even when a cancel is lost."""

from __future__ import annotations

import asyncio

import pytest

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


async def test_a_failed_periodic_step_does_not_stop_the_next_ones() -> None:
    steps = 0
    third = asyncio.Event()

    async def step() -> None:
        nonlocal steps
        steps += 1
        if steps == 1:
            raise RuntimeError("one bad step")
        if steps == 3:
            third.set()

    supervisor = TaskSupervisor()
    supervisor.every("tick", 0.001, step)
    await asyncio.wait_for(third.wait(), 5)
    await supervisor.stop()
    assert supervisor.names == []


async def test_stop_drains_first_then_cancels_children_and_refuses_new_ones() -> None:
    order: list[str] = []
    child_started = asyncio.Event()

    async def child() -> None:
        child_started.set()
        try:
            await asyncio.Event().wait()
        finally:
            order.append("child cancelled")

    async def drain() -> None:
        order.append("drained")

    supervisor = TaskSupervisor()
    supervisor.on_drain(drain)
    task = supervisor.start("child", child())
    await asyncio.wait_for(child_started.wait(), 5)
    await supervisor.stop()
    assert order == ["drained", "child cancelled"] and task.cancelled()

    async def late() -> None: ...


    with pytest.raises(RuntimeError, match="stopping"):
        supervisor.start("late", late())
