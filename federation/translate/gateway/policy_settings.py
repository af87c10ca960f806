"""What a BackendTrafficPolicy sets, compiled into IR: :func:`compile_settings`.

Called by :mod:`.policies` (policies on Gateways and routes) and :mod:`.service_policies`
(policies on ServiceImports). Each field is checked as Envoy Gateway checks it, and as
Envoy would: a value we cannot serve raises :class:`PolicyError` naming its path
(``spec.retry.perRetry.backOff.maxInterval``), and the policy is refused whole. What a
policy leaves unset keeps the route's own setting or our default. Pure.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass

from federation.registry.policies import (
    ActiveHealthCheck,
    BackendTrafficPolicyRecord,
    BackendTrafficPolicySpec,
    HealthCheckPayload,
    LoadBalancer,
    PassiveHealthCheck,
    RateLimitSelectCondition,
    Retry,
    TCPKeepalive,
    Timeout,
)
from federation.translate.gateway.envoy_limits import MAX_UINT32
from federation.translate.gateway.filters import FilterError, duration_ms
from federation.translate.ir import (
    CircuitBreakerIR,
    ClusterPolicyIR,
    FaultIR,
    HashIR,
    HealthCheckIR,
    KeepaliveIR,
    OutlierIR,
    RateLimitBucketIR,
    RateLimitIR,
    RateLimitMatchIR,
    RetryIR,
)

#: ``retryOn.triggers`` as Envoy Gateway names them, and Envoy's ``retry_on`` for each.
RETRY_TRIGGERS = {
    "5xx": "5xx",
    "gateway-error": "gateway-error",
    "reset": "reset",
    "reset-before-request": "reset-before-request",
    "connect-failure": "connect-failure",
    "retriable-4xx": "retriable-4xx",
    "refused-stream": "refused-stream",
    "retriable-status-codes": "retriable-status-codes",
    "cancelled": "cancelled",
    "deadline-exceeded": "deadline-exceeded",
    "internal": "internal",
    "resource-exhausted": "resource-exhausted",
    "unavailable": "unavailable",
}
LOAD_BALANCER_TYPES = ("RoundRobin", "LeastRequest", "Random", "ConsistentHash")
HASH_TYPES = ("SourceIP", "Header", "Cookie")
#: Maglev's table size must be a prime (Envoy's default is 65537).
MAX_HASH_TABLE_SIZE = 5000011


class PolicyError(ValueError):
    """A policy field this project cannot serve, named by its path."""


@dataclass(frozen=True)
class TrafficSettings:
    """What one accepted BackendTrafficPolicy applies to the routes it covers; None and
    empty keep what the route has (its own settings, or the defaults)."""

    #: ``namespace/name`` of the policy: its clusters are named after it.
    policy: str
    retry: RetryIR | None = None
    request_timeout_ms: int | None = None
    per_try_timeout_ms: int | None = None
    hash_policy: HashIR | None = None
    cluster: ClusterPolicyIR | None = None
    fault: FaultIR | None = None
    rate_limit: RateLimitIR | None = None
    #: ``telemetry.metrics.routeStatName``: the pattern of the routes' stat prefix.
    route_stat_name: str | None = None


# --- compiling a policy's settings ---------------------------------------------------------


def _ms(value: str | None, path: str) -> int | None:
    if value is None:
        return None
    try:
        return duration_ms(value, path)
    except FilterError as err:
        raise PolicyError(str(err)) from None


def refuse_unsupported(unsupported: tuple[str, ...]) -> None:
    """Refuse a policy that sets fields this project does not implement, naming them
    (the agent lists their paths in the record)."""
    if unsupported:
        verb = "is" if len(unsupported) == 1 else "are"
        raise PolicyError(f"{', '.join(unsupported)} {verb} not supported by this implementation")


def duration_ms_or_none(value: str | None, path: str) -> int | None:
    """Milliseconds of a Gateway API duration at ``path`` (0: none); None if unset."""
    return _ms(value, path)


def duration_seconds(value: str | None, path: str) -> int | None:
    """Whole seconds (rounded up) of a Gateway API duration at ``path``; None if unset."""
    ms = _ms(value, path)
    return None if ms is None else (ms + 999) // 1000


def _count(value: int | None, path: str, low: int = 0) -> int | None:
    if value is not None and not low <= value <= MAX_UINT32:
        raise PolicyError(f"{path} {value} is not between {low} and {MAX_UINT32}")
    return value


#: What Envoy Gateway retries when a policy sets ``retry`` without ``retryOn``.
DEFAULT_TRIGGERS = (
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
)
DEFAULT_RETRY_CODES = (503,)
DEFAULT_RETRIES = 2


def _retry(retry: Retry | None) -> tuple[RetryIR | None, int | None]:
    """The retry policy and the per-try timeout (ms) of ``spec.retry``, as Envoy Gateway
    builds them: without ``retryOn``, its default triggers and 503; with it, exactly the
    triggers and status codes it lists."""
    if retry is None:
        return None, None
    on = retry.retry_on
    triggers: tuple[str, ...] = DEFAULT_TRIGGERS
    codes: tuple[int, ...] = DEFAULT_RETRY_CODES
    if on is not None and (on.triggers or on.http_status_codes):
        unknown = [t for t in on.triggers if t not in RETRY_TRIGGERS]
        if unknown:
            raise PolicyError(
                f"spec.retry.retryOn.triggers {unknown} are not among {sorted(RETRY_TRIGGERS)}"
            )
        bad = [c for c in on.http_status_codes if not 100 <= c <= 599]
        if bad:
            raise PolicyError(f"spec.retry.retryOn.httpStatusCodes {bad} are not HTTP status codes")
        if on.triggers:
            triggers = tuple(sorted({RETRY_TRIGGERS[t] for t in on.triggers}))
        codes = tuple(sorted(set(on.http_status_codes)))
    per = retry.per_retry
    back_off = None if per is None else per.back_off
    path = "spec.retry.perRetry.backOff."
    base = None if back_off is None else _ms(back_off.base_interval, path + "baseInterval")
    cap = None if back_off is None else _ms(back_off.max_interval, path + "maxInterval")
    if base == 0 or cap == 0:
        raise PolicyError(f"{path}baseInterval and maxInterval must be longer than 0s")
    if cap is not None and base is None:
        raise PolicyError(f"{path}maxInterval needs baseInterval")
    if base and cap and cap < base:
        raise PolicyError(f"{path}maxInterval is shorter than baseInterval")
    per_try = None if per is None else _ms(per.timeout, "spec.retry.perRetry.timeout")
    attempts = _count(retry.num_retries, "spec.retry.numRetries")
    ir = RetryIR(
        codes=codes,
        attempts=DEFAULT_RETRIES if attempts is None else attempts,
        backoff_ms=base,
        triggers=triggers,
        max_backoff_ms=cap,
    )
    return ir, per_try or None


def _timeouts(timeout: Timeout | None) -> tuple[int | None, dict[str, int | None]]:
    """The request timeout (ms) and the cluster's connection timeouts."""
    if timeout is None:
        return None, {}
    tcp, http = timeout.tcp, timeout.http
    cluster = {
        "connect_timeout_ms": None
        if tcp is None
        else _ms(tcp.connect_timeout, "spec.timeout.tcp.connectTimeout"),
    }
    request = None
    if http is not None:
        request = _ms(http.request_timeout, "spec.timeout.http.requestTimeout")
        cluster["idle_timeout_ms"] = _ms(
            http.connection_idle_timeout, "spec.timeout.http.connectionIdleTimeout"
        )
        cluster["max_connection_duration_ms"] = _ms(
            http.max_connection_duration, "spec.timeout.http.maxConnectionDuration"
        )
    if cluster.get("connect_timeout_ms") == 0:
        raise PolicyError("spec.timeout.tcp.connectTimeout must be longer than 0s")
    return request, cluster


