"""EnvoyPatchPolicies applied to a node group's resources, after translation.

The first stage gives each Gateway its accepted policies, in order
(:mod:`federation.translate.gateway.patches`); the snapshot builder calls
:func:`apply_patches` on the group's assembled resources just before they are served.
Each policy applies **all or nothing**: its operations run in order on Envoy's proto JSON
of the resources (field names as in Envoy's own config dump, as protobuf's json_format
and envoy-data-plane's models write them), and every resource it changed must then parse
back into Envoy's typed model (protobuf's, then envoy-data-plane's up to
:data:`TYPED_CHECK_BYTES`), keeping its name. A policy that fails anywhere changes nothing, and its
:class:`PatchOutcome` says which patch failed, at which JSON path, and why; the policies
after it still apply. (Envoy Gateway keeps the patches of a policy that did apply; here
the unpatched configuration keeps serving until the policy is fixed.)

``add`` without a ``path`` adds a whole resource, as in Envoy Gateway. Our resource names
are ours (``gateway/<port>`` for a Gateway's listener and its route configuration), and a
patch that names a resource the group does not have lists the names it does have.

Pure: no I/O. The outcomes are published by :mod:`federation.hub.programmed`.
"""

from __future__ import annotations

import itertools
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
from federation.xds.snapshot import ORDER, Resource, decode

#: How many names a "not found" message lists at most.
_LISTED = 8
#: Patched resources up to this size are also decoded with envoy-data-plane's typed
#: models; larger ones (a route configuration of hundreds of routes) are checked by
#: protobuf's parse alone, against the same Envoy protos: envoy-data-plane takes about 16 s
#: for a 500 KB route configuration, protobuf 0.1 s, and it checks nothing more (types
#: and oneofs, which the parse checks too).
TYPED_CHECK_BYTES = 64 * 1024
#: The largest patched resource (its JSON while patched, its bytes once parsed): a few
#: ``copy`` operations could otherwise double a resource until the hub runs out of
#: memory. Envoy Gateway's xDS messages are limited to 4 MiB.
MAX_RESOURCE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class PatchOutcome:
    """What became of one policy: ``invalid`` says why none of its patches applied (None:
    all did), ``types`` the resource types it changed."""

    generation: int
    invalid: str | None = None
    types: frozenset[str] = frozenset()
    #: The hub does not allow patches: nothing was tried.
    disabled: bool = False
    #: It failed because a resource it names is not there (Envoy Gateway's
    #: ``ResourceNotFound``).
    missing: bool = False


class _PatchFailed(Exception):
    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


#: A resource's key: its type URL and name.
_Key = tuple[str, str]


@dataclass
class _Staged:
    """One policy's patched documents, and which of its patches changed each."""

    docs: dict[_Key, dict[str, Any]]
    touched: dict[_Key, list[int]]


def apply_patches(
    resources: XdsResources[Resource], policies: Sequence[PatchPolicyIR], *, allowed: bool = True
) -> tuple[XdsResources[Resource], dict[ObjectName, PatchOutcome]]:
    """``resources`` with every policy that applies applied, and each policy's outcome
    (all ``disabled`` when patches are not ``allowed``).

    Every policy's operations run first, on the JSON the policies before it left; each
    resource they changed is then parsed back once. Only when one does not parse are the
    policies applied again one by one, each result parsed, to say whose it is: a route
    configuration of a thousand routes takes a fifth of a second to parse."""
    if not allowed:
        return resources, {
            (p.namespace, p.name): PatchOutcome(p.generation, disabled=True) for p in policies
        }
    current = {t: dict(kind) for t, kind in zip(ORDER, resources.by_kind(), strict=True)}
    together = _together(current, policies)
    if together is None:
        return _one_by_one(current, policies)
    return XdsResources.of_kinds(*(current[t] for t in ORDER)), together


