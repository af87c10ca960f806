"""Status conditions of ServiceExports and ServiceImports, as data.

The agent's ServiceExport status writer calls :func:`export_conditions` with
what it knows about one export (is the Service exportable, is the record in
the registry, what did :func:`~federation.model.imports.merge_exports` say)
and the import reconciler calls :func:`import_conditions`; both then pass the
result through :func:`merge_conditions` to get the ``status.conditions`` list
they write, so ``lastTransitionTime`` only moves when a status really changes.

Condition types and reasons follow KEP-1645; ``Stale`` on ServiceImports is
ours: a cluster whose agent stopped renewing its lease keeps its exports
(fail-static) and the import says so. ``ExportedMetadataValid`` on ServiceExports is
ours too (:func:`exported_metadata_condition`): an ``exportedLabels`` or
``exportedAnnotations`` the apiserver would refuse is held back, and the export stays
exported (``Valid`` keeps its KEP-1645 meaning: the Service can be exported). Pure: the
caller supplies ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from federation.errors import InvalidInputError
from federation.model.imports import MergedImport

#: The apiserver rejects a metav1.Condition message longer than this.
MAX_MESSAGE_LENGTH = 32768


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """Every condition type Federation writes: other types are someone else's."""

    #: ServiceExport: the Service exists and can be exported.
    VALID = "Valid"
    #: ServiceExport: the export is in the registry; ServiceImport: in step with the registry.
    READY = "Ready"
    #: ServiceExport: this export disagrees with another cluster's export of the Service.
    CONFLICT = "Conflict"
    #: ServiceImport: some exporting clusters' agents stopped renewing their lease.
    STALE = "Stale"
    #: ServiceExport: ``spec.exportedLabels`` and ``spec.exportedAnnotations`` are exported
    #: as written (False: one of them is held back and the last valid one is exported).
    EXPORTED_METADATA_VALID = "ExportedMetadataValid"
    #: Gateway: written only while it holds, so it is dropped once it no longer does.
    INSECURE_FRONTEND_VALIDATION_MODE = "InsecureFrontendValidationMode"


class ValidReason(StrEnum):
    VALID = "Valid"
    NO_SERVICE = "NoService"
    #: ExternalName Services are never exported.
    INVALID_SERVICE_TYPE = "InvalidServiceType"


class ExportedMetadataReason(StrEnum):
    """Reasons of ``ExportedMetadataValid``; ``False`` joins the two below with a comma
    when both fields are held back."""

    VALID = "Valid"
    #: ``spec.exportedLabels`` holds a key or value the apiserver would refuse (or a key
    #: the agent writes itself).
    INVALID_EXPORTED_LABELS = "InvalidExportedLabels"
    #: ``spec.exportedAnnotations`` holds a key the apiserver would refuse, is too big, or
    #: sets a key the agent writes itself.
    INVALID_EXPORTED_ANNOTATIONS = "InvalidExportedAnnotations"


class ReadyReason(StrEnum):
    #: ServiceExport: the record is in the registry.
    EXPORTED = "Exported"
    #: ServiceExport: valid, but the registry does not hold the record yet.
    PENDING = "Pending"
    #: ServiceExport: invalid, or publishing failed.
    FAILED = "Failed"
    #: ServiceExport: its namespace is being deleted, so it was withdrawn.
    NAMESPACE_TERMINATING = "NamespaceTerminating"
    #: ServiceImport: written from the registry's current view (mcs-api's reason).
    READY = "Ready"
    #: ServiceImport: this cluster has none of the import's IP families, so it has no
    #: clusterset IP here (mcs-api's reason).
    IP_FAMILY_NOT_SUPPORTED = "IPFamilyNotSupported"


class ConflictConditionReason(StrEnum):
    """Reason of ``Conflict=False``; ``Conflict=True`` joins ``ConflictReason`` values."""

    NO_CONFLICTS = "NoConflicts"


class StaleReason(StrEnum):
    CLUSTER_LEASE_EXPIRED = "ClusterLeaseExpired"
    ALL_CLUSTERS_LIVE = "AllClustersLive"


