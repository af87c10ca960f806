"""Keeps the xDS snapshot cache in step with the clusterset, incrementally.

Called by the hub (:class:`federation.hub.core.Hub`) with the imports that changed. For
each import it builds, with the pure translator, the EDS Cluster of every port
and one ClusterLoadAssignment per *variant* (each exporting cluster sees its
own endpoints first; every other cluster sees the same one), serialized once
as shared :class:`~federation.xds.snapshot.Resource` objects. Then:

* if only endpoints changed, each node group gets just the affected
  ClusterLoadAssignments (an endpoint-only push);
* otherwise each node group gets a full snapshot built from the shared
  resources (clusters, endpoints, its listener, the route configuration).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from federation.process import split_host_port
from federation.registry.watcher import ServiceName
from federation.translate import names
from federation.translate.inputs import ImportView, TranslateOptions
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


class SnapshotBuilder:
    def __init__(self, cache: SnapshotCache, options: SnapshotOptions) -> None:
        self._cache = cache
        self._options = options
        self._imports: dict[ServiceName, _ImportResources] = {}
        self._routes: Resource | None = None
        self._listeners: dict[str, Resource] = {}
        self._groups: set[str] = set()
        self.full_pushes = 0
        self.endpoint_pushes = 0

    def _build(self, view: ImportView) -> _ImportResources:
        res = _ImportResources(view)
        options = self._options.translate
        for port in translated_ports(view):
            name = names.cluster_name(view.namespace, view.name, port.port)
            res.clusters[name] = Resource.of(build_cluster(view, port, options), name)
            for variant, cla in build_cla_variants(view, port, options).items():
                res.clas[(name, variant)] = Resource.of(cla, name)
        return res

    def _listener(self, group: str) -> Resource:
        if group not in self._listeners:
            address = self._options.listener_addresses.get(group, self._options.default_listener)
            host, port = split_host_port(address, f"listener address of {group}")
            self._listeners[group] = Resource.of(build_listener(host, port), names.LISTENER_NAME)
        return self._listeners[group]

    def update(
        self, changed: Mapping[ServiceName, ImportView | None], groups: Iterable[str]
    ) -> None:
        """Apply changed imports (None: removed) and push to every node group."""
        groups = set(groups)
        structural = groups != self._groups or self._routes is None
        endpoint_updates: list[tuple[ServiceName, _ImportResources]] = []
        for key, view in sorted(changed.items()):
            old = self._imports.get(key)
            if view is None:
                if old is not None:
                    del self._imports[key]
                    structural = True
                continue
            new = self._build(view)
            self._imports[key] = new
            if old is None or _versions(old.clusters) != _versions(new.clusters):
                structural = True
            elif old.clas != new.clas:
                endpoint_updates.append((key, new))
        if structural:
            self._routes = Resource.of(
                build_route_config(r.view for r in self._imports.values()),
                names.ROUTE_CONFIG_NAME,
            )
            snapshots = {group: self._snapshot(group) for group in sorted(groups)}
            for group, snapshot in snapshots.items():
                self._cache.set(group, snapshot)
            self._groups = groups
            self.full_pushes += 1
            return
        if not endpoint_updates:
            return
        options = self._options.translate
        for group in sorted(groups):
            upserts = {}
            for _, res in endpoint_updates:
                for name in res.clusters:
                    upserts[name] = res.clas[(name, cla_variant(res.view, group, options))]
            self._cache.update(group, ENDPOINT, upserts, ())
        self.endpoint_pushes += 1

    def _snapshot(self, group: str) -> Snapshot:
        clusters: dict[str, Resource] = {}
        endpoints: dict[str, Resource] = {}
        for res in self._imports.values():
            variant = cla_variant(res.view, group, self._options.translate)
            for name, cluster in res.clusters.items():
                clusters[name] = cluster
                endpoints[name] = res.clas[(name, variant)]
        assert self._routes is not None
        return Snapshot(
            resources={
                CLUSTER: clusters,
                ENDPOINT: endpoints,
                LISTENER: {names.LISTENER_NAME: self._listener(group)},
                ROUTE: {names.ROUTE_CONFIG_NAME: self._routes},
            }
        )


def _versions(resources: Mapping[str, Resource]) -> dict[str, str]:
    return {name: r.version for name, r in resources.items()}
