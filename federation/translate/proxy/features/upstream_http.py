"""The upstream HTTP protocol: HTTP/2 to backends whose port says so (``h2c``, gRPC);
otherwise Envoy's default, HTTP/1.1. A BackendTrafficPolicy's connection limits (idle
timeout, maximum connection duration, requests per connection) go with it."""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from federation.translate.inputs import TranslateOptions
from federation.translate.ir import ClusterPolicyIR
from federation.translate.proxy.common import duration_ms
from federation.translate.proxy.features.base import ClusterSource, Feature

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def patch_cluster(ir: ClusterSource, out: Any, options: TranslateOptions) -> None:
    policy = ir.policy
    common = None if policy is None else _common(policy)
    if not ir.http2 and common is None:
        return
    protocol = "http2_protocol_options" if ir.http2 else "http_protocol_options"
    config = http_protocol_options_pb2.HttpProtocolOptions(explicit_http_config={protocol: {}})
    if common is not None:
        config.common_http_protocol_options.CopyFrom(common)
    out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(config, deterministic=True)


def _common(policy: ClusterPolicyIR) -> Any | None:
    """A policy's upstream connection limits, or None when it sets none."""
    breaker = policy.circuit_breaker
    per_connection = None if breaker is None else breaker.max_requests_per_connection
    if (
        policy.idle_timeout_ms is None
        and policy.max_connection_duration_ms is None
        and per_connection is None
    ):
        return None
    common = protocol_pb2.HttpProtocolOptions()
    if policy.idle_timeout_ms is not None:
        common.idle_timeout.CopyFrom(duration_ms(policy.idle_timeout_ms))
    if policy.max_connection_duration_ms is not None:
        common.max_connection_duration.CopyFrom(duration_ms(policy.max_connection_duration_ms))
    if per_connection is not None:
        common.max_requests_per_connection.value = per_connection
    return common


FEATURE = Feature("upstream-http", patch_cluster=patch_cluster)
