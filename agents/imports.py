"""Imports in: every cluster's exports become this cluster's ServiceImports.

Part of the agent (``agents.agent`` wires it). For each exported service the
registry watcher reports as changed, the worker makes this cluster's
ServiceImport, derived Service (ClusterSetIP imports) and imported EndpointSlices
match the merge of all exports, and deletes them when no export is left or the
namespace does not exist here.

The agent owns those objects, and they heal at once: it watches them, and an
object someone else deleted or changed (anything it set no longer there) is
reconciled within the normal propagation time, not at the next full resync. A
derived Service created again keeps its clusterset IPs where the apiserver still
has them free. What exists is known from the last full listing plus the agent's
own writes, so a steady-state sync costs no LIST.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import dns.exception

from agents import k8s_objects as objs
from agents import kinds as k
from agents.kinds import KubeObject, meta
from agents.kube import Kube, KubeError
from agents.status import StatusWriter
from agents.trace import TraceBook
from agents.workqueue import KeyQueue, RetryLater
from federation.debug_payloads import ImportStep
from federation.dns.records import imported_service
from federation.dns.zone import Zone
from federation.model.conditions import import_conditions
from federation.model.imports import MergedImport, merge_exports
from federation.registry.records import ExportedService, ServiceType
from federation.registry.watcher import RegistryWatcher, ServiceName

OURS = f"{objs.OWNER_LABEL}={objs.OWNER}"
#: How long a derived Service created again waits for its old clusterset IPs.
PIN_PATIENCE = 10.0
log = logging.getLogger(__name__)


class IPFamilyNotSupported(Exception):
    """This cluster has none of an import's IP families: no clusterset IP here."""


@dataclass(frozen=True)
class Applied:
    """What the agent last applied to one object, and the apiserver's answer."""

    fingerprint: str
    desired: KubeObject
    result: KubeObject


def owned(obj: KubeObject) -> bool:
    return (meta(obj).get("labels") or {}).get(objs.OWNER_LABEL) == objs.OWNER


def owned_key(obj: KubeObject) -> ServiceName:
    """The import an object the agent owns belongs to."""
    m = meta(obj)
    return m["namespace"], (m.get("labels") or {}).get(objs.SERVICE_NAME_LABEL) or m["name"]


