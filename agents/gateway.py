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
* every BackendTrafficPolicy, SecurityPolicy and ClientTrafficPolicy (Envoy Gateway's
  policy API) and every FailoverPolicy (ours: :mod:`federation.translate.failover`), naming in
  its record each field it sets that we do not implement, so that the translation
  refuses it by name;
* every Service of this cluster that a route names as a backend or mirror, with its
  endpoints (a *local* Service: only this cluster's Envoys use it).

Everything is level-triggered: any change queues one sync, which rebuilds the whole
desired set of records (a cluster has tens to hundreds of these objects), publishes what
differs from what was published and withdraws what is gone. Then it runs the first
translation stage on exactly those records, the same call the hub makes for the
cluster's Envoys, and writes the statuses: the GatewayClass's ``Accepted``, each
Gateway's conditions and listeners, each route's parent entries and each policy's
ancestor entries under our controller name (entries of other controllers are kept).
``Programmed`` comes from the hub's published ACK state, read every ``poll_interval``
seconds.

Each Gateway record carries the agent's verdict on every certificate Secret its HTTPS
listeners name (:mod:`agents.certificates`), and each SecurityPolicy's its verdict on the
Secrets of its basic auth and API keys (:mod:`agents.credentials`, whose server gives the
Gateways' Envoys those credentials after each resolution), never the Secrets themselves.
Every sync reads those Secrets again (one GET each: the agent may not watch Secrets), and
a timer queues a sync while any is named: after ``recheck_interval`` seconds, or sooner (from
:data:`RECHECK_FIRST` seconds, doubling) while one is unusable, so that a Secret created,
fixed or broken after its Gateway shows within that time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents import k8s_objects as objs
from agents import kinds as k
from agents.ca_certificates import CACertificates
from agents.certificates import CertificateChecker
from agents.credentials import Credentials, CredentialServer
from agents.infra import GatewayInfra, InfraManager
from agents.infra_objects import InvalidParameters
from agents.kinds import KubeObject
from agents.kube import Kube, KubeError
from agents.status import StatusWriter
from agents.trace import TraceBook, publish_time
from federation.debug_payloads import ExportStep
from federation.errors import FederationError
from federation.model.conditions import Condition
from federation.programmed import HubFacts, merged_facts
from federation.registry import gatewayapi as g
from federation.registry import policies as p
from federation.registry.codec import from_json, unknown_fields
from federation.registry.failover import FailoverPolicyRecord, FailoverPolicySpec
from federation.registry.hub_state import HubStateReader
from federation.registry.kinds import Record, RecordRef, ref_of
from federation.registry.patches import EnvoyPatchPolicyRecord, EnvoyPatchPolicySpec
from federation.registry.records import ExportedService, InvalidRecordError
from federation.registry.store import RegistryWriter
from federation.registry.telemetry import ProxyAccessLog
from federation.retry import Backoff, retry_call
from federation.translate.failover import failover_policies
from federation.translate.gateway import resolve
from federation.translate.gateway.inputs import (
    ObjectName,
    cluster_inputs,
    imports_of,
)
from federation.translate.gateway.refs import gateway_may_use
from federation.translate.gateway.status import (
    CONTROLLER_NAME,
    GatewayStatus,
)

log = logging.getLogger(__name__)

#: The first re-check of certificate Secrets after a sync that found one unusable, in
#: seconds; it doubles up to the agent's ``recheck_interval``.
RECHECK_FIRST = 2.0

#: What Gateway API objects the agent watches (ReferenceGrant: v1beta1 is the stored
#: version, and served by every Gateway API v1.x release), and Envoy Gateway's policies.
WATCHED = (
    k.GATEWAY_CLASSES,
    k.GATEWAYS,
    k.HTTP_ROUTES,
    k.GRPC_ROUTES,
    k.REFERENCE_GRANTS,
    k.BACKEND_TRAFFIC_POLICIES,
    k.SECURITY_POLICIES,
    k.CLIENT_TRAFFIC_POLICIES,
    k.FAILOVER_POLICIES,
    k.ENVOY_PATCH_POLICIES,
)

#: The policy kinds (Envoy Gateway's, and our FailoverPolicy): their API kind, spec and
#: record, by the kind's name.
POLICY_KINDS = {
    "BackendTrafficPolicy": (
        k.BACKEND_TRAFFIC_POLICIES,
        p.BackendTrafficPolicySpec,
        p.BackendTrafficPolicyRecord,
    ),
    "SecurityPolicy": (k.SECURITY_POLICIES, p.SecurityPolicySpec, p.SecurityPolicyRecord),
    "ClientTrafficPolicy": (
        k.CLIENT_TRAFFIC_POLICIES,
        p.ClientTrafficPolicySpec,
        p.ClientTrafficPolicyRecord,
    ),
    "FailoverPolicy": (k.FAILOVER_POLICIES, FailoverPolicySpec, FailoverPolicyRecord),
    "EnvoyPatchPolicy": (k.ENVOY_PATCH_POLICIES, EnvoyPatchPolicySpec, EnvoyPatchPolicyRecord),
}


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
    spec = obj.get("spec") or {}
    prepare = getattr(cls, "prepare_json", None)  # a spec with free-form JSON values
    if prepare is not None:
        spec = prepare(spec)
    return from_json(cls, spec, path=f"{obj['metadata']['name']}.spec", unknown="ignore")


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
        recheck_interval: float = 60.0,
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
        #: What the hub replicas say of this cluster's Gateways and EnvoyPatchPolicies.
        self.hub_facts = HubFacts()
        #: Runs each Gateway's own Envoys (None: someone else runs them, as in tests).
        self.infra: InfraManager | None = None
        self.dirty = asyncio.Event()
        self.syncs = 0
        #: The verdicts on the certificate Secrets the Gateways name, read at each sync.
        self.certificates = CertificateChecker(kube)
        #: The CA ConfigMaps of their client certificate validation, read at each sync.
        self.ca_certificates = CACertificates(kube)
        #: The Secrets of the SecurityPolicies' basic auth and API keys, read at each sync.
        self.credentials = Credentials(kube)
        #: Each Gateway's ``accessLog`` parameters as last read (absent or None: the
        #: default log); what every publish, a full one too, puts on its record.
        self.access_logs: dict[ObjectName, ProxyAccessLog | None] = {}
        #: Serves the Gateways' Envoys those credentials (None: not served, and policies
        #: that need them are refused).
        self.credential_server: CredentialServer | None = None
        self.recheck_interval = recheck_interval
        self._recheck: asyncio.TimerHandle | None = None
        self._failing_rechecks = 0

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
        """LIST every watched kind (a kind whose CRD is not installed lists as empty), and
        read the certificate Secrets its Gateways name, so that the first full publish
        already carries their verdicts."""
        listing = {kind.plural: await self.kube.list_items(kind.path()) for kind in WATCHED}
        listed = GatewayObjects()
        for plural, items in listing.items():
            for item in items:
                key = item["metadata"]["name"] if plural == k.GATEWAY_CLASSES.plural else _key(item)
                listed.tables[plural][key] = item
        try:
            gateways, grants = (
                our_gateways(self.cluster, listed),
                grant_records(self.cluster, listed),
            )
            await self.certificates.refresh(gateways, grants)
            await self.ca_certificates.refresh(gateways, grants)
            for gateway in gateways:
                await self._read_access_log(gateway, listed)
            # Read now, so that the first full publish carries the SecurityPolicies'
            # verdicts: without them the hub would refuse the policies until the next sync.
            await self.credentials.refresh(
                security_records(self.cluster, listed),
                grants,
                serving=self.credential_server is not None,
            )
        except KubeError as err:  # the first sync reads them again, retried
            log.warning("cannot read the Gateways' certificate Secrets yet: %s", err)
        return listing

    # --- what to publish -------------------------------------------------------------------

    def our_classes(self) -> set[str]:
        return our_classes(self.objects)

    def desired(
        self,
        services: Mapping[ObjectName, KubeObject],
        slices: Mapping[ObjectName, Mapping[str, KubeObject]],
        namespace_labels: Mapping[str, Mapping[str, str]],
    ) -> dict[RecordRef, Record]:
        return desired_records(
            self.cluster,
            self.objects,
            services,
            slices,
            namespace_labels,
            certificate_checks=self.certificates.checks_for,
            ca_certificates=self.ca_certificates.for_gateway,
            secret_checks=self.credentials.checks_for,
            access_logs=self._known_access_log,
        )

    # --- syncing -------------------------------------------------------------------------------

    async def publish(self, desired: Mapping[RecordRef, Record]) -> None:
        """Publish what differs from what was published; withdraw what is gone. The
        Gateways' certificate Secrets are read first: their records carry the verdicts."""
        started = time.time()
        desired = await self._with_certificate_checks(desired)
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

    async def _with_certificate_checks(
        self, desired: Mapping[RecordRef, Record]
    ) -> dict[RecordRef, Record]:
        """``desired`` with each Gateway record's verdicts on its Secrets and the CA
        certificates it names, read now."""
        gateways = [r for r in desired.values() if isinstance(r, g.GatewayRecord)]
        grants = [r for r in desired.values() if isinstance(r, g.ReferenceGrantRecord)]
        clients = [r for r in desired.values() if isinstance(r, p.ClientTrafficPolicyRecord)]
        security = [r for r in desired.values() if isinstance(r, p.SecurityPolicyRecord)]
        await self.certificates.refresh(gateways, grants)
        await self.ca_certificates.refresh(gateways, grants, clients)
        await self.credentials.refresh(security, grants, serving=self.credential_server is not None)
        self._schedule_recheck()
        out: dict[RecordRef, Record] = {}
        for ref, r in desired.items():
            if isinstance(r, g.GatewayRecord):
                r = dataclasses.replace(
                    r,
                    certificate_checks=self.certificates.checks_for(r),
                    ca_certificates=self.ca_certificates.for_gateway(r),
                    access_log=await self._read_access_log(r, self.objects),
                )
            elif isinstance(r, p.ClientTrafficPolicyRecord):
                r = dataclasses.replace(r, ca_certificates=self.ca_certificates.for_policy(r))
            elif isinstance(r, p.SecurityPolicyRecord):
                r = dataclasses.replace(r, secret_checks=self.credentials.checks_for(r))
            out[ref] = r
        return out

    async def _read_access_log(
        self, gateway: g.GatewayRecord, objects: GatewayObjects
    ) -> ProxyAccessLog | None:
        """The Gateway's ``accessLog`` parameters, read now and remembered. Parameters that
        cannot be read keep what was last read (the Gateway says ``InvalidParameters``):
        a broken ConfigMap never resets how its Envoys log."""
        key = (gateway.namespace, gateway.name)
        obj = objects.of(k.GATEWAYS).get(key)
        if self.infra is None or obj is None:
            return None
        try:
            found = await self.infra.access_log(obj, objects.of(k.GATEWAY_CLASSES))
        except (InvalidParameters, KubeError):
            return self._known_access_log(gateway)
        self.access_logs[key] = found
        return found

    def _known_access_log(self, gateway: g.GatewayRecord) -> ProxyAccessLog | None:
        """The Gateway's ``accessLog`` as last read (or remembered), None if never."""
        return self.access_logs.get((gateway.namespace, gateway.name))

    def remember_access_log(self, published: g.GatewayRecord) -> None:
        """At start: the access-log settings of a Gateway record this cluster had
        published, kept while its parameters cannot be read (read ones win)."""
        self.access_logs.setdefault((published.namespace, published.name), published.access_log)

    def _schedule_recheck(self) -> None:
        """Queue the next sync that re-reads the certificate Secrets (see the module
        docstring); none while no Secret is named."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if not (self.certificates.watched or self.credentials.watched):
            self._failing_rechecks = 0
            return
        if self.certificates.failing or self.credentials.failing:
            delay = min(RECHECK_FIRST * 2**self._failing_rechecks, self.recheck_interval)
            self._failing_rechecks += 1
        else:
            delay = self.recheck_interval
            self._failing_rechecks = 0
        self._recheck = asyncio.get_running_loop().call_later(delay, self.dirty.set)

    async def write_statuses(
        self,
        exports: Iterable[ExportedService],
        other_policies: Iterable[p.BackendTrafficPolicyRecord] = (),
    ) -> None:
        """Resolve this cluster's Gateway API records (as the hub does) and write statuses;
        ``other_policies``: the other clusters' BackendTrafficPolicies (whether one of
        ours on a ServiceImport applies depends on theirs)."""
        records = list(self.published.values())
        inputs = cluster_inputs(
            self.cluster,
            records,
            imports_of(exports),
            self.hub_facts.gateways,
            other_policies,
            self.hub_facts.patches,
        )
        resolved = resolve(inputs)
        if self.credential_server is not None:
            self.credential_server.update(resolved.gateways, self.credentials.configs)
        for name in sorted(self.our_classes()):
            gateway_class = self.objects.of(k.GATEWAY_CLASSES)[name]
            await self.status.gateway_class_status(
                gateway_class, await self._class_problem(gateway_class)
            )
        infra = await self._sync_infra()
        for gateway in resolved.statuses.gateways:
            obj = self.objects.of(k.GATEWAYS).get((gateway.namespace, gateway.name))
            if obj is None:
                continue
            state = infra.get((gateway.namespace, gateway.name))
            for overriding in () if state is None else state.conditions():
                gateway = _with_condition(gateway, overriding)
            addresses = None if state is None else list(state.addresses)
            await self.status.gateway_status(obj, gateway, addresses)
        for route in resolved.statuses.routes:
            api_kind = k.HTTP_ROUTES if route.kind == "HTTPRoute" else k.GRPC_ROUTES
            obj = self.objects.of(api_kind).get((route.namespace, route.name))
            if obj is not None:
                await self.status.route_status(obj, route)
        failover = [r for r in records if isinstance(r, FailoverPolicyRecord)]
        book = failover_policies(failover, inputs.imports)
        for policy in (*resolved.statuses.policies, *(book.status(r) for r in failover)):
            api_kind = POLICY_KINDS[policy.kind][0]
            obj = self.objects.of(api_kind).get((policy.namespace, policy.name))
            if obj is not None:
                await self.status.policy_status(api_kind.plural, obj, policy)

    def on_config_map(self, namespace: str, name: str) -> None:
        """A ConfigMap changed: sync when a Gateway's client certificate validation names
        it, or a GatewayClass or Gateway takes its parameters from it."""
        if self.ca_certificates.names(namespace, name):
            self.dirty.set()
            return
        if self.infra is None:
            return
        for class_obj in self.objects.of(k.GATEWAY_CLASSES).values():
            ref = (class_obj.get("spec") or {}).get("parametersRef") or {}
            if (ref.get("namespace"), ref.get("name")) == (namespace, name):
                self.dirty.set()
                return
        for (ns, _), obj in self.objects.of(k.GATEWAYS).items():
            ref = ((obj.get("spec") or {}).get("infrastructure") or {}).get("parametersRef") or {}
            if ns == namespace and ref.get("name") == name:
                self.dirty.set()
                return

    async def _class_problem(self, gateway_class: KubeObject) -> str | None:
        """Why the class's parameters cannot be used (None: they can, or the agent does
        not run the Gateways' Envoys and so reads none)."""
        if self.infra is None:
            return None
        try:
            await self.infra.class_parameters(gateway_class)
        except InvalidParameters as err:
            return str(err)
        return None

    async def _sync_infra(self) -> dict[ObjectName, GatewayInfra]:
        """Provision every Gateway of our class its own Envoys (when this agent runs them)."""
        if self.infra is None:
            return {}
        ours = self.our_classes()
        gateways = [
            obj
            for _, obj in sorted(self.objects.of(k.GATEWAYS).items())
            if (obj.get("spec") or {}).get("gatewayClassName") in ours
        ]
        grants = [r for r in self.published.values() if isinstance(r, g.ReferenceGrantRecord)]

        def copyable(gateway_namespace: str, namespace: str, name: str) -> bool:
            return gateway_may_use(
                grants, gateway_namespace, "Secret", namespace, name
            ) and self.certificates.usable(namespace, name)

        return await self.infra.sync(gateways, self.objects.of(k.GATEWAY_CLASSES), copyable)

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
            if facts != self.hub_facts:
                self.hub_facts = facts
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
    *,
    certificate_checks: Callable[[g.GatewayRecord], tuple[g.CertificateCheck, ...]] | None = None,
    ca_certificates: Callable[[g.GatewayRecord], tuple[g.CACertificate, ...]] | None = None,
    secret_checks: Callable[[p.SecurityPolicyRecord], tuple[p.SecretCheck, ...]] | None = None,
    access_logs: Callable[[g.GatewayRecord], ProxyAccessLog | None] | None = None,
) -> dict[RecordRef, Record]:
    """Every Gateway API record ``cluster`` should have in the registry (see the module
    docstring), from its objects and its Services, slices and namespace labels; each
    Gateway's with ``certificate_checks`` of it (None: without verdicts) and its
    ``access_logs`` settings."""
    records: list[Record] = []
    for gateway in our_gateways(cluster, objects):
        checks = () if certificate_checks is None else certificate_checks(gateway)
        cas = () if ca_certificates is None else ca_certificates(gateway)
        log = None if access_logs is None else access_logs(gateway)
        records.append(
            dataclasses.replace(
                gateway, certificate_checks=checks, ca_certificates=cas, access_log=log
            )
        )
    for api_kind, spec, record in (
        (k.HTTP_ROUTES, g.HTTPRouteSpec, g.HTTPRouteRecord),
        (k.GRPC_ROUTES, g.GRPCRouteSpec, g.GRPCRouteRecord),
    ):
        for obj in objects.of(api_kind).values():
            ns = obj["metadata"].get("namespace") or ""
            labels = tuple(sorted((namespace_labels.get(ns) or {}).items()))
            extra = {"namespace_labels": labels, "labels": _labels(obj)}
            records += _convert(cluster, obj, spec, record, extra)
    for obj in objects.of(k.REFERENCE_GRANTS).values():
        records += _convert(cluster, obj, g.ReferenceGrantSpec, g.ReferenceGrantRecord, {})
    for api_kind, spec_cls, record_cls in POLICY_KINDS.values():
        for obj in objects.of(api_kind).values():
            # Every field we do not implement is named, so that the policy is refused by
            # name instead of applying part of what it says.
            unsupported = tuple(unknown_fields(spec_cls, obj.get("spec") or {}, "spec"))
            for r in _convert(cluster, obj, spec_cls, record_cls, {"unsupported": unsupported}):
                if isinstance(r, p.SecurityPolicyRecord) and secret_checks is not None:
                    r = dataclasses.replace(r, secret_checks=secret_checks(r))
                records.append(r)
    for ns, name in sorted(_service_backends(records)):
        service = services.get((ns, name))
        if service is not None:
            local = objs.build_local_service(
                cluster, service, (slices.get((ns, name)) or {}).values()
            )
            if local is not None:
                records.append(local)
    return {ref_of(r): r for r in records}


