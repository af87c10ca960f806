"""Pure builders of the Envoy xDS resources for the clusterset.

Called by the hub's snapshot builder: per served ServiceImport port one EDS
:func:`build_cluster` and its ClusterLoadAssignment (:func:`build_cla`, or
:func:`build_cla_variants` for every variant at once), plus one
:func:`build_listener` and one :func:`build_route_config` for all imports.
:func:`build_node_config` assembles everything one Envoy gets, for tests and
tools. The messages are xds-protos' upb classes, the hot path's wire format.

Rules the output keeps:

* One ``LocalityLbEndpoints`` per *source cluster* (never one flat group), so
  local-first priority, per-cluster weights and per-cluster status all work.
  The locality is ``region="" zone="" sub_zone=<cluster id>``: region and
  zone stay free for real topology later, and Envoy's zone-aware routing (which
  reads region and zone) is not involved; failover is done with priorities.
* Local first: for an Envoy in an *exporting* cluster, its own cluster's
  locality has priority 0 and every other cluster's priority 1. An Envoy in a
  cluster that does not export the Service sees everything at priority 0, so
  all non-exporters share one ClusterLoadAssignment: a Service has at most
  exporters + 1 variants per address family (:func:`cla_variant`), never one
  per member cluster. Envoy's default overprovisioning factor (1.4) moves
  traffic to priority 1 progressively as the local endpoints become unhealthy
  or ejected.
* One address family per node group (``TranslateOptions.ip_families``): a
  dual-stack Service's pods are listed once, never once per family.
* No traffic to hosts known to be dead or not ready: the clusters' healthy
  panic threshold is 0 (Envoy's default of 50 % would spread traffic over
  *every* host, unhealthy ones included, as soon as fewer than half of them
  are healthy). When no host of any locality is healthy, Envoy answers 503
  ("no healthy upstream") at once, like a Service without ready endpoints;
  hosts ejected by outlier detection come back after their ejection time.
* Requests that find a just-died backend are retried elsewhere: every route
  retries connect failures, refused streams and resets before the request was
  sent (all safe for any method), avoiding hosts and priorities already tried,
  within a per-cluster retry budget (:data:`RETRY_POLICY`).
* No route timeout (Envoy's default is 15 s, which cuts long gRPC streams and
  slow downloads), and WebSocket upgrades pass through the listener.
* A stale cluster (lease expired) keeps its endpoints (fail-static: a dead
  agent says nothing about its pods); its locality carries
  ``filter_metadata {"federation": {"stale": true}}`` so the config shows it,
  and outlier detection decides real reachability.
* Only HTTP ports are translated (:mod:`federation.translate.protocols`): the
  data path is an HTTP listener. Headless imports are translated like
  ClusterSetIP ones: Envoy always sends to endpoint addresses, never to a
  ClusterIP, so the type changes nothing here.
* Deterministic: equal inputs give equal ``SerializeToString(deterministic=True)``
  bytes, whatever the order of exports, slices and endpoints.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

from federation.errors import InvalidInputError
from federation.model.imports import exposes
from federation.registry.records import EndpointSet, ServicePort
from federation.translate import names
from federation.translate.inputs import AddressMap, ImportView, TranslateOptions
from federation.translate.protocols import PortProtocol, port_protocol

#: The port whose virtual host also answers the bare host name, when present.
DEFAULT_PORT = 80
STALE_METADATA_KEY = "federation"


class RetryDefaults(NamedTuple):
    """The retry policy of every clusterset route (no user configuration needed).

    Only failures that happen before the backend can have seen the request are
    retried, so a retry is safe for any method: the connection was refused or
    timed out, an HTTP/2 backend refused the stream, or the connection was reset
    before any of the request was sent. Each retry avoids the hosts already
    tried (``previous_hosts``, re-picking up to ``host_selection_attempts``
    times) and the priorities already tried (``previous_priorities``), so a
    request that found a dead local backend goes to another cluster next. The
    cluster's retry budget caps concurrent retries at ``budget_percent`` of its
    active requests (never below ``min_retry_concurrency``), so retries cannot
    multiply the load on a struggling clusterset.
    """

    retry_on: str = "connect-failure,refused-stream,reset-before-request"
    num_retries: int = 3
    host_selection_attempts: int = 10
    base_interval_ms: int = 10
    max_interval_ms: int = 100
    budget_percent: float = 20.0
    min_retry_concurrency: int = 3


RETRY_POLICY = RetryDefaults()

PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"

_HEALTHY: int = health_check_pb2.HEALTHY
_UNHEALTHY: int = health_check_pb2.UNHEALTHY
_DRAINING: int = health_check_pb2.DRAINING
# When two slices list the same (address, port), the most available state wins:
# during a slice migration the same pod can briefly appear in both.
_HEALTH_RANK = {_HEALTHY: 0, _DRAINING: 1, _UNHEALTHY: 2}

_FAMILIES = {"IPv4": socket.AF_INET, "IPv6": socket.AF_INET6}
# Kubernetes Service names and namespaces are DNS labels; the host name is built
# from them, so only labels keep host names (hence route domains) unique.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


# --- ports ------------------------------------------------------------------------


def translated_ports(view: ImportView) -> tuple[ServicePort, ...]:
    """The import's ports that get a cluster: its HTTP ports, by port number.

    Which ports speak HTTP: :func:`federation.translate.protocols.port_protocol`.
    """
    return tuple(sorted((p for p in view.merged.ports if port_protocol(p).served), key=_port_key))


def _port_key(p: ServicePort) -> int:
    return p.port


def default_port(view: ImportView) -> ServicePort | None:
    """The port whose virtual host also answers the bare host: 80, else the lowest."""
    ports = translated_ports(view)
    for p in ports:
        if p.port == DEFAULT_PORT:
            return p
    return ports[0] if ports else None


def _check_port(view: ImportView, port: ServicePort) -> None:
    if port not in translated_ports(view):
        raise InvalidInputError(
            f"port {port.name or '(unnamed)'} {port.port}/{port.protocol} is not an HTTP port "
            f"of the import {view.namespace}/{view.name}"
        )


# --- clusters ---------------------------------------------------------------------


def ads() -> Any:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def duration_ms(ms: int) -> Any:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def build_cluster(
    view: ImportView, port: ServicePort, options: TranslateOptions
) -> cluster_pb2.Cluster:
    """The EDS cluster of one import port, its endpoints delivered over ADS."""
    _check_port(view, port)
    name = names.cluster_name(view.namespace, view.name, port.port)
    return eds_cluster(name, options, http2=port_protocol(port) is PortProtocol.HTTP2)


def eds_cluster(name: str, options: TranslateOptions, *, http2: bool) -> cluster_pb2.Cluster:
    """An EDS cluster with the data plane's safe defaults (see the module docstring).

    Shared by the clusterset's clusters and those of local Services that routes use.
    """
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_ms(options.connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    # No service_name: the ClusterLoadAssignment is named after the cluster.
    cluster.eds_cluster_config.eds_config.CopyFrom(ads())
    # Honour the per-cluster locality weights of the ClusterLoadAssignment.
    cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    # Never send traffic to hosts known to be unhealthy (see the module docstring).
    cluster.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=0.0))
    cluster.circuit_breakers.thresholds.append(
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            retry_budget=circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
                budget_percent=percent_pb2.Percent(value=RETRY_POLICY.budget_percent),
                min_retry_concurrency={"value": RETRY_POLICY.min_retry_concurrency},
            )
        )
    )
    if options.outlier_detection:
        # Fail-static keeps a dead cluster's endpoints, so Envoy itself must stop
        # using them: 5 consecutive 5xx (connect failures count, since
        # local-origin errors are not split out) eject a host; checked every 5 s
        # (Envoy's default is 10 s) for 30 s at first. Up to 100 %, not Envoy's 10 %:
        # a whole cluster may be gone, and its hosts must all leave so that the
        # traffic moves to the next priority instead of still trying the dead ones.
        cluster.outlier_detection.CopyFrom(
            outlier_detection_pb2.OutlierDetection(
                consecutive_5xx={"value": 5},
                interval=duration_pb2.Duration(seconds=5),
                base_ejection_time=duration_pb2.Duration(seconds=30),
                max_ejection_percent={"value": 100},
            )
        )
    if http2:
        # Otherwise Envoy's default upstream protocol applies: HTTP/1.1.
        h2 = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config={"http2_protocol_options": {}}
        )
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(h2, deterministic=True)
    return cluster


# --- ClusterLoadAssignments -------------------------------------------------------------


class ClaVariant(NamedTuple):
    """A key of one distinct ClusterLoadAssignment of an import port.

    ``local`` is the exporter whose locality alone has priority 0 (None: every
    locality at priority 0); ``family`` the address family of the endpoints.
    """

    local: str | None
    family: str


def cla_variant(
    view: ImportView, viewer: str | None, options: TranslateOptions | None = None
) -> ClaVariant:
    """Which ClusterLoadAssignment variant of ``view`` the Envoys of ``viewer`` get.

    ``local`` is ``viewer`` when it is one of several exporters and local-first
    is on (its own locality is then the only one at priority 0), None otherwise:
    the variant every other cluster of the same family shares. Equal keys mean
    byte-identical assignments, so callers build and serialize each key once.
    """
    options = options if options is not None else TranslateOptions()
    clusters = view.merged.clusters
    local = None
    if options.local_first and viewer is not None and len(clusters) > 1 and viewer in clusters:
        local = viewer
    return ClaVariant(local, options.ip_family(viewer))


class EndpointSource(Protocol):
    """What endpoints are read from: an export, or a local Service a route uses."""

    @property
    def ports(self) -> tuple[ServicePort, ...]: ...

    @property
    def endpoints(self) -> tuple[EndpointSet, ...]: ...


def _endpoint_port(
    s: EndpointSet, export: EndpointSource, port: ServicePort, single: bool
) -> int | None:
    """The port the backends of ``s`` listen on for the import port ``port``, or None.

    None unless the exporter exposes exactly that port (name, protocol, number): one
    whose port of that name lost a PortConflict gets none of its traffic. Then by name
    (an EndpointSlice port is named after its Service port); else, when the import has
    one port and the slice one, that one.
    """
    if not exposes(export, port):
        return None
    for ep in s.ports:
        if ep.name == port.name and ep.protocol == port.protocol:
            return ep.port
    if single and len(s.ports) == 1 and s.ports[0].protocol == port.protocol:
        return s.ports[0].port
    return None


def _cluster_endpoints(
    export: EndpointSource,
    port: ServicePort,
    single: bool,
    amap: AddressMap | None,
    family_name: str,
) -> list[tuple[tuple[str, int], int]]:
    """``((address, port), health)`` of one export's backends for ``port``, unique, sorted.

    Only slices of ``family_name`` count: a dual-stack Service has a slice per
    family listing the same pods, and one pod must be one endpoint. FQDN slices
    never count (an EDS cluster takes IP addresses only), and neither do
    addresses that are not IPs of the slice's family: one bad address must not
    make Envoy reject the whole assignment. Only an endpoint's first address is
    used: Kubernetes says the addresses of one endpoint are fungible. The result
    is one export's, i.e. one locality's: two clusters that reuse the same pod
    range keep their endpoints apart.

    Health: ready is HEALTHY; terminating but still serving is DRAINING (Envoy
    sends it no new requests, as Kubernetes intends); anything else UNHEALTHY.
    Unhealthy endpoints stay listed: they count against their priority level's
    health, which is what moves traffic to the next priority.
    """
    found: dict[tuple[str, int], int] = {}
    pton, ntop = socket.inet_pton, socket.inet_ntop
    family = _FAMILIES[family_name]
    for s in export.endpoints:
        if s.address_type != family_name:
            continue
        target = _endpoint_port(s, export, port, single)
        if target is None:
            continue
        for e in s.endpoints:
            address = e.addresses[0]
            if amap is not None:
                address = amap.translate(address)
            try:
                packed = pton(family, address)
            except OSError:
                continue
            if family == socket.AF_INET6:
                address = ntop(family, packed)  # one spelling per address
            if e.ready:
                health = _HEALTHY
            elif e.serving and e.terminating:
                health = _DRAINING
            else:
                health = _UNHEALTHY
            key = (address, target)
            held = found.get(key)
            if held is None or _HEALTH_RANK[health] < _HEALTH_RANK[held]:
                found[key] = health
    return sorted(found.items())


def add_locality(
    cla: endpoint_pb2.ClusterLoadAssignment,
    cluster: str,
    source: EndpointSource,
    port: ServicePort,
    options: TranslateOptions,
    family: str,
    *,
    priority: int = 0,
    single: bool | None = None,
) -> Any:
    """Add ``cluster``'s locality with the endpoints of ``source`` for ``port``."""
    locality = cla.endpoints.add(priority=priority)
    locality.locality.sub_zone = cluster
    locality.load_balancing_weight.value = options.weight(cluster)
    add = locality.lb_endpoints.add
    amap = options.address_maps.get(cluster)
    if single is None:
        single = len(source.ports) == 1
    for (address, port_value), health in _cluster_endpoints(source, port, single, amap, family):
        # Field by field on the added message: measured 3x faster with upb
        # than constructing nested messages and appending them.
        socket_address = add(health_status=health).endpoint.address.socket_address
        socket_address.address = address
        socket_address.port_value = port_value
    return locality


