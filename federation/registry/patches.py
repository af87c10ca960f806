"""EnvoyPatchPolicy records: JSON patches on the Envoy configuration of one Gateway.

Envoy Gateway's ``EnvoyPatchPolicy`` (``gateway.envoyproxy.io/v1alpha1``, v1.9.1) is the
escape hatch for what no API covers yet: RFC 6902 operations on the xDS resources the
control plane generated, applied by the hub after translation (:mod:`federation.hub.patches`).
An agent publishes its cluster's policies as they are written; the spec mirrors Envoy
Gateway's field for field. An operation's ``value`` is any JSON: the record keeps it as
canonical JSON text (:func:`canonical_value`), so that equal values give equal records.
Nothing secret: a patch is configuration, and one naming a credential is the user's
choice (as it is with Envoy Gateway).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from federation.registry.codec import JSON_NAME
from federation.registry.policies import PolicyTargetReference

#: ``spec.type``: the only kind of patch Envoy Gateway defines.
JSON_PATCH = "JSONPatch"


@dataclass(frozen=True)
class JSONPatchOperation:
    """``operation``: an RFC 6902 operation (``op``, ``path``, ``from``, ``value``).
    ``json_path`` (an RFC 9535 selector) is kept so that it can be refused by name."""

    op: str
    path: str | None = None
    json_path: str | None = None
    from_: str | None = field(default=None, metadata={JSON_NAME: "from"})
    #: Canonical JSON text of the value (None: not set).
    value: str | None = None


@dataclass(frozen=True)
class EnvoyJSONPatchConfig:
    """``jsonPatches[]``: which resource (its type URL and name) and the operation."""

    type: str
    name: str
    operation: JSONPatchOperation


@dataclass(frozen=True)
class EnvoyPatchPolicySpec:
    type: str
    target_ref: PolicyTargetReference
    json_patches: tuple[EnvoyJSONPatchConfig, ...] = ()
    #: Lower first (Envoy Gateway: int32 min is applied first), then oldest, then by name.
    priority: int = 0

    @staticmethod
    def prepare_json(spec: Mapping[str, Any]) -> dict[str, Any]:
        """The Kubernetes spec with each operation's ``value`` as canonical JSON text."""
        out = dict(spec)
        patches = out.get("jsonPatches")
        if isinstance(patches, list):
            out["jsonPatches"] = [_with_text_value(p) for p in patches]
        return out


def canonical_value(value: Any) -> str:
    """Any JSON value as the text records keep: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _with_text_value(patch: Any) -> Any:
    if not isinstance(patch, dict) or not isinstance(patch.get("operation"), dict):
        return patch
    operation = dict(patch["operation"])
    if "value" in operation:
        operation["value"] = canonical_value(operation["value"])
    return {**patch, "operation": operation}


@dataclass(frozen=True)
class EnvoyPatchPolicyRecord:
    """An EnvoyPatchPolicy of ``cluster``. ``unsupported``: the paths of the fields it
    sets that this version does not know, sorted; a policy with any applies nowhere."""

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = "envoypatchpolicy"

    cluster: str
    namespace: str
    name: str
    spec: EnvoyPatchPolicySpec
    generation: int = 0
    created: str = ""
    unsupported: tuple[str, ...] = ()
