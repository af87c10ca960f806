"""Second translation stage: a cluster's :class:`~federation.translate.ir.GatewayIR` into xDS.

:func:`build_gateway` gives, for the Envoys of one member cluster, the listeners of its
Gateways (``gateway/<port>``), their route configurations (same names), and the EDS
clusters and ClusterLoadAssignments of the local Services its routes send to
(``local/<namespace>/<name>/<port>``). The clusterset's own clusters (one per
ServiceImport port) come from :mod:`federation.translate.resources`, which every node
group shares. Called by the hub's snapshot builder and by the golden tests, through this
one function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from federation.translate.inputs import TranslateOptions
from federation.translate.ir import GatewayIR, LocalClusterIR
from federation.translate.proxy.listeners import DEFAULT_SECRET_DIR, listener
from federation.translate.proxy.routes import route_configuration
from federation.translate.resources import add_locality, eds_cluster

__all__ = ["DEFAULT_SECRET_DIR", "GatewayResources", "build_gateway", "local_assignment"]


@dataclass(frozen=True)
class GatewayResources:
    """Every resource of one cluster's Gateways, by name (names sorted)."""

    clusters: dict[str, cluster_pb2.Cluster] = field(default_factory=dict)
    endpoints: dict[str, endpoint_pb2.ClusterLoadAssignment] = field(default_factory=dict)
    listeners: dict[str, listener_pb2.Listener] = field(default_factory=dict)
    routes: dict[str, route_pb2.RouteConfiguration] = field(default_factory=dict)


def local_assignment(
    local: LocalClusterIR, options: TranslateOptions
) -> endpoint_pb2.ClusterLoadAssignment:
    """A local Service's endpoints: one locality, its own cluster's, at priority 0."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=local.name)
    add_locality(cla, local.cluster, local, local.port, options, options.ip_family(local.cluster))
    return cla


def build_gateway(
    ir: GatewayIR,
    host: str,
    options: TranslateOptions | None = None,
    *,
    secret_dir: str = DEFAULT_SECRET_DIR,
) -> GatewayResources:
    """The xDS resources of ``ir``; listeners bind to ``host`` (the cluster's listener IP)."""
    options = options if options is not None else TranslateOptions()
    clusters = {}
    endpoints = {}
    for local in ir.local_clusters:
        clusters[local.name] = eds_cluster(local.name, options, http2=local.http2)
        endpoints[local.name] = local_assignment(local, options)
    return GatewayResources(
        clusters=dict(sorted(clusters.items())),
        endpoints=dict(sorted(endpoints.items())),
        listeners={li.name: listener(li, host, secret_dir) for li in ir.listeners},
        routes={
            li.name: route_configuration(li.name, li.virtual_hosts, li.port, https=bool(li.tls))
            for li in ir.listeners
        },
    )
