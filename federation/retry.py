"""Retries through tenacity, the same way everywhere: backoff, logging and counting.

Every operation that retries (the registry watcher's reads, the agent's lease renewal,
resync and Gateway API sync, the hub's and agent's Gateway state, a withdrawal's
optimistic-concurrency conflicts, the agent's apiserver calls that the apiserver
throttles) calls :func:`retry_call` with its name and which errors are worth retrying.
What they share:

* **Bounded exponential backoff with jitter** (:class:`Backoff`: from ``initial``
  seconds, doubling up to ``maximum``, plus up to ``jitter`` seconds at random), so that
  many processes that lost the same server do not come back in step.
* **One log line per change of state**: a warning when an operation starts failing (or
  starts failing differently: another kind of error), an info line when it succeeds
  again (with how many attempts it took), nothing in between, however long the outage.
* **A counter per operation** (:data:`STATS`, exposed by the processes' ``/metrics`` as
  ``federation_retries_total{operation}``) and whether it is failing now
  (``federation_retry_failing{operation}``).

Each call starts its own backoff: a loop that calls :func:`retry_call` once per step
(the watcher reads the registry step by step) backs off only while a step keeps failing.
Errors not worth retrying go straight to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from federation.metrics import Sample

T = TypeVar("T")

log = logging.getLogger("federation.retry")


@dataclass(frozen=True)
class Backoff:
    """Seconds between attempts: ``initial`` doubling up to ``maximum``, plus jitter."""

    initial: float = 0.2
    maximum: float = 5.0
    jitter: float = 0.2

    def wait(self) -> tenacity.wait.wait_base:
        # Jitter added after the cap: processes that retry at the cap do not go in step.
        exponential = tenacity.wait_exponential(multiplier=self.initial, max=self.maximum)
        return exponential + tenacity.wait_random(0, self.jitter)


@dataclass
class RetryStats:
    """Retries per operation, and which operations are failing now."""

    retries: dict[str, int] = field(default_factory=dict)
    #: Operation -> the kind (class name) of the error it is failing with now.
    failing: dict[str, str] = field(default_factory=dict)

    def samples(self) -> list[Sample]:
        names = sorted(self.retries.keys() | self.failing)
        return [
            *(
                Sample(
                    "federation_retries_total",
                    "counter",
                    "attempts of an operation that failed and were retried after a backoff",
                    self.retries.get(name, 0),
                    {"operation": name},
                )
                for name in names
            ),
            *(
                Sample(
                    "federation_retry_failing",
                    "gauge",
                    "1 while an operation keeps failing and is being retried",
                    name in self.failing,
                    {"operation": name},
                )
                for name in names
            ),
        ]


#: The process's retry counters (one process runs one hub or one agent).
STATS = RetryStats()


async def retry_call(
    operation: str,
    call: Callable[[], Awaitable[T]],
    *,
    retry_if: Callable[[BaseException], bool],
    backoff: Backoff | Callable[[tenacity.RetryCallState], float] = Backoff(),
    attempts: int | None = None,
    logger: logging.Logger = log,
    level: Callable[[BaseException], int] = lambda _: logging.WARNING,
    stats: RetryStats = STATS,
) -> T:
    """``await call()``, retried while it raises an error ``retry_if`` accepts.

    ``attempts`` bounds the attempts (None: until it succeeds or raises an error not
    retried; the caller cancels it to stop); after the last one its error is raised.
    The first failure is logged by ``logger`` at ``level(error)`` (WARNING by default:
    a misconfiguration that keeps retrying may deserve ERROR). ``backoff`` may also be a
    tenacity wait function (the apiserver's Retry-After, say).
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        stats.retries[operation] = stats.retries.get(operation, 0) + 1
        error = state.outcome.exception() if state.outcome else None
        kind = type(error).__name__
        if stats.failing.get(operation) != kind:
            stats.failing[operation] = kind
            severity = logging.WARNING if error is None else level(error)
            logger.log(severity, "%s failed, retrying with backoff: %s", operation, error)

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(retry_if),
        wait=backoff.wait() if isinstance(backoff, Backoff) else backoff,
        stop=tenacity.stop_never if attempts is None else tenacity.stop_after_attempt(attempts),
        before_sleep=before_sleep,
        reraise=True,
    )

    attempts = 0

    async def attempt() -> T:
        # A coroutine function, awaited: tenacity does not await what a plain callable
        # (a lambda returning a coroutine) returns.
        nonlocal attempts
        attempts += 1
        return await call()

    try:
        result: T = await retrying(attempt)
    except BaseException:
        stats.failing.pop(operation, None)  # not retrying any more: not "failing" either
        raise
    if operation in stats.failing:
        del stats.failing[operation]
        logger.info("%s succeeds again after %d attempts", operation, attempts)
    return result
