"""The agent's Gateway API side: publish this cluster's Gateway configuration, write its
statuses.

Driven by :class:`agents.agent.Agent`, which feeds it watch events and runs its worker.
What it publishes, under its own cluster's keys:

* every Gateway whose GatewayClass has our controller name (Gateways of other classes
  belong to other implementations and are left alone);
* every HTTPRoute and GRPCRoute, with its namespace's labels (a listener's
  ``allowedRoutes`` selector decides on them); routes whose parents are not ours are
  ignored by the translation, which reports nothing for them;
* every ReferenceGrant;
* every Service of this cluster that a route names as a backend or mirror, with its
  endpoints (a *local* Service: only this cluster's Envoys use it).

Everything is level-triggered: any change queues one sync, which rebuilds the whole
desired set of records (a cluster has tens to hundreds of these objects), publishes what
differs from what was published and withdraws what is gone. Then it runs the first
translation stage on exactly those records, the same call the hub makes for the
cluster's Envoys, and writes the statuses: the GatewayClass's ``Accepted``, each
Gateway's conditions and listeners, and each route's parent entries under our controller
name (entries of other controllers are kept). ``Programmed`` comes from the hub's
published ACK state, read every ``poll_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents import k8s_objects as objs
from agents import kinds as k
from agents.kinds import KubeObject
from agents.kube import Kube
from agents.status import StatusWriter
from agents.trace import TraceBook, publish_time
from federation.debug_payloads import ExportStep
from federation.errors import FederationError
from federation.programmed import merged_facts
from federation.registry import gatewayapi as g
from federation.registry.codec import from_json
from federation.registry.hub_state import HubStateReader
from federation.registry.kinds import Record, RecordRef, ref_of
from federation.registry.records import ExportedService, InvalidRecordError
from federation.registry.store import RegistryWriter
from federation.retry import Backoff, retry_call
from federation.translate.gateway import resolve
from federation.translate.gateway.inputs import (
    ObjectName,
    ProgrammedFact,
    cluster_inputs,
    imports_of,
)
from federation.translate.gateway.status import CONTROLLER_NAME

log = logging.getLogger(__name__)

#: What Gateway API objects the agent watches (ReferenceGrant: v1beta1 is the stored
#: version, and served by every Gateway API v1.x release).
WATCHED = (k.GATEWAY_CLASSES, k.GATEWAYS, k.HTTP_ROUTES, k.GRPC_ROUTES, k.REFERENCE_GRANTS)


def _key(obj: Mapping[str, Any]) -> ObjectName:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _tables() -> dict[str, dict[Any, KubeObject]]:
    return {kind.plural: {} for kind in WATCHED}


@dataclass
class GatewayObjects:
    """This cluster's Gateway API objects, as last listed or watched: one table per
    watched kind (:data:`WATCHED`), keyed by name (GatewayClasses) or namespace and name."""

    tables: dict[str, dict[Any, KubeObject]] = field(default_factory=_tables)

    def of(self, kind: k.ApiKind) -> dict[Any, KubeObject]:
        return self.tables[kind.plural]


def _spec(cls: type[Any], obj: Mapping[str, Any]) -> Any:
    return from_json(
        cls, obj.get("spec") or {}, path=f"{obj['metadata']['name']}.spec", unknown="ignore"
    )


def _meta_fields(cluster: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "cluster": cluster,
        "namespace": meta.get("namespace") or "",
        "name": meta["name"],
        "generation": int(meta.get("generation") or 0),
        "created": meta.get("creationTimestamp") or "",
    }


class GatewayAgent:
    def __init__(
        self,
        cluster: str,
        kube: Kube,
        writer: RegistryWriter,
        status: StatusWriter,
        hub_state: HubStateReader | None,
        *,
        poll_interval: float = 1.0,
    ) -> None:
        self.cluster = cluster
        self.kube = kube
        self.writer = writer
        self.status = status
        self.hub_state = hub_state
        self.poll_interval = poll_interval
        self.objects = GatewayObjects()
        self.published: dict[RecordRef, Record] = {}
        #: When each record was last published, and its entry: ``fedctl trace httproute``.
        self.trace: TraceBook[ExportStep] = TraceBook()
        self.programmed: dict[ObjectName, ProgrammedFact] = {}
        self.dirty = asyncio.Event()
        self.syncs = 0

    # --- events -------------------------------------------------------------------------

    def on_event(self, plural: str, kind: str | None, body: Mapping[str, Any]) -> None:
        table = self.objects.tables[plural]
        key: Any = _key(body) if plural != k.GATEWAY_CLASSES.plural else body["metadata"]["name"]
        if kind == "DELETED":
            table.pop(key, None)
        else:
            table[key] = dict(body)
        self.dirty.set()

    def replace(self, listing: Mapping[str, list[dict[str, Any]]]) -> None:
        """Replace the caches with a full LIST, by plural."""
        self.objects = GatewayObjects()
        for plural, items in listing.items():
            for item in items:
                self.on_event(plural, "ADDED", item)

    async def list_all(self) -> dict[str, list[dict[str, Any]]]:
        """LIST every watched kind (a kind whose CRD is not installed lists as empty)."""
        return {kind.plural: await self.kube.list_items(kind.path()) for kind in WATCHED}

    # --- what to publish -------------------------------------------------------------------

    def our_classes(self) -> set[str]:
        return our_classes(self.objects)

    def desired(
        self,
        services: Mapping[ObjectName, KubeObject],
        slices: Mapping[ObjectName, Mapping[str, KubeObject]],
        namespace_labels: Mapping[str, Mapping[str, str]],
    ) -> dict[RecordRef, Record]:
        return desired_records(self.cluster, self.objects, services, slices, namespace_labels)

    # --- syncing -------------------------------------------------------------------------------

    async def publish(self, desired: Mapping[RecordRef, Record]) -> None:
        """Publish what differs from what was published; withdraw what is gone."""
        started = time.time()
        for ref, record in sorted(desired.items()):
            if self.published.get(ref) != record:
                before = time.time()
                entry = await self.writer.publish(record)
                self.published[ref] = record
                at = publish_time(entry, before, time.time())
                step = ExportStep(observed_at=started, entry=entry, published_at=at)
                self.trace.record((ref.kind.value, ref.namespace, ref.name), step)
        for ref in sorted(set(self.published) - set(desired)):
            before = time.time()
            withdrawal = await self.writer.withdraw(ref)
            del self.published[ref]
            at = publish_time(withdrawal, before, time.time())
            step = ExportStep(
                observed_at=started, entry=withdrawal, withdrawn=True, published_at=at
            )
            self.trace.record((ref.kind.value, ref.namespace, ref.name), step)

    async def write_statuses(self, exports: Iterable[ExportedService]) -> None:
        """Resolve this cluster's Gateway API records (as the hub does) and write statuses."""
        records = list(self.published.values())
        resolved = resolve(
            cluster_inputs(self.cluster, records, imports_of(exports), self.programmed)
        )
        for name in sorted(self.our_classes()):
            await self.status.gateway_class_status(self.objects.of(k.GATEWAY_CLASSES)[name])
        for gateway in resolved.statuses.gateways:
            obj = self.objects.of(k.GATEWAYS).get((gateway.namespace, gateway.name))
            if obj is not None:
                await self.status.gateway_status(obj, gateway)
        for route in resolved.statuses.routes:
            api_kind = k.HTTP_ROUTES if route.kind == "HTTPRoute" else k.GRPC_ROUTES
            obj = self.objects.of(api_kind).get((route.namespace, route.name))
            if obj is not None:
                await self.status.route_status(obj, route)

    async def poll_programmed(self) -> None:
        """Read the hub's ACK state until cancelled; a change marks the state dirty."""
        if self.hub_state is None:
            return
        hub_state = self.hub_state
        while True:
            facts = await retry_call(
                "gateway-state-read",
                lambda: merged_facts(hub_state, self.cluster),
                retry_if=lambda err: isinstance(err, FederationError),
                backoff=Backoff(maximum=self.poll_interval),
                logger=log,
            )
            if facts != self.programmed:
                self.programmed = facts
                self.dirty.set()
            await asyncio.sleep(self.poll_interval)  # the polling period, not synchronisation


