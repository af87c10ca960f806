"""Load balancing: round robin, weighted by locality, and never to hosts known unhealthy.

Every cluster honours the per-source-cluster locality weights of its
ClusterLoadAssignment. Its healthy panic threshold is 0: Envoy's default of 50 % would
spread traffic over *every* host, unhealthy ones included, as soon as fewer than half of
them are healthy. When no host of any locality is healthy, Envoy answers 503 ("no healthy
upstream") at once, like a Service without ready endpoints.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.type.v3 import percent_pb2

from federation.translate.inputs import TranslateOptions
from federation.translate.proxy.features.base import ClusterSource, Feature


def patch_cluster(ir: ClusterSource, out: Any, options: TranslateOptions) -> None:
    out.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
    out.common_lb_config.locality_weighted_lb_config.SetInParent()
    out.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=0.0))


FEATURE = Feature("load-balancing", patch_cluster=patch_cluster)
