"""The agent's work queue: ``drained`` is set only when no key is queued, running or
waiting out a backoff (the DNS server answers only then, at start-up)."""

from __future__ import annotations

import asyncio

from agents.workqueue import KeyQueue, RetryLater


async def test_drained_waits_for_keys_in_backoff() -> None:
    attempts: dict[str, int] = {}

    async def handler(key: str) -> None:
        attempts[key] = attempts.get(key, 0) + 1
        if key == "slow" and attempts[key] == 1:
            raise RetryLater("not yet")

    queue: KeyQueue[str] = KeyQueue("test", handler, workers=2)
    assert queue.drained.is_set()  # nothing to do yet
    queue.add("fast")
    queue.add("slow")
    assert not queue.drained.is_set()
    worker = asyncio.create_task(queue.run())
    try:
        # "slow" fails once and waits out its backoff with nothing queued or running:
        # drained only once its retry has run.
        await asyncio.wait_for(queue.drained.wait(), 5)
        assert attempts == {"fast": 1, "slow": 2}
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
