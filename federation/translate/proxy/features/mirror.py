"""Request mirrors (``RequestMirror``): copies of a fraction of requests to another cluster,
whose answers are dropped."""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.type.v3 import percent_pb2

from federation.translate.ir import RouteIR
from federation.translate.proxy.features.base import Feature


def _fraction(numerator: int, denominator: int) -> Any:
    if denominator <= 0:
        numerator, denominator = 0, 1
    per_million = min(1_000_000, numerator * 1_000_000 // denominator)
    return percent_pb2.FractionalPercent(
        numerator=per_million, denominator=percent_pb2.FractionalPercent.MILLION
    )


def patch_route(ir: RouteIR, out: Any) -> None:
    if not ir.mirrors or not out.HasField("route"):
        return
    for m in ir.mirrors:
        policy = out.route.request_mirror_policies.add(cluster=m.cluster)
        policy.runtime_fraction.default_value.CopyFrom(_fraction(m.numerator, m.denominator))


FEATURE = Feature("mirror", patch_route=patch_route)