def _load_balancer(lb: LoadBalancer | None) -> tuple[HashIR | None, dict[str, object]]:
    """The consistent-hash key (routes) and the load balancer settings (clusters)."""
    if lb is None:
        return None, {}
    if lb.type not in LOAD_BALANCER_TYPES:
        raise PolicyError(
            f"spec.loadBalancer.type {lb.type!r} is not one of {list(LOAD_BALANCER_TYPES)}"
        )
    cluster: dict[str, object] = {"lb_type": lb.type}
    if lb.slow_start is not None:
        if lb.type not in ("RoundRobin", "LeastRequest"):
            raise PolicyError("spec.loadBalancer.slowStart needs type RoundRobin or LeastRequest")
        window = _ms(lb.slow_start.window, "spec.loadBalancer.slowStart.window")
        if not window:
            raise PolicyError("spec.loadBalancer.slowStart.window must be longer than 0s")
        cluster["slow_start_window_ms"] = window
    ch = lb.consistent_hash
    if lb.type != "ConsistentHash":
        if ch is not None:
            raise PolicyError("spec.loadBalancer.consistentHash needs type ConsistentHash")
        return None, cluster
    if ch is None:
        raise PolicyError("spec.loadBalancer.consistentHash is required with type ConsistentHash")
    if ch.type not in HASH_TYPES:
        raise PolicyError(
            f"spec.loadBalancer.consistentHash.type {ch.type!r} is not one of {list(HASH_TYPES)}"
        )
    if ch.table_size is not None:
        if not 1 <= ch.table_size <= MAX_HASH_TABLE_SIZE or not _prime(ch.table_size):
            raise PolicyError(
                f"spec.loadBalancer.consistentHash.tableSize {ch.table_size} is not a prime "
                f"up to {MAX_HASH_TABLE_SIZE}"
            )
        cluster["hash_table_size"] = ch.table_size
    if ch.type == "SourceIP":
        return HashIR(source_ip=True), cluster
    if ch.type == "Header":
        if ch.header is None:
            raise PolicyError(
                "spec.loadBalancer.consistentHash.header is required with type Header"
            )
        return HashIR(header=ch.header.name), cluster
    if ch.cookie is None:
        raise PolicyError("spec.loadBalancer.consistentHash.cookie is required with type Cookie")
    ttl = _ms(ch.cookie.ttl, "spec.loadBalancer.consistentHash.cookie.ttl")
    return HashIR(cookie=ch.cookie.name, cookie_ttl_ms=ttl), cluster