@dataclass(frozen=True)
class Condition:
    """One status condition, without the bookkeeping fields :func:`merge_conditions` adds."""

    type: str
    status: ConditionStatus
    #: A CamelCase reason; ``Conflict=True`` has several joined by commas (KEP-1645).
    reason: str
    message: str

    def to_k8s(self, observed_generation: int, last_transition_time: str) -> dict[str, Any]:
        """The metav1.Condition dict for this condition."""
        message = self.message
        if len(message) > MAX_MESSAGE_LENGTH:
            # A status update with an over-long message is rejected whole: shorten instead.
            message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
        # Plain str, not enum members: serializers other than json (yaml.safe_dump) reject those.
        return {
            "type": str(self.type),
            "status": str(self.status),
            "observedGeneration": observed_generation,
            "lastTransitionTime": last_transition_time,
            "reason": str(self.reason),
            "message": message,
        }


@dataclass(frozen=True)
class ValidityProblem:
    """Why a ServiceExport's Service cannot be exported: becomes ``Valid=False``."""

    reason: ValidReason
    message: str

    def __post_init__(self) -> None:
        if self.reason is ValidReason.VALID:
            raise InvalidInputError("a ValidityProblem needs a failure reason, not Valid")

    @classmethod
    def no_service(cls, namespace: str, name: str) -> ValidityProblem:
        return cls(ValidReason.NO_SERVICE, f"Service {namespace}/{name} does not exist")

    @classmethod
    def invalid_service_type(cls, service_type: str) -> ValidityProblem:
        return cls(
            ValidReason.INVALID_SERVICE_TYPE,
            f"Service type {service_type} cannot be exported",
        )


@dataclass(frozen=True)
class MetadataProblem:
    """A ServiceExport's ``spec.exportedLabels`` or ``spec.exportedAnnotations`` that is not
    exported as written, and what is exported instead.

    The field is held back whole (as the apiserver refuses an object whole): a live export
    keeps the last valid value of the field, a new one is exported without it. Either way
    the export itself stays exported: a metadata mistake is not an outage.
    """

    reason: ExportedMetadataReason
    #: ``exportedLabels`` or ``exportedAnnotations``.
    field: str
    #: What is wrong, each naming its key.
    errors: tuple[str, ...]
    #: What is exported instead of the field as written.
    kept: tuple[tuple[str, str], ...]
    #: True: ``kept`` is the field's last valid value (a live export); False: the export
    #: never had a valid one, so it is exported without the field.
    last_valid: bool

    def __post_init__(self) -> None:
        if self.reason is ExportedMetadataReason.VALID:
            raise InvalidInputError("a MetadataProblem needs a failure reason, not Valid")

    @property
    def message(self) -> str:
        if not self.last_valid:
            instead = f"the Service is exported without {self.field} until it is fixed"
        else:
            # Label values are short; annotation values may be 256 KiB: their keys only.
            shown = (
                ", ".join(f"{k}={v}" for k, v in self.kept)
                if self.field == "exportedLabels"
                else ", ".join(k for k, _ in self.kept)
            )
            instead = (
                f"the export keeps its last valid {self.field} ({shown or 'none'}) "
                "until it is fixed"
            )
        return f"spec.{self.field} is not exported: {'; '.join(self.errors)}. Instead, {instead}."


def exported_metadata_condition(problems: Sequence[MetadataProblem]) -> Condition:
    """``ExportedMetadataValid`` of a ServiceExport: ``True`` when its ``exportedLabels`` and
    ``exportedAnnotations`` are exported as written, else ``False`` with each held-back
    field's reason (comma-joined), the keys at fault and what is exported instead."""
    if not problems:
        return Condition(
            ConditionType.EXPORTED_METADATA_VALID,
            ConditionStatus.TRUE,
            ExportedMetadataReason.VALID,
            "spec.exportedLabels and spec.exportedAnnotations are exported as written",
        )
    return Condition(
        ConditionType.EXPORTED_METADATA_VALID,
        ConditionStatus.FALSE,
        ",".join(p.reason for p in problems),
        " ".join(p.message for p in problems),
    )


def _join(clusters: Sequence[str]) -> str:
    return ", ".join(clusters)


