"""Keeps the xDS snapshot cache in step with the clusterset, incrementally.

Called by the hub (:class:`federation.hub.core.Hub`) with the imports that changed and
the node groups whose Gateway configuration may have changed. It runs both translation
stages through the same functions as the golden tests (:mod:`federation.translate.proxy`):

* for each changed import, the first stage's :class:`~federation.translate.ir.ServiceIR`
  and the second stage's clusters and ClusterLoadAssignment *variants* (each exporting
  cluster sees its own endpoints first; every other cluster sees the same one), serialized
  once as :class:`~federation.xds.snapshot.Resource` objects that every group shares;
* for each node group (:mod:`federation.node_groups`), its
  :class:`~federation.translate.ir.NodeGroupIR` rendered into the group's own resources:
  a cluster's shared Envoys get the clusterset listener, a Gateway's own Envoys the
  :class:`~federation.translate.ir.GatewayIR` the hub's resolver gives;
* every group's snapshot is :func:`~federation.translate.proxy.assemble` of those.

Then:

* if clusters were added, removed or changed, or node groups came or went, every node
  group gets a full snapshot;
* otherwise only what changed is pushed, to the groups it concerns: the clusterset route
  configuration (a route-only change), a group's own resources, or just the affected
  ClusterLoadAssignments (an endpoint-only push).

Each push of a group is one new snapshot, so a stream never sees half of a change. With
``check_consistency`` every snapshot is checked with
:func:`~federation.translate.proxy.consistent` first (the test environments turn it on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from federation.errors import InvalidInputError
from federation.hub.patches import PatchOutcome, apply_patches
from federation.model.imports import MergedImport
from federation.node_groups import cluster_of_group, parse_group
from federation.process import split_host_port
from federation.registry.watcher import ServiceName
from federation.translate import names
from federation.translate.clusterset import clusterset_listener, service_ir
from federation.translate.gateway.inputs import ObjectName
from federation.translate.inputs import ImportView, TranslateOptions
from federation.translate.ir import GatewayIR, ListenerIR, NodeGroupIR, PatchPolicyIR
from federation.translate.proxy import (
    DEFAULT_SECRET_DIR,
    RenderedService,
    XdsResources,
    assemble,
    consistent,
    render_clusterset_routes,
    render_group,
    render_service,
)
from federation.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    Resource,
    Snapshot,
    SnapshotCache,
    decode,
)

log = logging.getLogger("federation.hub")

#: Where Envoys listen for clusterset traffic unless told otherwise: loopback, so that
#: an Envoy is never by default an open proxy to every exported service.
DEFAULT_LISTENER = "127.0.0.1:10080"


@dataclass(frozen=True)
class _ImportResources:
    view: ImportView
    rendered: RenderedService[Resource]


@dataclass(frozen=True)
class SnapshotOptions:
    translate: TranslateOptions
    #: Listener address per member cluster; ``default_listener`` for the others.
    listener_addresses: Mapping[str, str]
    default_listener: str = DEFAULT_LISTENER
    #: Where the Envoys find the Secrets of Gateway certificates (mounted; only these
    #: paths are sent, in SDS Secrets).
    secret_dir: str = DEFAULT_SECRET_DIR
    #: Check every snapshot with :func:`~federation.translate.proxy.consistent` before it
    #: is served, and refuse it when broken (costs a decode of every resource: tests).
    check_consistency: bool = False
    #: Apply the Gateways' EnvoyPatchPolicies (off unless the hub is started with
    #: ``--enable-envoy-patch-policy``, as in Envoy Gateway).
    patches_allowed: bool = False


#: The resource types of a snapshot, in push order (the order of ``XdsResources``' kinds).
TYPES = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)
#: Resolves a node group's Gateway configuration, None for a group without a Gateway
#: (see :meth:`SnapshotBuilder.update`).
GatewayResolver = Callable[[str], GatewayIR | None]
#: The EnvoyPatchPolicies on the clusterset listener of a shared group's cluster.
PatchResolver = Callable[[str], tuple[PatchPolicyIR, ...]]


@dataclass(frozen=True)
class _GroupResources:
    """One group's own resources (its listeners, Gateways' routes and local clusters)."""

    ir: NodeGroupIR
    own: XdsResources[Resource]


class SnapshotBuilder:
    def __init__(self, cache: SnapshotCache, options: SnapshotOptions) -> None:
        self._cache = cache
        self._options = options
        self._imports: dict[ServiceName, _ImportResources] = {}
        self._merged: dict[ServiceName, MergedImport] = {}
        self._routes: Resource | None = None
        self._own: dict[str, _GroupResources] = {}
        self._groups: set[str] = set()
        self.full_pushes = 0
        self.endpoint_pushes = 0
        self.route_pushes = 0
        self.gateway_pushes = 0
        #: Node group and service updates that failed in translation (each logged).
        self.translation_errors = 0
        #: The groups whose Gateway has EnvoyPatchPolicies: a change of any of their
        #: resources rebuilds their whole snapshot (patches apply to the assembled one).
        self._patched: set[str] = set()
        #: What became of each patched group's policies in its last snapshot.
        self.patch_outcomes: dict[str, dict[ObjectName, PatchOutcome]] = {}
        #: Set by the hub when an extension server post-processes every group: each
        #: group's whole translation is then held (:meth:`take_held`) for the hub to run
        #: through it and :meth:`commit`, instead of being served.
        self.hold = False
        self._held: dict[str, tuple[XdsResources[Resource], int]] = {}
        #: Each group's stamp: moved by everything that changes what it serves, so that
        #: a result computed from older input is never committed over newer.
        self._stamps: dict[str, int] = {}
        self._stamped = 0

    def _build(self, view: ImportView) -> _ImportResources:
        rendered = render_service(service_ir(view), self._options.translate)
        return _ImportResources(view, rendered.mapped(Resource.of))

    def _host_port(self, group: str) -> tuple[str, int]:
        """Where the group's clusterset listener is; a Gateway's Envoys bind their
        listeners to the same host as their cluster's (all addresses in a pod)."""
        addresses = self._options.listener_addresses
        address = addresses.get(group) or addresses.get(
            cluster_of_group(group), self._options.default_listener
        )
        return split_host_port(address, f"listener address of {group}")

    def merged_imports(self) -> Mapping[ServiceName, MergedImport]:
        """Every current import's merge, for resolving Gateway backends (read-only; kept
        up to date as imports change, so a route change does not rebuild it)."""
        return MappingProxyType(self._merged)

    def gateway_groups(self) -> set[str]:
        """The node groups that have Gateway resources."""
        return {
            group
            for group, res in self._own.items()
            if res.ir.gateway is not None
            and (res.ir.gateway.listeners or res.ir.gateway.local_clusters)
        }

    def _render(self, ir: NodeGroupIR) -> _GroupResources:
        assert ir.group is not None
        host, _ = self._host_port(ir.group)
        own = render_group(ir, host, self._options.translate, self._options.secret_dir)
        return _GroupResources(ir, own.mapped(Resource.of))

    def update(
        self,
        changed: Mapping[ServiceName, ImportView | None],
        groups: Iterable[str],
        gateway_groups: Iterable[str] = (),
        resolve_gateway: GatewayResolver | None = None,
        clusterset_patches: PatchResolver | None = None,
    ) -> None:
        """Apply changed imports (None: removed) and Gateway changes; push what changed.

        ``gateway_groups``: groups whose Gateway API records changed; ``resolve_gateway``
        gives a group's IR, and ``clusterset_patches`` a cluster's shared group the
        EnvoyPatchPolicies on its clusterset listener (shared groups among
        ``gateway_groups`` ask it again). When an import appears, goes or changes shape,
        every group with Gateways is resolved again too (its backends may resolve
        differently).
        """
        groups = set(groups)
        structural, reshaped, endpoint_updates = self._apply_imports(changed)
        structural = structural or groups != self._groups or self._routes is None
        routes_changed = self._update_routes() if reshaped or self._routes is None else False
        dirty = set(gateway_groups) | (self.gateway_groups() if reshaped else set())
        group_changes, rebuild = self._update_groups(
            groups, dirty, resolve_gateway, clusterset_patches
        )
        if structural:
            for group in sorted(groups):
                self._publish(group)
            self._groups = groups
            self.full_pushes += 1
            return
        # A patched group's snapshot is rebuilt whole (below) when its routes or own
        # resources change, and so is every group's while an extension server
        # post-processes them; its assignments too, when a patch may change them (or the
        # extension server has not given it a snapshot yet). One push per group.
        patched = set(groups) if self.hold else self._patched & groups
        if routes_changed:
            assert self._routes is not None
            rebuild |= {g for g in patched if parse_group(g).gateway is None}
            for group in sorted(groups - patched - rebuild):
                if parse_group(group).gateway is None:  # only shared Envoys have it
                    self._update_type(group, ROUTE, {names.ROUTE_CONFIG_NAME: self._routes})
            self.route_pushes += 1
        if endpoint_updates:
            rebuild |= {g for g in patched if self._whole_on_endpoints(g)}
            options = self._options.translate
            for group in sorted(groups - rebuild):
                upserts = {}
                cluster = cluster_of_group(group)
                family = options.ip_family(cluster)
                for res in endpoint_updates:
                    upserts.update(res.rendered.seen_by(cluster, family))
                if self.hold and not self._serves_assignments(group, upserts):
                    # What it serves is an older result (an extension server failing
                    # closed) without some of these clusters: the whole group again.
                    rebuild.add(group)
                    continue
                self._update_type(group, ENDPOINT, upserts)
            self.endpoint_pushes += 1
        for group, changes in sorted(group_changes.items()):
            if self._cache.get(group) is None and not self.hold:
                continue
            if group in patched or group in rebuild:
                rebuild.add(group)
                continue
            self._push(group, changes)
            if set(changes) == {ENDPOINT}:
                self.endpoint_pushes += 1
            else:
                self.gateway_pushes += 1
        for group in sorted(rebuild & groups):
            if self.hold or self._cache.get(group) is not None:
                self._publish(group)
                self.gateway_pushes += 1

    def _apply_imports(
        self, changed: Mapping[ServiceName, ImportView | None]
    ) -> tuple[bool, bool, list[_ImportResources]]:
        """Render the changed imports: whether clusters came or went (a full push), whether
        an import's shape changed (routes and Gateways resolve again), and the imports
        whose assignments alone changed."""
        structural = reshaped = False
        endpoint_updates: list[_ImportResources] = []
        for key, view in sorted(changed.items()):
            old = self._imports.get(key)
            if view is None:
                if old is not None:
                    del self._imports[key]
                    del self._merged[key]
                    structural = reshaped = True
                continue
            try:
                new = self._build(view)
            except Exception:
                # A translation bug (an import no check foresaw) must cost this service its
                # update, never the hub: every other change still reaches the Envoys.
                log.exception("cannot translate %s/%s: keeping what is served for it", *key)
                self.translation_errors += 1
                continue
            self._imports[key] = new
            self._merged[key] = view.merged
            if old is None or old.view.merged != new.view.merged:
                reshaped = True
            if old is None or _versions(old.rendered.clusters) != _versions(new.rendered.clusters):
                structural = True
            elif _variants(old.rendered) != _variants(new.rendered):
                endpoint_updates.append(new)
        return structural, reshaped, endpoint_updates

    def _update_routes(self) -> bool:
        """Render the shared clusterset route configuration again; whether it changed."""
        routes = Resource.of(
            render_clusterset_routes(r.rendered.ir for r in self._imports.values()),
            names.ROUTE_CONFIG_NAME,
        )
        changed = routes != self._routes
        self._routes = routes
        return changed

    def _update_groups(
        self,
        groups: set[str],
        dirty: set[str],
        resolve: GatewayResolver | None,
        clusterset_patches: PatchResolver | None,
    ) -> tuple[dict[str, dict[str, tuple[dict[str, Resource], list[str]]]], set[str]]:
        """Render the groups that are new or whose Gateways are dirty; what changed in the
        groups' own resources, by group and type, and the groups whose EnvoyPatchPolicies
        changed (their snapshots are rebuilt whole)."""
        out: dict[str, dict[str, tuple[dict[str, Resource], list[str]]]] = {}
        repatched: set[str] = set()
        todo = dirty & groups if resolve is not None else set()
        if groups != self._groups:  # groups came or went: O(groups) only then
            for group in self._own.keys() - groups:
                del self._own[group]
                self._patched.discard(group)
                self.patch_outcomes.pop(group, None)
                self._held.pop(group, None)
                self._stamps.pop(group, None)
                if parse_group(group).gateway is not None:
                    # The Gateway is gone: nothing of it stays served or shown. (Its
                    # Envoys, going with it, keep what they have.)
                    self._cache.discard(group)
            todo |= groups - self._own.keys()
        for group in sorted(todo):
            old = self._own.get(group)
            if parse_group(group).gateway is not None:
                listener = None  # a Gateway's Envoys serve that Gateway only
            elif old is not None:
                listener = old.ir.clusterset_listener
            else:
                listener = clusterset_listener(*self._host_port(group))
            try:
                refresh = group in dirty
                ir = _group_ir(group, listener, old, refresh, resolve, clusterset_patches)
                if old is not None and old.ir == ir:
                    continue
                new = self._render(ir)
            except Exception:
                # A translation bug (an input no check foresaw) must cost this group its
                # update, never every other group's: it keeps what it serves.
                log.exception("cannot translate node group %s: keeping what it serves", group)
                self.translation_errors += 1
                if old is not None:
                    continue
                new = self._render(NodeGroupIR(group, listener, None))
            self._own[group] = new
            if _patches(new.ir):
                self._patched.add(group)
            else:
                self._patched.discard(group)
            if old is None:
                continue  # a new group gets a full snapshot
            if _patches(old.ir) != _patches(new.ir):
                repatched.add(group)
            changes = {}
            for type_url, before, after in zip(
                TYPES, old.own.by_kind(), new.own.by_kind(), strict=True
            ):
                upserts = {n: r for n, r in after.items() if before.get(n) != r}
                removals = [n for n in before if n not in after]
                if upserts or removals:
                    changes[type_url] = (upserts, removals)
            if changes:
                out[group] = changes
        return out, repatched

    def _assembled(self, group: str) -> XdsResources[Resource]:
        return assemble(
            cluster_of_group(group),
            (res.rendered for res in self._imports.values()),
            self._routes,
            self._own[group].own,
            self._options.translate,
        )

    def _serves_assignments(self, group: str, upserts: Mapping[str, Resource]) -> bool:
        """Whether the group's served snapshot has every one of these assignments."""
        snapshot = self._cache.get(group)
        return snapshot is not None and all(
            snapshot.get(ENDPOINT, name) is not None for name in upserts
        )

    def _whole_on_endpoints(self, group: str) -> bool:
        """Whether an assignment change rebuilds the group whole: a patch of its may
        change assignments (a held group without those assignments is
        :meth:`_serves_assignments`')."""
        own = self._own.get(group)
        policies = () if own is None else _patches(own.ir)
        return any(p.type_url == ENDPOINT for policy in policies for p in policy.patches)

    def resources(self, group: str) -> XdsResources[Resource]:
        """The group's whole translation now: assembled, then patched."""
        assembled = self._assembled(group)
        own = self._own.get(group)
        policies = () if own is None else _patches(own.ir)
        if not policies:
            self.patch_outcomes.pop(group, None)
            return assembled
        allowed = self._options.patches_allowed
        try:
            patched, outcomes = apply_patches(assembled, policies, allowed=allowed)
            problems = self._problems(patched) if allowed else []
        except Exception:
            # A bug (an input no check foresaw) must cost the group its patches, never
            # the hub: the unpatched translation is served.
            log.exception("cannot apply the EnvoyPatchPolicies of %s: serving it unpatched", group)
            self.translation_errors += 1
            patched, problems = assembled, []
            why = "the hub could not apply it (an internal error, in the hub's log)"
            outcomes = {(p.namespace, p.name): PatchOutcome(p.generation, why) for p in policies}
        if problems:
            why = "the patched configuration is inconsistent: " + "; ".join(problems[:3])
            outcomes = {
                key: o if o.invalid or o.disabled else PatchOutcome(o.generation, why)
                for key, o in outcomes.items()
            }
            patched = assembled
        self.patch_outcomes[group] = outcomes
        return patched

    def _stamp(self, group: str) -> int:
        self._stamped += 1
        self._stamps[group] = self._stamped
        return self._stamped

    def stamp(self, group: str) -> int | None:
        """The group's stamp now (None: no such group)."""
        return self._stamps.get(group) if group in self._own else None

    def _publish(self, group: str) -> None:
        """Serve the group's whole translation, or hand it over when :attr:`hold`."""
        resources = self.resources(group)
        if self.hold:
            self._held[group] = (resources, self._stamp(group))
        else:
            self.commit(group, resources)

    def commit(
        self, group: str, resources: XdsResources[Resource], stamp: int | None = None
    ) -> bool:
        """Serve ``resources`` as the group's snapshot (checked first, when told to:
        InvalidInputError). With ``stamp`` (from :meth:`take_held` or :meth:`stamp`),
        only if nothing changed the group since: False when it is gone or was."""
        if stamp is not None and (group not in self._own or self._stamps.get(group) != stamp):
            return False
        snapshot = Snapshot(resources=dict(zip(TYPES, resources.by_kind(), strict=True)))
        self._check(group, snapshot)
        self._cache.set(group, snapshot)
        self._stamp(group)
        return True

    def take_held(self) -> dict[str, tuple[XdsResources[Resource], int]]:
        """The groups' translations held since the last call, with their stamps (see
        :attr:`hold`)."""
        held, self._held = self._held, {}
        return held

    def _update_type(self, group: str, type_url: str, upserts: dict[str, Resource]) -> None:
        """Change some resources of one type in O(changed) (``SnapshotCache.update``)."""
        if self._options.check_consistency:
            snapshot = self._cache.get(group)
            assert snapshot is not None
            self._check(group, snapshot.with_changes(type_url, upserts))
        self._cache.update(group, type_url, upserts, ())
        self._stamp(group)

    def _push(self, group: str, changes: dict[str, tuple[dict[str, Resource], list[str]]]) -> None:
        snapshot = self._cache.get(group)
        assert snapshot is not None
        for type_url, (upserts, removals) in changes.items():
            snapshot = snapshot.with_changes(type_url, upserts, removals)
        self._check(group, snapshot)
        self._cache.set(group, snapshot)
        self._stamp(group)

    def _problems(self, resources: XdsResources[Resource]) -> list[str]:
        """What :func:`~federation.translate.proxy.consistent` finds wrong (nothing
        unless ``check_consistency``)."""
        if not self._options.check_consistency:
            return []
        return consistent(resources.mapped(lambda r, _: decode(r)))

    def _check(self, group: str, snapshot: Snapshot) -> None:
        if not self._options.check_consistency:
            return
        problems = self._problems(XdsResources.of_kinds(*(dict(snapshot.of(t)) for t in TYPES)))
        if problems:
            raise InvalidInputError(
                f"inconsistent snapshot for node group {group}: " + "; ".join(problems)
            )