def _together(
    current: dict[str, dict[str, Resource]], policies: Sequence[PatchPolicyIR]
) -> dict[ObjectName, PatchOutcome] | None:
    """Apply every policy with one parse per changed resource (into ``current``); None,
    with ``current`` untouched, when a result does not parse."""
    state: dict[_Key, dict[str, Any]] = {}
    outcomes = {}
    for policy in policies:
        key = (policy.namespace, policy.name)
        try:
            staged = _stage(current, state, policy)
        except _PatchFailed as err:
            outcomes[key] = PatchOutcome(policy.generation, str(err), missing=err.missing)
            continue
        state.update(staged.docs)
        outcomes[key] = PatchOutcome(policy.generation, None, frozenset(t for t, _ in staged.docs))
    try:
        parsed = [_parsed(t, n, doc, []) for (t, n), doc in sorted(state.items())]
    except _PatchFailed:
        return None
    for resource in parsed:
        current[resource.type_url][resource.name] = resource
    return outcomes


def _one_by_one(
    current: dict[str, dict[str, Resource]], policies: Sequence[PatchPolicyIR]
) -> tuple[XdsResources[Resource], dict[ObjectName, PatchOutcome]]:
    """Apply each policy on what the ones before it left, each result parsed."""
    outcomes = {}
    for policy in policies:
        key = (policy.namespace, policy.name)
        try:
            staged = _stage(current, {}, policy)
            changed = [
                _parsed(t, n, doc, staged.touched[t, n])
                for (t, n), doc in sorted(staged.docs.items())
            ]
        except _PatchFailed as err:
            outcomes[key] = PatchOutcome(policy.generation, str(err), missing=err.missing)
            continue
        for resource in changed:
            current[resource.type_url][resource.name] = resource
        outcomes[key] = PatchOutcome(
            policy.generation, None, frozenset(r.type_url for r in changed)
        )
    return XdsResources.of_kinds(*(current[t] for t in ORDER)), outcomes


def _stage(
    current: Mapping[str, Mapping[str, Resource]],
    state: Mapping[_Key, dict[str, Any]],
    policy: PatchPolicyIR,
) -> _Staged:
    """``policy``'s operations on copies of the resources' JSON (``state``'s where the
    policies before it changed them); _PatchFailed naming the failing patch."""
    staged = _Staged({}, {})
    docs = staged.docs
    for i, patch in enumerate(policy.patches):
        where = f"jsonPatches[{i}] ({_short(patch.type_url)} {patch.name!r})"
        if patch.op == "add" and patch.path is None:
            doc = _value(patch, where)
            if not isinstance(doc, dict):
                raise _PatchFailed(f"{where}: add without a path needs a whole resource")
            name = envoy_models.name_of(patch.type_url, doc)
            if not name:
                raise _PatchFailed(f"{where}: the resource to add has no name")
            key = (patch.type_url, name)
            if name in current.get(patch.type_url, {}) or key in state or key in docs:
                raise _PatchFailed(f"{where}: a resource named {name!r} exists already")
            docs[key] = doc
            staged.touched.setdefault(key, []).append(i)
            continue
        key = (patch.type_url, patch.name)
        staged.touched.setdefault(key, []).append(i)
        if key not in docs:
            before = state.get(key)
            # A copy: the policy may fail, and what the ones before it left must stay.
            docs[key] = (
                _document(current, patch, where)
                if before is None
                else json.loads(json.dumps(before))
            )
        docs[key] = _operate(docs[key], patch, where)
    return staged


def _document(
    current: Mapping[str, Mapping[str, Resource]], patch: JSONPatchIR, where: str
) -> dict[str, Any]:
    """The named resource as Envoy's proto JSON (field names as in Envoy's config dump,
    which is what envoy-data-plane's models write too)."""
    of_type = current.get(patch.type_url, {})
    resource = of_type.get(patch.name)
    if resource is None:
        names = sorted(of_type)
        listed = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
        raise _PatchFailed(
            f"{where}: the Gateway's configuration has no such {_short(patch.type_url)} "
            f"(it has: {listed or 'none'})",
            missing=True,
        )
    document: dict[str, Any] = json_format.MessageToDict(
        decode(resource), preserving_proto_field_name=True
    )
    return document


