"""Envoy bootstrap for a member cluster's Envoy, printed by ``fedctl bootstrap``.

The Envoy gets everything else over ADS from the hub: the bootstrap only names
the node (``node.cluster`` is the member cluster id, which selects the
configuration the hub serves it), the admin interface (loopback by default)
and the static ``xds`` cluster that reaches the hub over HTTP/2.

The hub may be given by IP address (a ``STATIC`` cluster) or by host name, such as
its Service's DNS name in a pod (``STRICT_DNS``: Envoy refuses a name in a
``STATIC`` cluster, and re-resolves it, so a hub Service that moves is followed).
HTTP/2 keepalive pings make an Envoy notice a dead hub connection (a hub that went
away without closing it) within seconds and reconnect, instead of sitting on it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from federation.identity import parse_cluster_id
from federation.process import split_host_port

XDS_CLUSTER = "federation-xds"
#: HTTP/2 PING every interval; the connection is dropped when one is not answered in time.
KEEPALIVE = {"interval": "15s", "timeout": "5s"}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class BootstrapOptions:
    cluster: str
    xds_address: str
    admin_address: str = "127.0.0.1:9901"
    node_id: str | None = None
    delta: bool = False


def bootstrap(options: BootstrapOptions) -> dict[str, Any]:
    """The bootstrap as a dict (YAML/JSON-ready); raises InvalidInputError on bad input."""
    cluster = parse_cluster_id(options.cluster)
    xds_host, xds_port = split_host_port(options.xds_address, "--xds")
    admin_host, admin_port = split_host_port(options.admin_address, "--admin")
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": options.node_id or f"envoy-{cluster}", "cluster": cluster},
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if options.delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC" if _is_ip(xds_host) else "STRICT_DNS",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {
                                "http2_protocol_options": {"connection_keepalive": KEEPALIVE}
                            },
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_host,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }
