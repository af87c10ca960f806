"""Retries: every forwarding route retries what is safe to retry, within a per-cluster budget.

Only failures that happen before the backend can have seen the request are retried, so a
retry is safe for any method: the connection was refused or timed out, an HTTP/2 backend
refused the stream, or the connection was reset before any of the request was sent. Each
retry avoids the hosts already tried (``previous_hosts``, re-picking up to
``host_selection_attempts`` times) and the priorities already tried
(``previous_priorities``), so a request that found a dead local backend goes to another
cluster next. Every cluster's retry budget caps concurrent retries at ``budget_percent`` of
its active requests (never below ``min_retry_concurrency``), so retries cannot multiply the
load on a struggling clusterset.

A BackendTrafficPolicy's retries (``RetryIR.triggers``) replace the conditions with its
own, and may set the back-off's cap; the rest (hosts and priorities already tried, the
budget) stays.

A route with its own retries (``RouteIR.retry``) keeps all of that and adds to it: its
status codes are retried too (``retriable-status-codes``), its ``attempts`` replace the
default number of retries (one budget shared by both kinds of failure, as Envoy counts
them), and its back-off replaces the default base interval, the maximum being ten times
the base as Envoy's own default. An attempt cut short by the per-try timeout is not
retried for a status code: Envoy retries those only under ``5xx`` or ``gateway-error``,
which would also retry codes the route did not list.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any, NamedTuple

from envoy.config.cluster.v3 import circuit_breaker_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2

from federation.translate.inputs import TranslateOptions
from federation.translate.ir import RetryIR, RouteIR
from federation.translate.proxy.common import duration_ms
from federation.translate.proxy.features.base import ClusterSource, Feature


class RetryDefaults(NamedTuple):
    """The retry policy of every route and the retry budget of every cluster."""

    retry_on: str = "connect-failure,refused-stream,reset-before-request"
    num_retries: int = 3
    host_selection_attempts: int = 10
    base_interval_ms: int = 10
    max_interval_ms: int = 100
    budget_percent: float = 20.0
    min_retry_concurrency: int = 3


RETRY_POLICY = RetryDefaults()

PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
RETRIABLE_STATUS_CODES = "retriable-status-codes"


def retry_policy(own: RetryIR | None = None) -> route_components_pb2.RetryPolicy:
    """:data:`RETRY_POLICY` as Envoy's RetryPolicy, with a route's ``own`` retries."""
    retry_on = RETRY_POLICY.retry_on
    attempts = RETRY_POLICY.num_retries
    base_ms, max_ms = RETRY_POLICY.base_interval_ms, RETRY_POLICY.max_interval_ms
    if own is not None:
        if own.triggers:
            retry_on = ",".join(own.triggers)
        elif own.codes:
            retry_on = f"{retry_on},{RETRIABLE_STATUS_CODES}"
        if own.attempts is not None:
            attempts = own.attempts
        if own.backoff_ms:
            base_ms, max_ms = own.backoff_ms, own.max_backoff_ms or 10 * own.backoff_ms
    policy = route_components_pb2.RetryPolicy(
        retry_on=retry_on,
        num_retries={"value": attempts},
        host_selection_retry_max_attempts=RETRY_POLICY.host_selection_attempts,
        retry_back_off=route_components_pb2.RetryPolicy.RetryBackOff(
            base_interval=duration_ms(base_ms),
            max_interval=duration_ms(max_ms),
        ),
    )
    if own is not None:
        policy.retriable_status_codes.extend(own.codes)
    predicate = policy.retry_host_predicate.add(name=PREVIOUS_HOSTS)
    predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate(), deterministic=True)
    policy.retry_priority.name = PREVIOUS_PRIORITIES
    policy.retry_priority.typed_config.Pack(
        previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=1),
        deterministic=True,
    )
    return policy


def patch_route(ir: RouteIR, out: Any) -> None:
    if out.HasField("route"):
        out.route.retry_policy.CopyFrom(retry_policy(ir.retry))


def patch_cluster(ir: ClusterSource, out: Any, options: TranslateOptions) -> None:
    """The retry budget, and a BackendTrafficPolicy's circuit breakers beside it: its
    ``maxParallelRetries`` replaces the budget (Envoy ignores one when both are set)."""
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds()
    breaker = None if ir.policy is None else ir.policy.circuit_breaker
    if breaker is None or breaker.max_retries is None:
        thresholds.retry_budget.budget_percent.value = RETRY_POLICY.budget_percent
        thresholds.retry_budget.min_retry_concurrency.value = RETRY_POLICY.min_retry_concurrency
    if breaker is not None:
        for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            value = getattr(breaker, name)
            if value is not None:
                getattr(thresholds, name).value = value
    out.circuit_breakers.thresholds.append(thresholds)


FEATURE = Feature("retry", patch_route=patch_route, patch_cluster=patch_cluster)