def grant_records(cluster: str, objects: GatewayObjects) -> list[g.ReferenceGrantRecord]:
    """The records of the cluster's ReferenceGrants."""
    return [
        r
        for obj in objects.of(k.REFERENCE_GRANTS).values()
        for r in _convert(cluster, obj, g.ReferenceGrantSpec, g.ReferenceGrantRecord, {})
        if isinstance(r, g.ReferenceGrantRecord)
    ]


def security_records(cluster: str, objects: GatewayObjects) -> list[p.SecurityPolicyRecord]:
    """The records of the cluster's SecurityPolicies, without verdicts."""
    return [
        r
        for obj in objects.of(k.SECURITY_POLICIES).values()
        for r in _convert(cluster, obj, p.SecurityPolicySpec, p.SecurityPolicyRecord, {})
        if isinstance(r, p.SecurityPolicyRecord)
    ]


def our_gateways(cluster: str, objects: GatewayObjects) -> list[g.GatewayRecord]:
    """The records of the Gateways of our classes, without certificate verdicts."""
    ours = our_classes(objects)
    found: list[g.GatewayRecord] = []
    for obj in objects.of(k.GATEWAYS).values():
        if (obj.get("spec") or {}).get("gatewayClassName") in ours:
            found += [
                r
                for r in _convert(
                    cluster, obj, g.GatewaySpec, g.GatewayRecord, {"labels": _labels(obj)}
                )
                if isinstance(r, g.GatewayRecord)
            ]
    return found


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


