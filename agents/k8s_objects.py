"""Pure conversions between Kubernetes objects and registry records.

Called by the agent's export publisher (Service + EndpointSlices -> record)
and import reconciler (merged import -> ServiceImport, derived Service and
EndpointSlices). No I/O: raw Kubernetes JSON in, plain dicts or records out,
so the rules are unit-tested without an apiserver.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from agents.kinds import SERVICE_IMPORTS
from federation.kube_names import MAX_ANNOTATIONS_BYTES, label_errors, qualified_name_errors
from federation.model.conditions import ExportedMetadataReason, MetadataProblem, ValidityProblem
from federation.model.imports import MergedImport, imported_endpoint_sets
from federation.registry.records import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    ExportedService,
    LocalService,
    ServicePort,
    ServiceType,
    sorted_pairs,
)

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "federation-agent.federation.dev"
#: Marks the objects the agent owns, so it can find and delete stale ones.
OWNER_LABEL = "app.kubernetes.io/managed-by"
OWNER = "federation-agent"
SERVICE_NAME_LABEL = "multicluster.kubernetes.io/service-name"
SOURCE_CLUSTER_LABEL = "multicluster.kubernetes.io/source-cluster"
DERIVED_SERVICE_ANNOTATION = "multicluster.kubernetes.io/derived-service"
#: The exporting clusters, comma-separated, on each ServiceImport: what
#: ``kubectl get serviceimports`` shows (a printer column cannot join a list).
CLUSTERS_ANNOTATION = "federation.dev/clusters"
K8S_SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Obj = Mapping[str, Any]


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


@dataclass(frozen=True)
class ExportedMetadata:
    """The ``exportedLabels`` and ``exportedAnnotations`` an export is exported with, and
    what of the spec was held back (an invalid field is replaced whole by its last valid
    value, or by nothing for an export that never had one)."""

    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    problems: tuple[MetadataProblem, ...] = ()


def build_record(
    cluster: str,
    export: Obj,
    service: Obj | None,
    slices: Iterable[Obj],
    metadata: ExportedMetadata | None = None,
) -> ExportedService | ValidityProblem:
    """The registry record for one ServiceExport, or why it cannot be exported.

    ``metadata``: what :func:`exported_metadata` made of the export's labels and
    annotations; None: worked out here, as for a new export. Invalid exported labels or
    annotations never make an export invalid: they are held back, not the Service.
    """
    meta = _meta(export)
    namespace, name = meta["namespace"], meta["name"]
    if service is None:
        return ValidityProblem.no_service(namespace, name)
    spec: Mapping[str, Any] = service.get("spec") or {}
    svc_type = spec.get("type", "ClusterIP")
    if svc_type == "ExternalName":
        return ValidityProblem.invalid_service_type(svc_type)
    headless = spec.get("clusterIP") == "None"
    ports = tuple(sorted(_port(ServicePort, p) for p in spec.get("ports") or []))
    affinity = spec.get("sessionAffinity") or "None"
    timeout = None
    if affinity == "ClientIP":
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
            "timeoutSeconds", 10800
        )
    if metadata is None:
        metadata = exported_metadata(export, None)
    return ExportedService(
        cluster=cluster,
        namespace=namespace,
        name=name,
        type=ServiceType.HEADLESS if headless else ServiceType.CLUSTER_SET_IP,
        ports=ports,
        session_affinity=affinity,
        session_affinity_timeout=timeout,
        exported_labels=metadata.labels,
        exported_annotations=metadata.annotations,
        created=meta.get("creationTimestamp") or "",
        generation=int(meta.get("generation") or 0),
        endpoints=_endpoint_sets(slices),
        ip_families=tuple(spec.get("ipFamilies") or ()),
        internal_traffic_policy=spec.get("internalTrafficPolicy"),
        traffic_distribution=spec.get("trafficDistribution"),
    )


#: Metadata keys the agent writes on ServiceImports itself: an export may not set them.
RESERVED_LABELS = frozenset({"app.kubernetes.io/managed-by"})
RESERVED_ANNOTATIONS = frozenset({DERIVED_SERVICE_ANNOTATION, CLUSTERS_ANNOTATION})


def exported_label_errors(labels: Mapping[str, str]) -> list[str]:
    """Why ``labels`` cannot go on every cluster's ServiceImport, each naming its key."""
    return label_errors(labels) + [
        f"key {k!r} is the agent's own" for k in sorted(RESERVED_LABELS & set(labels))
    ]


