"""Envoy bootstrap for a member cluster's Envoy, printed by ``fedctl bootstrap``.

The Envoy gets everything else over ADS from the hub: the bootstrap only names
the node (``node.cluster`` is the member cluster id, which selects the
configuration the hub serves it), the admin interface (loopback by default)
and the static ``xds`` cluster that reaches the hub over HTTP/2.

The hub may be given by IP address (a ``STATIC`` cluster) or by host name, such as
its Service's DNS name in a pod (``STRICT_DNS``: Envoy refuses a name in a
``STATIC`` cluster, and re-resolves it, so a hub Service that moves is followed).
HTTP/2 keepalive pings make an Envoy notice a dead hub connection (a hub that went
away without closing it) within seconds and reconnect, instead of sitting on it, and a
refused or broken stream is retried after 0.25 s, backing off to 5 s.

The connection is mTLS (:class:`BootstrapTls`): the Envoy presents its cluster's client
certificate (``fedctl pki``) and accepts only a hub whose certificate is signed by the CA
and carries ``spiffe://<trust domain>/hub``. Plain text must be asked for
(``insecure_plaintext``), like the hub's ``--insecure-xds-plaintext``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from federation.errors import InvalidInputError
from federation.identity import parse_cluster_id
from federation.pki import DEFAULT_TRUST_DOMAIN, check_trust_domain, hub_uri
from federation.process import split_host_port

XDS_CLUSTER = "federation-xds"
#: HTTP/2 PING every interval; the connection is dropped when one is not answered in time.
KEEPALIVE = {"interval": "15s", "timeout": "5s"}
#: Backoff between attempts to (re)open the ADS stream (Envoy's default is 0.5 s to 30 s).
RETRY_BACK_OFF = {"base_interval": "0.25s", "max_interval": "5s"}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class BootstrapTls:
    """Paths, on the Envoy's host, of its client certificate and key and of the CA that
    signed the hub's certificate; the hub's certificate must also carry the trust
    domain's hub URI. ``server_name`` is sent as SNI (default: the hub's host name)."""

    cert: str
    key: str
    ca: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    server_name: str | None = None


@dataclass(frozen=True)
class BootstrapOptions:
    cluster: str
    xds_address: str
    admin_address: str = "127.0.0.1:9901"
    node_id: str | None = None
    delta: bool = False
    tls: BootstrapTls | None = None
    #: Reach the hub without TLS, which a hub started with --insecure-xds-plaintext serves.
    insecure_plaintext: bool = False


def _transport_socket(tls: BootstrapTls, xds_host: str) -> dict[str, Any]:
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": tls.cert},
                    "private_key": {"filename": tls.key},
                }
            ],
            "validation_context": {
                "trusted_ca": {"filename": tls.ca},
                "match_typed_subject_alt_names": [
                    {
                        "san_type": "URI",
                        "matcher": {"exact": hub_uri(check_trust_domain(tls.trust_domain))},
                    }
                ],
            },
        },
    }
    server_name = tls.server_name or (None if _is_ip(xds_host) else xds_host)
    if server_name:
        context["sni"] = server_name
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def bootstrap(options: BootstrapOptions) -> dict[str, Any]:
    """The bootstrap as a dict (YAML/JSON-ready); raises InvalidInputError on bad input."""
    cluster = parse_cluster_id(options.cluster)
    xds_host, xds_port = split_host_port(options.xds_address, "--xds")
    admin_host, admin_port = split_host_port(options.admin_address, "--admin")
    if (options.tls is None) == (not options.insecure_plaintext):
        raise InvalidInputError(
            "the hub is reached over mTLS: give the cluster's --tls-cert, --tls-key and "
            "--tls-ca (fedctl pki mints them), or --insecure-plaintext for a hub started "
            "with --insecure-xds-plaintext"
            if options.tls is None
            else "--insecure-plaintext contradicts the --tls-* files: give one or the other"
        )
    xds_cluster: dict[str, Any] = {
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
                                    "socket_address": {"address": xds_host, "port_value": xds_port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if options.tls is not None:
        xds_cluster["transport_socket"] = _transport_socket(options.tls, xds_host)
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": options.node_id or f"envoy-{cluster}", "cluster": cluster},
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if options.delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": XDS_CLUSTER,
                            "retry_policy": {"retry_back_off": RETRY_BACK_OFF},
                        }
                    }
                ],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": [xds_cluster]},
    }
