"""Merging the exports of one Service from several clusters into one import (MCS rules).

Every member cluster that exports ``namespace/name`` contributes an
:class:`~federation.registry.records.ExportedService`; :func:`merge_exports`
turns them into the single :class:`MergedImport` that each member cluster's
ServiceImport shows, and says which exporters conflict and why. Callers: the
agent's import reconciler (it writes ``ServiceImport.spec`` from the merged
import) and the ServiceExport status writer (it turns
:meth:`MergedImport.conflict_reasons` into the ``Conflict`` condition, see
:mod:`federation.model.conditions`); the hub uses the same merge for its model.

The rules (KEP-1645, and the mcs-api conformance suite that checks them):

* Exporters are ordered oldest first by the ServiceExport's
  ``creationTimestamp`` (``ExportedService.created``), ties broken by cluster
  name. The oldest export is the *winner*: its definition is used wherever
  exporters disagree.
* Type, session affinity (mode, then its timeout), internal traffic policy,
  traffic distribution and IP families are the winner's (families are compared
  between ClusterSetIP exports only: they decide the ClusterSetIPs). Exported labels and
  annotations are the winner's *set*: another exporter's keys are not added.
* Ports are the union, walking exporters oldest first, as long as the result is
  a valid Service: a name already taken for another number, a number already
  taken under another name, or an unnamed port beside named ones (a Service
  with more than one port must name every one) is not added.
* Any disagreement, ports that differ in any way included, is a conflict of the
  Service: *every* exporter gets ``Conflict=True`` with all the reasons, also one
  that agrees with the winner.
* Traffic for a port goes only to the exporters that expose exactly that port
  (name, protocol and number): :func:`exposes`.

Pure: no I/O, no clock, no globals; the output does not depend on the order of
the input.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Protocol

from federation.errors import InvalidInputError
from federation.registry.records import (
    EndpointPort,
    EndpointSet,
    ExportedService,
    ServicePort,
    ServiceType,
)


class ConflictReason(StrEnum):
    """Reasons of a ``Conflict=True`` condition; declaration order is the reporting order."""

    PORT_CONFLICT = "PortConflict"
    TYPE_CONFLICT = "TypeConflict"
    SESSION_AFFINITY_CONFLICT = "SessionAffinityConflict"
    SESSION_AFFINITY_CONFIG_CONFLICT = "SessionAffinityConfigConflict"
    LABELS_CONFLICT = "LabelsConflict"
    ANNOTATIONS_CONFLICT = "AnnotationsConflict"
    INTERNAL_TRAFFIC_POLICY_CONFLICT = "InternalTrafficPolicyConflict"
    TRAFFIC_DISTRIBUTION_CONFLICT = "TrafficDistributionConflict"
    #: Exporters serve different IP families: traffic over one family reaches some only.
    IP_FAMILY_CONFLICT = "IPFamilyConflict"


# StrEnum compares by value (alphabetically); reports use declaration order instead.
_REASON_ORDER = {reason: i for i, reason in enumerate(ConflictReason)}


def sort_reasons(reasons: Iterable[ConflictReason]) -> tuple[ConflictReason, ...]:
    """``reasons`` without duplicates, in declaration order."""
    return tuple(sorted(set(reasons), key=_REASON_ORDER.__getitem__))


@dataclass(frozen=True)
class ConflictDetail:
    """One disagreement between two exporters, for status messages.

    ``kept`` is the cluster whose value is used (always the older of the two
    exports), ``dropped`` the one whose differing value is ignored.
    """

    reason: ConflictReason
    kept: str
    dropped: str
    #: Human-readable: what differs and which value is used.
    message: str

    def involves(self, cluster: str) -> bool:
        return cluster in (self.kept, self.dropped)

    def other(self, cluster: str) -> str:
        """The cluster on the other side of this conflict from ``cluster``."""
        return self.dropped if cluster == self.kept else self.kept


@dataclass(frozen=True)
class MergedImport:
    """What every member cluster imports for one exported Service."""

    namespace: str
    name: str
    type: ServiceType
    #: The union of the exporters' ports, sorted by (port, protocol, name).
    ports: tuple[ServicePort, ...]
    session_affinity: str
    session_affinity_timeout: int | None
    #: The winner's exported labels, sorted by key.
    labels: tuple[tuple[str, str], ...]
    #: The winner's exported annotations, sorted by key.
    annotations: tuple[tuple[str, str], ...]
    #: The exporting clusters, sorted by name.
    clusters: tuple[str, ...]
    #: The cluster of the oldest export, whose definition wins every conflict.
    winner: str
    #: The winner's IP families, in its order (empty: the exporter did not say).
    ip_families: tuple[str, ...] = ()
    internal_traffic_policy: str | None = None
    traffic_distribution: str | None = None
    #: Why the exports of this Service conflict, in declaration order (empty: they agree).
    reasons: tuple[ConflictReason, ...] = ()
    #: Every disagreement, in reason order, then by kept and dropped cluster.
    details: tuple[ConflictDetail, ...] = ()

    @property
    def ip_family_policy(self) -> str | None:
        """For the derived Service: one family is SingleStack; two prefer dual stack, so
        that a single-stack importing cluster still gets a ClusterSetIP."""
        if not self.ip_families:
            return None
        return "SingleStack" if len(self.ip_families) == 1 else "PreferDualStack"

    def conflict_reasons(self, cluster: str) -> tuple[ConflictReason, ...]:
        """Why ``cluster``'s export conflicts: every reason of the Service, for every
        exporter (empty when the exports agree, or ``cluster`` does not export)."""
        return self.reasons if cluster in self.clusters else ()

    def conflict_details(self, cluster: str) -> tuple[ConflictDetail, ...]:
        """The disagreements of the Service, as ``cluster``'s export reports them."""
        return self.details if cluster in self.clusters else ()