def _operate(doc: dict[str, Any], patch: JSONPatchIR, where: str) -> dict[str, Any]:
    """One operation on a resource's JSON (the policy's own copy: changed in place).
    ``add`` creates the objects (or arrays, before an index or ``-``) its path goes
    through, as Envoy Gateway does: proto JSON leaves out empty fields, so a patch cannot
    count on them."""
    operation: dict[str, Any] = {"op": patch.op, "path": patch.path or ""}
    if patch.from_ is not None:
        operation["from"] = patch.from_
    if patch.value is not None:
        operation["value"] = _value(patch, where)
    what = f"{where}: {patch.op} {patch.path}"
    try:
        if patch.op == "add":
            _make_parents(doc, patch.path or "")
        result = jsonpatch.apply_patch(doc, [operation], in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as err:
        raise _PatchFailed(f"{what}: {_brief(err)}") from err
    if not isinstance(result, dict):
        raise _PatchFailed(f"{what}: the resource is no longer an object")
    # A copy may double the resource: a few would exhaust the hub's memory.
    if patch.op == "copy" and len(json.dumps(result)) > MAX_RESOURCE_BYTES:
        raise _PatchFailed(f"{what}: the resource grows beyond {MAX_RESOURCE_BYTES} bytes")
    return result


def _make_parents(doc: dict[str, Any], path: str) -> None:
    """Make every missing container on the way to ``path``'s last part, in ``doc``."""
    parts = jsonpointer.JsonPointer(path).parts
    here: Any = doc
    for part, following in itertools.pairwise(parts):
        made: Any = [] if following == "-" or following.isdigit() else {}
        if isinstance(here, dict):
            here = here.setdefault(part, made)
        elif isinstance(here, list) and part.isdigit() and int(part) < len(here):
            here = here[int(part)]
        else:
            break  # jsonpatch says what is wrong


def _brief(err: Exception) -> str:
    """The library's message without the document it may quote (a whole resource)."""
    text = str(err)
    for quoted in (" in {", " in ["):
        text = text.split(quoted, 1)[0]
    return text if len(text) <= 300 else text[:300] + "..."


def _value(patch: JSONPatchIR, where: str) -> Any:
    try:
        return json.loads(patch.value or "null")
    except ValueError as err:  # records hold canonical JSON: only a broken record
        raise _PatchFailed(f"{where}: value is not JSON: {err}") from err


def _parsed(type_url: str, name: str, doc: dict[str, Any], patches: list[int]) -> Resource:
    """A patched resource, validated: it parses into Envoy's typed model (upb, then
    envoy-data-plane's) and keeps its name. ``patches``: the indexes that changed it."""
    where = f"jsonPatches[{', '.join(map(str, patches))}] ({_short(type_url)} {name!r})"
    patched_name = envoy_models.name_of(type_url, doc)
    if not patched_name:
        raise _PatchFailed(f"{where}: the resource has no name")
    if patched_name != name:
        raise _PatchFailed(f"{where}: renames the resource {patched_name!r}: names are kept")
    try:
        message = envoy_models.parse(type_url, doc)
    except json_format.ParseError as err:
        # The first line names the field and its path; the next lists every field.
        reason = _brief(Exception(str(err).split("\n", 1)[0]))
        raise _PatchFailed(
            f"{where}: the result is not a valid {_short(type_url)}: {reason}"
        ) from None
    body = message.SerializeToString()
    if len(body) > MAX_RESOURCE_BYTES:
        raise _PatchFailed(f"{where}: the result is larger than {MAX_RESOURCE_BYTES} bytes")
    if len(body) > TYPED_CHECK_BYTES:
        return Resource.of(message, name)
    try:
        envoy_models.decode(type_url, name, body)
    except envoy_models.DecodeError as err:
        # envoy-data-plane has no model of some types Envoy accepts (TypedStruct): those
        # are checked by protobuf's parse alone.
        if "unregistered type" not in err.reason:
            raise _PatchFailed(
                f"{where}: the result is not valid: {err.path}: {err.reason}"
            ) from err
    return Resource.of(message, name)


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]
