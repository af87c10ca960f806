"""The agent's apiserver client (agents.kube): 429s retried as client-go does, and the
bearer token found whatever its source."""

from __future__ import annotations

import tenacity
from kubernetes.client import Configuration

from agents.kube import KubeError, _throttle_wait, _throttled, bearer_token


def _state(attempt: int, err: BaseException) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(err), err, None))
    return state


def test_only_too_many_requests_is_retried() -> None:
    assert _throttled(KubeError("throttled", 429))
    assert not _throttled(KubeError("conflict", 409))
    assert not _throttled(KubeError("no answer", 0))
    assert not _throttled(ValueError("not ours"))


def test_retry_after_is_honoured_and_capped() -> None:
    assert _throttle_wait(_state(1, KubeError("x", 429, retry_after=3))) == 3
    assert _throttle_wait(_state(1, KubeError("x", 429, retry_after=600))) == 10.0


def test_without_retry_after_the_backoff_grows_to_its_cap() -> None:
    waits = [_throttle_wait(_state(n, KubeError("x", 429))) for n in range(1, 10)]
    assert 0.2 <= waits[0] <= 0.4
    assert waits[3] > waits[0]
    assert all(w <= 5.2 for w in waits)  # the cap, plus jitter (not in step at the cap)
    assert waits[-1] >= 5.0


def _configuration(**api_key: str) -> Configuration:
    conf = Configuration()
    conf.api_key = dict(api_key)
    return conf


def test_the_bearer_token_is_found_whatever_its_source() -> None:
    # kubeconfig: "Bearer <t>" under authorization; in-cluster: "bearer <t>" under
    # BearerToken (the kubernetes package's own spellings).
    assert bearer_token(_configuration(authorization="Bearer abc")) == "abc"
    assert bearer_token(_configuration(BearerToken="bearer xyz")) == "xyz"
    assert bearer_token(_configuration()) is None


def test_the_bearer_token_is_refreshed_before_use() -> None:
    conf = _configuration(BearerToken="bearer old")

    def refresh(c: Configuration) -> None:
        c.api_key["BearerToken"] = "bearer rotated"

    conf.refresh_api_key_hook = refresh  # type: ignore[assignment]
    assert bearer_token(conf) == "rotated"
