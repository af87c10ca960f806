"""Second translation stage: IR into xDS resources, for the clusterset and Gateways alike.

The hub's snapshot builder and every golden test go through these functions, so the two
cannot disagree:

* :func:`render_service`: one :class:`~federation.translate.ir.ServiceIR` into its
  clusters and every distinct variant of their ClusterLoadAssignments. Built once per
  change of the import and shared by every node group (the cost model: at most
  exporters + 1 assignments per port, whatever the number of member clusters).
* :func:`render_clusterset_routes`: the ``clusterset`` route configuration, the virtual
  hosts of every service; shared by every node group.
* :func:`render_group`: what one node group serves beside them, from its
  :class:`~federation.translate.ir.NodeGroupIR`: its clusterset listener, its Gateways'
  listeners, route configurations and certificate Secrets, and the local Services its
  routes send to.
* :func:`assemble`: everything one node group gets, from those parts, in the form its
  caller holds them: typed messages (tests, tools) or the hub's serialized resources.
* :func:`node_config`: the four above for one node group, as typed messages.

The typed :class:`XdsResources` are the post-translation boundary: nothing is serialized
here, so a patch or extension step can act on them before the hub serializes them
(:meth:`federation.xds.snapshot.Resource.of`). :func:`consistent` checks the invariants
Envoy relies on. The modules: ``clusters`` (clusters and their endpoints), ``listeners``
(the one connection manager), ``secrets`` (certificates as SDS Secrets of file paths),
``routes`` (the one route builder) and ``features`` (one module per HTTP filter or cluster
feature, in an explicit order).
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from envoy.config.route.v3 import route_pb2

from federation.errors import InvalidInputError
from federation.translate import names
from federation.translate.inputs import TranslateOptions
from federation.translate.ir import ClustersetIR, GatewayIR, NodeGroupIR, ServiceIR
from federation.translate.proxy.access_log import otel_clusters
from federation.translate.proxy.clusters import (
    assignments,
    cluster,
    local_assignment,
    policy_cluster,
)
from federation.translate.proxy.consistency import consistent
from federation.translate.proxy.features.jwt import jwks_cluster, jwks_clusters
from federation.translate.proxy.listeners import listener, route_configs
from federation.translate.proxy.routes import route_configuration
from federation.translate.proxy.secrets import (
    DEFAULT_SECRET_DIR,
    certificate_secret,
    secret_name,
)

__all__ = [
    "DEFAULT_SECRET_DIR",
    "KINDS",
    "RenderedService",
    "XdsResources",
    "assemble",
    "consistent",
    "node_config",
    "render_clusterset_routes",
    "render_group",
    "render_service",
]

T = TypeVar("T")
U = TypeVar("U")

#: The resource kinds, in the order the xDS server pushes them: a listener after the
#: Secrets its TLS contexts name, as after the clusters its routes do.
KINDS = ("clusters", "endpoints", "secrets", "listeners", "routes")


@dataclass(frozen=True)
class XdsResources(Generic[T]):
    """Resources by kind and name: typed messages, or the hub's serialized resources.

    ``secrets`` is keyword-only so that the positional form of the four older kinds keeps
    its meaning; :meth:`by_kind` and :meth:`of_kinds` go in :data:`KINDS` order.
    """

    clusters: dict[str, T] = field(default_factory=dict)
    endpoints: dict[str, T] = field(default_factory=dict)
    listeners: dict[str, T] = field(default_factory=dict)
    routes: dict[str, T] = field(default_factory=dict)
    secrets: dict[str, T] = field(default_factory=dict, kw_only=True)

    @classmethod
    def of_kinds(cls, *kinds: dict[str, T]) -> XdsResources[T]:
        """Resources from one dict per kind, in :data:`KINDS` order."""
        c, e, s, li, r = kinds
        return cls(c, e, li, r, secrets=s)

    def by_kind(self) -> tuple[dict[str, T], ...]:
        """The dicts of every kind, in :data:`KINDS` order."""
        return self.clusters, self.endpoints, self.secrets, self.listeners, self.routes

    def sorted(self) -> XdsResources[T]:
        """The same resources, each kind sorted by name."""
        return XdsResources.of_kinds(*(dict(sorted(kind.items())) for kind in self.by_kind()))

    def mapped(self, convert: Callable[[T, str], U]) -> XdsResources[U]:
        """The same resources, each converted (``convert(resource, name)``)."""
        return XdsResources.of_kinds(
            *({name: convert(item, name) for name, item in kind.items()} for kind in self.by_kind())
        )


@dataclass(frozen=True)
class RenderedService(Generic[T]):
    """One service's resources, shared by every node group: its clusters, and the
    assignments of each cluster in every distinct variant (:func:`~.clusters.variant_for`):
    ``shared`` by address family (what every non-exporter sees), and ``own`` by exporter
    and family (an exporter's own variant, its locality first). Laid out so that picking a
    group's variant costs two dict lookups: the hub does it for every group and service."""

    ir: ServiceIR
    clusters: dict[str, T] = field(default_factory=dict)
    shared: dict[str, dict[str, T]] = field(default_factory=dict)
    own: dict[str, dict[str, dict[str, T]]] = field(default_factory=dict)
    #: By viewing cluster and family: the variants of clusters with a FailoverPolicy.
    preferred: dict[str, dict[str, dict[str, T]]] = field(default_factory=dict)

    def seen_by(self, group: str | None, family: str) -> dict[str, T]:
        """The assignments, by cluster name, of the Envoys of ``group`` (a member
        cluster), whose address family is ``family`` (``TranslateOptions.ip_family``):
        its FailoverPolicy's variant, else its own as an exporter, else the shared one.
        A service without clusters (no port left, say, while its exporters withdraw) has
        no assignments at all."""
        if group is not None:
            for variants in (self.preferred, self.own):
                found = variants.get(group)
                if found is not None:
                    return found[family]
        return self.shared.get(family, {})

    def mapped(self, convert: Callable[[T, str], U]) -> RenderedService[U]:
        def each(by_name: dict[str, T]) -> dict[str, U]:
            return {name: convert(item, name) for name, item in by_name.items()}

        def per_cluster(
            variants: dict[str, dict[str, dict[str, T]]],
        ) -> dict[str, dict[str, dict[str, U]]]:
            return {
                cluster: {family: each(by_name) for family, by_name in families.items()}
                for cluster, families in variants.items()
            }

        return RenderedService(
            self.ir,
            each(self.clusters),
            {family: each(by_name) for family, by_name in self.shared.items()},
            per_cluster(self.own),
            per_cluster(self.preferred),
        )


def render_service(ir: ServiceIR, options: TranslateOptions) -> RenderedService[Any]:
    """The clusters and assignment variants of one service (typed messages)."""
    out: RenderedService[Any] = RenderedService(ir)
    for cluster_ir in ir.clusters:
        name = cluster_ir.name
        out.clusters[name] = cluster(cluster_ir, options)
        for variant, cla in assignments(cluster_ir, options).items():
            if variant.preferred is not None:
                by_family = out.preferred.setdefault(variant.preferred, {})
                by_family.setdefault(variant.family, {})[name] = cla
            elif variant.local is None:
                out.shared.setdefault(variant.family, {})[name] = cla
            else:
                out.own.setdefault(variant.local, {}).setdefault(variant.family, {})[name] = cla
    return out


def render_clusterset_routes(services: Iterable[ServiceIR]) -> route_pb2.RouteConfiguration:
    """The ``clusterset`` route configuration: every service's virtual hosts, by name.

    Raises InvalidInputError if two virtual hosts share a name (two views of one Service).
    """
    hosts = {}
    for service in services:
        for host in service.virtual_hosts:
            if host.name in hosts:
                raise InvalidInputError(f"two views of {service.namespace}/{service.name}")
            hosts[host.name] = host
    return route_configuration(
        names.ROUTE_CONFIG_NAME, (hosts[n] for n in sorted(hosts)), hosts_by_port=True
    )


def render_group(
    ir: NodeGroupIR,
    host: str,
    options: TranslateOptions,
    secret_dir: str = DEFAULT_SECRET_DIR,
) -> XdsResources[Any]:
    """What one node group serves beside the shared services (typed messages); its
    listeners bind to ``host`` unless their IR names an address, and Envoy reads their
    certificates under ``secret_dir``.

    The clusterset listener's routes are the shared ``clusterset`` configuration, which
    :func:`assemble` adds; every other listener's are rendered here.
    """
    gateway = ir.gateway if ir.gateway is not None else GatewayIR(ir.group or "")
    out: XdsResources[Any] = XdsResources()
    for local in gateway.local_clusters:
        out.clusters[local.name] = cluster(local, options)
        out.endpoints[local.name] = local_assignment(local, options)
    for copy in gateway.policy_clusters:
        out.clusters[copy.name] = policy_cluster(copy, options)
    if ir.clusterset_listener is not None:
        out.listeners[ir.clusterset_listener.name] = listener(ir.clusterset_listener, host)
    for li in gateway.listeners:
        out.listeners[li.name] = listener(li, host)
        for name, jwks in jwks_clusters(li).items():
            out.clusters[name] = jwks_cluster(jwks)
        out.clusters.update(otel_clusters(li))
        for chain in li.tls:
            for cert in chain.certificates:
                out.secrets[secret_name(cert)] = certificate_secret(cert, secret_dir)
        for name, hosts in route_configs(li).items():
            out.routes[name] = route_configuration(
                name, hosts, li.port, https=bool(li.tls), hosts_by_port=bool(li.hosts_by_port)
            )
    return out.sorted()


def assemble(
    group: str | None,
    services: Iterable[RenderedService[T]],
    clusterset_routes: T | None,
    own: XdsResources[T],
    options: TranslateOptions,
) -> XdsResources[T]:
    """Everything the Envoys of node group ``group`` get.

    Every service's clusters, with the assignment variant ``group`` sees; the shared
    ``clusterset`` route configuration when the group has the clusterset listener; and the
    group's own resources (:func:`render_group`), its Secrets included. Works on typed
    messages and on serialized resources alike: the hub calls it with what it serialized,
    tests with messages.
    """
    clusters: dict[str, T] = {}
    endpoints: dict[str, T] = {}
    family = options.ip_family(group)
    for service in services:
        clusters.update(service.clusters)
        endpoints.update(service.seen_by(group, family))
    routes: dict[str, T] = {}
    if clusterset_routes is not None and names.LISTENER_NAME in own.listeners:
        routes[names.ROUTE_CONFIG_NAME] = clusterset_routes
    clusters.update(own.clusters)
    endpoints.update(own.endpoints)
    routes.update(own.routes)
    return XdsResources(clusters, endpoints, dict(own.listeners), routes, secrets=dict(own.secrets))


def node_config(
    clusterset: ClustersetIR,
    group: NodeGroupIR,
    host: str,
    options: TranslateOptions | None = None,
    *,
    secret_dir: str = DEFAULT_SECRET_DIR,
) -> XdsResources[Any]:
    """Everything one node group's Envoys get, as typed messages sorted by name."""
    options = options if options is not None else TranslateOptions()
    services = [render_service(s, options) for s in clusterset.services]
    routes = render_clusterset_routes(clusterset.services)
    own = render_group(group, host, options, secret_dir)
    return assemble(group.group, services, routes, own, options).sorted()