def exported_annotation_errors(annotations: Mapping[str, str]) -> list[str]:
    """Why ``annotations`` cannot go on every cluster's ServiceImport, each naming its key.

    The apiserver checks annotation keys lower-cased (``Example.com/x`` is a valid key),
    and all of an object's annotations together against a size limit.
    """
    errors = [
        f"key {key!r}: {e}"
        for key in sorted(annotations)
        for e in qualified_name_errors(key.lower())
    ]
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        errors.append(f"all together {size} bytes, more than {MAX_ANNOTATIONS_BYTES}")
    return errors + [
        f"key {k!r} is the agent's own" for k in sorted(RESERVED_ANNOTATIONS & set(annotations))
    ]


def exported_metadata(export: Obj, last: ExportedMetadata | None) -> ExportedMetadata:
    """What ``export`` is exported with: its ``spec.exportedLabels`` and
    ``spec.exportedAnnotations`` as written where the apiserver would take them on every
    importing cluster's ServiceImport. A field that it would refuse is held back whole:
    replaced by its last valid value (from ``last``, what the export was last exported
    with), or by nothing when it never had one (a new export), with a
    :class:`MetadataProblem` naming the keys at fault. Never a reason to withdraw the
    export."""
    spec: Mapping[str, Any] = export.get("spec") or {}
    exported: dict[str, tuple[tuple[str, str], ...]] = {}
    problems = []
    for field, reason, errors_of, previous in (
        ("exportedLabels", ExportedMetadataReason.INVALID_EXPORTED_LABELS,
         exported_label_errors, last.labels if last else None),
        ("exportedAnnotations", ExportedMetadataReason.INVALID_EXPORTED_ANNOTATIONS,
         exported_annotation_errors, last.annotations if last else None),
    ):  # fmt: skip
        if last is not None and any(p.field == field and not p.last_valid for p in last.problems):
            previous = None  # still never valid: what ``last`` has is no last valid value
        written: dict[str, str] = dict(spec.get(field) or {})
        errors = errors_of(written)
        if not errors:
            exported[field] = sorted_pairs(written)
            continue
        exported[field] = previous or ()
        problems.append(
            MetadataProblem(reason, field, tuple(errors), exported[field], previous is not None)
        )
    return ExportedMetadata(
        exported["exportedLabels"], exported["exportedAnnotations"], tuple(problems)
    )


def build_local_service(cluster: str, service: Obj, slices: Iterable[Obj]) -> LocalService | None:
    """The record of a Service a route of this cluster sends to (None: it has no ports
    to send to, e.g. an ExternalName Service)."""
    meta = _meta(service)
    spec: Mapping[str, Any] = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    return LocalService(
        cluster=cluster,
        namespace=meta["namespace"],
        name=meta["name"],
        ports=tuple(sorted(_port(ServicePort, p) for p in spec.get("ports") or [])),
        endpoints=_endpoint_sets(slices),
    )


_Port = TypeVar("_Port", ServicePort, EndpointPort)


def _port(cls: type[_Port], port: Obj) -> _Port:
    return cls(
        name=port.get("name") or "",
        protocol=port.get("protocol") or "TCP",
        port=int(port["port"]),
        app_protocol=port.get("appProtocol"),
    )


def _endpoint_order(e: Endpoint) -> tuple[tuple[str, ...], bool, bool, bool, str, str]:
    # Not the dataclass order: zone and hostname may be None, which does not compare.
    return (e.addresses, e.ready, e.serving, e.terminating, e.zone or "", e.hostname or "")


def _endpoint_sets(slices: Iterable[Obj]) -> tuple[EndpointSet, ...]:
    return tuple(sorted(s for s in map(_endpoint_set, slices) if s is not None))


