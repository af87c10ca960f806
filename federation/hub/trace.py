"""The hub's part of ``fedctl trace``: where the latest change of one service has reached.

The hub remembers, per service, the last update that applied a change of it
(:class:`Applied`: when, and the cache generation it made each affected node group's
snapshot). With the registry watcher's entry ids (which stream entry brought the change,
when it was read) and the streams' push history (:class:`~federation.xds.status.Push`:
which generation each response carried, when it was sent and answered),
:func:`trace_payload` answers ``/debug/trace?namespace=&name=``: for each connected
Envoy of an affected group, whether the change was sent to it, and ACKed or NACKed.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from federation.bounded import KEPT, LastByKey
from federation.debug_payloads import EnvoyProgress, HubTrace, RegistryRead
from federation.registry.kinds import Kind, RecordRef
from federation.registry.watcher import RegistryWatcher, ServiceName
from federation.xds.status import Push, SyncRegistry


@dataclass(frozen=True)
class Applied:
    """One update of the snapshots: when, each affected group's new generation, and how
    far the hub had read each cluster's stream (the entries the update includes)."""

    at: float
    generations: Mapping[str, int]
    positions: Mapping[str, str]


class ChangeLog:
    """The last :class:`Applied` update of each service (keyed ``(namespace, name)``) and
    of each Gateway API record (``(cluster, kind, namespace, name)``)."""

    def __init__(self, kept: int = KEPT) -> None:
        self._applied: LastByKey[Applied] = LastByKey(kept)

    def record(
        self,
        services: Iterable[Hashable],
        generations: Mapping[str, int],
        positions: Mapping[str, str],
    ) -> None:
        self._applied.record(services, Applied(time.time(), dict(generations), dict(positions)))

    def get(self, key: Hashable) -> Applied | None:
        return self._applied.get(key)


def _answer(pushes: list[Push]) -> EnvoyProgress:
    """How the pushes that carried a change (at or after its generation) went: sent when
    the first one was, ACKed or NACKed by the latest answer (a NACK fixed by a later ACK
    is an ACK)."""
    by_type: dict[str, list[Push]] = {}
    for push in pushes:
        by_type.setdefault(push.type_url, []).append(push)
    sent_at = min(p.sent_at for p in pushes)
    answered: list[float] = []
    for carried in by_type.values():
        answers = [p for p in carried if p.answered_at is not None]
        if not answers:
            return {"state": "sent", "sent_at": sent_at}
        last = answers[-1]
        if last.nack is not None:
            return {"state": "nacked", "sent_at": sent_at, "answered_at": last.answered_at,
                    "nack": last.nack}  # fmt: skip
        answered.append(next(p.answered_at for p in answers if p.nack is None) or 0.0)
    return {"state": "acked", "sent_at": sent_at, "answered_at": max(answered)}


def _envoys(sync: SyncRegistry, applied: Applied) -> list[EnvoyProgress]:
    """Per Envoy of an affected group: how the responses carrying the change went. An
    Envoy whose stream closed since (and that has no open one) is listed as gone; a group
    with no Envoy connected, as such."""
    open_nodes = {(s.group, s.node_id) for s in sync.streams()}
    streams = sync.streams() + [
        s
        for s in sync.closed()
        if (s.group, s.node_id) not in open_nodes and (s.closed_at or 0.0) >= applied.at
    ]
    found: list[EnvoyProgress] = []
    for stream in streams:
        target = applied.generations.get(stream.group)
        if target is None:
            continue
        carried = [p for p in stream.pushes if p.generation is not None and p.generation >= target]
        entry: EnvoyProgress = {
            "node_id": stream.node_id,
            "group": stream.group,
            "protocol": stream.protocol,
            "generation": target,
            "sent_at": None,
            "answered_at": None,
            "nack": None,
            "state": "not sent",
        }
        if carried:
            entry.update(_answer(carried))
        if stream.closed_at is not None and entry["state"] != "acked":
            entry.update({"state": "gone", "answered_at": stream.closed_at})
        found.append(entry)
    for group in sorted(set(applied.generations) - {e.get("group") for e in found}):
        found.append({"node_id": "", "group": group, "state": "no envoy"})
    return sorted(found, key=lambda e: (e.get("group", ""), e.get("node_id", "")))


def trace_payload(
    watcher: RegistryWatcher,
    changes: ChangeLog,
    sync: SyncRegistry,
    key: ServiceName,
    kind: Kind = Kind.SERVICE,
    cluster: str = "",
) -> HubTrace:
    """Where the latest change of service ``key`` is (or, for another ``kind``, of that
    Gateway API record of ``cluster``): registry entries, the hub's update, Envoys."""
    ref = RecordRef(kind, *key)
    registry: list[RegistryRead] = []
    clusters = sorted(watcher.views) if kind is Kind.SERVICE else [cluster]
    for cluster in clusters:
        position, read_at = watcher.position(cluster) or ("0-0", 0.0)
        entry, entry_read_at = watcher.entries.get((cluster, ref), (None, None))
        registry.append(
            {
                "cluster": cluster,
                # The view has every entry of the cluster's stream up to ``position``.
                "position": position,
                "read_at": read_at,
                # The last entry of this service read from the stream (None: loaded).
                "entry": entry,
                "entry_read_at": entry_read_at,
            }
        )
    applied = changes.get(key if kind is Kind.SERVICE else (cluster, kind.value, *key))
    return {
        "service": f"{key[0]}/{key[1]}",
        "now": time.time(),
        "registry": registry,
        "applied": None
        if applied is None
        else {
            "at": applied.at,
            "generations": dict(applied.generations),
            "positions": dict(applied.positions),
        },
        "envoys": [] if applied is None else _envoys(sync, applied),
    }
