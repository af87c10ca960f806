"""Merging the exports of one Service from several clusters into one import (MCS rules).

Every member cluster that exports ``namespace/name`` contributes an
:class:`~federation.registry.records.ExportedService`; :func:`merge_exports`
turns them into the single :class:`MergedImport` that each member cluster's
ServiceImport shows, and says which exporters conflict and why. Callers: the
agent's import reconciler (it writes ``ServiceImport.spec`` from the merged
import) and the ServiceExport status writer (it turns
:meth:`MergedImport.conflict_reasons` into the ``Conflict`` condition, see
:mod:`federation.model.conditions`); the hub uses the same merge for its model.

The rules (KEP-1645):

* Exporters are ordered oldest first by the ServiceExport's
  ``creationTimestamp`` (``ExportedService.created``), ties broken by cluster
  name. The oldest export is the *winner*: its definition is used wherever
  exporters disagree.
* Type, session affinity (mode and timeout together), labels and annotations
  are compared with what was already decided; a difference marks *both*
  exporters involved with ``Conflict=True``, not only the one that lost.
* Ports are the union, merged by name, then by (protocol, port).

Pure: no I/O, no clock, no globals; the output does not depend on the order of
the input.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum

from federation.errors import InvalidInputError
from federation.registry.records import ExportedService, ServicePort, ServiceType


class ConflictReason(StrEnum):
    """Reasons of a ``Conflict=True`` condition; declaration order is the reporting order."""

    PORT_CONFLICT = "PortConflict"
    TYPE_CONFLICT = "TypeConflict"
    SESSION_AFFINITY_CONFLICT = "SessionAffinityConflict"
    LABELS_CONFLICT = "LabelsConflict"
    ANNOTATIONS_CONFLICT = "AnnotationsConflict"


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
    #: Merged exported labels, sorted by key; the older export's value wins a conflicting key.
    labels: tuple[tuple[str, str], ...]
    #: Merged exported annotations, sorted by key; as for labels.
    annotations: tuple[tuple[str, str], ...]
    #: The exporting clusters, sorted by name.
    clusters: tuple[str, ...]
    #: The cluster of the oldest export, whose definition wins every conflict.
    winner: str
    #: Per cluster involved in at least one conflict, its reasons in declaration order;
    #: sorted by cluster. Clusters without conflicts are absent.
    conflicts: tuple[tuple[str, tuple[ConflictReason, ...]], ...] = ()
    #: Every pairwise disagreement, in reason order, then by kept and dropped cluster.
    details: tuple[ConflictDetail, ...] = ()

    def conflict_reasons(self, cluster: str) -> tuple[ConflictReason, ...]:
        """Why ``cluster``'s export conflicts (empty when it does not, or does not export)."""
        for name, reasons in self.conflicts:
            if name == cluster:
                return reasons
        return ()

    def conflict_details(self, cluster: str) -> tuple[ConflictDetail, ...]:
        """The disagreements ``cluster``'s export is part of."""
        return tuple(d for d in self.details if d.involves(cluster))


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

    def result(
        self,
    ) -> tuple[tuple[tuple[str, tuple[ConflictReason, ...]], ...], tuple[ConflictDetail, ...]]:
        reasons = list(ConflictReason)
        details = tuple(
            ConflictDetail(reasons[r], kept, dropped, message)
            for r, kept, dropped, message in sorted(self.details)
        )
        per_cluster: dict[str, set[ConflictReason]] = defaultdict(set)
        for d in details:
            per_cluster[d.kept].add(d.reason)
            per_cluster[d.dropped].add(d.reason)
        conflicts = tuple(
            (cluster, sort_reasons(per_cluster[cluster])) for cluster in sorted(per_cluster)
        )
        return conflicts, details


def _port_text(p: ServicePort) -> str:
    return f"{p.port}/{p.protocol}"


def _affinity_text(affinity: str, timeout: int | None) -> str:
    return affinity if timeout is None else f"{affinity} (timeout {timeout}s)"