def _usable_port(port: Obj) -> bool:
    number = port.get("port")
    return isinstance(number, int) and 1 <= number <= 65535


def _endpoint_set(slice_: Obj) -> EndpointSet | None:
    """One EndpointSlice's contents; None when it has ports and none is usable.

    The apiserver takes any int32 as an EndpointSlice port, the registry's readers refuse
    a record with one outside 1-65535 (which would withdraw the export from them), and
    nothing can connect to it: such a port is left out, and a slice left with none of its
    ports (no ports at all would mean all ports) with it.
    """
    ports = [p for p in slice_.get("ports") or [] if p.get("port") is not None]
    usable = [p for p in ports if _usable_port(p)]
    if ports and not usable:
        return None
    endpoints = []
    for e in slice_.get("endpoints") or []:
        cond = e.get("conditions") or {}
        ready = cond.get("ready")
        # EndpointSlice semantics: a nil ready means ready; nil serving follows ready.
        ready = True if ready is None else bool(ready)
        serving = cond.get("serving")
        endpoints.append(
            Endpoint(
                addresses=tuple(e.get("addresses") or ()),
                ready=ready,
                serving=ready if serving is None else bool(serving),
                terminating=bool(cond.get("terminating") or False),
                zone=e.get("zone"),
                hostname=e.get("hostname"),
            )
        )
    return EndpointSet(
        name=_meta(slice_)["name"],
        address_type=slice_.get("addressType") or "IPv4",
        ports=tuple(sorted(_port(EndpointPort, p) for p in usable)),
        endpoints=tuple(sorted((e for e in endpoints if e.addresses), key=_endpoint_order)),
    )


def _short_hash(*parts: str, length: int = 10) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def derived_service_name(name: str) -> str:
    """The ClusterIP Service that gives a ClusterSetIP import its IP (<= 63 chars)."""
    return f"derived-{_short_hash(name)}"


def _port_json(p: ServicePort) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "protocol": p.protocol, "port": p.port}
    if not p.name:
        del out["name"]
    if p.app_protocol:
        out["appProtocol"] = p.app_protocol
    return out


def imported_slice_name(name: str, cluster: str, source_slice: str) -> str:
    return f"imported-{_short_hash(name, cluster, source_slice, length=16)}"


def owner_labels(name: str) -> dict[str, str]:
    return {OWNER_LABEL: OWNER, SERVICE_NAME_LABEL: name}


def _affinity_json(merged: MergedImport) -> dict[str, Any]:
    out: dict[str, Any] = {"sessionAffinity": merged.session_affinity}
    if merged.session_affinity == "ClientIP" and merged.session_affinity_timeout:
        out["sessionAffinityConfig"] = {
            "clientIP": {"timeoutSeconds": merged.session_affinity_timeout}
        }
    return out


def _traffic_json(merged: MergedImport) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if merged.internal_traffic_policy is not None:
        out["internalTrafficPolicy"] = merged.internal_traffic_policy
    if merged.traffic_distribution is not None:
        out["trafficDistribution"] = merged.traffic_distribution
    return out