def _plural(clusters: Sequence[str]) -> str:
    return f"cluster {clusters[0]}" if len(clusters) == 1 else f"clusters {_join(clusters)}"


def conflict_condition(merged: MergedImport | None, cluster: str) -> Condition:
    """``Conflict`` for ``cluster``'s export, from the merge of every cluster's export.

    Every exporter of a Service whose exports disagree gets ``Conflict=True`` with all
    the reasons, also one that agrees with the winner (KEP-1645).
    """
    reasons = merged.conflict_reasons(cluster) if merged is not None else ()
    if merged is None or not reasons:
        return Condition(
            ConditionType.CONFLICT,
            ConditionStatus.FALSE,
            ConflictConditionReason.NO_CONFLICTS,
            "no conflicts with other clusters' exports",
        )
    others = [c for c in merged.clusters if c != cluster]
    return Condition(
        ConditionType.CONFLICT,
        ConditionStatus.TRUE,
        ",".join(reasons),
        f"the exports of {merged.namespace}/{merged.name} in "
        f"{_plural(sorted([cluster, *others]))} conflict: "
        + "; ".join(d.message for d in merged.conflict_details(cluster))
        + f". The oldest export (cluster {merged.winner}) is used where they differ; ports"
        " it does not have come from the others.",
    )


def export_conditions(
    *,
    cluster: str,
    service_problem: ValidityProblem | None,
    published: bool,
    publish_error: str | None = None,
    merged: MergedImport | None = None,
    namespace_terminating: bool = False,
) -> tuple[Condition, ...]:
    """``Valid``, ``Ready`` and ``Conflict`` for ``cluster``'s ServiceExport, sorted by type.

    - ``service_problem``: why the Service cannot be exported, or None when it can.
      An invalid export is not exported, so it has no conflicts.
    - ``published``: the registry holds this export's current record.
    - ``publish_error``: the last attempt to publish it failed with this error;
      it takes precedence over ``published`` (the registry may hold an older record).
    - ``merged``: the merge of every cluster's export of this Service from the
      registry's current view, or None when there is none yet; conflicts come
      from it even while the record is pending or failing, since an older
      record of ours may still be part of it.
    - ``namespace_terminating``: the export's namespace is being deleted, so the
      export was withdrawn (``Ready=False``, ``NamespaceTerminating``).
    """
    if service_problem is not None:
        return (
            conflict_condition(None, cluster),
            Condition(
                ConditionType.READY,
                ConditionStatus.FALSE,
                ReadyReason.FAILED,
                f"not exported: {service_problem.message}",
            ),
            Condition(
                ConditionType.VALID,
                ConditionStatus.FALSE,
                service_problem.reason,
                service_problem.message,
            ),
        )
    if namespace_terminating:
        ready = Condition(
            ConditionType.READY,
            ConditionStatus.FALSE,
            ReadyReason.NAMESPACE_TERMINATING,
            "the namespace is being deleted: the export was withdrawn from the clusterset",
        )
    elif publish_error is not None:
        ready = Condition(
            ConditionType.READY,
            ConditionStatus.FALSE,
            ReadyReason.FAILED,
            f"publishing to the registry failed: {publish_error}",
        )
    elif not published:
        ready = Condition(
            ConditionType.READY,
            ConditionStatus.FALSE,
            ReadyReason.PENDING,
            "waiting for the export to reach the registry",
        )
    else:
        ready = Condition(
            ConditionType.READY,
            ConditionStatus.TRUE,
            ReadyReason.EXPORTED,
            "exported to the clusterset",
        )
    return (
        conflict_condition(merged, cluster),
        ready,
        Condition(
            ConditionType.VALID,
            ConditionStatus.TRUE,
            ValidReason.VALID,
            "the Service can be exported",
        ),
    )