def _prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


#: Envoy Gateway's defaults of an active health check (its CRD's): timeout, interval,
#: unhealthy and healthy thresholds.
ACTIVE_DEFAULTS = ("1s", "3s", 3, 1)
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT")


def _text(payload: HealthCheckPayload | None, path: str) -> str | None:
    if payload is None:
        return None
    if payload.type != "Text":
        raise PolicyError(f"{path}.type {payload.type} is not supported (only Text)")
    if payload.text is None:
        raise PolicyError(f"{path}.text is required with type Text")
    return payload.text


def _percent(value: float | int | None, path: str) -> None:
    if value is not None and not 0 <= value <= 100:
        raise PolicyError(f"{path} {value} is not between 0 and 100")


def _active(active: ActiveHealthCheck) -> HealthCheckIR:
    path = "spec.healthCheck.active"
    timeout = _ms(active.timeout or ACTIVE_DEFAULTS[0], f"{path}.timeout")
    interval = _ms(active.interval or ACTIVE_DEFAULTS[1], f"{path}.interval")
    if not timeout or not interval:
        raise PolicyError(f"{path}.timeout and interval must be longer than 0s")
    unhealthy = _count(active.unhealthy_threshold, f"{path}.unhealthyThreshold", low=1)
    healthy = _count(active.healthy_threshold, f"{path}.healthyThreshold", low=1)
    common = HealthCheckIR(
        type=active.type,
        timeout_ms=timeout,
        interval_ms=interval,
        unhealthy_threshold=unhealthy or ACTIVE_DEFAULTS[2],
        healthy_threshold=healthy or ACTIVE_DEFAULTS[3],
    )
    if active.type == "HTTP":
        http = active.http
        if http is None or not http.path.startswith("/"):
            raise PolicyError(f"{path}.http.path is required with type HTTP, and starts with /")
        method = (http.method or "GET").upper()
        if method not in _HTTP_METHODS:
            raise PolicyError(f"{path}.http.method {http.method!r} is not an HTTP method")
        statuses = tuple(sorted(set(http.expected_statuses))) or (200,)
        bad = [c for c in statuses if not 100 <= c <= 599]
        if bad:
            raise PolicyError(f"{path}.http.expectedStatuses {bad} are not HTTP status codes")
        return dataclasses.replace(
            common,
            path=http.path,
            host=http.hostname,
            method=method,
            expected_statuses=statuses,
            expected_text=_text(http.expected_response, f"{path}.http.expectedResponse"),
        )
    if active.type == "TCP":
        tcp = active.tcp
        return dataclasses.replace(
            common,
            send_text=None if tcp is None else _text(tcp.send, f"{path}.tcp.send"),
            receive_text=None if tcp is None else _text(tcp.receive, f"{path}.tcp.receive"),
        )
    raise PolicyError(f"{path}.type {active.type!r} is not supported (HTTP or TCP)")


