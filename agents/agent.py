"""The agent's core: exports out to the registry, imports in from it.

Driven by ``agents.main`` (kopf delivers watch events to the ``on_*_event``
methods; this class owns the background tasks). Everything is level-triggered:

* **Exports.** In-memory caches of ServiceExports, Services, EndpointSlices and
  Namespaces are fed by watch events and by a periodic full LIST. Any change
  queues the affected service; its worker rebuilds the full record from the
  caches and publishes it if it differs from what was last published, or
  withdraws it. On start, and whenever the lease renewal reports that the
  registry lost our data, the whole state is republished atomically
  (``replace_all``), so exports deleted while the agent was down disappear.
* **Imports.** A :class:`RegistryWatcher` follows every cluster; for each
  changed service the import worker makes this cluster's ServiceImport, derived
  Service and EndpointSlices match the merge of all exports, and deletes them
  when no export is left. Namespaces that do not exist get no import.
* **Status.** ``agents.status`` is the only writer of ``.status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents import k8s_objects as objs
from agents.gateway import GatewayAgent
from agents.kube import Kube, KubeError, path
from agents.status import StatusWriter
from agents.workqueue import KeyQueue
from federation.errors import FederationError
from federation.model.conditions import (
    ValidityProblem,
    export_conditions,
    import_conditions,
)
from federation.model.imports import merge_exports
from federation.registry.hub_state import HubStateReader
from federation.registry.kinds import Kind, Record, RecordRef
from federation.registry.records import ClusterRecord, ExportedService
from federation.registry.store import RegistryReader, RegistryWriter
from federation.registry.watcher import Change, RegistryWatcher, ServiceName, service_names

log = logging.getLogger(__name__)

VERSION = "0.1.0"
EXPORTS = path(objs.MCS_GROUP, objs.MCS_VERSION, "serviceexports")
IMPORTS = path(objs.MCS_GROUP, objs.MCS_VERSION, "serviceimports")
SERVICES = path("", "v1", "services")
SLICES = path("discovery.k8s.io", "v1", "endpointslices")
NAMESPACES = path("", "v1", "namespaces")
OURS = f"{objs.OWNER_LABEL}={objs.OWNER}"


@dataclass(frozen=True)
class AgentOptions:
    cluster: str
    #: Other clusters never see this agent stale while it pauses for less than this.
    lease_ttl: float = 10.0
    resync_interval: float = 60.0
    #: Withdraw a stale cluster's exports after this many seconds; None: never (fail-static).
    withdraw_stale_after: float | None = None
    workers: int = 8

    @property
    def renew_interval(self) -> float:
        return self.lease_ttl / 3

    @property
    def lease_key_ttl_ms(self) -> int:
        """The lease key outlives the next renewal by the whole TTL: an agent that pauses
        just before renewing is tolerated ``lease_ttl``, not ``lease_ttl`` minus the
        renewal interval."""
        return int((self.lease_ttl + self.renew_interval) * 1000)


def _key(obj: Mapping[str, Any]) -> ServiceName:
    meta = obj["metadata"]
    return meta["namespace"], meta["name"]


@dataclass
class Caches:
    """This cluster's objects that exports are built from, keyed by service."""

    exports: dict[ServiceName, dict[str, Any]] = field(default_factory=dict)
    services: dict[ServiceName, dict[str, Any]] = field(default_factory=dict)
    slices: dict[ServiceName, dict[str, dict[str, Any]]] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)
    #: Labels of each namespace (a Gateway listener's allowedRoutes may select on them).
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)


def slice_owner(obj: Mapping[str, Any]) -> ServiceName | None:
    """The service a (non-imported) EndpointSlice belongs to."""
    labels = obj["metadata"].get("labels") or {}
    if labels.get(objs.MANAGED_BY_LABEL) == objs.MANAGED_BY:
        return None  # our own import slices are not exported back
    service = labels.get(objs.K8S_SERVICE_NAME_LABEL)
    return (obj["metadata"]["namespace"], service) if service else None