def _group_ir(
    group: str,
    listener: ListenerIR | None,
    old: _GroupResources | None,
    refresh: bool,
    resolve: GatewayResolver | None,
    clusterset_patches: PatchResolver | None,
) -> NodeGroupIR:
    """A group's IR: its Gateway's (resolved again when ``refresh``) or its clusterset
    listener with the EnvoyPatchPolicies on it (asked again when ``refresh``)."""
    gateway = resolve(group) if resolve is not None and refresh else None
    if gateway is not None and not (gateway.listeners or gateway.local_clusters):
        gateway = None
    if listener is None:
        patches: tuple[PatchPolicyIR, ...] = ()
    elif refresh and clusterset_patches is not None:
        patches = clusterset_patches(group)
    else:
        patches = () if old is None else old.ir.patches
    return NodeGroupIR(group, listener, gateway, patches)


def _patches(ir: NodeGroupIR) -> tuple[PatchPolicyIR, ...]:
    return ir.patches + (() if ir.gateway is None else ir.gateway.patches)


def _versions(resources: Mapping[str, Resource]) -> dict[str, str]:
    return {name: r.version for name, r in resources.items()}


def _variants(rendered: RenderedService[Resource]) -> tuple[Any, ...]:
    """Every assignment variant of a service: any change is an endpoint push."""
    return rendered.shared, rendered.own, rendered.preferred
