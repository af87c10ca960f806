"""EnvoyPatchPolicies applied to a node group's resources, after translation.

The first stage gives each Gateway its accepted policies, in order
(:mod:`federation.translate.gateway.patches`); the snapshot builder calls
:func:`apply_patches` on the group's assembled resources just before they are served.
Each policy applies **all or nothing**: its operations run in order on Envoy's proto JSON
of the resources (as envoy-data-plane's typed models write it, field names as in Envoy's
own config dump), and every resource it changed must then parse back into Envoy's typed
model, keeping its name. A policy that fails anywhere changes nothing, and its
:class:`PatchOutcome` says which patch failed, at which JSON path, and why; the policies
after it still apply. (Envoy Gateway keeps the patches of a policy that did apply; here
the unpatched configuration keeps serving until the policy is fixed.)

``add`` without a ``path`` adds a whole resource, as in Envoy Gateway. Our resource names
are ours (``gateway/<port>`` for a Gateway's listener and its route configuration), and a
patch that names a resource the group does not have lists the names it does have.

Pure: no I/O. The outcomes are published by :mod:`federation.hub.programmed`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer
from google.protobuf import json_format

from federation.translate.gateway.inputs import ObjectName
from federation.translate.ir import JSONPatchIR, PatchPolicyIR
from federation.translate.proxy import XdsResources
from federation.xds import envoy_models
from federation.xds.snapshot import ORDER, Resource

#: How many names a "not found" message lists at most.
_LISTED = 8


@dataclass(frozen=True)
class PatchOutcome:
    """What became of one policy: ``invalid`` says why none of its patches applied (None:
    all did), ``types`` the resource types it changed."""

    generation: int
    invalid: str | None = None
    types: frozenset[str] = frozenset()
    #: The hub does not allow patches: nothing was tried.
    disabled: bool = False


class _PatchFailed(Exception):
    pass


def apply_patches(
    resources: XdsResources[Resource], policies: Sequence[PatchPolicyIR], *, allowed: bool = True
) -> tuple[XdsResources[Resource], dict[ObjectName, PatchOutcome]]:
    """``resources`` with every policy that applies applied, and each policy's outcome
    (all ``disabled`` when patches are not ``allowed``)."""
    if not allowed:
        return resources, {
            (p.namespace, p.name): PatchOutcome(p.generation, disabled=True) for p in policies
        }
    current = {t: dict(kind) for t, kind in zip(ORDER, resources.by_kind(), strict=True)}
    outcomes = {}
    for policy in policies:
        key = (policy.namespace, policy.name)
        try:
            changed = _apply_policy(current, policy)
        except _PatchFailed as err:
            outcomes[key] = PatchOutcome(policy.generation, str(err))
            continue
        for resource in changed:
            current[resource.type_url][resource.name] = resource
        outcomes[key] = PatchOutcome(
            policy.generation, None, frozenset(r.type_url for r in changed)
        )
    return XdsResources.of_kinds(*(current[t] for t in ORDER)), outcomes


def _apply_policy(
    current: Mapping[str, Mapping[str, Resource]], policy: PatchPolicyIR
) -> list[Resource]:
    """The resources ``policy`` changes or adds; _PatchFailed naming the failing patch."""
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    touched: dict[tuple[str, str], list[int]] = {}  # which patches changed each resource
    for i, patch in enumerate(policy.patches):
        where = f"jsonPatches[{i}] ({_short(patch.type_url)} {patch.name!r})"
        touched.setdefault((patch.type_url, patch.name), []).append(i)
        if patch.op == "add" and patch.path is None:
            doc = _value(patch, where)
            if not isinstance(doc, dict):
                raise _PatchFailed(f"{where}: add without a path needs a whole resource")
            name = envoy_models.name_of(patch.type_url, doc)
            if name in current.get(patch.type_url, {}) or (patch.type_url, name) in docs:
                raise _PatchFailed(f"{where}: a resource named {name!r} exists already")
            docs[patch.type_url, name] = doc
            touched.setdefault((patch.type_url, name), []).append(i)
            continue
        key = (patch.type_url, patch.name)
        if key not in docs:
            docs[key] = _document(current, patch, where)
        docs[key] = _operate(docs[key], patch, where)
    return [
        _parsed(type_url, name, doc, touched[type_url, name])
        for (type_url, name), doc in sorted(docs.items())
    ]


def _document(
    current: Mapping[str, Mapping[str, Resource]], patch: JSONPatchIR, where: str
) -> dict[str, Any]:
    """The named resource as Envoy's proto JSON (envoy-data-plane's model)."""
    of_type = current.get(patch.type_url, {})
    resource = of_type.get(patch.name)
    if resource is None:
        names = sorted(of_type)
        listed = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
        raise _PatchFailed(
            f"{where}: the Gateway's configuration has no such {_short(patch.type_url)} "
            f"(it has: {listed or 'none'})"
        )
    return envoy_models.decode(patch.type_url, patch.name, resource.body)


def _operate(doc: dict[str, Any], patch: JSONPatchIR, where: str) -> dict[str, Any]:
    operation: dict[str, Any] = {"op": patch.op, "path": patch.path or ""}
    if patch.from_ is not None:
        operation["from"] = patch.from_
    if patch.value is not None:
        operation["value"] = _value(patch, where)
    try:
        result = jsonpatch.apply_patch(doc, [operation])
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as err:
        raise _PatchFailed(f"{where}: {patch.op} {patch.path}: {err}") from err
    if not isinstance(result, dict):
        raise _PatchFailed(f"{where}: {patch.op} {patch.path}: the resource is no longer an object")
    return result


def _value(patch: JSONPatchIR, where: str) -> Any:
    try:
        return json.loads(patch.value or "null")
    except ValueError as err:  # records hold canonical JSON: only a broken record
        raise _PatchFailed(f"{where}: value is not JSON: {err}") from err


def _parsed(type_url: str, name: str, doc: dict[str, Any], patches: list[int]) -> Resource:
    """A patched resource, validated: it parses into Envoy's typed model (upb, then
    envoy-data-plane's) and keeps its name. ``patches``: the indexes that changed it."""
    where = f"jsonPatches[{', '.join(map(str, patches))}] ({_short(type_url)} {name!r})"
    try:
        message = envoy_models.parse(type_url, doc)
        envoy_models.decode(type_url, name, message.SerializeToString())
    except json_format.ParseError as err:
        # The first line names the field and its path; the next lists every field.
        reason = str(err).split("\n", 1)[0]
        raise _PatchFailed(
            f"{where}: the result is not a valid {_short(type_url)}: {reason}"
        ) from None
    except envoy_models.DecodeError as err:
        raise _PatchFailed(f"{where}: the result is not valid: {err.path}: {err.reason}") from err
    patched_name = envoy_models.name_of(type_url, doc)
    if patched_name != name:
        raise _PatchFailed(f"{where}: renames the resource {patched_name!r}: names are kept")
    return Resource.of(message, name)


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]
