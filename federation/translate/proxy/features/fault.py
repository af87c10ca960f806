"""Fault injection (a BackendTrafficPolicy's ``faultInjection``): Envoy's fault filter,
with a per-route configuration on the routes under such a policy.

The filter is on every Gateway listener, empty (it injects nothing without a route's
configuration), like CORS: a route that gains faults changes only its route
configuration, never the listener. Percentages are of the requests, in millionths as
Envoy Gateway writes them.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from federation.translate.ir import FaultIR, ListenerIR, RouteIR
from federation.translate.proxy.common import duration_ms, http_filter
from federation.translate.proxy.features.base import Feature, serves_policies

FAULT_FILTER = "envoy.filters.http.fault"


def _http_filter(listener: ListenerIR) -> Any | None:
    if not serves_policies(listener):
        return None
    return http_filter(FAULT_FILTER, fault_pb2.HTTPFault())


def _share(percent: float) -> Any:
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def fault(ir: FaultIR) -> Any:
    out = fault_pb2.HTTPFault()
    if ir.delay_ms is not None:
        out.delay.fixed_delay.CopyFrom(duration_ms(ir.delay_ms))
        out.delay.percentage.CopyFrom(_share(ir.delay_percent))
    if ir.abort_http_status is not None:
        out.abort.http_status = ir.abort_http_status
    elif ir.abort_grpc_status is not None:
        out.abort.grpc_status = ir.abort_grpc_status
    if ir.abort_http_status is not None or ir.abort_grpc_status is not None:
        out.abort.percentage.CopyFrom(_share(ir.abort_percent))
    return out


def patch_route(ir: RouteIR, out: Any) -> None:
    if ir.fault is not None and out.HasField("route"):
        out.typed_per_filter_config[FAULT_FILTER].Pack(fault(ir.fault), deterministic=True)


FEATURE = Feature("fault", http_filter=_http_filter, patch_route=patch_route)
