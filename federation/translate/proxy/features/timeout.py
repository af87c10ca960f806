"""Timeouts: HTTPRoute's ``timeouts`` on routes, the connect timeout on clusters.

A route without ``timeouts.request`` gets no timeout at all, set explicitly: left unset,
Envoy applies 15 s, which cuts long gRPC streams and slow downloads. ``backendRequest``
bounds each attempt (the retry policy's per-try timeout). Clusters give up connecting
after ``TranslateOptions.connect_timeout_ms``, or a BackendTrafficPolicy's
``timeout.tcp.connectTimeout``.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from federation.translate.inputs import TranslateOptions
from federation.translate.ir import RouteIR
from federation.translate.proxy.common import duration_ms
from federation.translate.proxy.features.base import ClusterSource, Feature


def patch_route(ir: RouteIR, out: Any) -> None:
    if not out.HasField("route"):
        return
    out.route.timeout.CopyFrom(duration_ms(ir.timeout_ms or 0))
    if ir.backend_timeout_ms:
        out.route.retry_policy.per_try_timeout.CopyFrom(duration_ms(ir.backend_timeout_ms))


def patch_cluster(ir: ClusterSource, out: Any, options: TranslateOptions) -> None:
    policy = ir.policy
    own = None if policy is None else policy.connect_timeout_ms
    out.connect_timeout.CopyFrom(duration_ms(own or options.connect_timeout_ms))


FEATURE = Feature("timeout", patch_route=patch_route, patch_cluster=patch_cluster)
