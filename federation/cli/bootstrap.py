"""Envoy bootstrap for a member cluster's Envoy, printed by ``fedctl bootstrap``.

The Envoy gets everything else over ADS from the hub: the bootstrap only names
the node (``node.cluster`` is the member cluster id, which selects the
configuration the hub serves it; a Gateway's own Envoy also names its Gateway in
the node metadata, and is served that Gateway only), the admin interface
(loopback by default) and the static ``xds`` cluster that reaches the hub over
HTTP/2.

The hub may be given by IP address (a ``STATIC`` cluster) or by host name, such as
its Service's DNS name in a pod (Envoy refuses a name in a ``STATIC`` cluster). A name
makes a ``LOGICAL_DNS`` cluster with ``dns_lookup_family: ALL``: Envoy re-resolves the
name (so a hub Service that moves is followed) and keeps one host holding every address
of both families, which it connects to with happy eyeballs (the next address is tried as
soon as one refuses, or after 300 ms). So a name works whichever family the hub listens
on, even when the name has addresses of the other family too: ``localhost`` resolves to
``::1`` and ``127.0.0.1`` (Envoy's resolver adds ``::1`` even when ``/etc/hosts`` lists
only the IPv4 one). The alternatives fail or flap:

* Envoy's default family, ``AUTO``, asks for IPv6 and falls back to IPv4 only when there
  is no IPv6 address, so ``localhost`` is ``::1`` alone and the Envoy never reaches a hub
  listening on ``127.0.0.1`` (``connection refused``, forever).
* ``V4_PREFERRED`` (or ``V4_ONLY``) is the same failure turned around, for a hub that
  listens on IPv6 only under a name that has both families (a dual-stack Service).
* ``STRICT_DNS`` with ``ALL`` makes one host per address and balances between them, so
  about every other (re)connection goes to the family the hub does not listen on and
  costs a refused connection and a retry back-off before the other is tried.

Hub replicas are normally reached through one address, their Service, whose endpoints
spread the Envoys' connections. Without one, ``xds_address`` may list replicas by IP
address, ``IP:PORT,IP:PORT,...``: each is a priority of its own, in the order given, so an
Envoy connects to the first, and a replica that refuses or breaks its connection is
ejected for a while (outlier detection, after one failure), which sends the next attempt
to the next one. Listing them in another order per cluster spreads the clusters over
the replicas. A connection the hub closes at its ``--xds-max-connection-age`` is no
failure: the Envoy reconnects to the first replica not ejected, so one that moved goes
back to its first replica at its next maximum age once that one is back. Names are
given alone: Envoy resolves a name into one host.

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
import re
from dataclasses import dataclass
from typing import Any

from federation.errors import InvalidInputError
from federation.identity import parse_cluster_id
from federation.node_groups import GATEWAY_METADATA, parse_gateway_ref
from federation.pki import DEFAULT_TRUST_DOMAIN, agent_uri, check_trust_domain, hub_uri
from federation.process import split_host_port
from federation.translate.gateway.listeners import METRICS_PATH
from federation.translate.proxy.features.credential_auth import AGENT_CLUSTER

XDS_CLUSTER = "federation-xds"
#: The static cluster and listener of ``--ready``.
ADMIN_CLUSTER = "federation-admin"
READY_LISTENER = "federation-ready"
#: HTTP/2 PING every interval; the connection is dropped when one is not answered in time.
KEEPALIVE = {"interval": "15s", "timeout": "5s"}
#: Backoff between attempts to (re)open the ADS stream (Envoy's default is 0.5 s to 30 s).
RETRY_BACK_OFF = {"base_interval": "0.25s", "max_interval": "5s"}
#: With several hub replicas listed: a replica is ejected after one refused connection or
#: reset stream (Envoy counts those as 5xx), for 10 s times the ejections in a row (at
#: most Envoy's 300 s), so that the next attempt goes to the next one; every replica may
#: be ejected (then Envoy tries them all again).
REPLICA_OUTLIER_DETECTION = {
    "consecutive_5xx": 1,
    "interval": "1s",
    "base_ejection_time": "10s",
    "max_ejection_percent": 100,
}


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
    #: SNI sent to the agent (default: the agent's host name).
    agent_server_name: str | None = None


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
    #: ``NAMESPACE/NAME``: this is one of that Gateway's own Envoys, served that Gateway
    #: only (None: one of the cluster's shared Envoys, served the clusterset listener).
    gateway: str | None = None
    #: ``HOST:PORT`` of a listener that answers ``GET /ready`` with the admin interface's
    #: own ``/ready`` (200 once Envoy has its first configuration) and ``GET
    #: /stats/prometheus`` with Envoy's metrics, and nothing else: what a kubelet probes
    #: and Prometheus scrapes, while the admin interface stays on loopback (None: none).
    ready_address: str | None = None
    #: ``HOST:PORT`` of the cluster's agent, which serves a Gateway's Envoys the
    #: configuration of their basic auth and API key filters, credentials included (they
    #: never leave the cluster). Without it the Envoy refuses a listener that has such a
    #: filter (its configuration source names this static cluster).
    agent_address: str | None = None
    #: Tag Envoy's zone statistics with ``local_cluster`` and ``source_cluster``
    #: (:func:`stats_config`). Off by default: Envoy runs each custom tag's regular
    #: expression on every statistic it creates, which measured 1.4 s -> 7-8 s for an
    #: Envoy taking 3,000 clusters at once.
    source_cluster_stats: bool = False


def _transport_socket(tls: BootstrapTls, host: str, peer_uri: str) -> dict[str, Any]:
    """mTLS to ``host``: the cluster's certificate, and a peer signed by the CA that
    carries ``peer_uri``."""
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
                    {"san_type": "URI", "matcher": {"exact": peer_uri}}
                ],
            },
        },
    }
    server_name = tls.server_name or (None if _is_ip(host) else host)
    if server_name:
        context["sni"] = server_name
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _grpc_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    """A static cluster of one HTTP/2 server (an xDS server) at ``host``: an IP address
    or a name (see the module docstring)."""
    discovery = (
        {"type": "STATIC"} if _is_ip(host) else {"type": "LOGICAL_DNS", "dns_lookup_family": "ALL"}
    )
    address = {"socket_address": {"address": host, "port_value": port}}
    return {
        "name": name,
        **discovery,
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
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }


def xds_cluster(hosts: list[tuple[str, int]]) -> dict[str, Any]:
    """The static cluster of the hub: one ``(host, port)``, or several replicas by IP
    address as priorities in that order (see the module docstring)."""
    cluster = _grpc_cluster(XDS_CLUSTER, *hosts[0])
    if len(hosts) == 1:
        return cluster
    names = [host for host, _ in hosts if not _is_ip(host)]
    if names:
        raise InvalidInputError(
            f"--xds: list hub replicas by IP address; a name ({names[0]}) is given alone, "
            "as Envoy resolves it into one host"
        )
    if len(set(hosts)) < len(hosts):
        raise InvalidInputError("--xds lists a hub replica twice")
    cluster["load_assignment"]["endpoints"] = [
        {
            "priority": priority,
            "lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}}
            ],
        }
        for priority, (h, p) in enumerate(hosts)
    ]
    cluster["outlier_detection"] = dict(REPLICA_OUTLIER_DETECTION)
    return cluster


def agent_cluster(cluster: str, address: str, tls: BootstrapTls | None) -> dict[str, Any]:
    """The static cluster of a Gateway's Envoy that reaches its cluster's agent, which
    serves the configuration of its basic auth and API key filters
    (:mod:`federation.translate.proxy.features.credential_auth`); mTLS with the
    cluster's certificate, the agent's carrying ``spiffe://<trust domain>/cluster/<id>/agent``."""
    host, port = split_host_port(address, "--agent-address")
    out = _grpc_cluster(AGENT_CLUSTER, host, port)
    if tls is not None:
        uri = agent_uri(check_trust_domain(tls.trust_domain), parse_cluster_id(cluster))
        agent_tls = BootstrapTls(tls.cert, tls.key, tls.ca, tls.trust_domain, tls.agent_server_name)
        out["transport_socket"] = _transport_socket(agent_tls, host, uri)
    return out


