"""Stopping a process's tasks (``federation.process.stop_tasks``): a cancellation that a
task loses is asked again, and a task that never stops is reported, not waited for."""

from __future__ import annotations

import asyncio
import logging

import pytest

from federation.process import stop_tasks


async def test_a_task_that_loses_one_cancellation_is_asked_again() -> None:
    swallowed = 0

    async def loses_the_first() -> str:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 1:
                    continue  # as a library that caught it and went on would
                raise

    async def returns() -> str:
        return "done"

    lossy = asyncio.create_task(loses_the_first())
    finished = asyncio.create_task(returns())
    await asyncio.sleep(0)
    outcomes = await stop_tasks([lossy, finished], again_every=0.01)
    assert swallowed == 2
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1] == "done"


async def test_errors_are_returned_as_gather_returns_them() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    async def fails_when_cancelled() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise OSError("cleanup failed") from None

    done = asyncio.create_task(fails())
    cancelled = asyncio.create_task(fails_when_cancelled())
    await asyncio.sleep(0)
    outcomes = await stop_tasks([done, cancelled])
    assert isinstance(outcomes[0], ValueError) and isinstance(outcomes[1], OSError)


async def test_cancelled_itself_it_still_stops_its_tasks_then_raises() -> None:
    stopped = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # its own cleanup
            stopped.set()

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(stop_tasks([inner], again_every=1.0))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert stopped.is_set() and inner.done()


async def test_a_task_that_never_stops_is_logged_and_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="federation.process"):
        (outcome,) = await stop_tasks([task], again_every=0.01, within=0.05)
    assert isinstance(outcome, TimeoutError) and not task.done()
    assert "did not stop within" in caplog.text and "stubborn" in caplog.text
    release.set()
    await task
