"""Benchmarks of EnvoyPatchPolicies and the extension server; they print figures, never
assert on time.

``bench_patch_translation``: one cluster's Gateway with 1,000 HTTPRoutes to ServiceImports,
translated as the hub translates its node group (both stages, then the resources
serialized), once without EnvoyPatchPolicies and once with 10 (each an operation on the
Gateway's route configuration or listener, applied as :func:`federation.hub.patches.apply_patches`
applies them: decoded, patched, validated, serialized again). p50/p99 over ``runs``.

``bench_extension_ack``: end to end (clusters ``a`` and ``b``, hub, the Gateway's own Envoy
in ``b``): an HTTPRoute's path changes, and the time from the apiserver's answer until
b's Gateway serves the new path is printed as p50/p99, first with the hub alone, then
with the hub calling an extension server (:mod:`e2e.extension_server`) that takes 1 ms
per ``PostRouteModify``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from e2e import gateways as gw
from e2e.bench_xds import (
    NAMESPACE,
    route_changes,
    routed_gateway,
    synthetic_clusterset,
    synthetic_route,
)
from e2e.cluster import LocalEnvironment, free_port
from e2e.figures import percentile
from federation.hub.patches import apply_patches
from federation.model.imports import MergedImport
from federation.registry import gatewayapi as g
from federation.registry.kinds import Record
from federation.translate.gateway import resolve
from federation.translate.gateway.inputs import ObjectName, cluster_inputs, imports_of
from federation.translate.inputs import TranslateOptions
from federation.translate.ir import JSONPatchIR, NodeGroupIR, PatchPolicyIR
from federation.translate.proxy import render_group
from federation.xds.snapshot import LISTENER, ROUTE, Resource

CLUSTER = "b"
ROUTES = "gateway/8080"


def _patches(count: int) -> tuple[PatchPolicyIR, ...]:
    """``count`` policies, each one operation: response headers on the route
    configuration, or a buffer limit on the listener, in turn."""
    out = []
    for i in range(count):
        if i % 2:
            patch = JSONPatchIR(LISTENER, ROUTES, "add", "/per_connection_buffer_limit_bytes",
                                value=str(32768 + i))  # fmt: skip
        else:
            header = f'[{{"header":{{"key":"x-patch-{i}","value":"{i}"}}}}]'
            patch = JSONPatchIR(ROUTE, ROUTES, "add", "/response_headers_to_add/-",
                                value=header[1:-1])  # fmt: skip
        out.append(PatchPolicyIR(NAMESPACE, f"p{i}", 1, (patch,)))
    return tuple(out)


def _translate(
    records: list[Record], imports: Mapping[ObjectName, MergedImport], patches: int
) -> float:
    """Seconds to translate the Gateway's node group, serialize it and apply ``patches``
    EnvoyPatchPolicies."""
    policies = _patches(patches)
    began = time.perf_counter()
    ir = resolve(cluster_inputs(CLUSTER, records, imports)).gateway(NAMESPACE, "gw")
    own = render_group(NodeGroupIR(CLUSTER, None, ir), "0.0.0.0", TranslateOptions())
    resources = own.mapped(Resource.of)
    if policies:
        _, outcomes = apply_patches(resources, policies)
        assert all(o.invalid is None for o in outcomes.values()), outcomes
    return time.perf_counter() - began


def bench_patch_translation(routes: int = 1000, runs: int = 20) -> None:
    _, exports = synthetic_clusterset(3, routes, 1, 3)
    imports = imports_of(e for records in exports.values() for e in records)
    listener = g.Listener("http", 8080, "HTTP")
    records: list[Record] = [
        g.GatewayRecord(CLUSTER, NAMESPACE, "gw", g.GatewaySpec("federation", (listener,))),
        *(synthetic_route(CLUSTER, f"r{i}", i, "/api") for i in range(routes)),
    ]
    print(f"patch translation: one Gateway, {routes} HTTPRoutes to ServiceImports, {runs} builds")
    for count in (0, 10):
        times = [_translate(records, imports, count) * 1000 for _ in range(runs)]
        print(
            f"  {count:>2} EnvoyPatchPolicies   p50 {percentile(times, 50):7.1f} ms   "
            f"p99 {percentile(times, 99):7.1f} ms"
        )


def bench_extension_ack(changes: int = 100) -> None:
    with LocalEnvironment(("a", CLUSTER)) as env:
        fed, b, address = routed_gateway(env)
        alone, _ = route_changes(b, address, changes)
        extension_port = free_port()
        fed.start_extension_server(extension_port, delay_ms=1.0)
        fed.kill_hub()
        fed.start_hub(
            extra_args=["--extension-server", f"127.0.0.1:{extension_port}",
                        "--extension-hook", "Route"]
        )  # fmt: skip
        fed.wait_hub_ready()
        gw.wait_for_status(address, f"/v{changes}", 200)
        extended, _ = route_changes(b, address, changes, first=changes + 1)
        print(
            f"route change in b (PATCH of an HTTPRoute) -> b's Gateway serves it, {changes} "
            "sequential changes each, from the apiserver's answer:"
        )
        for label, found in (("hub alone", alone), ("extension, 1 ms/call", extended)):
            print(
                f"  {label:<22} p50 {percentile(found, 50):5.0f} ms   "
                f"p99 {percentile(found, 99):5.0f} ms   max {max(found):5.0f} ms"
            )