def bootstrap(options: BootstrapOptions) -> dict[str, Any]:
    """The bootstrap as a dict (YAML/JSON-ready); raises InvalidInputError on bad input."""
    cluster = parse_cluster_id(options.cluster)
    hosts = [split_host_port(a.strip(), "--xds") for a in options.xds_address.split(",")]
    xds = xds_cluster(hosts)
    admin_host, admin_port = split_host_port(options.admin_address, "--admin")
    if (options.tls is None) == (not options.insecure_plaintext):
        raise InvalidInputError(
            "the hub is reached over mTLS: give the cluster's --tls-cert, --tls-key and "
            "--tls-ca (fedctl pki mints them), or --insecure-plaintext for a hub started "
            "with --insecure-xds-plaintext"
            if options.tls is None
            else "--insecure-plaintext contradicts the --tls-* files: give one or the other"
        )
    if options.tls is not None:
        xds["transport_socket"] = _transport_socket(
            options.tls, hosts[0][0], hub_uri(check_trust_domain(options.tls.trust_domain))
        )
    ads: dict[str, Any] = {"ads": {}, "resource_api_version": "V3"}
    if options.gateway:
        # A Gateway's Envoy is ready (its pod receives traffic, a rollout goes on) only
        # once it has the hub's configuration: never after Envoy's default 15 s without.
        ads["initial_fetch_timeout"] = "0s"
    node: dict[str, Any] = {
        "id": options.node_id or f"envoy-{cluster}",
        "cluster": cluster,
        # With the endpoints' zones (their member cluster ids), Envoy counts requests per
        # source cluster (cluster.<name>.zone.<own>.<source>.*); see stats_config.
        "locality": {"zone": cluster},
    }
    if options.gateway:
        namespace, name = parse_gateway_ref(options.gateway, "--gateway")
        node["metadata"] = {GATEWAY_METADATA: f"{namespace}/{name}"}
        node["id"] = options.node_id or f"envoy-{cluster}-{namespace}-{name}"
    static: dict[str, Any] = {"clusters": [xds]}
    if options.agent_address:
        if not options.gateway:
            raise InvalidInputError("--agent-address is for a Gateway's Envoys: give --gateway")
        static["clusters"].append(agent_cluster(cluster, options.agent_address, options.tls))
    if options.ready_address:
        host, port = split_host_port(options.ready_address, "--ready")
        if (host, port) == (admin_host, admin_port):
            raise InvalidInputError("--ready must not be the admin address")
        static["clusters"].append(_admin_cluster(admin_host, admin_port))
        static["listeners"] = [_ready_listener(host, port)]
    return {
        "node": node,
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
        "static_resources": static,
        **({"stats_config": stats_config(cluster)} if options.source_cluster_stats else {}),
    }