class ImportReconciler:
    """Keeps this cluster's ServiceImports and what belongs to them in step."""

    def __init__(
        self,
        cluster: str,
        kube: Kube,
        watcher: RegistryWatcher,
        status: StatusWriter,
        *,
        workers: int,
        withdraw_stale_after: float | None,
    ) -> None:
        self.cluster = cluster
        self.kube = kube
        self.watcher = watcher
        self.status = status
        self.withdraw_stale_after = withdraw_stale_after
        #: Namespaces that exist and are not being deleted: imports go only there.
        self.namespaces: set[str] = set()
        self.queue: KeyQueue[ServiceName] = KeyQueue("imports", self.sync, workers=workers)
        #: api path -> what we last applied there (ServiceImports and derived Services).
        self._applied: dict[str, Applied] = {}
        #: our EndpointSlices per import, as listed or last written
        self._slices: dict[ServiceName, dict[str, KubeObject]] = {}
        #: The clusterset IPs each import's derived Service last had.
        self._ips: dict[ServiceName, list[str]] = {}
        #: IP families this cluster has no Service IPs of, as the apiserver said when it
        #: refused them (forgotten at each full listing: a cluster may gain a family).
        self.missing_families: frozenset[str] = frozenset()
        #: When the apiserver first refused an import's old IPs, while it still refuses.
        self._pin_refused: dict[ServiceName, float] = {}
        #: Objects repaired after someone else deleted or changed them.
        self.repairs = 0
        #: Paths of objects someone else deleted or changed: written again whatever the
        #: caches say (the mark is taken before the write, so a later event sets it again).
        self._damaged: set[str] = set()
        #: Paths this agent is deleting: their DELETED events are no damage.
        self._deleting: set[str] = set()
        #: When each ServiceImport was last written, reflecting which entries (fedctl trace).
        self.trace: TraceBook[ImportStep] = TraceBook()
        #: This cluster's clusterset.local: an import's names appear once its ServiceImport
        #: is written and go before it is deleted (the serial starts at the clock, so that
        #: it increases across restarts).
        self.zone = Zone(serial=int(time.time()))

    # --- events ------------------------------------------------------------------------

    def on_registry_change(self, services: set[ServiceName]) -> None:
        for key in services:
            self.queue.add(key)

    def on_namespace(self, name: str, present: bool) -> None:
        """A namespace appeared (``present``), or went or started terminating."""
        if present and name not in self.namespaces:
            self.namespaces.add(name)
            for ns, svc in self.watcher.service_names():
                if ns == name:
                    self.queue.add((ns, svc))
        elif not present and name in self.namespaces:
            self.namespaces.discard(name)
            self._forget_namespace(name)

    def on_owned(self, kind: k.ApiKind, event: str | None, obj: KubeObject) -> None:
        """A watch event of an object the agent owns: if it is not what the agent last
        wrote, someone else deleted or changed it, and its import is reconciled now."""
        if not owned(obj):
            return
        key = owned_key(obj)
        path = kind.path_of(obj)
        if event == "DELETED":
            # Ours to delete only if we did: a deletion that arrives before the agent has
            # recorded its own write of the object is someone else's.
            intact = path in self._deleting
            self._deleting.discard(path)
        elif kind is k.ENDPOINT_SLICES:
            desired = self._slices.get(key, {}).get(meta(obj)["name"])
            intact = desired is not None and _same_slice(obj, desired)
        else:
            applied = self._applied.get(path)
            intact = applied is not None and objs.contains(obj, applied.desired)
        if not intact:
            if kind is k.ENDPOINT_SLICES:
                self._slices.get(key, {}).pop(meta(obj)["name"], None)
            else:
                self._applied.pop(path, None)
        if not intact:
            # A sync in flight may record the object as written after this event (its
            # write was answered before the deletion): the next sync writes it anyway.
            self._damaged.add(path)
            self.repairs += 1
            self.queue.add(key)

    def _forget_namespace(self, namespace: str) -> None:
        """What the agent believes exists there went with the namespace (or will): a
        namespace that comes back gets its imports written afresh, not skipped as
        already applied."""
        for key in [key for key in self.zone.imports() if key[0] == namespace]:
            self.zone.remove(*key)
        marker = f"/namespaces/{namespace}/"
        for path in [p for p in self._applied if marker in p]:
            del self._applied[path]
        for key in [key for key in self._slices if key[0] == namespace]:
            del self._slices[key]

    # --- full listing (start-up and the periodic resync) ----------------------------------

    async def queue_all(self) -> None:
        """Queue every import that should exist and everything we own that may not.

        Derived Services and EndpointSlices are listed too, so leftovers of an import
        whose ServiceImport is already gone are found and deleted. The listing also
        refreshes what the worker believes exists and forgets what it applied, so
        drift made by others is corrected.
        """
        imports, services, slices = await asyncio.gather(
            *(
                self.kube.list_items(kind.path(), OURS)
                for kind in (k.SERVICE_IMPORTS, k.SERVICES, k.ENDPOINT_SLICES)
            )
        )
        self._applied.clear()
        self.missing_families = frozenset()
        self.status.forget()
        self._slices = {}
        for s in slices:
            self._slices.setdefault(owned_key(s), {})[meta(s)["name"]] = s
        keys = {owned_key(o) for items in (imports, services, slices) for o in items}
        for key in keys | self.watcher.service_names():
            self.queue.add(key)

    # --- the worker ------------------------------------------------------------------------

    async def sync(self, key: ServiceName) -> None:
        namespace, name = key
        # What this sync reflects: every entry up to here of each exporter's stream.
        positions = {
            c: position[0] for c in self.watcher.views if (position := self.watcher.position(c))
        }
        exports = self.watcher.exports(namespace, name)
        if not exports or namespace not in self.namespaces:
            await self._delete_import(namespace, name)
            return
        merged = merge_exports(exports)
        ips: list[str] = []
        families: list[str] | None = None
        family_problem: str | None = None
        derived_path = k.SERVICES.path(namespace, objs.derived_service_name(name))
        cluster_set_ip = merged.type is ServiceType.CLUSTER_SET_IP
        if cluster_set_ip:
            try:
                ips, families = await self._apply_derived(key, merged, derived_path)
            except IPFamilyNotSupported as err:
                family_problem = str(err)
        if (not cluster_set_ip or family_problem) and (
            derived_path in self._applied or key in self._ips
        ):
            await self._delete(derived_path)  # was ClusterSetIP (of a family here) before
            self._ips.pop(key, None)
        applied = await self._apply(
            k.SERVICE_IMPORTS.path(namespace, name), objs.service_import(merged, ips, families)
        )
        await self._sync_slices(namespace, name, objs.import_slices(merged, exports))
        self._put_in_zone(namespace, merged, exports, ips)
        stale = sorted(self.watcher.stale_clusters() & set(merged.clusters))
        conditions = import_conditions(
            stale_clusters=stale,
            withdrawn_clusters=self.watcher.withdrawn_exporters(namespace, name),
            lease_ttls={c: self.watcher.lease_ttl(c) for c in stale},
            withdraw_after_seconds=self.withdraw_stale_after,
            ip_family_problem=family_problem,
        )
        await self.status.import_status(applied, merged.clusters, conditions)
        self.trace.record(key, ImportStep(written_at=time.time(), positions=positions))

    def _put_in_zone(
        self,
        namespace: str,
        merged: MergedImport,
        exports: list[ExportedService],
        ips: list[str],
    ) -> None:
        """The import's names in the zone, unless its namespace went while the sync was
        writing (its names went with it). DNS never holds the ServiceImport back: a name
        the zone cannot take is logged, and the import is synced all the same."""
        if namespace not in self.namespaces:
            return
        try:
            self.zone.put(imported_service(merged, exports, ips))
        except (ValueError, dns.exception.DNSException) as err:
            log.warning("import %s/%s: not in clusterset.local: %s", namespace, merged.name, err)

    async def _apply_derived(
        self, key: ServiceName, merged: MergedImport, path: str
    ) -> tuple[list[str], list[str]]:
        """Apply the derived Service; its clusterset IPs and families.

        Created again (deleted by someone, or its namespace came back), it asks for the
        IPs it had, so that clients holding them keep working; if the apiserver refuses
        them (taken meanwhile), it takes new ones.
        """
        pinned = self._ips.get(key) if path not in self._applied else None
        families = objs.usable_families(merged, self.missing_families)
        if merged.ip_families and not families:
            raise IPFamilyNotSupported(
                f"the import's IP families are {', '.join(merged.ip_families)}, and this "
                "cluster's Service CIDRs have none of them, so it gets no clusterset IP here"
            )
        desired = objs.derived_service(merged, pinned_ips=pinned, families=families or None)
        try:
            derived = await self._apply(path, desired)
        except KubeError as err:
            refused = objs.refused_families(str(err)) if err.status == 422 else frozenset()
            if refused - self.missing_families:
                # Learned: this cluster lacks these families. Try again without them.
                self.missing_families |= refused
                return await self._apply_derived(key, merged, path)
            if not pinned or err.status != 422:
                raise
            # The apiserver releases a deleted Service's IPs asynchronously: wait a little
            # for them before giving them up.
            first = self._pin_refused.setdefault(key, time.monotonic())
            if "already allocated" in str(err) and time.monotonic() - first < PIN_PATIENCE:
                raise RetryLater(f"clusterset IPs {pinned} not released yet") from err
            log.warning(
                "derived Service %s could not get its clusterset IPs %s back, taking new ones: %s",
                path, pinned, err,
            )  # fmt: skip
            derived = await self._apply(
                path, objs.derived_service(merged, families=families or None)
            )
        self._pin_refused.pop(key, None)
        spec = derived.get("spec") or {}
        ips = [ip for ip in spec.get("clusterIPs") or [] if ip != "None"]
        self._ips[key] = ips
        return ips, list(spec.get("ipFamilies") or [])

    async def _apply(self, path: str, desired: dict[str, Any]) -> KubeObject:
        """Server-side apply unless this exact object was applied and is intact."""
        fingerprint = json.dumps(desired, sort_keys=True)
        cached = self._applied.get(path)
        damaged = path in self._damaged
        self._damaged.discard(path)
        self._deleting.discard(path)  # written again: a late DELETED event is no longer ours
        if cached is not None and cached.fingerprint == fingerprint and not damaged:
            return cached.result
        result = await self.kube.apply(path, desired)
        self._applied[path] = Applied(fingerprint, desired, result)
        return result

    async def _delete(self, path: str) -> None:
        self._applied.pop(path, None)
        self._damaged.discard(path)
        self._deleting.add(path)
        await self.kube.delete(path)

    async def _sync_slices(self, namespace: str, name: str, desired: list[dict[str, Any]]) -> None:
        """Make our EndpointSlices for the import match ``desired``."""
        existing = self._slices.setdefault((namespace, name), {})
        wanted = {s["metadata"]["name"] for s in desired}
        for s in desired:
            slice_name = s["metadata"]["name"]
            path = k.ENDPOINT_SLICES.path(namespace, slice_name)
            damaged = path in self._damaged
            self._damaged.discard(path)
            if damaged or not _same_slice(existing.get(slice_name), s):
                self._deleting.discard(path)
                await self.kube.apply(path, s)
                existing[slice_name] = s
        for stale in set(existing) - wanted:
            del existing[stale]
            path = k.ENDPOINT_SLICES.path(namespace, stale)
            self._damaged.discard(path)
            self._deleting.add(path)
            await self.kube.delete(path)
        if not existing:
            del self._slices[(namespace, name)]

    async def _delete_import(self, namespace: str, name: str) -> None:
        self.zone.remove(namespace, name)  # first: a name that is going stops resolving
        await self._sync_slices(namespace, name, [])
        await self._delete(k.SERVICES.path(namespace, objs.derived_service_name(name)))
        await self._delete(k.SERVICE_IMPORTS.path(namespace, name))
        # Namespace gone: keep the IPs, so that one that comes back gets them again.
        if namespace in self.namespaces:
            self._ips.pop((namespace, name), None)


def _same_slice(current: KubeObject | None, desired: KubeObject) -> bool:
    if current is None:
        return False
    labels = meta(current).get("labels") or {}
    return (
        all(labels.get(key) == value for key, value in desired["metadata"]["labels"].items())
        and current.get("addressType") == desired["addressType"]
        and (current.get("ports") or []) == desired["ports"]
        and _endpoints_view(current) == desired["endpoints"]
    )


_ENDPOINT_FIELDS = ("addresses", "conditions", "zone", "hostname")


def _endpoints_view(slice_: KubeObject) -> list[dict[str, Any]]:
    return [
        {key: value for key, value in e.items() if key in _ENDPOINT_FIELDS}
        for e in slice_.get("endpoints") or []
    ]
