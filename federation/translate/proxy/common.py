"""Small Envoy building blocks shared by the second stage's modules.

Called by :mod:`federation.translate.proxy` and its ``features``; pure.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

import ipaddress
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import duration_pb2

HCM_FILTER = "envoy.filters.network.http_connection_manager"


def ads() -> Any:
    """A config source that says: over the ADS stream this Envoy already has."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def duration_ms(ms: int) -> Any:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def http_filter(name: str, config: Any) -> Any:
    """An HTTP filter of a connection manager, its typed config packed deterministically."""
    out = hcm_pb2.HttpFilter(name=name)
    out.typed_config.Pack(config, deterministic=True)
    return out


def host_cluster(name: str, host: str, port: int, connect_timeout_ms: int) -> Any:
    """A cluster of one endpoint, ``host``:``port``: a literal IP reached as it is
    (``STATIC``), a name through DNS (``STRICT_DNS``). Its stat name has no dots, since
    Envoy reads a cluster's stat name up to its first dot and a host name has some."""
    try:
        ipaddress.ip_address(host)
        kind = cluster_pb2.Cluster.STATIC
    except ValueError:
        kind = cluster_pb2.Cluster.STRICT_DNS
    out = cluster_pb2.Cluster(
        name=name,
        alt_stat_name=name.replace(".", "_"),
        type=kind,
        connect_timeout=duration_ms(connect_timeout_ms),
        dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED,
    )
    out.load_assignment.cluster_name = name
    endpoint = out.load_assignment.endpoints.add().lb_endpoints.add().endpoint
    endpoint.address.CopyFrom(
        address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))
    )
    return out