class HasPorts(Protocol):
    """An export, or any other record that lists a Service's ports."""

    @property
    def ports(self) -> tuple[ServicePort, ...]: ...


def exposes(source: HasPorts, port: ServicePort) -> bool:
    """Whether ``source`` serves the import port ``port``: same name, protocol and number.

    An exporter whose port of that name lost a conflict gets none of its traffic.
    """
    return any(
        (p.name, p.protocol, p.port) == (port.name, port.protocol, port.port) for p in source.ports
    )


def imported_endpoint_sets(
    merged: MergedImport, rec: ExportedService
) -> list[tuple[EndpointSet, tuple[EndpointPort, ...]]]:
    """The endpoint sets of ``rec`` that the import carries, each with the ports kept.

    A set keeps only the ports its cluster exposes exactly as the import has them
    (:func:`exposes`): a losing cluster's port of the same name would otherwise get the
    winner's traffic. A set left without ports is not imported; one that never had any
    (all ports, as for a headless Service without ports) is.
    """
    served = {p.name for p in merged.ports if exposes(rec, p)}
    out = []
    for endpoint_set in rec.endpoints:
        ports = tuple(p for p in endpoint_set.ports if p.name in served)
        if endpoint_set.ports and not ports:
            continue
        out.append((endpoint_set, ports))
    return out


# --- ordering exporters ---------------------------------------------------------

# RFC 3339 date-time (section 5.6): "T"/"t"/space separator, optional fraction,
# "Z"/"z" or a numeric offset. Stricter than datetime.fromisoformat, which also
# accepts dates without times or offsets, which are ambiguous here.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)

#: An instant: a UTC datetime (whole seconds) and nanoseconds within that second.
_Instant = tuple[datetime, int]


