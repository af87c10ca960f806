"""federation.retry: retried while it should be, logged once per change of state, counted."""

from __future__ import annotations

import logging

import pytest

from federation.retry import Backoff, RetryStats, retry_call

FAST = Backoff(initial=0.001, maximum=0.002, jitter=0.0)


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``"ok"``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


async def test_a_failing_operation_is_retried_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "federation.retry")
    stats = RetryStats()
    flaky = Flaky(5, ConnectionError("down"))
    result = await retry_call(
        "registry-read", flaky, retry_if=lambda e: isinstance(e, ConnectionError),
        backoff=FAST, stats=stats,
    )  # fmt: skip
    assert (result, flaky.calls) == ("ok", 6)
    assert stats.retries == {"registry-read": 5} and stats.failing == {}
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "registry-read failed, retrying with backoff: down",
        "registry-read succeeds again after 6 attempts",
    ]
    samples = {(s.name, s.labels["operation"]): s.value for s in stats.samples()}
    assert samples == {
        ("federation_retries_total", "registry-read"): 5,
        ("federation_retry_failing", "registry-read"): False,
    }


async def test_an_error_not_worth_retrying_goes_straight_to_the_caller() -> None:
    stats = RetryStats()
    flaky = Flaky(1, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        await retry_call(
            "op", flaky, retry_if=lambda e: isinstance(e, ConnectionError), stats=stats
        )
    assert flaky.calls == 1 and stats.retries == {}


async def test_bounded_attempts_raise_the_last_error_and_stop_being_retried() -> None:
    stats = RetryStats()
    flaky = Flaky(10, ConnectionError("still down"))
    with pytest.raises(ConnectionError, match="still down"):
        await retry_call(
            "lease", flaky, retry_if=lambda e: True, backoff=FAST, attempts=3, stats=stats
        )
    assert flaky.calls == 3
    # The caller has the error now: nothing retries it, so it is not "failing" any more.
    assert stats.retries == {"lease": 2} and stats.failing == {}


class Changing:
    """Fails with each of ``errors`` in turn, then returns."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)

    async def __call__(self) -> str:
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_a_new_kind_of_failure_is_logged_at_its_own_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "federation.retry")
    errors = (ConnectionError("refused"), ConnectionError("refused"), TimeoutError("tls"))
    await retry_call(
        "op", Changing(*errors), retry_if=lambda e: True, backoff=FAST, stats=RetryStats(),
        level=lambda e: logging.ERROR if isinstance(e, TimeoutError) else logging.WARNING,
    )  # fmt: skip
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "op failed, retrying with backoff: refused"),
        ("ERROR", "op failed, retrying with backoff: tls"),
        ("INFO", "op succeeds again after 4 attempts"),
    ]


async def test_a_lambda_returning_a_coroutine_is_awaited() -> None:
    flaky = Flaky(1, ConnectionError("down"))
    result = await retry_call(
        "op", lambda: flaky(), retry_if=lambda e: True, backoff=FAST, stats=RetryStats()
    )
    assert result == "ok" and flaky.calls == 2