def _priority(cluster: str, local: str | None) -> int:
    return 1 if local is not None and cluster != local else 0


def build_cla(
    view: ImportView, port: ServicePort, viewer: str | None, options: TranslateOptions
) -> endpoint_pb2.ClusterLoadAssignment:
    """The ClusterLoadAssignment of one import port as the Envoys of ``viewer`` see it.

    ``viewer`` is the member cluster id of the receiving Envoy (None: a cluster
    that does not export the Service). See the module docstring for the rules.
    """
    return _build_cla(view, port, cla_variant(view, viewer, options), options)


def _build_cla(
    view: ImportView, port: ServicePort, variant: ClaVariant, options: TranslateOptions
) -> endpoint_pb2.ClusterLoadAssignment:
    _check_port(view, port)
    single = len(view.merged.ports) == 1
    cla = endpoint_pb2.ClusterLoadAssignment(
        cluster_name=names.cluster_name(view.namespace, view.name, port.port)
    )
    for export in view.exports:
        cluster = export.cluster
        locality = add_locality(
            cla,
            cluster,
            export,
            port,
            options,
            variant.family,
            priority=_priority(cluster, variant.local),
            single=single,
        )
        if cluster in view.stale:
            locality.metadata.filter_metadata[STALE_METADATA_KEY].update({"stale": True})
    return cla


