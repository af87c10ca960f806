"""A de-duplicating work queue of keys, processed by a few asyncio workers.

Used by the agent so that a burst of events about one service (a Service,
its EndpointSlices and its ServiceExport changing together) is handled once,
and a key is never processed by two workers at the same time. A failed key is
retried with capped exponential backoff; nothing is dropped. A handler that
raises :class:`RetryLater` is waiting for something that will happen (not
failing): its key is retried the same way, but not counted or logged as a
failure.

This is client-go's rate-limited work queue, not a retry loop: a failed key goes back
into the queue (after its own backoff) and the worker moves on to other keys, and a new
event for a key that is waiting replaces the retry with fresh state. tenacity retries one
call in place, holding its worker for the whole backoff, so it does not fit here; the
other retries of the agent and hub go through :mod:`federation.retry`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Raised by a handler that must wait (say, for the apiserver to release something)."""


class KeyQueue(Generic[K]):
    def __init__(
        self,
        name: str,
        handler: Callable[[K], Awaitable[None]],
        *,
        workers: int = 4,
        max_backoff: float = 10.0,
    ) -> None:
        self.name = name
        self._handler = handler
        self._workers = workers
        self._max_backoff = max_backoff
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._pending: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._failures: dict[K, int] = {}
        self.processed = 0
        self.failed = 0
        #: Keys waiting out a backoff before they are queued again.
        self._delayed: set[K] = set()
        #: Set while nothing is queued, running or waiting out a backoff.
        self.drained = asyncio.Event()
        self.drained.set()

    def add(self, key: K) -> None:
        if key in self._active:
            self._again.add(key)  # re-run after the current run: it may have read old state
        elif key not in self._pending:
            self.drained.clear()
            self._pending.add(key)
            self._queue.put_nowait(key)

    def idle(self) -> bool:
        return not self._pending and not self._active

    def _retry(self, key: K) -> None:
        self._delayed.discard(key)
        self.add(key)

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self._workers)))

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            self._active.add(key)
            try:
                await self._handler(key)
                self._failures.pop(key, None)
                self.processed += 1
            except asyncio.CancelledError:
                raise
            except Exception as err:
                attempts = self._failures.get(key, 0) + 1
                self._failures[key] = attempts
                delay = min(0.1 * 2**attempts, self._max_backoff)
                if isinstance(err, RetryLater):
                    log.debug("%s: %s waits (retry in %.1fs): %s", self.name, key, delay, err)
                else:
                    self.failed += 1
                    log.warning(
                        "%s: %s failed (attempt %d, retry in %.1fs): %s",
                        self.name,
                        key,
                        attempts,
                        delay,
                        err,
                    )
                self._delayed.add(key)
                asyncio.get_running_loop().call_later(delay, self._retry, key)
            finally:
                self._active.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
                if self.idle() and not self._delayed:
                    self.drained.set()
