"""Keeps the xDS snapshot cache in step with the clusterset, incrementally.

Called by the hub (:class:`federation.hub.core.Hub`) with the imports that changed and
the node groups whose Gateway configuration may have changed. For each import it builds,
with the pure translator, the EDS Cluster of every port and one ClusterLoadAssignment per
*variant* (each exporting cluster sees its own endpoints first; every other cluster sees
the same one), serialized once as shared :class:`~federation.xds.snapshot.Resource`
objects. For each node group with Gateways, the hub's resolver gives its
:class:`~federation.translate.ir.GatewayIR`, which the second translation stage turns
into the group's own listeners, route configurations and local clusters. Then:

* if clusters were added, removed or changed, or node groups came or went, every node
  group gets a full snapshot built from the shared and its own resources;
* otherwise only what changed is pushed, to the groups it concerns: the clusterset route
  configuration (a route-only change), a group's Gateway resources, or just the affected
  ClusterLoadAssignments (an endpoint-only push).

Each push of a group is one new snapshot, so a stream never sees half of a change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from federation.model.imports import MergedImport
from federation.process import split_host_port
from federation.registry.watcher import ServiceName
from federation.translate import names
from federation.translate.inputs import ImportView, TranslateOptions
from federation.translate.ir import GatewayIR
from federation.translate.proxy import DEFAULT_SECRET_DIR, build_gateway
from federation.translate.resources import (
    ClaVariant,
    build_cla_variants,
    build_cluster,
    build_listener,
    build_route_config,
    cla_variant,
    translated_ports,
)
from federation.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Resource,
    Snapshot,
    SnapshotCache,
)

#: Where Envoys listen for clusterset traffic unless told otherwise: loopback, so that
#: an Envoy is never by default an open proxy to every exported service.
DEFAULT_LISTENER = "127.0.0.1:10080"


@dataclass
class _ImportResources:
    view: ImportView
    clusters: dict[str, Resource] = field(default_factory=dict)
    #: (EDS cluster name, variant) -> CLA; see :func:`cla_variant`.
    clas: dict[tuple[str, ClaVariant], Resource] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotOptions:
    translate: TranslateOptions
    #: Listener address per member cluster; ``default_listener`` for the others.
    listener_addresses: Mapping[str, str]
    default_listener: str = DEFAULT_LISTENER
    #: Where the Envoys find the Secrets of Gateway certificates (mounted, never sent).
    secret_dir: str = DEFAULT_SECRET_DIR


#: The resource types of a snapshot, in push order.
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
#: Resolves a node group's Gateway configuration (see :meth:`SnapshotBuilder.update`).
GatewayResolver = Callable[[str], GatewayIR]


@dataclass
class _GatewayResources:
    """One group's resources from its Gateways, by type and name."""

    ir: GatewayIR
    by_type: dict[str, dict[str, Resource]] = field(default_factory=dict)