def build_cla_variants(
    view: ImportView, port: ServicePort, options: TranslateOptions
) -> dict[ClaVariant, endpoint_pb2.ClusterLoadAssignment]:
    """Every distinct ClusterLoadAssignment of one import port, keyed by :func:`cla_variant`.

    Per address family some node group uses, the endpoints are translated once;
    each exporter's own variant is a copy with its priorities changed. Equal to
    calling :func:`build_cla` for the viewers each key stands for.
    """
    out: dict[ClaVariant, Any] = {}
    for family in options.families():
        base = _build_cla(view, port, ClaVariant(None, family), options)
        out[ClaVariant(None, family)] = base
        if not options.local_first or len(view.merged.clusters) < 2:
            continue
        for cluster in view.merged.clusters:
            if options.ip_family(cluster) != family:
                continue  # that exporter's Envoys get another family
            cla = endpoint_pb2.ClusterLoadAssignment()
            cla.CopyFrom(base)
            for locality in cla.endpoints:
                locality.priority = _priority(locality.locality.sub_zone, cluster)
            out[ClaVariant(cluster, family)] = cla
    return out


# --- listener and routes ------------------------------------------------------------


def build_listener(address: str, port: int) -> listener_pb2.Listener:
    """The HTTP listener every Envoy serves the clusterset on; its routes come over RDS.

    WebSocket upgrades are allowed (to HTTP/1.1 clusters); no request or route
    timeout applies, so long streams last as long as client and backend want.
    """
    try:
        ipaddress.ip_address(address)
    except ValueError as err:
        raise InvalidInputError(f"listener address {address!r} is not an IP address") from err
    if not 1 <= port <= 65535:
        raise InvalidInputError(f"listener port {port} is out of range 1-65535")
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="clusterset",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=names.ROUTE_CONFIG_NAME),
    )
    hcm.upgrade_configs.add(upgrade_type="websocket")
    router = hcm.http_filters.add(name=ROUTER_FILTER)
    router.typed_config.Pack(router_pb2.Router(), deterministic=True)
    listener = listener_pb2.Listener(
        name=names.LISTENER_NAME,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)
        ),
    )
    chain = listener.filter_chains.add()
    hcm_filter = chain.filters.add(name=HCM_FILTER)
    hcm_filter.typed_config.Pack(hcm, deterministic=True)
    return listener