def _labels(obj: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((obj["metadata"].get("labels") or {}).items()))


def _service_backends(records: Iterable[Record]) -> set[ObjectName]:
    """Services of this cluster that routes name as backends or mirrors, and that
    SecurityPolicies name as external authorization services."""
    out: set[ObjectName] = set()
    for record in records:
        refs: list[Any] = []
        if isinstance(record, (g.HTTPRouteRecord, g.GRPCRouteRecord)):
            for rule in record.spec.rules:
                refs += rule.backend_refs
                refs += [f.request_mirror.backend_ref for f in rule.filters if f.request_mirror]
        elif isinstance(record, p.SecurityPolicyRecord) and record.spec.ext_auth is not None:
            for service in (record.spec.ext_auth.grpc, record.spec.ext_auth.http):
                if service is not None:
                    refs += [*service.backend_refs]
                    refs += [service.backend_ref] if service.backend_ref is not None else []
        for ref in refs:
            if (ref.group or "") == "" and (ref.kind or "Service") == "Service":
                out.add((ref.namespace or record.namespace, ref.name))
    return out


def _with_condition(status: GatewayStatus, new: Condition) -> GatewayStatus:
    """``status`` with ``new`` in place of its condition of the same type."""
    kept = tuple(c for c in status.conditions if c.type != new.type)
    return dataclasses.replace(status, conditions=(new, *kept))