class Agent:
    def __init__(
        self,
        options: AgentOptions,
        kube: Kube,
        writer: RegistryWriter,
        reader: RegistryReader,
        hub_state: HubStateReader | None = None,
    ) -> None:
        self.options = options
        self.cluster = options.cluster
        self.kube = kube
        self.writer = writer
        self.caches = Caches()
        self.published: dict[ServiceName, ExportedService] = {}
        self.problems: dict[ServiceName, ValidityProblem] = {}
        self.publish_errors: dict[ServiceName, str] = {}
        self.status = StatusWriter(kube)
        self.watcher = RegistryWatcher(
            reader,
            self._on_registry_change,
            withdraw_stale_after=options.withdraw_stale_after,
        )
        self.export_queue: KeyQueue[ServiceName] = KeyQueue(
            "exports", self._sync_export, workers=options.workers
        )
        self.import_queue: KeyQueue[ServiceName] = KeyQueue(
            "imports", self._sync_import, workers=options.workers
        )
        self.gateway = GatewayAgent(options.cluster, kube, writer, self.status, hub_state)
        self.ready = asyncio.Event()
        #: api path -> (fingerprint of what we applied, the apiserver's answer)
        self._applied: dict[str, tuple[str, dict[str, Any]]] = {}
        #: our EndpointSlices per import, as listed or last written
        self._slices: dict[ServiceName, dict[str, dict[str, Any]]] = {}
        #: api paths of the derived Services we own, as listed or last written
        self._derived: set[str] = set()
        self._token = uuid.uuid4().hex

    # --- watch events (called by kopf) --------------------------------------

    def on_export_event(self, kind: str | None, body: Mapping[str, Any]) -> None:
        key = _key(body)
        if kind == "DELETED":
            self.caches.exports.pop(key, None)
        else:
            self.caches.exports[key] = dict(body)
        self.export_queue.add(key)

    def on_service_event(self, kind: str | None, body: Mapping[str, Any]) -> None:
        key = _key(body)
        if kind == "DELETED":
            self.caches.services.pop(key, None)
        else:
            self.caches.services[key] = dict(body)
        if key in self.caches.exports or key in self.published:
            self.export_queue.add(key)
        self.gateway.dirty.set()  # a route may send to it

    def on_slice_event(self, kind: str | None, body: Mapping[str, Any]) -> None:
        key = slice_owner(body)
        if key is None:
            return
        name = body["metadata"]["name"]
        slices = self.caches.slices.setdefault(key, {})
        if kind == "DELETED":
            slices.pop(name, None)
        else:
            slices[name] = dict(body)
        if key in self.caches.exports or key in self.published:
            self.export_queue.add(key)
        if RecordRef(Kind.LOCAL_SERVICE, *key) in self.gateway.published:
            self.gateway.dirty.set()  # a route sends to this Service

    def on_gateway_event(self, plural: str, kind: str | None, body: Mapping[str, Any]) -> None:
        self.gateway.on_event(plural, kind, body)

    def on_namespace_event(self, kind: str | None, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        labels = dict(body["metadata"].get("labels") or {})
        if kind != "DELETED" and self.caches.namespace_labels.get(name) != labels:
            self.caches.namespace_labels[name] = labels
            self.gateway.dirty.set()
        terminating = (body.get("status") or {}).get("phase") == "Terminating"
        if kind == "DELETED" or terminating:
            self.caches.namespaces.discard(name)
        elif name not in self.caches.namespaces:
            self.caches.namespaces.add(name)
            for ns, svc in self.watcher.service_names():
                if ns == name:
                    self.import_queue.add((ns, svc))

    # --- start-up, resync, lease --------------------------------------------

    async def list_all(self) -> None:
        """Replace the caches with a full LIST (start-up, before any watch event)."""
        listing = await self._list_everything()
        self.caches = Caches()
        self._merge_listing(listing)
        self.gateway.replace(await self.gateway.list_all())

    async def _list_everything(self) -> list[tuple[list[dict[str, Any]], str]]:
        return list(
            await asyncio.gather(
                self.kube.list_versioned(EXPORTS),
                self.kube.list_versioned(SERVICES),
                self.kube.list_versioned(SLICES),
                self.kube.list_versioned(NAMESPACES),
            )
        )

    def _merge_listing(self, listing: list[tuple[list[dict[str, Any]], str]]) -> set[ServiceName]:
        """Fold a LIST into the caches without undoing newer watch events.

        An entry is replaced only by a newer version and dropped only if it is
        older than the LIST: a watch event applied while the LIST was in flight
        wins. Returns the services whose objects changed.
        """
        (exports, ex_rv), (services, svc_rv), (slices, sl_rv), (namespaces, _) = listing
        changed: set[ServiceName] = set()
        changed |= _fold(self.caches.exports, {_key(o): o for o in exports}, ex_rv)
        changed |= _fold(self.caches.services, {_key(o): o for o in services}, svc_rv)
        by_owner: dict[ServiceName, dict[str, dict[str, Any]]] = {}
        for s in slices:
            owner = slice_owner(s)
            if owner is not None:
                by_owner.setdefault(owner, {})[s["metadata"]["name"]] = s
        for owner in set(by_owner) | set(self.caches.slices):
            current = self.caches.slices.setdefault(owner, {})
            if _fold(current, by_owner.get(owner, {}), sl_rv):
                changed.add(owner)
        self.caches.namespaces = {
            n["metadata"]["name"]
            for n in namespaces
            if (n.get("status") or {}).get("phase") != "Terminating"
        }
        self.caches.namespace_labels = {
            n["metadata"]["name"]: dict(n["metadata"].get("labels") or {}) for n in namespaces
        }
        return changed

    def _current_records(self) -> dict[ServiceName, ExportedService]:
        records = {}
        for key, export in self.caches.exports.items():
            built = objs.build_record(
                self.cluster,
                export,
                self.caches.services.get(key),
                self.caches.slices.get(key, {}).values(),
            )
            if isinstance(built, ExportedService):
                records[key] = built
        return records

    def _desired_gateway_records(self) -> dict[RecordRef, Record]:
        return self.gateway.desired(
            self.caches.services, self.caches.slices, self.caches.namespace_labels
        )

    async def publish_everything(self) -> None:
        """Make the registry hold exactly this cluster's current records, atomically:
        its exports and its Gateway API configuration."""
        records = self._current_records()
        gateway_records = self._desired_gateway_records()
        await self.writer.replace_all(
            [*records.values(), *gateway_records.values()],
            ClusterRecord(
                self.cluster, VERSION, time.time(), uuid.uuid4().hex, self.options.lease_ttl
            ),
        )
        self.published = records
        self.gateway.published = dict(gateway_records)
        self.gateway.dirty.set()
        self.publish_errors.clear()
        await self.writer.renew_lease(self.options.lease_key_ttl_ms, self._token)
        for key in set(self.caches.exports) | set(records):
            self.export_queue.add(key)
        log.info("published full state", extra={"cluster": self.cluster, "services": len(records)})

    async def _lease_loop(self) -> None:
        interval = self.options.renew_interval
        while True:
            await asyncio.sleep(interval)  # the renewal period, not synchronisation
            try:
                ok = await self.writer.renew_lease(self.options.lease_key_ttl_ms, self._token)
                if not ok:
                    log.warning("registry lost this cluster's data; republishing")
                    await self.publish_everything()
            except FederationError as err:
                log.warning("lease renewal failed: %s", err)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync_interval)  # period of the resync
            try:
                self._merge_listing(await self._list_everything())
                for key in set(self.caches.exports) | set(self.published):
                    self.export_queue.add(key)
                await self._queue_all_imports()
            except FederationError as err:
                log.warning("periodic resync failed: %s", err)

    async def _queue_all_imports(self) -> None:
        """Queue every import that should exist and everything we own that may not.

        Derived Services and EndpointSlices are listed too, so leftovers of an
        import whose ServiceImport is already gone are found and deleted. The
        listing also refreshes what the import worker believes exists, and
        forgets what it applied, so drift made by others is corrected.
        """
        imports, services, slices = await asyncio.gather(
            self.kube.list_items(IMPORTS, OURS),
            self.kube.list_items(SERVICES, OURS),
            self.kube.list_items(SLICES, OURS),
        )
        self._applied.clear()
        self.status.forget()
        self._slices = {}
        self._derived = {
            path("", "v1", "services", o["metadata"]["namespace"], o["metadata"]["name"])
            for o in services
        }
        for s in slices:
            owner = _owned_key(s)
            self._slices.setdefault(owner, {})[s["metadata"]["name"]] = s
        keys = {_owned_key(o) for items in (imports, services, slices) for o in items}
        for key in keys | self.watcher.service_names():
            self.import_queue.add(key)

    async def run(self) -> None:
        """Start up, then run every background task until cancelled."""
        await self.list_all()
        await self.publish_everything()
        tasks = [
            _guarded("registry-watcher", self.watcher.run),
            _guarded("export-worker", self.export_queue.run),
            _guarded("import-worker", self.import_queue.run),
            _guarded("lease", self._lease_loop),
            _guarded("resync", self._resync_loop),
            _guarded("gateway-sync", self._gateway_loop),
            _guarded("gateway-programmed", self.gateway.poll_programmed),
        ]
        running = [asyncio.create_task(coro, name=name) for name, coro in tasks]
        try:
            await self.watcher.loaded.wait()
            await self._queue_all_imports()
            self.ready.set()
            await asyncio.gather(*running)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            with contextlib.suppress(FederationError):
                await self.writer.release_lease()

    # --- workers --------------------------------------------------------------

    async def _on_registry_change(self, changed: set[Change]) -> None:
        services = service_names(changed)
        for key in services:
            self.import_queue.add(key)
            if key in self.caches.exports:
                self.export_queue.add(key)  # conflicts may have changed
        if services and self.gateway.published:
            self.gateway.dirty.set()  # a route's ServiceImport may have come or gone

    async def _gateway_loop(self) -> None:
        """Sync the Gateway API side whenever something it depends on changed."""
        while True:
            await self.gateway.dirty.wait()
            await asyncio.sleep(0.02)  # let a burst of events settle: one sync for all of it
            self.gateway.dirty.clear()
            try:
                await self.gateway.publish(self._desired_gateway_records())
                await self.gateway.write_statuses(
                    e for view in self.watcher.views.values() for e in view.services.values()
                )
                self.gateway.syncs += 1
            except FederationError as err:
                log.warning("Gateway API sync failed, retrying: %s", err)
                await asyncio.sleep(1.0)  # retry backoff, not synchronisation
                self.gateway.dirty.set()

    async def _sync_export(self, key: ServiceName) -> None:
        export = self.caches.exports.get(key)
        built = (
            objs.build_record(
                self.cluster,
                export,
                self.caches.services.get(key),
                self.caches.slices.get(key, {}).values(),
            )
            if export is not None
            else None
        )
        record = built if isinstance(built, ExportedService) else None
        try:
            if record is None and key in self.published:
                await self.writer.withdraw(RecordRef(Kind.SERVICE, *key))
                del self.published[key]
            elif record is not None and self.published.get(key) != record:
                await self.writer.publish(record)
                self.published[key] = record
            self.publish_errors.pop(key, None)
        except FederationError as err:
            self.publish_errors[key] = str(err)
        if export is None:
            self.problems.pop(key, None)
            return
        problem = built if isinstance(built, ValidityProblem) else None
        others = [e for e in self.watcher.exports(*key) if e.cluster != self.cluster]
        merged = merge_exports([*others, record]) if record is not None else None
        conditions = export_conditions(
            cluster=self.cluster,
            service_problem=problem,
            published=key in self.published,
            publish_error=self.publish_errors.get(key),
            merged=merged,
        )
        await self.status.export_status(export, conditions)

    async def _apply_cached(self, api_path: str, desired: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply unless this exact object was applied since the last resync."""
        fingerprint = json.dumps(desired, sort_keys=True)
        cached = self._applied.get(api_path)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        result = await self.kube.apply(api_path, desired)
        self._applied[api_path] = (fingerprint, result)
        if desired.get("kind") == "Service":
            self._derived.add(api_path)
        return result

    async def _delete_cached(self, api_path: str) -> None:
        self._applied.pop(api_path, None)
        self._derived.discard(api_path)
        await self.kube.delete(api_path)

    async def _sync_import(self, key: ServiceName) -> None:
        namespace, name = key
        exports = self.watcher.exports(namespace, name)
        if not exports or namespace not in self.caches.namespaces:
            await self._delete_import(namespace, name)
            return
        merged = merge_exports(exports)
        ips: list[str] = []
        families: list[str] | None = None
        derived_path = path("", "v1", "services", namespace, objs.derived_service_name(name))
        if merged.type.value == "ClusterSetIP":
            derived = await self._apply_cached(derived_path, objs.derived_service(merged))
            ips = [ip for ip in derived["spec"].get("clusterIPs") or [] if ip != "None"]
            families = list(derived["spec"].get("ipFamilies") or [])
        elif derived_path in self._derived:
            await self._delete_cached(derived_path)  # was ClusterSetIP before
        applied = await self._apply_cached(
            path(objs.MCS_GROUP, objs.MCS_VERSION, "serviceimports", namespace, name),
            objs.service_import(merged, ips, families),
        )
        await self._sync_slices(namespace, name, objs.import_slices(merged, exports))
        stale = sorted(self.watcher.stale_clusters() & set(merged.clusters))
        conditions = import_conditions(
            stale_clusters=stale,
            withdrawn_clusters=self.watcher.withdrawn_exporters(namespace, name),
            lease_ttls={c: self.watcher.lease_ttl(c) for c in stale},
            withdraw_after_seconds=self.options.withdraw_stale_after,
        )
        await self.status.import_status(applied, merged.clusters, conditions)

    async def _sync_slices(self, namespace: str, name: str, desired: list[dict[str, Any]]) -> None:
        """Make our EndpointSlices for the import match ``desired``.

        What exists is known from the last full listing plus our own writes,
        so a steady-state sync costs no LIST per import.
        """
        existing = self._slices.setdefault((namespace, name), {})
        wanted = {s["metadata"]["name"] for s in desired}
        for s in desired:
            slice_name = s["metadata"]["name"]
            if not _same_slice(existing.get(slice_name), s):
                await self.kube.apply(
                    path("discovery.k8s.io", "v1", "endpointslices", namespace, slice_name), s
                )
                existing[slice_name] = s
        for stale in set(existing) - wanted:
            await self.kube.delete(
                path("discovery.k8s.io", "v1", "endpointslices", namespace, stale)
            )
            del existing[stale]
        if not existing:
            del self._slices[(namespace, name)]

    async def _delete_import(self, namespace: str, name: str) -> None:
        await self._sync_slices(namespace, name, [])
        await self._delete_cached(
            path("", "v1", "services", namespace, objs.derived_service_name(name))
        )
        await self._delete_cached(
            path(objs.MCS_GROUP, objs.MCS_VERSION, "serviceimports", namespace, name)
        )


def _owned_key(obj: Mapping[str, Any]) -> ServiceName:
    """The import an object we own belongs to."""
    meta = obj["metadata"]
    labels = meta.get("labels") or {}
    return meta["namespace"], labels.get(objs.SERVICE_NAME_LABEL) or meta["name"]


def _rv(obj: Mapping[str, Any]) -> int:
    # resourceVersions are opaque, but the apiserver's come from etcd revisions:
    # comparing them as numbers is what "newer" means on a single apiserver.
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def _fold(
    cache: dict[Any, dict[str, Any]], listed: Mapping[Any, dict[str, Any]], list_rv: str
) -> set[Any]:
    changed = set()
    for key, obj in listed.items():
        if key not in cache or _rv(cache[key]) < _rv(obj):
            cache[key] = obj
            changed.add(key)
    limit = int(list_rv) if list_rv.isdigit() else 0
    for key in set(cache) - set(listed):
        if _rv(cache[key]) <= limit:
            del cache[key]
            changed.add(key)
    return changed


def _same_slice(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    if current is None:
        return False
    labels = current["metadata"].get("labels") or {}
    return (
        all(labels.get(k) == v for k, v in desired["metadata"]["labels"].items())
        and current.get("addressType") == desired["addressType"]
        and (current.get("ports") or []) == desired["ports"]
        and _endpoints_view(current) == desired["endpoints"]
    )


def _endpoints_view(slice_: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for e in slice_.get("endpoints") or []:
        item = {k: v for k, v in e.items() if k in ("addresses", "conditions", "zone", "hostname")}
        out.append(item)
    return out


def _guarded(
    name: str, body: Callable[[], Awaitable[None]]
) -> tuple[str, Coroutine[Any, Any, None]]:
    """Run a background task, logging (not swallowing) its crash."""

    async def run() -> None:
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s crashed", name)
            raise

    return name, run()


__all__ = ["Agent", "AgentOptions", "KubeError"]
