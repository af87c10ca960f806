"""The hub's core: follows the registry and keeps the xDS snapshot cache in step with it.

Created by ``federation-hub`` (:mod:`federation.cli.hub`, which only parses arguments)
and by tests and benchmarks. :class:`Hub` wires a
:class:`~federation.registry.watcher.RegistryWatcher` to a
:class:`~federation.hub.snapshots.SnapshotBuilder`: every change of the registry becomes
a change of the node groups' snapshots, which the xDS server serves. It keeps no state
that cannot be rebuilt from the registry.

**Programmed.** With a hub state writer, the hub also publishes, per member cluster,
which generation of each Gateway every connected Envoy of that Gateway has applied
(:mod:`federation.hub.programmed`); the cluster's agent writes it as the Gateway's
``Programmed`` condition.

**Readiness.** Until the whole registry is loaded and the first snapshots are built, the
cache is not ready and the xDS server answers nothing: an Envoy that connects early waits
for a complete first response instead of getting empty config (which would make it drop
live traffic). A registry without any member cluster counts as not loaded: after a Redis
flush or a failover to an empty replica, a hub that restarts waits for the agents to
republish instead of telling every Envoy that nothing exists.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import Callable, Iterable

from federation.errors import FederationError, InvalidInputError
from federation.hub.extension import ExtensionStage
from federation.hub.programmed import ProgrammedPublisher
from federation.hub.snapshots import (
    GatewayResolver,
    PatchResolver,
    SnapshotBuilder,
    SnapshotOptions,
)
from federation.hub.trace import ChangeLog
from federation.model.imports import MergedImport, merge_exports
from federation.node_groups import cluster_of_group, gateway_group, parse_group
from federation.process import stop_tasks
from federation.programmed import STALE_AFTER
from federation.registry.failover import FailoverPolicyRecord
from federation.registry.gatewayapi import GatewayRecord
from federation.registry.hub_state import HubStateWriter
from federation.registry.kinds import GATEWAY_KINDS, Kind
from federation.registry.policies import BackendTrafficPolicyRecord
from federation.registry.store import RegistryReader
from federation.registry.watcher import (
    Change,
    RegistryWatcher,
    ServiceName,
    changed_clusters,
    service_names,
)
from federation.translate.failover import failover_policies, targets_of
from federation.translate.gateway import Resolved, resolve
from federation.translate.gateway.inputs import cluster_inputs
from federation.translate.gateway.patches import resolve_patches
from federation.translate.gateway.service_policies import (
    ServicePolicy,
    service_policies,
    targets_service_import,
)
from federation.translate.inputs import ImportView
from federation.translate.ir import FailoverIR, GatewayIR, PatchPolicyIR
from federation.translate.proxy import XdsResources
from federation.xds.snapshot import Resource, SnapshotCache
from federation.xds.status import SyncRegistry

log = logging.getLogger("federation.hub")


def freeze_loaded_heap() -> None:
    """Move every object alive now out of the cyclic garbage collector's reach.

    Called once the whole registry is loaded and translated: the model and the snapshots
    are long-lived and acyclic, and with them in the collected generations every
    collection walks hundreds of thousands of objects, which costs an endpoint change
    about a third of its CPU at 250k endpoints (``./e2e/dev bench translator``).
    Reference counting still frees frozen objects that are dropped later.
    """
    gc.collect()
    gc.freeze()


class Hub:
    """Registry in, xDS snapshots out.

    :meth:`run` follows the registry until cancelled. Tests drive it by hand instead:
    ``await hub.watcher.load()``, :meth:`publish_loaded`, then ``hub.watcher.step()``.
    """

    def __init__(
        self,
        reader: RegistryReader,
        cache: SnapshotCache,
        options: SnapshotOptions,
        *,
        withdraw_stale_after: float | None = None,
        block_ms: int = 500,
        check_interval: float = 0.5,
        freeze_heap: bool = True,
        hub_state: HubStateWriter | None = None,
        sync: SyncRegistry | None = None,
        extension: ExtensionStage | None = None,
        extension_retry: float = 2.0,
        behind_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self._behind_after = behind_after
        self.options = options
        #: Per member cluster, the generation of each of its Gateways now served.
        self.gateway_generations: dict[str, dict[tuple[str, str], int]] = {}
        self.publisher = (
            None
            if hub_state is None or sync is None
            else ProgrammedPublisher(
                hub_state,
                sync,
                lambda: self.gateway_generations,
                uuid.uuid4().hex[:12],
                patches=lambda: self.builder.patch_outcomes,
                held_back=self.held_back,
            )
        )
        self.builder = SnapshotBuilder(cache, options)
        #: The extension server's stage: every group's translation goes through it before
        #: it is served (the builder holds them for it).
        self.extension = extension
        self.builder.hold = extension is not None
        self._extension_retry = extension_retry
        #: The groups the extension server is working on now.
        self._in_flight: set[str] = set()
        self.watcher = RegistryWatcher(
            reader,
            self._on_change,
            withdraw_stale_after=withdraw_stale_after,
            block_ms=block_ms,
            check_interval=check_interval,
            clock=clock,
            track_entries=True,  # for fedctl trace
        )
        self.ready = asyncio.Event()
        self._freeze_heap = freeze_heap
        #: What applies to each ServiceImport of every cluster's BackendTrafficPolicies
        #: (its exporters'): the cluster settings of its clusters in every node group.
        self._service_policies: dict[ServiceName, ServicePolicy] = {}
        #: The FailoverPolicies that apply to each ServiceImport, one per viewing cluster.
        self._failover: dict[ServiceName, tuple[FailoverIR, ...]] = {}
        #: The last update of each service's snapshots, for ``fedctl trace``.
        self.changes = ChangeLog()

    def _groups(self) -> set[str]:
        """Every node group: each member cluster's shared Envoys, and each of its
        Gateways' own Envoys (:mod:`federation.node_groups`)."""
        groups = set(self.watcher.views) | set(self.options.listener_addresses)
        for cluster in self.watcher.views:
            for record in self.watcher.records(cluster, Kind.GATEWAY).values():
                groups.add(gateway_group(cluster, record.namespace, record.name))
        return groups

    def _gateway_groups(self, clusters: Iterable[str]) -> set[str]:
        """The node groups of the Gateways of ``clusters``, as far as the hub knows them,
        and the clusters' shared groups (their clusterset listener's patches)."""
        wanted = set(clusters)
        return {g for g in self._groups() if cluster_of_group(g) in wanted}

    def clusterset_patches(self) -> PatchResolver:
        """For one update: the EnvoyPatchPolicies on each cluster's clusterset listener."""

        def of(group: str) -> tuple[PatchPolicyIR, ...]:
            cluster = cluster_of_group(group)
            records = list(self.watcher.records(cluster, Kind.ENVOY_PATCH_POLICY).values())
            if not records:
                return ()
            return resolve_patches(cluster_inputs(cluster, records, {})).clusterset

        return of

    def _view(self, key: ServiceName) -> ImportView | None:
        exports = self.watcher.exports(*key)
        if not exports:
            return None
        stale = self.watcher.stale_clusters() & {e.cluster for e in exports}
        applied = self._service_policies.get(key)
        settings = None if applied is None else applied.settings
        return ImportView.of(exports, stale, settings, self._failover.get(key, ()))

    def _merged(self, services: Iterable[ServiceName]) -> dict[ServiceName, MergedImport]:
        """The merged imports of those of ``services`` someone exports, from the watcher,
        not the builder: this update's exports are not built yet."""
        return {
            key: merge_exports(exports)
            for key in services
            if (exports := self.watcher.exports(*key))
        }

    def _failover_moved(self) -> set[ServiceName]:
        """Resolve the FailoverPolicies again; the services whose preferences changed."""
        policies = [
            r
            for cluster in self.watcher.views
            for r in self.watcher.records(cluster, Kind.FAILOVER_POLICY).values()
            if isinstance(r, FailoverPolicyRecord)
        ]
        before = self._failover
        if not policies and not before:
            return set()
        imports = self._merged({key for p in policies for key in targets_of(p)})
        after = failover_policies(policies, imports).applied
        self._failover = after
        return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}

    def _policies_moved(self) -> set[ServiceName]:
        """Resolve the policies on ServiceImports again; the services whose settings
        changed (a policy, or which cluster exports the service, did)."""
        policies = [
            r
            for cluster in self.watcher.views
            for r in self.watcher.records(cluster, Kind.BACKEND_TRAFFIC_POLICY).values()
            if isinstance(r, BackendTrafficPolicyRecord) and targets_service_import(r)
        ]
        before = self._service_policies
        if not policies and not before:
            return set()
        targeted = {(p.namespace, t.name) for p in policies for t in p.spec.targets()}
        after = service_policies(policies, self._merged(targeted)).applied
        self._service_policies = after
        return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}

    def gateway_resolver(self) -> GatewayResolver:
        """A resolver for one update: the first translation stage runs once per cluster
        (the same call its agent makes for statuses), and each Gateway's group gets its
        own part. A cluster's shared Envoys get no Gateway."""
        resolved: dict[str, Resolved | Exception | None] = {}

        def resolve_group(group: str) -> GatewayIR | None:
            parsed = parse_group(group)
            if parsed.gateway is None:
                return None
            if parsed.cluster not in resolved:
                try:
                    resolved[parsed.cluster] = self._resolve_cluster(parsed.cluster)
                except Exception as err:  # each of the cluster's groups reports it
                    resolved[parsed.cluster] = err
            result = resolved[parsed.cluster]
            if isinstance(result, Exception):
                raise result
            return None if result is None else result.gateway(*parsed.gateway)

        return resolve_group

    def _resolve_cluster(self, cluster: str) -> Resolved | None:
        records = [
            r for kind in GATEWAY_KINDS for r in self.watcher.records(cluster, kind).values()
        ]
        generations = {
            (r.namespace, r.name): r.generation for r in records if isinstance(r, GatewayRecord)
        }
        if not generations:
            self.gateway_generations.pop(cluster, None)
            return None
        result = resolve(cluster_inputs(cluster, records, self.builder.merged_imports()))
        # Only now: a generation that fails to translate is not being served, and its
        # Envoys' ACKs of the previous one must not make it Programmed.
        self.gateway_generations[cluster] = generations
        return result

    async def _on_change(self, changed: set[Change]) -> None:
        if not self.ready.is_set():
            if self.watcher.loaded.is_set() and self.watcher.views:
                await self.serve_loaded()  # the first member joined an empty registry
            return  # otherwise the initial build covers everything
        # ``changed`` may be empty: a member joined without exports, a new node group.
        services = service_names(changed)
        if services or any(c.ref.kind is Kind.BACKEND_TRAFFIC_POLICY for c in changed):
            services |= self._policies_moved()
        if services or any(c.ref.kind is Kind.FAILOVER_POLICY for c in changed):
            services |= self._failover_moved()
        routes = [c for c in changed if c.ref.kind in GATEWAY_KINDS]
        before = {g: self.cache.generation(g) for g in self.cache.groups()}
        groups = self._groups()
        self.builder.update(
            {key: self._view(key) for key in services},
            groups,
            self._gateway_groups(changed_clusters(changed, GATEWAY_KINDS)),
            self.gateway_resolver(),
            self.clusterset_patches(),
        )
        await self._post_translate(groups)
        if services or routes:  # for fedctl trace: which groups this update changed
            after = {g: self.cache.generation(g) for g in self.cache.groups()}
            moved = {g: gen for g, gen in after.items() if gen != before.get(g)}
            self._record_update(services, routes, moved)

    def _record_update(
        self, services: Iterable[ServiceName], routes: Iterable[Change], moved: dict[str, int]
    ) -> None:
        """For ``fedctl trace``: this update moved these groups' generations, having read
        each cluster's stream up to its position. A cluster's Gateway API records reach its
        own groups only."""
        positions = {c: p for c in self.watcher.views if (p := self.watcher.position(c))}
        read = {c: position for c, (position, _) in positions.items()}
        self.changes.record(services, moved, read)
        for change in routes:
            own = {g: n for g, n in moved.items() if cluster_of_group(g) == change.cluster}
            ref = change.ref
            self.changes.record(
                [(change.cluster, ref.kind.value, ref.namespace, ref.name)], own, read
            )

    async def _post_translate(self, groups: set[str]) -> None:
        """Run the groups the builder held through the extension server, and serve what
        it gives (per its fail policy: :mod:`federation.hub.extension`). No lock: a
        result whose group changed meanwhile is not committed (the builder's stamps)."""
        if self.extension is None:
            return
        held = self.builder.take_held()
        for group in set(self.extension.last) - groups:
            self.extension.forget(group)
        await asyncio.gather(
            *(self._extend(g, resources, stamp) for g, (resources, stamp) in sorted(held.items()))
        )

    def held_back(self) -> dict[str, str]:
        """The groups whose newest translation is not served yet, and why: the extension
        server failed closed on it (its error), or works on it, or it is to be run
        again ("")."""
        if self.extension is None:
            return {}
        waiting = self._in_flight | self.extension.due()
        failed = {
            g: f"not served: the extension server failed ({why})"
            for g, why in self.extension.failing_closed().items()
        }
        return {**{g: "" for g in waiting}, **failed}

    async def _extend(self, group: str, resources: XdsResources[Resource], stamp: int) -> None:
        """One group through the extension server, and what to serve of it."""
        extension = self.extension
        assert extension is not None
        self._in_flight.add(group)
        try:
            await self._extend_once(extension, group, resources, stamp)
        finally:
            self._in_flight.discard(group)

    async def _extend_once(
        self, extension: ExtensionStage, group: str, resources: XdsResources[Resource], stamp: int
    ) -> None:
        run = await extension.run(group, resources)
        if run.resources is None:
            return  # failed closed: what the group's Envoys have stays
        try:
            committed = self.builder.commit(group, run.resources, stamp)
        except InvalidInputError as err:  # an inconsistent result (checked in tests)
            log.error("the extension server's result for %s is refused: %s", group, err)
            refused = extension.refused(group, resources, str(err))
            committed = refused.resources is None or self.builder.commit(
                group, refused.resources, stamp
            )
        if not committed and self.builder.stamp(group) is not None:
            extension.retry(group)  # newer input was served meanwhile: run it again

    async def _retry_extension_forever(self) -> None:
        """Run the groups whose last run failed again, every ``extension_retry`` seconds,
        until they succeed; an error is logged, never the end of the retries."""
        while True:
            await asyncio.sleep(self._extension_retry)  # the retry period
            try:
                await self.retry_extension()
            except Exception:
                log.exception("retrying the extension server's failed groups failed")

    async def retry_extension(self) -> None:
        """Run each group whose last run through the extension server failed again, on
        its translation now (assignments may have moved since), all at once."""
        extension = self.extension
        assert extension is not None

        async def again(group: str) -> None:
            stamp = self.builder.stamp(group)
            if stamp is None:
                extension.forget(group)  # gone
            else:
                await self._extend(group, self.builder.resources(group), stamp)

        await asyncio.gather(*(again(g) for g in sorted(extension.due())))

    def not_ready(self) -> str | None:
        """Why ``/readyz`` says this hub is not ready, or None when it is: the registry
        not loaded yet, or (with ``behind_after``) reads of it failing for longer than
        that: a replica cut off from Redis while others may not be."""
        if not self.ready.is_set():
            return "loading the registry"
        failing = self.watcher.failing_for()
        if self._behind_after is not None and failing > self._behind_after:
            return f"behind the registry: its reads have failed for {failing:.0f} s"
        return None

    def publish_loaded(self) -> None:
        """Build every node group's snapshot from the loaded registry, then start serving
        (tests; with an extension server, the hub's own run awaits its calls first)."""
        self._build_loaded()
        if self.extension is None:
            self._mark_ready()

    async def serve_loaded(self) -> None:
        """:meth:`publish_loaded`, every group run through the extension server first
        when there is one."""
        self._build_loaded()
        await self._post_translate(self._groups())
        self._mark_ready()

    def _build_loaded(self) -> None:
        keys = self.watcher.service_names()
        self._policies_moved()
        self._failover_moved()
        self.builder.update(
            {key: self._view(key) for key in keys},
            self._groups(),
            self._groups(),
            self.gateway_resolver(),
            self.clusterset_patches(),
        )
        routes = [
            Change(cluster, ref)
            for cluster, view in self.watcher.views.items()
            for change in view.changes()
            if (ref := change.ref).kind in GATEWAY_KINDS
        ]
        self._record_update(
            keys, routes, {g: self.cache.generation(g) for g in self.cache.groups()}
        )

    def _mark_ready(self) -> None:
        if self._freeze_heap:
            freeze_loaded_heap()
        self.cache.mark_ready()
        self.ready.set()
        log.info(
            "hub ready",
            extra={"services": len(self.watcher.service_names()), "groups": len(self._groups())},
        )

    async def withdraw(self, timeout: float = 2.0) -> None:
        """Delete this replica's reports of what its Envoys applied (it is stopping and
        its Envoys go to other replicas), within ``timeout``; agents ignore what is left
        once it is STALE_AFTER old, and other replicas delete it then."""
        if self.publisher is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.publisher.withdraw()
        except (TimeoutError, FederationError) as err:
            log.warning(
                "could not delete this replica's Gateway reports (agents stop counting "
                "them after %g s): %s",
                STALE_AFTER,
                err or "timed out",
            )

    async def run(self) -> None:
        watcher = asyncio.create_task(self.watcher.run(), name="registry-watcher")
        publisher = (
            None
            if self.publisher is None
            else asyncio.create_task(self.publisher.run(), name="programmed-publisher")
        )
        retries = (
            None
            if self.extension is None
            else asyncio.create_task(self._retry_extension_forever(), name="extension-retries")
        )
        try:
            # The watcher raises before loading on a TLS misconfiguration: stop with it.
            loaded = asyncio.create_task(self.watcher.loaded.wait())
            await asyncio.wait([watcher, loaded], return_when=asyncio.FIRST_COMPLETED)
            loaded.cancel()
            if watcher.done():
                await watcher
                return
            if self.watcher.views:
                await self.serve_loaded()
            else:
                log.warning(
                    "the registry has no member clusters: serving nothing until one joins "
                    "(after a Redis flush or failover, agents republish within a third of "
                    "their lease TTL)"
                )
            await watcher
        finally:
            await stop_tasks(t for t in (watcher, publisher, retries) if t is not None)
            if self.extension is not None:
                await self.extension.close()