def our_classes(objects: GatewayObjects) -> set[str]:
    """The GatewayClasses whose controller is ours."""
    return {
        name
        for name, obj in objects.of(k.GATEWAY_CLASSES).items()
        if (obj.get("spec") or {}).get("controllerName") == CONTROLLER_NAME
    }


def desired_records(
    cluster: str,
    objects: GatewayObjects,
    services: Mapping[ObjectName, KubeObject],
    slices: Mapping[ObjectName, Mapping[str, KubeObject]],
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> dict[RecordRef, Record]:
    """Every Gateway API record ``cluster`` should have in the registry (see the module
    docstring), from its objects and its Services, slices and namespace labels."""
    records: list[Record] = []
    ours = our_classes(objects)
    for obj in objects.of(k.GATEWAYS).values():
        if (obj.get("spec") or {}).get("gatewayClassName") in ours:
            records += _convert(cluster, obj, g.GatewaySpec, g.GatewayRecord, {})
    for api_kind, spec, record in (
        (k.HTTP_ROUTES, g.HTTPRouteSpec, g.HTTPRouteRecord),
        (k.GRPC_ROUTES, g.GRPCRouteSpec, g.GRPCRouteRecord),
    ):
        for obj in objects.of(api_kind).values():
            ns = obj["metadata"].get("namespace") or ""
            labels = tuple(sorted((namespace_labels.get(ns) or {}).items()))
            records += _convert(cluster, obj, spec, record, {"namespace_labels": labels})
    for obj in objects.of(k.REFERENCE_GRANTS).values():
        records += _convert(cluster, obj, g.ReferenceGrantSpec, g.ReferenceGrantRecord, {})
    for ns, name in sorted(_service_backends(records)):
        service = services.get((ns, name))
        if service is not None:
            local = objs.build_local_service(
                cluster, service, (slices.get((ns, name)) or {}).values()
            )
            if local is not None:
                records.append(local)
    return {ref_of(r): r for r in records}


def _convert(
    cluster: str,
    obj: Mapping[str, Any],
    spec_cls: type[Any],
    record_cls: type[Any],
    extra: dict[str, Any],
) -> list[Record]:
    """The record of one Kubernetes object; none (and a warning) if it cannot be read."""
    try:
        spec = _spec(spec_cls, obj)
    except InvalidRecordError as err:
        meta = obj["metadata"]
        log.warning("cannot publish %s/%s: %s", meta.get("namespace"), meta["name"], err)
        return []
    record: Record = record_cls(spec=spec, **_meta_fields(cluster, obj), **extra)
    return [record]


def _service_backends(records: Iterable[Record]) -> set[ObjectName]:
    """Services of this cluster that routes name as backends or mirrors."""
    out: set[ObjectName] = set()
    for record in records:
        if not isinstance(record, (g.HTTPRouteRecord, g.GRPCRouteRecord)):
            continue
        for rule in record.spec.rules:
            refs: list[Any] = list(rule.backend_refs)
            refs += [f.request_mirror.backend_ref for f in rule.filters if f.request_mirror]
            for ref in refs:
                if (ref.group or "") == "" and (ref.kind or "Service") == "Service":
                    out.add((ref.namespace or record.namespace, ref.name))
    return out