def build_route_config(views: Iterable[ImportView]) -> route_pb2.RouteConfiguration:
    """The ``clusterset`` route configuration: a virtual host per import port.

    Domains are ``<host>:<port>``, plus the bare ``<host>`` on the import's
    default port (:func:`default_port`); each routes everything to the port's
    cluster with :func:`route_action` (retries, no timeout). A request for any
    other host gets Envoy's 404. Imports whose
    namespace or name is not a DNS label have no DNS name and are left out;
    that keeps every domain unique, which Envoy requires. Raises
    InvalidInputError if two views are of the same Service.
    """
    seen: set[tuple[str, str]] = set()
    hosts: list[tuple[str, Any]] = []
    for view in views:
        key = (view.namespace, view.name)
        if key in seen:
            raise InvalidInputError(f"two views of {view.namespace}/{view.name}")
        seen.add(key)
        if not (_DNS_LABEL.match(view.namespace) and _DNS_LABEL.match(view.name)):
            continue
        default = default_port(view)
        for port in translated_ports(view):
            name = names.cluster_name(view.namespace, view.name, port.port)
            vhost = route_components_pb2.VirtualHost(
                name=name,
                domains=names.hostnames(
                    view.namespace, view.name, port.port, default=port == default
                ),
            )
            vhost.routes.add(
                match=route_components_pb2.RouteMatch(prefix="/"), route=route_action(name)
            )
            hosts.append((name, vhost))
    config = route_pb2.RouteConfiguration(name=names.ROUTE_CONFIG_NAME)
    config.virtual_hosts.extend(vhost for _, vhost in sorted(hosts, key=_first))
    return config


