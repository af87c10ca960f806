"""Small, valid Envoy resources for xDS protocol tests and benchmarks.

An EDS cluster fed over ADS, and a ClusterLoadAssignment of loopback endpoints, built
with the real protobuf classes and serialized as :class:`~federation.xds.snapshot.Resource`.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import duration_pb2

from federation.xds.snapshot import Resource


def eds_cluster(name: str, timeout: int = 1) -> Resource:
    """An EDS cluster whose endpoints come over ADS; ``timeout`` varies its version."""
    message = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=timeout),
    )
    message.eds_cluster_config.eds_config.ads.SetInParent()
    return Resource.of(message, name)


def loopback_assignment(name: str, ports: Iterable[int], healthy: bool = True) -> Resource:
    """A ClusterLoadAssignment with one endpoint on 127.0.0.1 per port."""
    health = health_check_pb2.HEALTHY if healthy else health_check_pb2.UNHEALTHY
    endpoints = [
        endpoint_components_pb2.LbEndpoint(
            health_status=health,
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
                )
            ),
        )
        for port in ports
    ]
    message = endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=endpoints)],
    )
    return Resource.of(message, name)