class SnapshotBuilder:
    def __init__(self, cache: SnapshotCache, options: SnapshotOptions) -> None:
        self._cache = cache
        self._options = options
        self._imports: dict[ServiceName, _ImportResources] = {}
        self._routes: Resource | None = None
        self._listeners: dict[str, Resource] = {}
        self._gateways: dict[str, _GatewayResources] = {}
        self._groups: set[str] = set()
        self.full_pushes = 0
        self.endpoint_pushes = 0
        self.route_pushes = 0
        self.gateway_pushes = 0

    def _build(self, view: ImportView) -> _ImportResources:
        res = _ImportResources(view)
        options = self._options.translate
        for port in translated_ports(view):
            name = names.cluster_name(view.namespace, view.name, port.port)
            res.clusters[name] = Resource.of(build_cluster(view, port, options), name)
            for variant, cla in build_cla_variants(view, port, options).items():
                res.clas[(name, variant)] = Resource.of(cla, name)
        return res

    def _host_port(self, group: str) -> tuple[str, int]:
        address = self._options.listener_addresses.get(group, self._options.default_listener)
        return split_host_port(address, f"listener address of {group}")

    def _listener(self, group: str) -> Resource:
        if group not in self._listeners:
            host, port = self._host_port(group)
            self._listeners[group] = Resource.of(build_listener(host, port), names.LISTENER_NAME)
        return self._listeners[group]

    def merged_imports(self) -> dict[ServiceName, MergedImport]:
        """Every current import's merge, for resolving Gateway backends."""
        return {key: res.view.merged for key, res in self._imports.items()}

    def gateway_groups(self) -> set[str]:
        """The node groups that have Gateway resources."""
        return set(self._gateways)

    def _build_gateway(self, group: str, ir: GatewayIR) -> _GatewayResources:
        host, _ = self._host_port(group)
        built = build_gateway(
            ir, host, self._options.translate, secret_dir=self._options.secret_dir
        )
        res = _GatewayResources(ir)
        for type_url, messages in zip(
            TYPES, (built.clusters, built.endpoints, built.listeners, built.routes), strict=True
        ):
            res.by_type[type_url] = {name: Resource.of(m, name) for name, m in messages.items()}
        return res

    def update(
        self,
        changed: Mapping[ServiceName, ImportView | None],
        groups: Iterable[str],
        gateway_groups: Iterable[str] = (),
        resolve_gateway: GatewayResolver | None = None,
    ) -> None:
        """Apply changed imports (None: removed) and Gateway changes; push what changed.

        ``gateway_groups``: groups whose Gateway API records changed; ``resolve_gateway``
        gives a group's IR. When an import appears, goes or changes shape, every group
        with Gateways is resolved again too (its backends may resolve differently).
        """
        groups = set(groups)
        structural = groups != self._groups or self._routes is None
        reshaped = False
        endpoint_updates: list[tuple[ServiceName, _ImportResources]] = []
        for key, view in sorted(changed.items()):
            old = self._imports.get(key)
            if view is None:
                if old is not None:
                    del self._imports[key]
                    structural = reshaped = True
                continue
            new = self._build(view)
            self._imports[key] = new
            if old is None or old.view.merged != new.view.merged:
                reshaped = True
            if old is None or _versions(old.clusters) != _versions(new.clusters):
                structural = True
            elif old.clas != new.clas:
                endpoint_updates.append((key, new))
        routes_changed = False
        if reshaped or self._routes is None:
            routes = Resource.of(
                build_route_config(r.view for r in self._imports.values()),
                names.ROUTE_CONFIG_NAME,
            )
            routes_changed = routes != self._routes
            self._routes = routes
        gateway_changes = self._update_gateways(
            groups,
            set(gateway_groups) | (self.gateway_groups() if reshaped else set()),
            resolve_gateway,
        )
        if structural:
            for group in sorted(groups):
                self._cache.set(group, self._snapshot(group))
            self._groups = groups
            self.full_pushes += 1
            return
        if routes_changed:
            assert self._routes is not None
            for group in sorted(groups):
                self._cache.update(group, ROUTE, {names.ROUTE_CONFIG_NAME: self._routes})
            self.route_pushes += 1
        if endpoint_updates:
            options = self._options.translate
            for group in sorted(groups):
                upserts = {}
                for _, res in endpoint_updates:
                    for name in res.clusters:
                        upserts[name] = res.clas[(name, cla_variant(res.view, group, options))]
                self._cache.update(group, ENDPOINT, upserts, ())
            self.endpoint_pushes += 1
        for group, changes in sorted(gateway_changes.items()):
            snapshot = self._cache.get(group)
            if snapshot is None:
                continue
            for type_url, (upserts, removals) in changes.items():
                snapshot = snapshot.with_changes(type_url, upserts, removals)
            self._cache.set(group, snapshot)
            if set(changes) == {ENDPOINT}:
                self.endpoint_pushes += 1
            else:
                self.gateway_pushes += 1

    def _update_gateways(
        self, groups: set[str], dirty: set[str], resolve: GatewayResolver | None
    ) -> dict[str, dict[str, tuple[dict[str, Resource], list[str]]]]:
        """Rebuild the dirty groups' Gateway resources; what changed, by group and type."""
        out: dict[str, dict[str, tuple[dict[str, Resource], list[str]]]] = {}
        if resolve is None:
            return out
        for group in sorted(dirty):
            old = self._gateways.get(group)
            ir = resolve(group) if group in groups else GatewayIR(group)
            if old is not None and old.ir == ir:
                continue
            new = self._build_gateway(group, ir)
            if ir.listeners or ir.local_clusters:
                self._gateways[group] = new
            else:
                self._gateways.pop(group, None)
            changes = {}
            for type_url in TYPES:
                before = {} if old is None else old.by_type.get(type_url, {})
                after = new.by_type.get(type_url, {})
                upserts = {n: r for n, r in after.items() if before.get(n) != r}
                removals = [n for n in before if n not in after]
                if upserts or removals:
                    changes[type_url] = (upserts, removals)
            if changes:
                out[group] = changes
        return out

    def _snapshot(self, group: str) -> Snapshot:
        clusters: dict[str, Resource] = {}
        endpoints: dict[str, Resource] = {}
        for res in self._imports.values():
            variant = cla_variant(res.view, group, self._options.translate)
            for name, cluster in res.clusters.items():
                clusters[name] = cluster
                endpoints[name] = res.clas[(name, variant)]
        assert self._routes is not None
        resources: dict[str, dict[str, Resource]] = {
            CLUSTER: clusters,
            ENDPOINT: endpoints,
            LISTENER: {names.LISTENER_NAME: self._listener(group)},
            ROUTE: {names.ROUTE_CONFIG_NAME: self._routes},
        }
        gateway = self._gateways.get(group)
        if gateway is not None:
            for type_url, by_name in gateway.by_type.items():
                resources[type_url].update(by_name)
        return Snapshot(resources=resources)


def _versions(resources: Mapping[str, Resource]) -> dict[str, str]:
    return {name: r.version for name, r in resources.items()}