def _first(item: tuple[str, Any]) -> str:
    return item[0]


def route_action(cluster: str) -> route_components_pb2.RouteAction:
    """Send to ``cluster``, with :data:`RETRY_POLICY` and no timeout.

    The timeout is set to 0 (none) explicitly: left unset, Envoy applies 15 s.
    """
    return route_components_pb2.RouteAction(
        cluster=cluster, timeout=duration_pb2.Duration(seconds=0), retry_policy=retry_policy()
    )


def retry_policy() -> route_components_pb2.RetryPolicy:
    """:data:`RETRY_POLICY` as Envoy's RetryPolicy (every route has it)."""
    policy = route_components_pb2.RetryPolicy(
        retry_on=RETRY_POLICY.retry_on,
        num_retries={"value": RETRY_POLICY.num_retries},
        host_selection_retry_max_attempts=RETRY_POLICY.host_selection_attempts,
        retry_back_off=route_components_pb2.RetryPolicy.RetryBackOff(
            base_interval=duration_ms(RETRY_POLICY.base_interval_ms),
            max_interval=duration_ms(RETRY_POLICY.max_interval_ms),
        ),
    )
    predicate = policy.retry_host_predicate.add(name=PREVIOUS_HOSTS)
    predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate(), deterministic=True)
    policy.retry_priority.name = PREVIOUS_PRIORITIES
    policy.retry_priority.typed_config.Pack(
        previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=1),
        deterministic=True,
    )
    return policy


# --- everything one Envoy gets ----------------------------------------------------------


@dataclass(frozen=True)
class NodeConfig:
    """Every resource one Envoy gets, by type and name (names sorted)."""

    clusters: dict[str, cluster_pb2.Cluster] = field(default_factory=dict)
    endpoints: dict[str, endpoint_pb2.ClusterLoadAssignment] = field(default_factory=dict)
    listeners: dict[str, listener_pb2.Listener] = field(default_factory=dict)
    routes: dict[str, route_pb2.RouteConfiguration] = field(default_factory=dict)


def build_node_config(
    views: Iterable[ImportView],
    viewer: str | None,
    listener_address: tuple[str, int] | None,
    options: TranslateOptions | None = None,
) -> NodeConfig:
    """The whole configuration of the Envoys of member cluster ``viewer``.

    ``listener_address`` is the (IP, port) of the clusterset listener; None
    builds no listener. The hub's snapshot builder shares resources across
    nodes instead of calling this per node; tests and tools use it.
    """
    options = options if options is not None else TranslateOptions()
    ordered = sorted(views, key=lambda v: (v.namespace, v.name))
    clusters: dict[str, Any] = {}
    endpoints: dict[str, Any] = {}
    for view in ordered:
        for port in translated_ports(view):
            cluster = build_cluster(view, port, options)
            clusters[cluster.name] = cluster
            endpoints[cluster.name] = build_cla(view, port, viewer, options)
    listeners: dict[str, Any] = {}
    if listener_address is not None:
        listeners[names.LISTENER_NAME] = build_listener(*listener_address)
    return NodeConfig(
        clusters=dict(sorted(clusters.items())),
        endpoints=dict(sorted(endpoints.items())),
        listeners=listeners,
        routes={names.ROUTE_CONFIG_NAME: build_route_config(ordered)},
    )