def _merge_ports(ordered: Sequence[ExportedService], conflicts: _Conflicts) -> list[ServicePort]:
    """The union of the exporters' ports, walking them oldest first (older entries win)."""
    by_name: dict[str, tuple[ServicePort, str]] = {}
    by_number: dict[tuple[str, int], str] = {}  # (protocol, port) -> port name
    # Who set the appProtocol now in the union for a port name: the first exporter that set one.
    app_protocol_from: dict[str, str] = {}
    for export in ordered:
        cluster = export.cluster
        for p in export.ports:
            number = (p.protocol, p.port)
            if p.name in by_name:
                held, owner = by_name[p.name]
                if (held.protocol, held.port) != number:
                    conflicts.add(
                        ConflictReason.PORT_CONFLICT,
                        owner,
                        cluster,
                        f'port "{p.name}" is {_port_text(held)} in {owner} and '
                        f"{_port_text(p)} in {cluster}; {_port_text(held)} is used",
                    )
                elif p.app_protocol is not None:
                    if held.app_protocol is None:
                        by_name[p.name] = (replace(held, app_protocol=p.app_protocol), owner)
                        app_protocol_from[p.name] = cluster
                    elif held.app_protocol != p.app_protocol:
                        setter = app_protocol_from[p.name]
                        conflicts.add(
                            ConflictReason.PORT_CONFLICT,
                            setter,
                            cluster,
                            f'port "{p.name}" has appProtocol "{held.app_protocol}" in {setter} '
                            f'and "{p.app_protocol}" in {cluster}; '
                            f'"{held.app_protocol}" is used',
                        )
            elif number in by_number:
                held_name = by_number[number]
                owner = by_name[held_name][1]
                conflicts.add(
                    ConflictReason.PORT_CONFLICT,
                    owner,
                    cluster,
                    f'{_port_text(p)} is port "{held_name}" in {owner} and "{p.name}" in '
                    f'{cluster}; "{held_name}" is used',
                )
            else:
                by_name[p.name] = (p, cluster)
                by_number[number] = p.name
                if p.app_protocol is not None:
                    app_protocol_from[p.name] = cluster
    return sorted((p for p, _ in by_name.values()), key=lambda p: (p.port, p.protocol, p.name))


def _merge_pairs(
    ordered: Sequence[ExportedService],
    what: str,
    reason: ConflictReason,
    conflicts: _Conflicts,
    *,
    annotations: bool,
) -> tuple[tuple[str, str], ...]:
    """Union of exported labels (or annotations): the oldest exporter setting a key wins it.

    A differing value conflicts with the exporter whose value is in the union.
    When the winner sets the key that is the winner, as MCS asks; when it does
    not, it is the oldest exporter that does, so that a value that is silently
    replaced is always reported.
    """
    merged: dict[str, tuple[str, str]] = {}  # key -> (value, cluster that set it)
    for export in ordered:
        pairs = export.exported_annotations if annotations else export.exported_labels
        for key, value in pairs:
            if key not in merged:
                merged[key] = (value, export.cluster)
                continue
            held, owner = merged[key]
            if held != value:
                conflicts.add(
                    reason,
                    owner,
                    export.cluster,
                    f'{what} "{key}" is "{held}" in {owner} and "{value}" in {export.cluster}; '
                    f'"{held}" is used',
                )
    return tuple(sorted((k, v) for k, (v, _) in merged.items()))


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
    winner_affinity = (winner.session_affinity, winner.session_affinity_timeout)
    for export in ordered[1:]:
        if export.type != winner.type:
            conflicts.add(
                ConflictReason.TYPE_CONFLICT,
                winner.cluster,
                export.cluster,
                f"type is {winner.type} in {winner.cluster} and {export.type} in "
                f"{export.cluster}; {winner.type} is used",
            )
        affinity = (export.session_affinity, export.session_affinity_timeout)
        if affinity != winner_affinity:
            conflicts.add(
                ConflictReason.SESSION_AFFINITY_CONFLICT,
                winner.cluster,
                export.cluster,
                f"session affinity is {_affinity_text(*winner_affinity)} in {winner.cluster} "
                f"and {_affinity_text(*affinity)} in {export.cluster}; "
                f"{_affinity_text(*winner_affinity)} is used",
            )
    ports = _merge_ports(ordered, conflicts)
    labels = _merge_pairs(
        ordered, "label", ConflictReason.LABELS_CONFLICT, conflicts, annotations=False
    )
    annotations = _merge_pairs(
        ordered, "annotation", ConflictReason.ANNOTATIONS_CONFLICT, conflicts, annotations=True
    )
    per_cluster, details = conflicts.result()
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
        conflicts=per_cluster,
        details=details,
    )
