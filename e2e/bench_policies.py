"""Benchmarks of BackendTrafficPolicies; they print figures, never assert on time.

``bench_policy_translation``: one cluster's Gateway with 1,000 HTTPRoutes to ServiceImports,
translated by both stages exactly as the hub translates a Gateway's node group
(:func:`~federation.translate.gateway.resolve`, then
:func:`~federation.translate.proxy.render_group`), once without policies and once with a
BackendTrafficPolicy on every route (retries, a request timeout, circuit breakers and least
request balancing: a policy copy of the cluster per route). p50/p99 over ``runs`` builds,
and the peak RSS.

``bench_policy_ack``: end to end (clusters ``a`` and ``b``, hub, the Gateway's own Envoy in
``b``): a BackendTrafficPolicy's ``circuitBreaker.maxConnections`` changes, and the time from
the apiserver's answer to the PATCH until the Envoy's admin ``/clusters`` shows the new
threshold on the policy's cluster is printed as p50/p99/max.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from kubernetes.client import CustomObjectsApi

from e2e import gateways as gw
from e2e.bench_xds import (
    NAMESPACE,
    exported_echo,
    rss_mib,
    synthetic_clusterset,
    synthetic_route,
)
from e2e.cluster import LocalEnvironment, free_port
from e2e.figures import percentile
from e2e.fixtures import api_client
from e2e.processes import wait_until
from federation.registry import gatewayapi as g
from federation.registry import policies as p
from federation.registry.kinds import Record
from federation.translate.gateway import resolve
from federation.translate.gateway.inputs import cluster_inputs, imports_of
from federation.translate.inputs import TranslateOptions
from federation.translate.ir import NodeGroupIR
from federation.translate.proxy import render_group

CLUSTER = "b"


def _policy(route: str) -> p.BackendTrafficPolicyRecord:
    return p.BackendTrafficPolicyRecord(
        CLUSTER,
        NAMESPACE,
        f"btp-{route}",
        p.BackendTrafficPolicySpec(
            target_refs=(p.PolicyTargetReference(g.GATEWAY_GROUP, "HTTPRoute", route),),
            retry=p.Retry(num_retries=2),
            timeout=p.Timeout(http=p.HTTPTimeout(request_timeout="10s")),
            circuit_breaker=p.CircuitBreaker(max_connections=100, max_pending_requests=50),
            load_balancer=p.LoadBalancer("LeastRequest"),
        ),
    )


def _translate(records: list[Record], imports: Any) -> tuple[float, int]:
    """Seconds to translate the Gateway's node group, and how many clusters it has."""
    began = time.perf_counter()
    ir = resolve(cluster_inputs(CLUSTER, records, imports)).gateway(NAMESPACE, "gw")
    own = render_group(NodeGroupIR(CLUSTER, None, ir), "0.0.0.0", TranslateOptions())
    return time.perf_counter() - began, len(own.clusters)


def bench_policy_translation(routes: int = 1000, runs: int = 20) -> None:
    _, exports = synthetic_clusterset(3, routes, 1, 3)
    imports = imports_of(e for records in exports.values() for e in records)
    gateway: list[Record] = [
        g.GatewayRecord(
            CLUSTER,
            NAMESPACE,
            "gw",
            g.GatewaySpec("federation", (g.Listener("http", 8080, "HTTP"),)),
        )
    ]
    plain = gateway + [synthetic_route(CLUSTER, f"r{i}", i, "/api") for i in range(routes)]
    with_policies = plain + [_policy(f"r{i}") for i in range(routes)]
    print(f"policy translation: one Gateway, {routes} HTTPRoutes to ServiceImports, {runs} builds")
    for label, records in (("without policies", plain), ("a policy per route", with_policies)):
        results = [_translate(records, imports) for _ in range(runs)]
        times = [t * 1000 for t, _ in results]
        print(
            f"  {label:<20} p50 {percentile(times, 50):7.1f} ms   p99 "
            f"{percentile(times, 99):7.1f} ms   clusters of its own: {results[0][1]}"
        )
    print(f"  peak RSS {rss_mib(peak=True):.0f} MiB")


def _threshold(envoy: Any, cluster: str) -> int | None:
    """``max_connections`` of ``cluster`` as the Envoy's admin ``/clusters`` shows it."""
    prefix = f"{cluster}::default_priority::max_connections::"
    for line in envoy.admin("/clusters").splitlines():
        if line.startswith(prefix):
            return int(line[len(prefix) :])
    return None


def _has_threshold(envoy: Any, cluster: str, wanted: int) -> bool:
    return _threshold(envoy, cluster) == wanted


def bench_policy_ack(changes: int = 200) -> None:
    with LocalEnvironment(("a", CLUSTER)) as env:
        fed = exported_echo(env)
        b = env.cluster(CLUSTER)
        host = b.envoy_listener.rpartition(":")[0]
        port = free_port(host)
        rule = {"backendRefs": [gw.backend("echo")]}
        gw.apply(
            b,
            gw.gateway_class(),
            gw.gateway(NAMESPACE, "gw", port),
            gw.http_route(NAMESPACE, "api", "gw", [rule]),
        )
        envoy = fed.start_gateway_envoy(CLUSTER, NAMESPACE, "gw")
        gw.wait_for_status(f"{host}:{port}", "/", 200)
        policy = {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": {"namespace": NAMESPACE, "name": "breaker"},
            "spec": {
                "targetRefs": [{"group": g.GATEWAY_GROUP, "kind": "HTTPRoute", "name": "api"}],
                "circuitBreaker": {"maxConnections": 1000},
            },
        }
        gw.apply(b, policy)
        copy = f"policy/{NAMESPACE}/breaker/clusterset/{NAMESPACE}/echo/80"
        wait_until(lambda: _threshold(envoy, copy) == 1000, timeout=60, what="the policy's cluster")
        latencies: list[float] = []
        deadline = time.monotonic() + 600
        with api_client(b) as client:
            api = CustomObjectsApi(client)
            for i in range(1, changes + 1):
                if time.monotonic() > deadline:
                    break
                wanted = 1000 + i
                api.patch_namespaced_custom_object(
                    "gateway.envoyproxy.io",
                    "v1alpha1",
                    NAMESPACE,
                    "backendtrafficpolicies",
                    "breaker",
                    {"spec": {"circuitBreaker": {"maxConnections": wanted}}},
                )
                written = time.monotonic()
                wait_until(
                    functools.partial(_has_threshold, envoy, copy, wanted),
                    timeout=30,
                    what=f"max_connections {wanted} on b's Gateway Envoy",
                    interval=0.002,
                )
                latencies.append((time.monotonic() - written) * 1000)
        print(
            "policy change in b (PATCH of a BackendTrafficPolicy) -> the Gateway's Envoy has "
            f"it, {len(latencies)} sequential changes, from the apiserver's answer:"
        )
        print(
            f"  p50 {percentile(latencies, 50):.0f} ms   p99 {percentile(latencies, 99):.0f} ms"
            f"   max {max(latencies):.0f} ms"
        )
