"""Active health checks and TCP keepalive, from a BackendTrafficPolicy's ``healthCheck``
and ``tcpKeepalive``, on the policy's copies of its clusters (none by default: the
Service's readiness, passed on as each endpoint's health, and outlier detection do).

An active check probes every endpoint of the cluster, every locality included, on the
port traffic goes to: ``HTTP`` asks for a path and wants one of the expected statuses
(and the expected text in the body), ``TCP`` connects (and exchanges the given text).
Envoy takes a host out after ``unhealthy_threshold`` failed probes and back after
``healthy_threshold`` good ones; a host the check has not yet seen healthy gets no
traffic. Text payloads go hex-encoded, as Envoy's ``Payload.text`` is. A policy's
``panicThreshold`` replaces our 0 (never spread traffic over unhealthy hosts).
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.type.v3 import range_pb2

from federation.translate.inputs import TranslateOptions
from federation.translate.ir import HealthCheckIR
from federation.translate.proxy.common import duration_ms
from federation.translate.proxy.features.base import ClusterSource, Feature


def _ranges(codes: tuple[int, ...]) -> list[Any]:
    """Status codes as Envoy's half-open ranges, adjacent codes merged."""
    ranges: list[list[int]] = []
    for code in sorted(set(codes)):
        if ranges and ranges[-1][1] == code:
            ranges[-1][1] = code + 1
        else:
            ranges.append([code, code + 1])
    return [range_pb2.Int64Range(start=a, end=b) for a, b in ranges]


def _payload(text: str) -> Any:
    return health_check_pb2.HealthCheck.Payload(text=text.encode().hex())


def health_check(ir: HealthCheckIR) -> Any:
    out = health_check_pb2.HealthCheck(
        timeout=duration_ms(ir.timeout_ms),
        interval=duration_ms(ir.interval_ms),
        # Envoy's default (60 s) applies while the cluster has had no traffic, and a
        # copy made for a policy starts without any: the first probe's successor would
        # come a minute later, whatever the interval says.
        no_traffic_interval=duration_ms(ir.interval_ms),
        unhealthy_threshold={"value": ir.unhealthy_threshold},
        healthy_threshold={"value": ir.healthy_threshold},
    )
    if ir.type == "HTTP":
        http = out.http_health_check
        http.path = ir.path
        if ir.host is not None:
            http.host = ir.host
        if ir.method is not None and ir.method != "GET":
            http.method = base_pb2.RequestMethod.Value(ir.method)
        http.expected_statuses.extend(_ranges(ir.expected_statuses))
        if ir.expected_text is not None:
            http.receive.append(_payload(ir.expected_text))
    else:
        tcp = out.tcp_health_check
        tcp.SetInParent()
        if ir.send_text is not None:
            tcp.send.CopyFrom(_payload(ir.send_text))
        if ir.receive_text is not None:
            tcp.receive.append(_payload(ir.receive_text))
    return out


def patch_cluster(ir: ClusterSource, out: Any, options: TranslateOptions) -> None:
    policy = ir.policy
    if policy is None:
        return
    if policy.health_check is not None:
        out.health_checks.append(health_check(policy.health_check))
    if policy.panic_threshold is not None:
        out.common_lb_config.healthy_panic_threshold.value = float(policy.panic_threshold)
    keepalive = policy.keepalive
    if keepalive is not None:
        tcp = out.upstream_connection_options.tcp_keepalive
        tcp.SetInParent()
        if keepalive.probes is not None:
            tcp.keepalive_probes.value = keepalive.probes
        if keepalive.idle_seconds is not None:
            tcp.keepalive_time.value = keepalive.idle_seconds
        if keepalive.interval_seconds is not None:
            tcp.keepalive_interval.value = keepalive.interval_seconds


FEATURE = Feature("health-check", patch_cluster=patch_cluster)