def parse_rfc3339(value: str) -> _Instant | None:
    """The instant ``value`` names, comparable across offsets; None if it is not RFC 3339.

    Parsed by hand rather than compared as text: ``...:00.5Z`` sorts before
    ``...:00Z`` as a string, and ``+02:00`` offsets do not compare as text at
    all. Fractions keep nanosecond precision (metav1.MicroTime and friends).
    """
    m = _RFC3339.match(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    nanos = int((m.group(7) or "").ljust(9, "0")[:9])
    offset = timedelta()
    if m.group(8) is None:
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if m.group(9) == "-":
            offset = -offset
    # RFC 3339 allows a leap second (:60); datetime does not.
    leap = second == 60
    try:
        when = datetime(
            year, month, day, hour, minute, 59 if leap else second, tzinfo=timezone(offset)
        )
    except ValueError:
        return None
    if leap:
        when += timedelta(seconds=1)
    return when.astimezone(UTC), nanos


#: Where an export without a usable ``created`` sorts: after every real instant.
_NEVER: _Instant = (datetime.max.replace(tzinfo=UTC), 0)


def age_key(export: ExportedService) -> tuple[bool, _Instant, str]:
    """Sort key putting the oldest export first; ties go to the cluster name.

    An export whose ``created`` is empty or not RFC 3339 sorts after every
    dated one instead of failing the whole merge: one agent's bad record must
    not block the import for every other cluster.
    """
    instant = parse_rfc3339(export.created)
    return instant is None, instant or _NEVER, export.cluster


# --- merging ----------------------------------------------------------------------


def group_by_service(
    exports: Iterable[ExportedService],
) -> dict[tuple[str, str], list[ExportedService]]:
    """Exports keyed by (namespace, name), keys and each list sorted (by key, by cluster)."""
    groups: dict[tuple[str, str], list[ExportedService]] = defaultdict(list)
    for export in exports:
        groups[export.namespace, export.name].append(export)
    return {
        key: sorted(groups[key], key=lambda e: (e.cluster, age_key(e))) for key in sorted(groups)
    }


class _Conflicts:
    """Collects pairwise disagreements while the exporters are walked."""

    def __init__(self) -> None:
        self.details: set[tuple[int, str, str, str]] = set()

    def add(self, reason: ConflictReason, kept: str, dropped: str, message: str) -> None:
        self.details.add((_REASON_ORDER[reason], kept, dropped, message))

    def result(self) -> tuple[tuple[ConflictReason, ...], tuple[ConflictDetail, ...]]:
        reasons = list(ConflictReason)
        details = tuple(
            ConflictDetail(reasons[r], kept, dropped, message)
            for r, kept, dropped, message in sorted(self.details)
        )
        return sort_reasons(d.reason for d in details), details


def _port_text(p: ServicePort) -> str:
    return f"{p.port}/{p.protocol}"


def _affinity_text(affinity: str, timeout: int | None) -> str:
    return affinity if timeout is None else f"{affinity} (timeout {timeout}s)"


def _merge_ports(ordered: Sequence[ExportedService], conflicts: _Conflicts) -> list[ServicePort]:
    """The union of the exporters' ports, walking them oldest first (older entries win),
    kept a valid Service; then every exporter whose ports differ from the winner's."""
    by_name: dict[str, tuple[ServicePort, str]] = {}
    by_number: dict[tuple[str, int], str] = {}  # (protocol, port) -> port name
    # Who set the appProtocol now in the union for a port name: the first exporter that set one.
    app_protocol_from: dict[str, str] = {}
    reported: set[tuple[str, ServicePort]] = set()  # (cluster, port) already in a detail

    def drop(owner: str, cluster: str, port: ServicePort, message: str) -> None:
        conflicts.add(ConflictReason.PORT_CONFLICT, owner, cluster, message)
        reported.add((cluster, port))

    for export in ordered:
        cluster = export.cluster
        for p in export.ports:
            number = (p.protocol, p.port)
            if p.name in by_name:
                held, owner = by_name[p.name]
                if (held.protocol, held.port) != number:
                    drop(
                        owner,
                        cluster,
                        p,
                        f'port "{p.name}" is {_port_text(held)} in {owner} and '
                        f"{_port_text(p)} in {cluster}; {_port_text(held)} is used",
                    )
                elif p.app_protocol is not None:
                    if held.app_protocol is None:
                        by_name[p.name] = (replace(held, app_protocol=p.app_protocol), owner)
                        app_protocol_from[p.name] = cluster
                    elif held.app_protocol != p.app_protocol:
                        setter = app_protocol_from[p.name]
                        drop(
                            setter,
                            cluster,
                            p,
                            f'port "{p.name}" has appProtocol "{held.app_protocol}" in {setter} '
                            f'and "{p.app_protocol}" in {cluster}; '
                            f'"{held.app_protocol}" is used',
                        )
            elif number in by_number:
                held_name = by_number[number]
                owner = by_name[held_name][1]
                drop(
                    owner,
                    cluster,
                    p,
                    f"{_port_text(p)} is port {_port_name(held_name)} in {owner} and "
                    f"{_port_name(p.name)} in {cluster}; {_port_name(held_name)} is used",
                )
            elif by_name and (not p.name or "" in by_name):
                # A Service with several ports must name every one of them.
                unnamed_owner = by_name[""][1] if "" in by_name else None
                owner = unnamed_owner or next(iter(by_name.values()))[1]
                drop(
                    owner,
                    cluster,
                    p,
                    f"{_port_name(p.name)} {_port_text(p)} of {cluster} cannot join the "
                    f"ports of {owner}: a Service with several ports must name every one, "
                    f"and {'the unnamed port of ' + owner if unnamed_owner else 'named ports'} "
                    "came first",
                )
            else:
                by_name[p.name] = (p, cluster)
                by_number[number] = p.name
                if p.app_protocol is not None:
                    app_protocol_from[p.name] = cluster
    winner = ordered[0]
    for export in ordered[1:]:
        ours = {(p.name, p.protocol, p.port) for p in winner.ports}
        theirs = {(p.name, p.protocol, p.port) for p in export.ports}
        extra = sorted(
            p
            for p in export.ports
            if (p.name, p.protocol, p.port) not in ours and (export.cluster, p) not in reported
        )
        missing = sorted(p for p in winner.ports if (p.name, p.protocol, p.port) not in theirs)
        if extra or missing:
            parts = [f"{export.cluster} also exports {_ports_text(extra)}"] if extra else []
            if missing:
                parts.append(f"{export.cluster} does not export {_ports_text(missing)}")
            conflicts.add(
                ConflictReason.PORT_CONFLICT,
                winner.cluster,
                export.cluster,
                f"the ports of {export.cluster} differ from those of {winner.cluster}: "
                + " and ".join(parts)
                + "; each port's traffic goes only to the clusters that export it",
            )
    return sorted((p for p, _ in by_name.values()), key=lambda p: (p.port, p.protocol, p.name))


def _port_name(name: str) -> str:
    return f'"{name}"' if name else "(unnamed)"


def _ports_text(ports: Sequence[ServicePort]) -> str:
    return ", ".join(f"{_port_name(p.name)} {_port_text(p)}" for p in ports)


def _merge_pairs(
    ordered: Sequence[ExportedService],
    what: str,
    reason: ConflictReason,
    conflicts: _Conflicts,
    *,
    annotations: bool,
) -> tuple[tuple[str, str], ...]:
    """The winner's exported labels (or annotations), whole; each exporter whose set
    differs from it conflicts."""

    def pairs(export: ExportedService) -> tuple[tuple[str, str], ...]:
        return export.exported_annotations if annotations else export.exported_labels

    winner = ordered[0]
    kept = dict(pairs(winner))
    for export in ordered[1:]:
        theirs = dict(pairs(export))
        if theirs == kept:
            continue
        differences = [
            f'"{key}" is {_value_text(kept.get(key))} in {winner.cluster} and '
            f"{_value_text(theirs.get(key))} in {export.cluster}"
            for key in sorted(set(kept) | set(theirs))
            if kept.get(key) != theirs.get(key)
        ]
        conflicts.add(
            reason,
            winner.cluster,
            export.cluster,
            f"exported {what}s differ: {', '.join(differences)}; those of {winner.cluster} "
            "are used",
        )
    return tuple(sorted(kept.items()))


def _value_text(value: str | None) -> str:
    return "unset" if value is None else f'"{value}"'


def _compare(
    ordered: Sequence[ExportedService],
    conflicts: _Conflicts,
    reason: ConflictReason,
    what: str,
    value: Callable[[ExportedService], object],
    text: Callable[[object], str] = str,
) -> None:
    """Each exporter whose ``value`` differs from the winner's conflicts with it."""
    winner = ordered[0]
    for export in ordered[1:]:
        if value(export) != value(winner):
            conflicts.add(
                reason,
                winner.cluster,
                export.cluster,
                f"{what} is {text(value(winner))} in {winner.cluster} and "
                f"{text(value(export))} in {export.cluster}; {text(value(winner))} is used",
            )


def _optional_text(value: object) -> str:
    return "unset" if value is None else str(value)


def _families_text(value: object) -> str:
    assert isinstance(value, frozenset)
    return "/".join(sorted(value)) or "unset"


def merge_exports(exports: Sequence[ExportedService]) -> MergedImport:
    """Merge every cluster's export of one Service (MCS conflict rules, see module doc).

    Raises :class:`InvalidInputError` if ``exports`` is empty, mixes Services,
    or holds two exports from the same cluster.
    """
    if not exports:
        raise InvalidInputError("merge_exports needs at least one export")
    namespace, name = exports[0].namespace, exports[0].name
    others = sorted({f"{e.namespace}/{e.name}" for e in exports} - {f"{namespace}/{name}"})
    if others:
        raise InvalidInputError(
            f"merge_exports got exports of several Services: {namespace}/{name}, "
            + ", ".join(others)
        )
    clusters = sorted(e.cluster for e in exports)
    repeated = sorted({c for c in clusters if clusters.count(c) > 1})
    if repeated:
        raise InvalidInputError(
            f"merge_exports got more than one export of {namespace}/{name} from cluster(s) "
            + ", ".join(repeated)
        )

    ordered = sorted(exports, key=age_key)
    winner = ordered[0]
    conflicts = _Conflicts()
    _compare(ordered, conflicts, ConflictReason.TYPE_CONFLICT, "type", lambda e: e.type.value)
    _compare(
        ordered,
        conflicts,
        ConflictReason.SESSION_AFFINITY_CONFLICT,
        "session affinity",
        lambda e: e.session_affinity,
    )
    # The timeout is compared among the exporters with the winner's mode only: with
    # another mode, SessionAffinityConflict already says it all.
    _compare(
        [e for e in ordered if e.session_affinity == winner.session_affinity],
        conflicts,
        ConflictReason.SESSION_AFFINITY_CONFIG_CONFLICT,
        "the session affinity timeout",
        lambda e: e.session_affinity_timeout,
        lambda v: "unset" if v is None else f"{v}s",
    )
    _compare(
        ordered,
        conflicts,
        ConflictReason.INTERNAL_TRAFFIC_POLICY_CONFLICT,
        "internalTrafficPolicy",
        lambda e: e.internal_traffic_policy,
        _optional_text,
    )
    _compare(
        ordered,
        conflicts,
        ConflictReason.TRAFFIC_DISTRIBUTION_CONFLICT,
        "trafficDistribution",
        lambda e: e.traffic_distribution,
        _optional_text,
    )
    if winner.type is ServiceType.CLUSTER_SET_IP:
        # Only ClusterSetIP exports: a headless Service's families say little (without a
        # selector it is dual-stack on any cluster), and it gets no ClusterSetIP.
        _compare(
            [e for e in ordered if e.type is winner.type],
            conflicts,
            ConflictReason.IP_FAMILY_CONFLICT,
            "the IP family set",
            lambda e: frozenset(e.ip_families),
            _families_text,
        )
    ports = _merge_ports(ordered, conflicts)
    labels = _merge_pairs(
        ordered, "label", ConflictReason.LABELS_CONFLICT, conflicts, annotations=False
    )
    annotations = _merge_pairs(
        ordered, "annotation", ConflictReason.ANNOTATIONS_CONFLICT, conflicts, annotations=True
    )
    reasons, details = conflicts.result()
    return MergedImport(
        namespace=namespace,
        name=name,
        type=winner.type,
        ports=tuple(ports),
        session_affinity=winner.session_affinity,
        session_affinity_timeout=winner.session_affinity_timeout,
        labels=labels,
        annotations=annotations,
        clusters=tuple(clusters),
        winner=winner.cluster,
        ip_families=winner.ip_families,
        internal_traffic_policy=winner.internal_traffic_policy,
        traffic_distribution=winner.traffic_distribution,
        reasons=reasons,
        details=details,
    )