def import_conditions(
    *,
    stale_clusters: Sequence[str],
    withdrawn_clusters: Sequence[str] = (),
    lease_ttls: Mapping[str, float] | None = None,
    withdraw_after_seconds: float | None = None,
    ip_family_problem: str | None = None,
) -> tuple[Condition, ...]:
    """``Ready`` and ``Stale`` for a ServiceImport, sorted by type.

    - ``ip_family_problem``: why this cluster cannot give the import a clusterset IP
      (it has none of its IP families): ``Ready=False``, ``IPFamilyNotSupported``.

    - ``stale_clusters``: exporting clusters whose lease expired and whose
      endpoints are still served (fail-static, the default: a dead agent says
      nothing about its pods, and withdrawing them eagerly has caused outages).
    - ``withdrawn_clusters``: clusters that stayed stale past the withdrawal
      timeout, whose exports the opt-in policy removed. A cluster in both
      lists counts as withdrawn.
    - ``lease_ttls``: each stale cluster's own lease TTL, as its agent published it
      (agents may differ), and ``withdraw_after_seconds`` (the policy's timeout, None
      when it is off) only go into the message, so operators see which policy applied.
    """
    ttls = lease_ttls or {}
    withdrawn = sorted(set(withdrawn_clusters))
    stale = sorted(set(stale_clusters) - set(withdrawn))
    ready = (
        Condition(
            ConditionType.READY,
            ConditionStatus.TRUE,
            ReadyReason.READY,
            "in step with the clusterset registry",
        )
        if ip_family_problem is None
        else Condition(
            ConditionType.READY,
            ConditionStatus.FALSE,
            ReadyReason.IP_FAMILY_NOT_SUPPORTED,
            ip_family_problem,
        )
    )
    if not stale and not withdrawn:
        return (
            ready,
            Condition(
                ConditionType.STALE,
                ConditionStatus.FALSE,
                StaleReason.ALL_CLUSTERS_LIVE,
                "every exporting cluster's lease is current",
            ),
        )
    parts = []
    if stale:
        with_ttls = ", ".join(f"{c} (TTL {ttls[c]:g}s)" if ttls.get(c) else c for c in stale)
        parts.append(
            f"the lease of {'cluster' if len(stale) == 1 else 'clusters'} {with_ttls} expired; "
            "their endpoints are kept (fail-static) until they return"
        )
    if withdrawn:
        after = "" if withdraw_after_seconds is None else f" of {withdraw_after_seconds:g}s"
        parts.append(
            f"the exports of {_plural(withdrawn)} were withdrawn after they stayed stale "
            f"past the configured timeout{after}"
        )
    return (
        ready,
        Condition(
            ConditionType.STALE,
            ConditionStatus.TRUE,
            StaleReason.CLUSTER_LEASE_EXPIRED,
            "; ".join(parts),
        ),
    )


_OWNED_TYPES = frozenset(t.value for t in ConditionType)


def merge_conditions(
    existing: Sequence[Mapping[str, Any]],
    new: Sequence[Condition],
    *,
    observed_generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """The ``status.conditions`` to write: ``new`` over ``existing``, sorted by type.

    A condition whose status did not change keeps its ``lastTransitionTime``
    (that is what the field means); a new or changed one gets ``now``.
    Conditions of types Federation does not write (:class:`ConditionType`)
    belong to someone else and are kept untouched; ours that ``new`` no longer
    has are dropped, so nothing outdated lingers. Existing entries without a
    string ``type`` are dropped: they are not conditions the apiserver accepts.
    """
    if not now:
        raise InvalidInputError("merge_conditions needs now, an RFC 3339 time")
    types = [c.type for c in new]
    if len(set(types)) != len(types):
        raise InvalidInputError(f"merge_conditions got a condition type twice: {sorted(types)}")
    owned = _OWNED_TYPES | set(types)
    previous: dict[str, Mapping[str, Any]] = {}
    for old in existing:
        kind = old.get("type")
        # setdefault: if the list somehow holds a type twice, the first one is what kubectl shows.
        if isinstance(kind, str):
            previous.setdefault(kind, old)
    out: dict[str, dict[str, Any]] = {
        kind: dict(cond) for kind, cond in previous.items() if kind not in owned
    }
    for cond in new:
        before = previous.get(cond.type)
        since = now
        if before is not None and before.get("status") == cond.status:
            kept = before.get("lastTransitionTime")
            if isinstance(kept, str) and kept:
                since = kept
        out[cond.type] = cond.to_k8s(observed_generation, since)
    return [out[kind] for kind in sorted(out)]
