"""Load balancing: round robin, weighted by locality, and never to hosts known unhealthy.

Every cluster honours the per-source-cluster locality weights of its
ClusterLoadAssignment. Its healthy panic threshold is 0: Envoy's default of 50 % would
spread traffic over *every* host, unhealthy ones included, as soon as fewer than half of
them are healthy. When no host of any locality is healthy, Envoy answers 503 ("no healthy
upstream") at once, like a Service without ready endpoints.

A BackendTrafficPolicy's ``loadBalancer`` chooses least request, random or consistent
hashing instead (Maglev, as Envoy Gateway does, keyed by the route's ``hash_policy``: the
client's address, a header or a cookie), and slow start for round robin and least
request. Localities and the panic threshold stay as above.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.type.v3 import percent_pb2

from federation.translate.inputs import TranslateOptions
from federation.translate.ir import RouteIR
from federation.translate.proxy.common import duration_ms
from federation.translate.proxy.features.base import ClusterSource, Feature

_LB_POLICIES = {
    "RoundRobin": cluster_pb2.Cluster.ROUND_ROBIN,
    "LeastRequest": cluster_pb2.Cluster.LEAST_REQUEST,
    "Random": cluster_pb2.Cluster.RANDOM,
    "ConsistentHash": cluster_pb2.Cluster.MAGLEV,
}


def patch_cluster(ir: ClusterSource, out: Any, options: TranslateOptions) -> None:
    policy = ir.policy
    lb_type = (None if policy is None else policy.lb_type) or "RoundRobin"
    out.lb_policy = _LB_POLICIES[lb_type]
    out.common_lb_config.locality_weighted_lb_config.SetInParent()
    out.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=0.0))
    if policy is None:
        return
    if policy.hash_table_size is not None:
        out.maglev_lb_config.table_size.value = policy.hash_table_size
    if policy.slow_start_window_ms is not None:
        window = duration_ms(policy.slow_start_window_ms)
        if lb_type == "LeastRequest":
            out.least_request_lb_config.slow_start_config.slow_start_window.CopyFrom(window)
        else:
            out.round_robin_lb_config.slow_start_config.slow_start_window.CopyFrom(window)


def patch_route(ir: RouteIR, out: Any) -> None:
    """The consistent-hash key of a route under a ``ConsistentHash`` policy."""
    key = ir.hash_policy
    if key is None or not out.HasField("route"):
        return
    hash_policy = out.route.hash_policy.add()
    if key.source_ip:
        hash_policy.connection_properties.source_ip = True
    elif key.header is not None:
        hash_policy.header.header_name = key.header
    elif key.cookie is not None:
        hash_policy.cookie.name = key.cookie
        if key.cookie_ttl_ms is not None:
            hash_policy.cookie.ttl.CopyFrom(duration_ms(key.cookie_ttl_ms))
    if out.route.HasField("weighted_clusters"):
        out.route.weighted_clusters.use_hash_policy.value = True


FEATURE = Feature("load-balancing", patch_route=patch_route, patch_cluster=patch_cluster)
