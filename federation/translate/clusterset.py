"""First translation stage for the clusterset: each ServiceImport into a :class:`ServiceIR`.

Called by the hub's snapshot builder once per changed import (every node group shares
the result) and by the golden tests through :func:`federation.translate.proxy.node_config`.
Pure. What it decides:

* Which ports are served: the import's HTTP ports
  (:func:`federation.translate.protocols.port_protocol`), since the data path is an HTTP
  listener; each gets one :class:`ServiceClusterIR`. Headless imports are served like
  ClusterSetIP ones: Envoy always sends to endpoint addresses, never to a ClusterIP.
* One :class:`LocalityIR` per source cluster (never one flat group), so local-first
  priority, per-cluster weights and per-cluster status all work. A stale cluster (lease
  expired) keeps its endpoints (fail-static: a dead agent says nothing about its pods),
  flagged; outlier detection decides real reachability.
* Names: a virtual host per served port, with the domains ``<host>:<port>`` plus the bare
  ``<host>`` on the import's default port (:func:`default_port`), routing everything to
  the port's cluster. Imports whose namespace or name is not a DNS label have no DNS name
  and get no virtual host; that keeps every domain unique, which Envoy requires.
* The clusterset listener of a node group (:func:`clusterset_listener`): its routes come
  over RDS from the one ``clusterset`` route configuration every group shares.
"""

from __future__ import annotations

import ipaddress
import re

from federation.errors import InvalidInputError
from federation.registry.records import ServicePort
from federation.translate import names
from federation.translate.inputs import ImportView
from federation.translate.ir import (
    BackendIR,
    ListenerIR,
    LocalityIR,
    MatchIR,
    PathMatchIR,
    RouteIR,
    ServiceClusterIR,
    ServiceIR,
    VirtualHostIR,
)
from federation.translate.protocols import PortProtocol, port_protocol

#: The port whose virtual host also answers the bare host name, when present.
DEFAULT_PORT = 80

# Kubernetes Service names and namespaces are DNS labels; the host name is built
# from them, so only labels keep host names (hence route domains) unique.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_EVERYTHING = MatchIR(PathMatchIR("PathPrefix", "/"))


def translated_ports(view: ImportView) -> tuple[ServicePort, ...]:
    """The import's ports that get a cluster: its HTTP ports, by port number."""
    return tuple(sorted((p for p in view.merged.ports if port_protocol(p).served), key=_number))


def _number(p: ServicePort) -> int:
    return p.port


def default_port(view: ImportView) -> ServicePort | None:
    """The port whose virtual host also answers the bare host: 80, else the lowest."""
    ports = translated_ports(view)
    for p in ports:
        if p.port == DEFAULT_PORT:
            return p
    return ports[0] if ports else None


def has_dns_name(view: ImportView) -> bool:
    """Whether the import's namespace and name make a clusterset DNS name."""
    return bool(_DNS_LABEL.match(view.namespace) and _DNS_LABEL.match(view.name))


def service_cluster(view: ImportView, port: ServicePort) -> ServiceClusterIR:
    """The cluster of one served port of ``view``, a locality per exporting cluster."""
    if port not in translated_ports(view):
        raise InvalidInputError(
            f"port {port.name or '(unnamed)'} {port.port}/{port.protocol} is not an HTTP port "
            f"of the import {view.namespace}/{view.name}"
        )
    return ServiceClusterIR(
        name=names.cluster_name(view.namespace, view.name, port.port),
        namespace=view.namespace,
        service=view.name,
        port=port,
        http2=port_protocol(port) is PortProtocol.HTTP2,
        localities=tuple(
            LocalityIR(e.cluster, e.ports, e.endpoints, stale=e.cluster in view.stale)
            for e in view.exports
        ),
        single_port=len(view.merged.ports) == 1,
        policy=view.policy,
        failover=view.failover,
    )


def service_ir(view: ImportView) -> ServiceIR:
    """Everything every node group serves for one ServiceImport."""
    ports = translated_ports(view)
    clusters = tuple(service_cluster(view, port) for port in ports)
    hosts: tuple[VirtualHostIR, ...] = ()
    if has_dns_name(view):
        default = default_port(view)
        hosts = tuple(
            VirtualHostIR(
                name=cluster.name,
                domains=names.hostnames(
                    view.namespace, view.name, cluster.port.port, default=cluster.port == default
                ),
                routes=(
                    RouteIR(
                        name=cluster.name,
                        match=_EVERYTHING,
                        backends=(BackendIR(weight=1, cluster=cluster.name),),
                    ),
                ),
            )
            for cluster in clusters
        )
    exporters = tuple(e.cluster for e in view.exports)
    return ServiceIR(view.namespace, view.name, clusters, hosts, exporters)


def check_listener_address(host: str, port: int) -> None:
    """Raise InvalidInputError unless (``host``, ``port``) can be a listener's address."""
    try:
        ipaddress.ip_address(host)
    except ValueError as err:
        raise InvalidInputError(f"listener address {host!r} is not an IP address") from err
    if not 1 <= port <= 65535:
        raise InvalidInputError(f"listener port {port} is out of range 1-65535")


def clusterset_listener(host: str, port: int) -> ListenerIR:
    """The HTTP listener a node group serves the clusterset on; its routes are the
    ``clusterset`` route configuration that every group shares."""
    check_listener_address(host, port)
    return ListenerIR(
        name=names.LISTENER_NAME,
        port=port,
        route_config=names.ROUTE_CONFIG_NAME,
        hosts_by_port=True,
        address=host,
    )
