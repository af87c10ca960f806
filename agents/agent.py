"""The agent's core: wires the export and import reconcilers, the lease and the resync.

Driven by ``agents.main`` (kopf delivers watch events to the ``on_*_event`` methods;
this class owns the background tasks). Everything is level-triggered:

* **Exports** (:mod:`agents.exports`): this cluster's ServiceExports, with their
  Services and EndpointSlices, become registry records. On start, and whenever the
  lease renewal reports that the registry lost our data, the whole state is
  republished atomically (``replace_all``), so exports deleted while the agent was
  down disappear.
* **Imports** (:mod:`agents.imports`): a :class:`RegistryWatcher` follows every
  cluster; the import reconciler keeps this cluster's ServiceImports, derived
  Services and imported EndpointSlices in step with the merge of all exports, and
  repairs them at once when someone else deletes or changes them.
* **Gateway API** (:mod:`agents.gateway`): this cluster's Gateways and routes.
* **Status**: ``agents.status`` is the only writer of ``.status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from agents import kinds as k
from agents.dns import DnsServer
from agents.exports import ExportReconciler, Listing
from agents.gateway import GatewayAgent
from agents.imports import ImportReconciler, owned
from agents.infra_objects import owned_by_infra
from agents.kinds import KubeObject, meta
from agents.kube import Kube, KubeError
from agents.status import StatusWriter
from agents.trace import publish_time
from federation.debug_payloads import ExportStep
from federation.errors import FederationError
from federation.process import stop_tasks
from federation.registry.gatewayapi import GatewayRecord
from federation.registry.hub_state import HubStateReader
from federation.registry.kinds import Kind, Record, RecordRef, decode_record, parse_field
from federation.registry.policies import BackendTrafficPolicyRecord
from federation.registry.records import ClusterRecord, ExportedService, InvalidRecordError
from federation.registry.store import RegistryReader, RegistryWriter
from federation.registry.watcher import Change, RegistryWatcher, service_names
from federation.retry import Backoff, retry_call

log = logging.getLogger(__name__)
#: How long failing imports may keep the DNS server answering SERVFAIL at start-up.
ZONE_LOAD_PATIENCE = 30.0

VERSION = "0.1.0"


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
        self.reader = reader
        self.status = StatusWriter(kube)
        self.watcher = RegistryWatcher(
            reader,
            self._on_registry_change,
            withdraw_stale_after=options.withdraw_stale_after,
        )
        self.exports = ExportReconciler(
            options.cluster, writer, self.watcher, self.status, workers=options.workers
        )
        self.imports = ImportReconciler(
            options.cluster,
            kube,
            self.watcher,
            self.status,
            workers=options.workers,
            withdraw_stale_after=options.withdraw_stale_after,
        )
        self.gateway = GatewayAgent(options.cluster, kube, writer, self.status, hub_state)
        self.ready = asyncio.Event()
        #: The kind of the last unexpected error of a Gateway sync (its traceback is logged
        #: once); None after a sync that succeeded.
        self._gateway_bug: str | None = None
        #: The clusterset.local server, when the agent serves the zone (``--dns-address``).
        self.dns: DnsServer | None = None
        self._token = uuid.uuid4().hex

    # --- watch events (called by kopf) --------------------------------------------------

    def on_export_event(self, kind: str | None, body: KubeObject) -> None:
        self.exports.on_export(kind, body)

    def on_import_event(self, kind: str | None, body: KubeObject) -> None:
        self.imports.on_owned(k.SERVICE_IMPORTS, kind, body)

    def on_service_event(self, kind: str | None, body: KubeObject) -> None:
        if owned_by_infra(body):
            self.on_infra_event(k.SERVICES.plural, kind, body)
            return
        if owned(body):
            self.imports.on_owned(k.SERVICES, kind, body)
            return
        self.exports.on_service(kind, body)
        self.gateway.dirty.set()  # a route may send to it

    def on_slice_event(self, kind: str | None, body: KubeObject) -> None:
        if owned(body):
            self.imports.on_owned(k.ENDPOINT_SLICES, kind, body)
            return
        key = self.exports.on_slice(kind, body)
        if key is not None and RecordRef(Kind.LOCAL_SERVICE, *key) in self.gateway.published:
            self.gateway.dirty.set()  # a route sends to this Service

    def on_config_map_event(self, kind: str | None, body: KubeObject) -> None:
        """A ConfigMap changed: Gateway parameters or client CA certificates may come
        from it."""
        self.gateway.on_config_map(*k.key_of(body))

    def on_infra_event(self, plural: str, kind: str | None, body: KubeObject) -> None:
        """A Gateway's Envoy Deployment or Service changed: apply it again if it is no
        longer what the infra manager applied."""
        infra = self.gateway.infra
        if infra is not None and infra.on_event(plural, kind, body):
            self.gateway.dirty.set()

    def on_gateway_event(self, plural: str, kind: str | None, body: KubeObject) -> None:
        self.gateway.on_event(plural, kind, body)

    def on_namespace_event(self, kind: str | None, body: KubeObject) -> None:
        name = meta(body)["name"]
        labels = dict(meta(body).get("labels") or {})
        caches = self.exports.caches
        if kind != "DELETED" and caches.namespace_labels.get(name) != labels:
            caches.namespace_labels[name] = labels
            self.gateway.dirty.set()
        if kind == "DELETED":
            state = "gone"
        elif (body.get("status") or {}).get("phase") == "Terminating":
            state = "terminating"
        else:
            state = "present"
        self.exports.on_namespace(name, state)
        self.imports.on_namespace(name, state == "present")

    # --- start-up, resync, lease ----------------------------------------------------------

    async def _listing(self) -> Listing:
        (
            (exports, ex_rv),
            (services, svc_rv),
            (slices, sl_rv),
            (namespaces, _),
        ) = await asyncio.gather(
            *(
                self.kube.list_versioned(kind.path())
                for kind in (k.SERVICE_EXPORTS, k.SERVICES, k.ENDPOINT_SLICES, k.NAMESPACES)
            )
        )
        return Listing(exports, ex_rv, services, svc_rv, slices, sl_rv, namespaces)

    async def list_all(self) -> None:
        """Replace the caches with a full LIST (start-up, before any watch event)."""
        self.exports.replace(await self._listing())
        self.imports.namespaces = set(self.exports.caches.namespaces)
        self.gateway.replace(await self.gateway.list_all())

    def _desired_gateway_records(self) -> dict[RecordRef, Record]:
        caches = self.exports.caches
        return self.gateway.desired(caches.services, caches.slices, caches.namespace_labels)

    async def remember_published(self) -> None:
        """Read what the registry holds of this cluster's exports and Gateways, so that
        what went invalid while the agent was down keeps the last valid value it
        published (a restart must not drop them): an export's exported labels and
        annotations, a Gateway's access-log settings whose parameters cannot be read."""
        snapshot = await self.reader.snapshot(self.cluster)
        published = []
        for name, data in snapshot.records.items():
            try:
                ref = parse_field(name)
                if ref.kind not in (Kind.SERVICE, Kind.GATEWAY):
                    continue
                record = decode_record(ref.kind, data)
            except InvalidRecordError as err:
                log.warning("ignoring this cluster's unreadable record %s: %s", name, err)
                continue
            if isinstance(record, ExportedService):
                published.append(record)
            elif isinstance(record, GatewayRecord):
                self.gateway.remember_access_log(record)
        self.exports.remember_published(published)

    async def publish_everything(self) -> None:
        """Make the registry hold exactly this cluster's current records, atomically:
        its exports and its Gateway API configuration."""
        records = self.exports.current_records()
        gateway_records = self._desired_gateway_records()
        started = time.time()
        entry = await self.writer.replace_all(
            [*records.values(), *gateway_records.values()],
            ClusterRecord(
                self.cluster, VERSION, time.time(), uuid.uuid4().hex, self.options.lease_ttl
            ),
        )
        self.exports.mark_published(records)
        at = publish_time(entry, started, time.time())
        for key in records:
            step = ExportStep(observed_at=started, entry=entry, published_at=at)
            self.exports.trace.record(key, step)
        self.gateway.published = dict(gateway_records)
        self.gateway.dirty.set()
        await self.writer.renew_lease(self.options.lease_key_ttl_ms, self._token)
        log.info("published full state", extra={"cluster": self.cluster, "services": len(records)})

    async def _lease_loop(self) -> None:
        """Renew the lease every ``renew_interval``; a failed renewal is retried with
        backoff (at most a renewal period apart), so that a short registry outage does
        not cost the lease. Republish when the registry lost this cluster's data."""
        while True:
            await asyncio.sleep(self.options.renew_interval)  # the renewal period
            await retry_call(
                "lease-renewal",
                self._renew,
                retry_if=lambda err: isinstance(err, FederationError),
                backoff=Backoff(maximum=self.options.renew_interval),
                logger=log,
            )

    async def _renew(self) -> None:
        if not await self.writer.renew_lease(self.options.lease_key_ttl_ms, self._token):
            log.warning("registry lost this cluster's data; republishing")
            await self.publish_everything()

    async def _resync_loop(self) -> None:
        """The safety net: every ``resync_interval``, list everything and queue it all;
        a failed listing is retried with backoff (at most a period apart)."""
        while True:
            await asyncio.sleep(self.options.resync_interval)  # period of the resync
            await retry_call(
                "resync",
                self._resync,
                retry_if=lambda err: isinstance(err, FederationError),
                backoff=Backoff(maximum=self.options.resync_interval),
                logger=log,
            )

    async def _resync(self) -> None:
        self.exports.merge_listing(await self._listing())
        self.exports.queue_all()
        await self.imports.queue_all()
        if self.gateway.infra is not None:
            self.gateway.infra.forget_all()  # what is not watched is repaired here
            self.gateway.dirty.set()

    async def run(self) -> None:
        """Start up, then run every background task until cancelled."""
        await self.list_all()
        await self.remember_published()
        await self.publish_everything()
        tasks = [
            _guarded("registry-watcher", self.watcher.run),
            _guarded("export-worker", self.exports.queue.run),
            _guarded("import-worker", self.imports.queue.run),
            _guarded("lease", self._lease_loop),
            _guarded("resync", self._resync_loop),
            _guarded("gateway-sync", self._gateway_loop),
            _guarded("gateway-programmed", self.gateway.poll_programmed),
        ]
        running = [asyncio.create_task(coro, name=name) for name, coro in tasks]
        try:
            # A task ends only by crashing (the watcher on a TLS misconfiguration before
            # its first load): then stop with its error instead of waiting for the load.
            loaded = asyncio.create_task(self.watcher.loaded.wait())
            await asyncio.wait([*running, loaded], return_when=asyncio.FIRST_COMPLETED)
            loaded.cancel()
            if not self.watcher.loaded.is_set():
                await asyncio.gather(*running)
            await self.imports.queue_all()
            self.ready.set()
            if self.dns is not None:
                running.append(asyncio.create_task(self._zone_loaded(self.dns), name="dns"))
            await asyncio.gather(*running)
        finally:
            await stop_tasks(running)
            with contextlib.suppress(FederationError):
                await self.writer.release_lease()

    async def _zone_loaded(self, dns: DnsServer) -> None:
        """The zone is whole once the imports queued at start-up are written, retries
        included; an import that keeps failing holds DNS back at most
        :data:`ZONE_LOAD_PATIENCE` seconds (then it answers from what it has)."""
        try:
            await asyncio.wait_for(self.imports.queue.drained.wait(), ZONE_LOAD_PATIENCE)
        except TimeoutError:
            log.warning(
                "clusterset.local: imports still failing after %.0f s; answering from "
                "what is written", ZONE_LOAD_PATIENCE,
            )  # fmt: skip
        dns.loaded.set()

    # --- registry changes and the Gateway API side ------------------------------------------

    async def _on_registry_change(self, changed: set[Change]) -> None:
        services = service_names(changed)
        self.imports.on_registry_change(services)
        for key in services:
            if key in self.exports.caches.exports:
                self.exports.queue.add(key)  # conflicts may have changed
        if services and self.gateway.published:
            self.gateway.dirty.set()  # a route's ServiceImport may have come or gone
        if self.gateway.published and any(
            c.ref.kind is Kind.BACKEND_TRAFFIC_POLICY and c.cluster != self.cluster for c in changed
        ):
            self.gateway.dirty.set()  # another exporter's policy may win over ours

    async def _gateway_loop(self) -> None:
        """Sync the Gateway API side whenever something it depends on changed."""
        while True:
            await self.gateway.dirty.wait()
            await asyncio.sleep(0.02)  # let a burst of events settle: one sync for all of it
            self.gateway.dirty.clear()
            # Each attempt syncs the latest state; failures back off (up to 5 s). An
            # unexpected error is retried too (logged with its traceback): one Gateway
            # API object the code trips over must not stop the agent's exports, DNS and
            # every other Gateway with it.
            await retry_call(
                "gateway-sync",
                self._sync_gateway,
                retry_if=lambda err: isinstance(err, Exception),
                logger=log,
                level=lambda err: (
                    logging.WARNING if isinstance(err, FederationError) else logging.ERROR
                ),
            )

    async def _sync_gateway(self) -> None:
        try:
            await self._sync_gateway_once()
        except FederationError:
            raise
        except Exception as err:
            # Its traceback once per kind of error, not on every retry.
            if self._gateway_bug != type(err).__name__:
                self._gateway_bug = type(err).__name__
                log.exception("gateway-sync: unexpected error (retried)")
            raise
        self._gateway_bug = None

    async def _sync_gateway_once(self) -> None:
        await self.gateway.publish(self._desired_gateway_records())
        views = self.watcher.views.values()
        await self.gateway.write_statuses(
            (e for view in views for e in view.services.values()),
            (
                r
                for view in views
                for r in view.of(Kind.BACKEND_TRAFFIC_POLICY).values()
                if isinstance(r, BackendTrafficPolicyRecord)
            ),
        )
        self.gateway.syncs += 1


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
