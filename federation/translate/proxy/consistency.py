"""The invariants Envoy relies on, checked on one node group's typed resources.

Called by the golden tests on every output, and by the hub on every snapshot when it runs
with ``--check-consistency`` (the test environments do). As go-control-plane's
``Snapshot.Consistent()``: a route must never name a cluster the Envoy does not have (its
requests would fail with ``cluster not found``), an EDS cluster without its assignment
stays warming forever, a listener's RDS name must have its route configuration, and
the SDS Secret its TLS context names must exist (a listener without it stays warming,
then serves no certificate).
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any, Protocol

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from federation.translate.proxy.routes import INVALID_BACKEND_CLUSTER


class TypedResources(Protocol):
    @property
    def clusters(self) -> dict[str, Any]: ...

    @property
    def endpoints(self) -> dict[str, Any]: ...

    @property
    def listeners(self) -> dict[str, Any]: ...

    @property
    def routes(self) -> dict[str, Any]: ...

    @property
    def secrets(self) -> dict[str, Any]: ...


def _route_clusters(config: Any) -> set[str]:
    """Every cluster a route configuration sends to (mirrors included)."""
    out: set[str] = set()
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                out.add(action.cluster)
            out.update(w.name for w in action.weighted_clusters.clusters)
            out.update(m.cluster for m in action.request_mirror_policies)
    # Invalid backends name a cluster that never exists, on purpose: Envoy answers their
    # share of requests with the route's cluster_not_found_response_code.
    out.discard(INVALID_BACKEND_CLUSTER)
    return out


def _rds_names(listener: Any) -> set[str]:
    out = set()
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            hcm = hcm_pb2.HttpConnectionManager()
            if network_filter.typed_config.Unpack(hcm) and hcm.HasField("rds"):
                out.add(hcm.rds.route_config_name)
    return out


def _sds_names(listener: Any) -> set[str]:
    """The Secrets the TLS contexts of a listener's chains name."""
    out: set[str] = set()
    for chain in listener.filter_chains:
        context = tls_pb2.DownstreamTlsContext()
        if chain.transport_socket.typed_config.Unpack(context):
            sds = context.common_tls_context.tls_certificate_sds_secret_configs
            out.update(config.name for config in sds)
    return out


def consistent(resources: TypedResources) -> list[str]:
    """Every broken invariant of one node group's resources, as sentences; [] when none."""
    problems = []
    for name, config in sorted(resources.routes.items()):
        for missing in sorted(_route_clusters(config) - set(resources.clusters)):
            problems.append(f"route configuration {name} sends to missing cluster {missing}")
    for name, item in sorted(resources.clusters.items()):
        # A policy's copy of a cluster reads the original's assignment (service_name).
        assignment = item.eds_cluster_config.service_name or name
        if item.type == item.EDS and assignment not in resources.endpoints:
            problems.append(f"EDS cluster {name} has no ClusterLoadAssignment {assignment}")
    for name in sorted(set(resources.endpoints) - set(resources.clusters)):
        problems.append(f"ClusterLoadAssignment {name} has no cluster")
    for name, item in sorted(resources.endpoints.items()):
        if item.cluster_name != name:
            problems.append(f"ClusterLoadAssignment {name} names cluster {item.cluster_name}")
    for name, item in sorted(resources.listeners.items()):
        for rds in sorted(_rds_names(item) - set(resources.routes)):
            problems.append(f"listener {name} wants missing route configuration {rds}")
        for sds in sorted(_sds_names(item) - set(resources.secrets)):
            problems.append(f"listener {name} wants missing secret {sds}")
    for name, item in sorted(resources.secrets.items()):
        if item.name != name:
            problems.append(f"secret {name} is named {item.name}")
    return problems
