"""The one place that writes ``.status`` of the objects the agent owns.

Called by the agent's export and import workers with conditions computed by
the pure ``federation.model.conditions``, and by its Gateway side with the
statuses the first translation stage computes (GatewayClasses, Gateways,
HTTPRoutes, GRPCRoutes and BackendTrafficPolicies). It keeps ``lastTransitionTime`` of conditions
whose status did not change, keeps condition types it does not own (and a
route's parent entries of other controllers), sets ``observedGeneration``,
and skips the write when nothing changed (the watch event of its own write
then converges instead of looping). An object deleted between the read and
the write is skipped quietly: that is a race, not a failure.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from agents import kinds as k
from agents.kube import Kube, KubeError
from federation.model.conditions import Condition, ConditionStatus, merge_conditions
from federation.registry.codec import to_json
from federation.registry.gatewayapi import GATEWAY_GROUP, ParentReference
from federation.translate.gateway.features import SUPPORTED_FEATURES
from federation.translate.gateway.status import (
    CONTROLLER_NAME,
    GatewayStatus,
    PolicyStatus,
    RouteStatus,
)

#: ``status.ancestors`` of a policy holds at most this many entries (Gateway API).
MAX_POLICY_ANCESTORS = 16


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_path(plural: str, obj: Mapping[str, Any]) -> str:
    return k.BY_PLURAL[plural].path_of(obj)


def _cache_key(plural: str, obj: Mapping[str, Any]) -> str:
    # The uid too: an object deleted and created again starts without status.
    return f"{_status_path(plural, obj)}#{obj['metadata'].get('uid', '')}"


def _generation(obj: Mapping[str, Any]) -> int:
    return int(obj["metadata"].get("generation") or 0)


def _ref_key(ref: Mapping[str, Any]) -> str:
    """A parentRef's identity, whichever defaulted fields the apiserver filled in."""
    return json.dumps(
        {
            "group": ref.get("group") or GATEWAY_GROUP,
            "kind": ref.get("kind") or "Gateway",
            "namespace": ref.get("namespace") or "",
            "name": ref.get("name"),
            "sectionName": ref.get("sectionName") or "",
            "port": ref.get("port") or 0,
        },
        sort_keys=True,
    )


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self.writes = 0
        #: Status writes skipped because the object was deleted meanwhile.
        self.gone = 0
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
            observed_generation=_generation(obj),
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

    async def gateway_class_status(
        self, gateway_class: Mapping[str, Any], invalid_parameters: str | None = None
    ) -> None:
        """Accept a GatewayClass whose controller is ours, unless its parameters cannot
        be used (``invalid_parameters`` says why: ``InvalidParameters``), and publish the
        features we support (the conformance suite reads them there)."""
        if invalid_parameters is None:
            accepted = Condition(
                "Accepted", ConditionStatus.TRUE, "Accepted", f"handled by {CONTROLLER_NAME}"
            )
        else:
            accepted = Condition(
                "Accepted", ConditionStatus.FALSE, "InvalidParameters", invalid_parameters
            )
        status = self._status("gatewayclasses", gateway_class)
        _, merged = self._conditions(status, gateway_class, [accepted])
        features = [{"name": name} for name in SUPPORTED_FEATURES]
        new = {**status, "conditions": merged, "supportedFeatures": features}
        if new != status:
            await self._write("gatewayclasses", gateway_class, new)

    async def gateway_status(
        self,
        gateway: Mapping[str, Any],
        computed: GatewayStatus,
        addresses: list[dict[str, str]] | None = None,
    ) -> None:
        """The Gateway's conditions and listeners; ``addresses`` (from its Service) when
        the agent runs its Envoys (None: left as they are)."""
        status = self._status("gateways", gateway)
        _, merged = self._conditions(status, gateway, computed.conditions)
        before = {lst.get("name"): lst for lst in status.get("listeners") or []}
        listeners = []
        for lst in computed.listeners:
            old = before.get(lst.name) or {}
            listeners.append(
                {
                    "name": lst.name,
                    "attachedRoutes": lst.attached_routes,
                    "supportedKinds": [to_json(k) for k in lst.supported_kinds],
                    "conditions": merge_conditions(
                        old.get("conditions") or [],
                        lst.conditions,
                        observed_generation=_generation(gateway),
                        now=_now(),
                    ),
                }
            )
        new = {**status, "conditions": merged, "listeners": listeners}
        if addresses is not None:
            new["addresses"] = addresses
        if new != status:
            await self._write("gateways", gateway, new)

    async def route_status(self, route: Mapping[str, Any], computed: RouteStatus) -> None:
        """Our parent entries of an HTTPRoute or GRPCRoute, exactly ``computed.parents``:
        an entry of ours for a parent no longer among them (the route stopped naming it,
        or the Gateway is gone or no longer ours) is removed, as Gateway API requires;
        other controllers' entries are kept."""
        plural = "httproutes" if computed.kind == "HTTPRoute" else "grpcroutes"
        wanted = [(p.parent_ref, p.conditions) for p in computed.parents]
        await self._write_entries(plural, route, "parents", "parentRef", wanted)

    async def policy_status(
        self, plural: str, policy: Mapping[str, Any], computed: PolicyStatus
    ) -> None:
        """Our ``status.ancestors`` entries of a policy, exactly ``computed.ancestors``
        (entries of ours for ancestors no longer among them are removed; other
        controllers' entries are kept), as Gateway API's PolicyStatus has them, at most
        :data:`MAX_POLICY_ANCESTORS` in all."""
        wanted = [(a.ancestor_ref, a.conditions) for a in computed.ancestors]
        await self._write_entries(
            plural, policy, "ancestors", "ancestorRef", wanted, limit=MAX_POLICY_ANCESTORS
        )

    async def _write_entries(
        self,
        plural: str,
        obj: Mapping[str, Any],
        field: str,
        ref_field: str,
        wanted: Sequence[tuple[ParentReference, Sequence[Condition]]],
        limit: int | None = None,
    ) -> None:
        """``status.<field>``: other controllers' entries as they are, then ours, one per
        reference of ``wanted`` (``<ref_field>``: the reference) with its conditions,
        keeping the transition times of those that did not change."""
        status = self._status(plural, obj)
        existing: list[dict[str, Any]] = status.get(field) or []
        others = [e for e in existing if e.get("controllerName") != CONTROLLER_NAME]
        before = {
            _ref_key(e.get(ref_field) or {}): e
            for e in existing
            if e.get("controllerName") == CONTROLLER_NAME
        }
        ours = []
        for reference, conditions in wanted:
            ref = to_json(reference)
            old = before.get(_ref_key(ref)) or {}
            ours.append(
                {
                    ref_field: ref,
                    "controllerName": CONTROLLER_NAME,
                    "conditions": merge_conditions(
                        old.get("conditions") or [],
                        conditions,
                        observed_generation=_generation(obj),
                        now=_now(),
                    ),
                }
            )
        entries = (others + ours)[:limit]
        if entries != existing:
            await self._write(plural, obj, {**status, field: entries})

    async def _write(self, plural: str, obj: Mapping[str, Any], status: dict[str, Any]) -> None:
        key = _cache_key(plural, obj)
        self._written.pop(key, None)  # unknown until the write succeeds
        try:
            await self._kube.patch_status(_status_path(plural, obj), status)
        except KubeError as err:
            if err.status == 404:
                # Deleted since it was read: nothing to report on, and not a failure.
                self.gone += 1
                return
            raise
        self._written[key] = status
        self.writes += 1
