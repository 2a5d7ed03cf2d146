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


async def test_a_loop_that_keeps_failing_backs_off_and_starts_afresh_after_a_long_run() -> None:
    pauses: list[float] = []
    now = 0.0
    runs = 0
    done = asyncio.Event()

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    async def loop() -> None:
        nonlocal runs, now
        runs += 1
        if runs == 5:
            now += 100  # this run lasted well beyond the longest pause before it failed
        if runs == 7:
            done.set()
            return
        raise ConnectionError("down")

    supervisor = TaskSupervisor(restart_delay_s=1, max_restart_delay_s=8, sleep=pause, monotonic=lambda: now)
    supervisor.spawn("flaky", loop)
    await asyncio.wait_for(done.wait(), 5)
    await supervisor.stop()
    assert pauses == [1, 2, 4, 8, 1, 2]


async def test_a_periodic_step_that_keeps_failing_backs_off_and_a_success_resets_it() -> None:
    pauses: list[float] = []
    outcomes = iter([False, False, False, True, False, True])
    done = asyncio.Event()

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    async def step() -> None:
        ok = next(outcomes, None)
        if ok is None:
            done.set()
            await asyncio.Event().wait()
        if not ok:
            raise ConnectionError("down")

    supervisor = TaskSupervisor(restart_delay_s=1, max_restart_delay_s=3, sleep=pause)
    supervisor.every("tick", 0.5, step)
    await asyncio.wait_for(done.wait(), 5)
    await supervisor.stop()
    assert pauses == [1, 2, 3, 0.5, 1, 0.5]


async def test_a_failure_the_report_accounts_for_writes_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    reported: list[tuple[str, str]] = []
    second = asyncio.Event()
    runs = 0

    def report(where: str, exc: BaseException) -> bool:
        reported.append((where, type(exc).__name__))
        return isinstance(exc, ConnectionError)

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionError("down")
        if runs == 2:
            raise ValueError("a bug")
        second.set()
        await asyncio.Event().wait()

    supervisor = TaskSupervisor(restart_delay_s=0, report=report)
    with caplog.at_level("WARNING"):
        supervisor.spawn("loop", loop)
        await asyncio.wait_for(second.wait(), 5)
    await supervisor.stop()
    assert reported == [("loop", "ConnectionError"), ("loop", "ValueError")]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [type(r.exc_info[1]).__name__ for r in tracebacks if r.exc_info] == ["ValueError"]