def stats_config(cluster: str) -> dict[str, Any]:
    """Tags for Envoy's zone statistics, ``cluster.<name>.zone.<own>.<source>.upstream_rq_*``
    (the zones are member cluster ids: the node's own, and each endpoint's source
    cluster): ``local_cluster`` and ``source_cluster``, so that the metric names stay the
    same in every cluster (``envoy_cluster_zone_upstream_rq_xx{source_cluster="a"}``).
    A cluster id may hold dots: the source is what lies between the Envoy's own id and
    ``.upstream_rq``."""
    own = re.escape(cluster)
    return {
        "stats_tags": [
            {"tag_name": "local_cluster", "regex": rf"^cluster\..*?\.zone\.(({own})\.)"},
            {
                "tag_name": "source_cluster",
                "regex": rf"^cluster\..*?\.zone\.{own}\.((.+?)\.)upstream_rq",
            },
        ]
    }


def _admin_cluster(host: str, port: int) -> dict[str, Any]:
    address = {"socket_address": {"address": host, "port_value": port}}
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }


#: The admin paths the ready listener passes on (``GET`` only): a kubelet's readiness
#: probe, and Prometheus scraping Envoy's own metrics.
READY_PATHS = ("/ready", METRICS_PATH)


def _ready_listener(host: str, port: int) -> dict[str, Any]:
    """Only ``GET`` of :data:`READY_PATHS` goes to the admin interface; anything else
    answers 404."""
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    routes = {
        "virtual_hosts": [
            {
                "name": "ready",
                "domains": ["*"],
                "routes": [
                    {"match": {"path": path, "headers": get}, "route": {"cluster": ADMIN_CLUSTER}}
                    for path in READY_PATHS
                ],
            }
        ]
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ready",
        "route_config": routes,
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "name": READY_LISTENER,
        "address": {"socket_address": {"address": host, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
