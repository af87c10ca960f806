"""The one place that writes ``.status`` of the objects the agent owns.

Called by the agent's export and import workers with conditions computed by
the pure ``federation.model.conditions``. It keeps ``lastTransitionTime`` of
conditions whose status did not change, keeps condition types it does not
own, sets ``observedGeneration``, and skips the write when nothing changed
(the watch event of its own write then converges instead of looping).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from agents import k8s_objects as objs
from agents.kube import Kube, path
from federation.model.conditions import Condition, merge_conditions


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_path(plural: str, obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return path(objs.MCS_GROUP, objs.MCS_VERSION, plural, meta["namespace"], meta["name"])


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self.writes = 0

    def _conditions(
        self, obj: Mapping[str, Any], conditions: Sequence[Condition]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        existing: list[dict[str, Any]] = (obj.get("status") or {}).get("conditions") or []
        merged = merge_conditions(
            existing,
            conditions,
            observed_generation=int(obj["metadata"].get("generation") or 0),
            now=_now(),
        )
        return existing, merged

    async def export_status(
        self, export: Mapping[str, Any], conditions: Sequence[Condition]
    ) -> None:
        existing, merged = self._conditions(export, conditions)
        if merged != existing:
            await self._kube.patch_status(
                _status_path("serviceexports", export), {"conditions": merged}
            )
            self.writes += 1

    async def import_status(
        self,
        service_import: Mapping[str, Any],
        clusters: Sequence[str],
        conditions: Sequence[Condition],
    ) -> None:
        existing, merged = self._conditions(service_import, conditions)
        status = service_import.get("status") or {}
        wanted_clusters = [{"cluster": c} for c in clusters]
        if merged != existing or (status.get("clusters") or []) != wanted_clusters:
            await self._kube.patch_status(
                _status_path("serviceimports", service_import),
                {"clusters": wanted_clusters, "conditions": merged},
            )
            self.writes += 1
