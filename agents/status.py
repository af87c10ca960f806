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


def _cache_key(plural: str, obj: Mapping[str, Any]) -> str:
    # The uid too: an object deleted and created again starts without status.
    return f"{_status_path(plural, obj)}#{obj['metadata'].get('uid', '')}"


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self.writes = 0
        #: api path and uid -> the status we last wrote: the object a caller passes in
        #: may predate our own write, and only the agent writes these statuses.
        self._written: dict[str, dict[str, Any]] = {}

    def forget(self) -> None:
        """Trust the objects again (after a full re-list)."""
        self._written.clear()

    def _status(self, plural: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        written = self._written.get(_cache_key(plural, obj))
        return written if written is not None else dict(obj.get("status") or {})

    def _conditions(
        self, status: Mapping[str, Any], obj: Mapping[str, Any], conditions: Sequence[Condition]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        existing: list[dict[str, Any]] = status.get("conditions") or []
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
        status = self._status("serviceexports", export)
        existing, merged = self._conditions(status, export, conditions)
        if merged != existing:
            await self._write("serviceexports", export, {**status, "conditions": merged})

    async def import_status(
        self,
        service_import: Mapping[str, Any],
        clusters: Sequence[str],
        conditions: Sequence[Condition],
    ) -> None:
        status = self._status("serviceimports", service_import)
        existing, merged = self._conditions(status, service_import, conditions)
        wanted_clusters = [{"cluster": c} for c in clusters]
        if merged != existing or (status.get("clusters") or []) != wanted_clusters:
            await self._write(
                "serviceimports",
                service_import,
                {"clusters": wanted_clusters, "conditions": merged},
            )

    async def _write(self, plural: str, obj: Mapping[str, Any], status: dict[str, Any]) -> None:
        key = _cache_key(plural, obj)
        self._written.pop(key, None)  # unknown until the write succeeds
        await self._kube.patch_status(_status_path(plural, obj), status)
        self._written[key] = status
        self.writes += 1
