"""Exports out: this cluster's ServiceExports become registry records.

Part of the agent (``agents.agent`` wires it). Level-triggered: caches of
ServiceExports, Services, EndpointSlices and Namespaces are fed by watch events
and by the periodic full LIST; any change queues the affected service, and its
worker rebuilds the whole record from the caches, publishes it if it differs
from what was last published (or withdraws it), and writes the export's
``Valid``/``Ready``/``Conflict`` conditions.

A ServiceExport in a namespace that is being deleted is withdrawn at once: its
owner is deleting everything in it, and remote clients should move to the other
clusters now rather than when the namespace controller gets to the export. Its
``Ready`` condition says why.

An ``exportedLabels`` or ``exportedAnnotations`` that every importing cluster's
apiserver would refuse never withdraws an export: the field is held back whole, a live
export keeps what it was last exported with (remembered per export), a new one is
exported without it, and ``ExportedMetadataValid=False`` names the keys and what was
kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from agents import k8s_objects as objs
from agents.kinds import KubeObject, key_of, meta
from agents.status import StatusWriter
from agents.trace import TraceBook, publish_time
from agents.workqueue import KeyQueue
from federation.debug_payloads import ExportStep
from federation.errors import FederationError
from federation.model.conditions import (
    ValidityProblem,
    export_conditions,
    exported_metadata_condition,
)
from federation.model.imports import merge_exports
from federation.registry.kinds import Kind, RecordRef
from federation.registry.records import ExportedService
from federation.registry.store import RegistryWriter
from federation.registry.watcher import RegistryWatcher, ServiceName

log = logging.getLogger(__name__)

Key = TypeVar("Key", ServiceName, str)


@dataclass
class Caches:
    """This cluster's objects that exports are built from, keyed by service."""

    exports: dict[ServiceName, KubeObject] = field(default_factory=dict)
    services: dict[ServiceName, KubeObject] = field(default_factory=dict)
    slices: dict[ServiceName, dict[str, KubeObject]] = field(default_factory=dict)
    #: Namespaces that exist and are not being deleted.
    namespaces: set[str] = field(default_factory=set)
    #: Namespaces being deleted: their exports are withdrawn.
    terminating: set[str] = field(default_factory=set)
    #: Labels of each namespace (a Gateway listener's allowedRoutes may select on them).
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)


def slice_owner(obj: KubeObject) -> ServiceName | None:
    """The service a (non-imported) EndpointSlice belongs to."""
    labels = meta(obj).get("labels") or {}
    if labels.get(objs.MANAGED_BY_LABEL) == objs.MANAGED_BY:
        return None  # our own import slices are not exported back
    service = labels.get(objs.K8S_SERVICE_NAME_LABEL)
    return (meta(obj)["namespace"], service) if service else None