def derived_service(
    merged: MergedImport,
    pinned_ips: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A selector-less ClusterIP Service: the apiserver allocates the import's IPs (one per
    family), and kube-proxy applies its session affinity and traffic policies.

    ``pinned_ips``: ask for these clusterset IPs (the ones a deleted derived Service had).
    ``families``: the import's families this cluster has (see :func:`usable_families`),
    when it lacks some.
    """
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "ports": [{**_port_json(p), "targetPort": p.port} for p in merged.ports],
        **_affinity_json(merged),
        **_traffic_json(merged),
    }
    if merged.ip_families:
        spec["ipFamilies"] = list(merged.ip_families if families is None else families)
        spec["ipFamilyPolicy"] = merged.ip_family_policy
    if pinned_ips:
        spec["clusterIP"] = pinned_ips[0]
        spec["clusterIPs"] = list(pinned_ips)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": derived_service_name(merged.name),
            "namespace": merged.namespace,
            "labels": owner_labels(merged.name),
        },
        "spec": spec,
    }


#: How the apiserver refuses a Service of an IP family its service CIDRs lack.
_FAMILY_NOT_CONFIGURED = re.compile(r'Invalid value: "(IPv4|IPv6)": not configured on this cluster')


def refused_families(message: str) -> frozenset[str]:
    """The IP families an apiserver's refusal of a derived Service says this cluster lacks
    (none when the refusal is about something else)."""
    return frozenset(_FAMILY_NOT_CONFIGURED.findall(message))


def usable_families(merged: MergedImport, refused: frozenset[str]) -> list[str]:
    """The import's families this cluster has, in the import's order. Empty: the import
    cannot get a clusterset IP here (``IPFamilyNotSupported``). A dual-stack import
    (``PreferDualStack``) keeps the family the cluster has; a single-stack one has none
    left."""
    return [family for family in merged.ip_families if family not in refused]


def service_import(
    merged: MergedImport, ips: Sequence[str], families: Sequence[str] | None = None
) -> dict[str, Any]:
    """The ServiceImport's metadata and spec (status is written separately).

    ``ips`` and ``families``: what the derived Service got, in the same order (a
    ClusterSetIP import); a Headless one has no IPs and the winner's families.
    """
    annotations = {**dict(merged.annotations), CLUSTERS_ANNOTATION: ",".join(merged.clusters)}
    spec: dict[str, Any] = {
        "type": merged.type.value,
        "ports": [_port_json(p) for p in merged.ports],
        **_affinity_json(merged),
        **_traffic_json(merged),
    }
    if merged.type is ServiceType.CLUSTER_SET_IP:
        annotations[DERIVED_SERVICE_ANNOTATION] = derived_service_name(merged.name)
        spec["ips"] = list(ips)
    chosen = merged.ip_families if families is None else tuple(families)
    if chosen:
        spec["ipFamilies"] = list(chosen)
    return {
        "apiVersion": SERVICE_IMPORTS.api_version,
        "kind": "ServiceImport",
        "metadata": {
            "name": merged.name,
            "namespace": merged.namespace,
            "labels": {**dict(merged.labels), OWNER_LABEL: OWNER},
            "annotations": annotations,
        },
        "spec": spec,
    }


def import_slices(merged: MergedImport, exports: Sequence[ExportedService]) -> list[dict[str, Any]]:
    """One EndpointSlice per source cluster and source slice, with the MCS labels.

    The slices and their ports are those
    :func:`~federation.model.imports.imported_endpoint_sets` keeps: kube-proxy matches
    slice ports to the derived Service's by name, so a losing cluster's port of the same
    name would otherwise get the winner's traffic.
    """
    out = []
    for rec in exports:
        for s, ports in imported_endpoint_sets(merged, rec):
            labels = {
                **owner_labels(merged.name),
                SOURCE_CLUSTER_LABEL: rec.cluster,
                MANAGED_BY_LABEL: MANAGED_BY,
            }
            if merged.type is ServiceType.CLUSTER_SET_IP:
                labels[K8S_SERVICE_NAME_LABEL] = derived_service_name(merged.name)
            out.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": imported_slice_name(merged.name, rec.cluster, s.name),
                        "namespace": merged.namespace,
                        "labels": labels,
                    },
                    "addressType": s.address_type,
                    "ports": [
                        {
                            k: v
                            for k, v in (
                                ("name", p.name),
                                ("protocol", p.protocol),
                                ("port", p.port),
                                ("appProtocol", p.app_protocol),
                            )
                            if v is not None
                        }
                        for p in ports
                    ],
                    "endpoints": [
                        {
                            "addresses": list(e.addresses),
                            "conditions": {
                                "ready": e.ready,
                                "serving": e.serving,
                                "terminating": e.terminating,
                            },
                            **({"zone": e.zone} if e.zone else {}),
                            **({"hostname": e.hostname} if e.hostname else {}),
                        }
                        for e in s.endpoints
                    ],
                }
            )
    return out


def contains(actual: Any, desired: Any) -> bool:
    """Whether ``actual`` still holds everything of ``desired`` (what the agent applied):
    fields the apiserver or others added do not count, changed or removed ones do."""
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and contains(actual[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return bool(actual == desired)