def _passive(passive: PassiveHealthCheck) -> OutlierIR:
    path = "spec.healthCheck.passive"
    _percent(passive.max_ejection_percent, f"{path}.maxEjectionPercent")
    _percent(passive.failure_percentage_threshold, f"{path}.failurePercentageThreshold")
    interval = _ms(passive.interval, f"{path}.interval")
    ejection = _ms(passive.base_ejection_time, f"{path}.baseEjectionTime")
    if interval == 0 or ejection == 0:
        raise PolicyError(f"{path}.interval and baseEjectionTime must be longer than 0s")
    return OutlierIR(
        interval_ms=interval,
        base_ejection_ms=ejection,
        max_ejection_percent=passive.max_ejection_percent,
        consecutive_5xx=_count(passive.consecutive_5xx_errors, f"{path}.consecutive5XxErrors"),
        consecutive_gateway_errors=_count(
            passive.consecutive_gateway_errors, f"{path}.consecutiveGatewayErrors"
        ),
        consecutive_local_origin_failures=_count(
            passive.consecutive_local_origin_failures, f"{path}.consecutiveLocalOriginFailures"
        ),
        split_external_local_origin_errors=passive.split_external_local_origin_errors,
        failure_percentage_threshold=passive.failure_percentage_threshold,
        always_eject_one=passive.always_eject_one_endpoint,
    )


def _health(spec: BackendTrafficPolicySpec) -> dict[str, object]:
    """The cluster settings of ``spec.healthCheck`` and ``spec.tcpKeepalive``."""
    out: dict[str, object] = {}
    hc = spec.health_check
    if hc is not None:
        if hc.active is not None:
            out["health_check"] = _active(hc.active)
        if hc.passive is not None:
            out["outlier"] = _passive(hc.passive)
        if hc.panic_threshold is not None:
            _percent(hc.panic_threshold, "spec.healthCheck.panicThreshold")
            out["panic_threshold"] = hc.panic_threshold
    if spec.tcp_keepalive is not None:
        out["keepalive"] = keepalive(spec.tcp_keepalive)
    return out