class ExportReconciler:
    """Publishes and withdraws this cluster's exports, and writes their statuses."""

    def __init__(
        self,
        cluster: str,
        writer: RegistryWriter,
        watcher: RegistryWatcher,
        status: StatusWriter,
        *,
        workers: int,
    ) -> None:
        self.cluster = cluster
        self.writer = writer
        self.watcher = watcher
        self.status = status
        self.caches = Caches()
        #: When each export's latest change was taken up and published (fedctl trace).
        self.trace: TraceBook[ExportStep] = TraceBook()
        #: What the registry holds of ours, as last published.
        self.published: dict[ServiceName, ExportedService] = {}
        self.problems: dict[ServiceName, ValidityProblem] = {}
        #: What each export's labels and annotations are exported with (the field as
        #: written when valid, else the last valid one), by the export's
        #: creationTimestamp: a ServiceExport created again starts afresh.
        self.metadata: dict[ServiceName, tuple[str, objs.ExportedMetadata]] = {}
        self.publish_errors: dict[ServiceName, str] = {}
        self.queue: KeyQueue[ServiceName] = KeyQueue("exports", self.sync, workers=workers)

    # --- watch events -----------------------------------------------------------------

    def on_export(self, kind: str | None, body: KubeObject) -> None:
        key = key_of(body)
        if kind == "DELETED":
            self.caches.exports.pop(key, None)
            self.metadata.pop(key, None)
        else:
            self.caches.exports[key] = dict(body)
        self.queue.add(key)

    def on_service(self, kind: str | None, body: KubeObject) -> None:
        key = key_of(body)
        if kind == "DELETED":
            self.caches.services.pop(key, None)
        else:
            self.caches.services[key] = dict(body)
        self._queue_if_exported(key)

    def on_slice(self, kind: str | None, body: KubeObject) -> ServiceName | None:
        """Returns the service the slice belongs to (None for one of our imports)."""
        key = slice_owner(body)
        if key is None:
            return None
        slices = self.caches.slices.setdefault(key, {})
        if kind == "DELETED":
            slices.pop(meta(body)["name"], None)
        else:
            slices[meta(body)["name"]] = dict(body)
        self._queue_if_exported(key)
        return key

    def on_namespace(self, name: str, state: str) -> None:
        """``state``: "present", "terminating" or "gone"."""
        self.caches.namespaces.discard(name)
        self.caches.terminating.discard(name)
        if state == "present":
            self.caches.namespaces.add(name)
        elif state == "terminating":
            self.caches.terminating.add(name)
        if state != "gone":
            for key in self.caches.exports:
                if key[0] == name:
                    self.queue.add(key)

    def _queue_if_exported(self, key: ServiceName) -> None:
        if key in self.caches.exports or key in self.published:
            self.queue.add(key)

    def queue_all(self) -> None:
        for key in set(self.caches.exports) | set(self.published):
            self.queue.add(key)

    # --- listing -----------------------------------------------------------------------

    def replace(self, listing: Listing) -> None:
        """Replace the caches with a full LIST (start-up, before any watch event)."""
        self.caches = Caches()
        self.merge_listing(listing)

    def merge_listing(self, listing: Listing) -> set[ServiceName]:
        """Fold a LIST into the caches without undoing newer watch events.

        An entry is replaced only by a newer version and dropped only if it is
        older than the LIST: a watch event applied while the LIST was in flight
        wins. Returns the services whose objects changed.
        """
        changed: set[ServiceName] = set()
        changed |= _fold(
            self.caches.exports, {key_of(o): o for o in listing.exports}, listing.exports_rv
        )
        changed |= _fold(
            self.caches.services, {key_of(o): o for o in listing.services}, listing.services_rv
        )
        by_owner: dict[ServiceName, dict[str, KubeObject]] = {}
        for s in listing.slices:
            owner = slice_owner(s)
            if owner is not None:
                by_owner.setdefault(owner, {})[meta(s)["name"]] = s
        for owner in set(by_owner) | set(self.caches.slices):
            current = self.caches.slices.setdefault(owner, {})
            if _fold(current, by_owner.get(owner, {}), listing.slices_rv):
                changed.add(owner)
        self.caches.namespaces, self.caches.terminating = set(), set()
        for n in listing.namespaces:
            name = meta(n)["name"]
            terminating = (n.get("status") or {}).get("phase") == "Terminating"
            (self.caches.terminating if terminating else self.caches.namespaces).add(name)
        self.caches.namespace_labels = {
            meta(n)["name"]: dict(meta(n).get("labels") or {}) for n in listing.namespaces
        }
        return changed  # fmt: skip

    # --- records ------------------------------------------------------------------------

    def exported_metadata(self, key: ServiceName, export: KubeObject) -> objs.ExportedMetadata:
        """The labels and annotations ``export`` is exported with: as written when valid,
        else what it was last exported with (:func:`agents.k8s_objects.exported_metadata`)."""
        remembered = self.metadata.get(key)
        created = meta(export).get("creationTimestamp") or ""
        last = remembered[1] if remembered is not None and remembered[0] == created else None
        return objs.exported_metadata(export, last)

    def remember_published(self, records: Iterable[ExportedService]) -> None:
        """Take what the registry holds of this cluster's exports (read before the first
        full publish after a restart) as their last valid labels and annotations, so that
        an export whose spec went invalid while the agent was down keeps them."""
        for rec in records:
            if rec.cluster == self.cluster and (rec.namespace, rec.name) not in self.metadata:
                self.metadata[(rec.namespace, rec.name)] = (
                    rec.created,
                    objs.ExportedMetadata(rec.exported_labels, rec.exported_annotations),
                )

    def build(
        self, key: ServiceName, metadata: objs.ExportedMetadata | None = None
    ) -> ExportedService | ValidityProblem | None:
        """The record of one export from the caches, why it is invalid, or None when there
        is no export (or its namespace is being deleted)."""
        export = self.caches.exports.get(key)
        if export is None or key[0] in self.caches.terminating:
            return None
        return objs.build_record(
            self.cluster,
            export,
            self.caches.services.get(key),
            self.caches.slices.get(key, {}).values(),
            self.exported_metadata(key, export) if metadata is None else metadata,
        )

    def current_records(self) -> dict[ServiceName, ExportedService]:
        records = {}
        for key in self.caches.exports:
            built = self.build(key)
            if isinstance(built, ExportedService):
                records[key] = built
        return records

    def mark_published(self, records: Mapping[ServiceName, ExportedService]) -> None:
        """After a full publish: the registry holds exactly ``records``."""
        self.published = dict(records)
        self.publish_errors.clear()
        self.queue_all()

    # --- the worker -----------------------------------------------------------------------

    async def sync(self, key: ServiceName) -> None:
        started = time.time()
        source = self.caches.exports.get(key)
        metadata = None if source is None else self.exported_metadata(key, source)
        built = self.build(key, metadata)
        record = built if isinstance(built, ExportedService) else None
        try:
            before = time.time()
            if record is None and key in self.published:
                entry = await self.writer.withdraw(RecordRef(Kind.SERVICE, *key))
                del self.published[key]
                at = publish_time(entry, before, time.time())
                step = ExportStep(observed_at=started, entry=entry, withdrawn=True, published_at=at)
                self.trace.record(key, step)
            elif record is not None and self.published.get(key) != record:
                entry = await self.writer.publish(record)
                self.published[key] = record
                at = publish_time(entry, before, time.time())
                self.trace.record(
                    key, ExportStep(observed_at=started, entry=entry, published_at=at)
                )
            self.publish_errors.pop(key, None)
        except FederationError as err:
            self.publish_errors[key] = str(err)
        problem = built if isinstance(built, ValidityProblem) else None
        if problem is None:
            self.problems.pop(key, None)
        else:
            self.problems[key] = problem
        export = self.caches.exports.get(key)
        if export is None or source is None or metadata is None:
            self.metadata.pop(key, None)
            return
        self._remember(key, source, metadata)
        others = [e for e in self.watcher.exports(*key) if e.cluster != self.cluster]
        merged = merge_exports([*others, record]) if record is not None else None
        conditions = export_conditions(
            cluster=self.cluster,
            service_problem=problem,
            published=key in self.published,
            publish_error=self.publish_errors.get(key),
            merged=merged,
            namespace_terminating=key[0] in self.caches.terminating,
        )
        await self.status.export_status(
            export, (*conditions, exported_metadata_condition(metadata.problems))
        )

    def _remember(
        self, key: ServiceName, export: KubeObject, metadata: objs.ExportedMetadata
    ) -> None:
        before = self.metadata.get(key)
        if metadata.problems and (before is None or before[1].problems != metadata.problems):
            log.warning(
                "ServiceExport %s/%s: %s",
                *key, " ".join(p.message for p in metadata.problems),
            )  # fmt: skip
        self.metadata[key] = (meta(export).get("creationTimestamp") or "", metadata)


@dataclass(frozen=True)
class Listing:
    """A full LIST of what exports are built from, with each list's resourceVersion."""

    exports: Sequence[KubeObject]
    exports_rv: str
    services: Sequence[KubeObject]
    services_rv: str
    slices: Sequence[KubeObject]
    slices_rv: str
    namespaces: Sequence[KubeObject]


def _rv(obj: KubeObject) -> int:
    # resourceVersions are opaque, but the apiserver's come from etcd revisions:
    # comparing them as numbers is what "newer" means on a single apiserver.
    try:
        return int(meta(obj).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _fold(cache: dict[Key, KubeObject], listed: Mapping[Key, KubeObject], list_rv: str) -> set[Key]:
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