def keepalive(settings: TCPKeepalive) -> KeepaliveIR:
    """``spec.tcpKeepalive`` (of a BackendTrafficPolicy or a ClientTrafficPolicy), in
    whole seconds as the kernel takes them."""
    path = "spec.tcpKeepalive"
    idle = _ms(settings.idle_time, f"{path}.idleTime")
    interval = _ms(settings.interval, f"{path}.interval")
    return KeepaliveIR(
        probes=_count(settings.probes, f"{path}.probes"),
        idle_seconds=None if idle is None else max(idle // 1000, 1),
        interval_seconds=None if interval is None else max(interval // 1000, 1),
    )


def _fault(spec: BackendTrafficPolicySpec) -> FaultIR | None:
    fault = spec.fault_injection
    if fault is None:
        return None
    path = "spec.faultInjection"
    if fault.delay is None and fault.abort is None:
        raise PolicyError(f"{path} needs a delay or an abort")
    values: dict[str, object] = {}
    if fault.delay is not None:
        delay = _ms(fault.delay.fixed_delay, f"{path}.delay.fixedDelay")
        _percent(fault.delay.percentage, f"{path}.delay.percentage")
        values["delay_ms"] = delay
        if fault.delay.percentage is not None:
            values["delay_percent"] = float(fault.delay.percentage)
    abort = fault.abort
    if abort is not None:
        if (abort.http_status is None) == (abort.grpc_status is None):
            raise PolicyError(f"{path}.abort needs exactly one of httpStatus and grpcStatus")
        if abort.http_status is not None and not 200 <= abort.http_status <= 599:
            raise PolicyError(f"{path}.abort.httpStatus {abort.http_status} is not from 200 to 599")
        if abort.grpc_status is not None and not 0 <= abort.grpc_status <= 16:
            raise PolicyError(f"{path}.abort.grpcStatus {abort.grpc_status} is not from 0 to 16")
        _percent(abort.percentage, f"{path}.abort.percentage")
        values["abort_http_status"] = abort.http_status
        values["abort_grpc_status"] = abort.grpc_status
        if abort.percentage is not None:
            values["abort_percent"] = float(abort.percentage)
    return FaultIR(**values)  # type: ignore[arg-type]


#: Seconds per rate limit unit, as Envoy Gateway counts them.
RATE_LIMIT_UNITS = {
    "Second": 1,
    "Minute": 60,
    "Hour": 3600,
    "Day": 86400,
    "Week": 604800,
    "Month": 2592000,
    "Year": 31536000,
}
#: Envoy Gateway's default bucket when no rule is without selectors: no limit.
UNLIMITED = RateLimitBucketIR(MAX_UINT32, 1)


def _rate_match(selector: RateLimitSelectCondition, path: str) -> tuple[RateLimitMatchIR, ...]:
    out: list[RateLimitMatchIR] = []
    for i, h in enumerate(selector.headers):
        kind = h.type or "Exact"
        if kind not in ("Exact", "RegularExpression"):
            raise PolicyError(f"{path}.headers[{i}].type {kind} is not supported")
        if h.value is None:
            raise PolicyError(f"{path}.headers[{i}].value is required with type {kind}")
        out.append(RateLimitMatchIR("header", h.value, h.name.lower(), kind, bool(h.invert)))
    for i, m in enumerate(selector.methods):
        if m.value.upper() not in _HTTP_METHODS:
            raise PolicyError(f"{path}.methods[{i}].value {m.value!r} is not an HTTP method")
        out.append(RateLimitMatchIR("method", m.value.upper(), invert=bool(m.invert)))
    if selector.path is not None:
        kind = selector.path.type or "PathPrefix"
        if kind not in ("Exact", "PathPrefix", "RegularExpression"):
            raise PolicyError(f"{path}.path.type {kind} is not supported")
        out.append(
            RateLimitMatchIR(
                "path", selector.path.value, type=kind, invert=bool(selector.path.invert)
            )
        )
    source = selector.source_cidr
    if source is not None:
        if (source.type or "Exact") != "Exact" or source.invert:
            raise PolicyError(f"{path}.sourceCIDR: only type Exact without invert is supported")
        try:
            network = ipaddress.ip_network(source.value, strict=False)
        except ValueError:
            raise PolicyError(f"{path}.sourceCIDR.value {source.value!r} is not a CIDR") from None
        out.append(RateLimitMatchIR("source", str(network)))
    if not out:
        raise PolicyError(f"{path} selects nothing")
    return tuple(out)


def _rate_limit(spec: BackendTrafficPolicySpec) -> RateLimitIR | None:
    limit = spec.rate_limit
    if limit is None:
        return None
    if limit.type not in (None, "Local") or limit.local is None:
        raise PolicyError(
            "spec.rateLimit: only local rate limits are supported (spec.rateLimit.local)"
        )
    default: RateLimitBucketIR | None = None
    rules: list[RateLimitBucketIR] = []
    for i, rule in enumerate(limit.local.rules):
        path = f"spec.rateLimit.local.rules[{i}]"
        seconds = RATE_LIMIT_UNITS.get(rule.limit.unit)
        if seconds is None:
            raise PolicyError(
                f"{path}.limit.unit {rule.limit.unit!r} is not one of {list(RATE_LIMIT_UNITS)}"
            )
        _count(rule.limit.requests, f"{path}.limit.requests", low=1)
        matches: tuple[RateLimitMatchIR, ...] = ()
        for j, selector in enumerate(rule.client_selectors):
            matches += _rate_match(selector, f"{path}.clientSelectors[{j}]")
        bucket = RateLimitBucketIR(rule.limit.requests, seconds, matches)
        if matches:
            rules.append(bucket)
        elif default is not None:
            raise PolicyError(f"{path}: only one rule may be without clientSelectors")
        else:
            default = bucket
    base = (default or UNLIMITED).seconds
    for i, bucket in enumerate(rules):
        if bucket.seconds % base:
            raise PolicyError(
                "spec.rateLimit.local: every rule's unit must be a multiple of the unit of "
                f"the rule without clientSelectors (rule with selectors {i} is not)"
            )
    return RateLimitIR(default=default, rules=tuple(rules))


def _circuit_breaker(spec: BackendTrafficPolicySpec) -> CircuitBreakerIR | None:
    cb = spec.circuit_breaker
    if cb is None:
        return None
    path = "spec.circuitBreaker."
    return CircuitBreakerIR(
        max_connections=_count(cb.max_connections, path + "maxConnections"),
        max_pending_requests=_count(cb.max_pending_requests, path + "maxPendingRequests"),
        max_requests=_count(cb.max_parallel_requests, path + "maxParallelRequests"),
        max_retries=_count(cb.max_parallel_retries, path + "maxParallelRetries"),
        max_requests_per_connection=_count(
            cb.max_requests_per_connection, path + "maxRequestsPerConnection", low=1
        ),
    )


def compile_settings(policy: BackendTrafficPolicyRecord) -> TrafficSettings:
    """The settings of ``policy``; PolicyError names the first field it cannot serve."""
    refuse_unsupported(policy.unsupported)
    spec = policy.spec
    retry, per_try = _retry(spec.retry)
    request, connection = _timeouts(spec.timeout)
    hash_policy, balancing = _load_balancer(spec.load_balancer)
    if request and per_try and per_try > request:
        raise PolicyError(
            "spec.retry.perRetry.timeout must not be longer than spec.timeout.http.requestTimeout"
        )
    values = {
        **{k: v for k, v in connection.items() if v is not None},
        **balancing,
    }
    breaker = _circuit_breaker(spec)
    if breaker is not None:
        values["circuit_breaker"] = breaker
    values.update(_health(spec))
    cluster = ClusterPolicyIR(**values) if values else None  # type: ignore[arg-type]
    return TrafficSettings(
        policy=f"{policy.namespace}/{policy.name}",
        retry=retry,
        request_timeout_ms=request or None,
        per_try_timeout_ms=per_try,
        hash_policy=hash_policy,
        cluster=cluster,
        fault=_fault(spec),
        rate_limit=_rate_limit(spec),
        route_stat_name=_route_stat_name(spec),
    )


#: The operators ``routeStatName`` may use (Envoy Gateway's for a route's stat name).
ROUTE_STAT_OPERATORS = ("%ROUTE_KIND%", "%ROUTE_NAMESPACE%", "%ROUTE_NAME%")
_OPERATOR = re.compile(r"%[A-Z_]*%?")


def _route_stat_name(spec: BackendTrafficPolicySpec) -> str | None:
    metrics = None if spec.telemetry is None else spec.telemetry.metrics
    pattern = None if metrics is None else metrics.route_stat_name
    if not pattern:
        return None
    unknown = [op for op in _OPERATOR.findall(pattern) if op not in ROUTE_STAT_OPERATORS]
    if unknown:
        raise PolicyError(
            f"spec.telemetry.metrics.routeStatName: unsupported operator(s) "
            f"{', '.join(unknown)}; supported: {', '.join(ROUTE_STAT_OPERATORS)}"
        )
    return pattern


def route_stat_name(pattern: str, route_kind: str, namespace: str, name: str) -> str:
    """``pattern`` for one route: ``%ROUTE_KIND%`` lower case (``httproute``), as Envoy
    Gateway writes it, and every dot ``_``, since Envoy reads a route's stat name up to
    the first dot."""
    out = (
        pattern.replace("%ROUTE_KIND%", route_kind.lower())
        .replace("%ROUTE_NAMESPACE%", namespace)
        .replace("%ROUTE_NAME%", name)
    )
    return out.replace(".", "_")
