"""``fedctl config-dump``: exactly what the hub serves a node group, and how an Envoy differs.

    fedctl config-dump --hub http://HUB:18080 --cluster b [--type clusters|secrets|...]
        [-o yaml|json] [--node ID] [--envoy-admin HOST:PORT]

The hub's ``/debug/config-dump?cluster=b`` hands over the group's current snapshot as it
serves it: per type, each resource's name, content-hash version and serialized bytes (the
hub never decodes what it serves). They are decoded here into envoy-data-plane's typed
models, so the output uses Envoy's own field names (proto JSON, snake_case, as Envoy's
admin ``/config_dump`` prints them), and a resource that does not decode is reported
with the path of the field that failed.

* ``--node ID`` adds what that connected Envoy last ACKed, per type, against what the hub
  holds (the hub's own bookkeeping: ``/debug/proxy-status``), with the last NACK message.
* ``--envoy-admin HOST:PORT`` reads that Envoy's ``/config_dump?include_eds`` and prints
  every resource that differs as a unified diff (hub first), with the NACK message the
  hub recorded for the Envoy's node (its id comes from the Envoy's bootstrap). The exit
  status is then 1 when anything differs, as ``diff`` does. Envoy shows endpoints as it
  applied them (its defaults filled in, empty localities dropped), and Secrets with the
  private key's location redacted: both sides are compared in that form
  (:func:`as_applied`).

Pure functions (:func:`envoy_resources`, :func:`render`, :func:`compare`) with the HTTP
reads at the edge (:func:`run`); decoding is :mod:`federation.xds.envoy_models`'.
"""

from __future__ import annotations

import base64
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from federation.debug_payloads import ConfigDump, HookChange
from federation.errors import InvalidInputError
from federation.xds.envoy_models import DecodeError, decode, name_of, normalise
from federation.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

#: ``--type`` names, in push order, and their resource types.
TYPES: dict[str, str] = {
    "clusters": CLUSTER,
    "endpoints": ENDPOINT,
    "secrets": SECRET,
    "listeners": LISTENER,
    "routes": ROUTE,
}


@dataclass(frozen=True)
class Served:
    """One resource the hub serves: its name, content-hash version and decoded body."""

    name: str
    version: str
    resource: dict[str, Any] | None
    error: DecodeError | None = None


@dataclass(frozen=True)
class HookDiff:
    """What one extension server hook changed in one resource: a unified diff of its
    YAML (``before`` first)."""

    type_url: str
    name: str
    diff: str


@dataclass
class Dump:
    """What the hub serves one node group, by type URL, decoded; with an extension
    server, its last error and what each hook changed (by hook name)."""

    cluster: str
    ready: bool
    versions: dict[str, str]
    resources: dict[str, list[Served]] = field(default_factory=dict)
    extended: bool = False
    extension_error: str | None = None
    hooks: dict[str, list[HookDiff]] = field(default_factory=dict)

    @property
    def errors(self) -> list[DecodeError]:
        return [s.error for found in self.resources.values() for s in found if s.error]


def dump_of(payload: ConfigDump, types: Sequence[str] = tuple(TYPES.values())) -> Dump:
    """The hub's ``/debug/config-dump`` answer, decoded (only ``types``).

    A type the answer does not list is left out, not shown empty: a hub older than this
    fedctl does not serve it at all (a hub lists every type it serves, empty or not).
    """
    dump = Dump(
        cluster=str(payload["cluster"]),
        ready=bool(payload.get("ready")),
        versions=dict(payload.get("versions") or {}),
    )
    served = payload.get("resources") or {}
    for type_url in types:
        if type_url not in served:
            continue
        found = []
        for entry in served[type_url]:
            name, version = str(entry["name"]), str(entry["version"])
            try:
                resource = decode(type_url, name, base64.b64decode(entry["body"]))
                found.append(Served(name, version, resource))
            except DecodeError as err:
                found.append(Served(name, version, None, err))
        dump.resources[type_url] = sorted(found, key=lambda s: s.name)
    extension = payload.get("extension")
    if extension is not None:
        dump.extended = True
        dump.extension_error = extension.get("error")
        for hook, changes in sorted((extension.get("hooks") or {}).items()):
            dump.hooks[hook] = [_hook_diff(hook, change) for change in changes]
    return dump


def _hook_diff(hook: str, change: HookChange) -> HookDiff:
    type_url, name = change["type"], change["name"]
    sides = []
    for side in (change["before"], change["after"]):
        try:
            body = None if side is None else decode(type_url, name, base64.b64decode(side))
        except DecodeError as err:
            body = {"error": str(err)}
        sides.append(_yaml(body))
    label = f"{_short(type_url)}/{name}"
    diff = difflib.unified_diff(
        sides[0], sides[1], f"{label} before {hook}", f"{label} after {hook}"
    )
    return HookDiff(type_url, name, "".join(diff))


def _short(type_url: str) -> str:
    return next(short for short, url in TYPES.items() if url == type_url)


def render(dump: Dump, output: str = "yaml") -> str:
    """The dump as YAML or JSON: per type, its version and each resource."""
    document: dict[str, Any] = {"cluster": dump.cluster, "ready": dump.ready}
    for type_url, served in dump.resources.items():
        document[_short(type_url)] = {
            "version": dump.versions.get(type_url),
            "resources": [
                {"name": s.name, "version": s.version}
                | (
                    {"resource": s.resource}
                    if s.error is None
                    else {"error": {"field": s.error.path, "reason": s.error.reason}}
                )
                for s in served
            ],
        }
    if dump.extended:
        document["extension"] = {
            "error": dump.extension_error,
            "hooks": {
                hook: [{"type": _short(d.type_url), "name": d.name, "diff": d.diff} for d in diffs]
                for hook, diffs in dump.hooks.items()
            },
        }
    if output == "json":
        return json.dumps(document, indent=2) + "\n"
    return yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=100)


class _BlockDumper(yaml.SafeDumper):
    """YAML with multi-line strings (the hook diffs) as literal blocks."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _string)


def render_node(dump: Dump, proxy: Mapping[str, Any]) -> str:
    """The hub's versions beside what the node last ACKed, per type, with NACKs."""
    rows = [["TYPE", "HUB", "ACKED", "STATE"]]
    notes = []
    types = proxy.get("types") or {}
    for type_url in dump.resources:
        state = types.get(type_url) or {}
        rows.append(
            [
                _short(type_url),
                str(dump.versions.get(type_url) or "-"),
                str(state.get("acked_version") or "-"),
                str(state.get("state") or "not subscribed"),
            ]
        )
        nack = state.get("last_nack")
        if nack:
            notes.append(
                f"{_short(type_url)}: NACKed version {nack.get('version')} at "
                f"{nack.get('at')}: {nack.get('message')}"
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    header = f"node {proxy.get('node_id')} (cluster {proxy.get('group')}, {proxy.get('protocol')})"
    return "\n".join([header, *lines, *notes]) + "\n"


# --- Envoy's side --------------------------------------------------------------------

_SECTIONS: dict[str, tuple[str, str, str | None]] = {
    # config type suffix: (list field, resource field, wrapper of the resource field)
    "ClustersConfigDump": ("dynamic_active_clusters", "cluster", None),
    "EndpointsConfigDump": ("dynamic_endpoint_configs", "endpoint_config", None),
    "ListenersConfigDump": ("dynamic_listeners", "listener", "active_state"),
    "RoutesConfigDump": ("dynamic_route_configs", "route_config", None),
    "SecretsConfigDump": ("dynamic_active_secrets", "secret", None),
}
_SECTION_TYPES = {
    "ClustersConfigDump": CLUSTER,
    "EndpointsConfigDump": ENDPOINT,
    "ListenersConfigDump": LISTENER,
    "RoutesConfigDump": ROUTE,
    "SecretsConfigDump": SECRET,
}


@dataclass
class EnvoyView:
    """An Envoy's dynamic resources (normalised) and what it says it rejected."""

    node_id: str
    resources: dict[str, dict[str, dict[str, Any]]]
    #: Listener name -> the error details Envoy reports for a listener it rejected.
    errors: dict[str, str]


def envoy_resources(config_dump: Mapping[str, Any]) -> EnvoyView:
    """The dynamic clusters, endpoints, Secrets, listeners and routes of an Envoy's
    ``/config_dump?include_eds`` answer, normalised like the hub's side."""
    view = EnvoyView("", {t: {} for t in TYPES.values()}, {})
    for config in config_dump.get("configs", []):
        kind = str(config.get("@type", "")).rsplit(".", 1)[-1]
        if kind == "BootstrapConfigDump":
            view.node_id = str(config.get("bootstrap", {}).get("node", {}).get("id", ""))
            continue
        if kind not in _SECTIONS:
            continue
        type_url = _SECTION_TYPES[kind]
        entries, key, wrapper = _SECTIONS[kind]
        for entry in config.get(entries, []):
            if wrapper is not None:
                failed = entry.get("error_state")
                if failed:
                    view.errors[str(entry.get("name"))] = str(failed.get("details", ""))
                entry = entry.get(wrapper) or {}
            resource = entry.get(key)
            if resource:
                normalised = normalise(type_url, resource)
                view.resources[type_url][name_of(type_url, normalised)] = normalised
    return view


def _yaml(resource: Mapping[str, Any] | None) -> list[str]:
    if resource is None:
        return []
    return yaml.safe_dump(dict(resource), sort_keys=True, width=100).splitlines(keepends=True)


@dataclass(frozen=True)
class Comparison:
    """Per type: how many resources are the same, and a diff for each one that is not."""

    same: dict[str, int]
    diffs: dict[str, list[str]]
    notes: list[str]

    @property
    def differs(self) -> bool:
        return any(self.diffs.values())


#: Envoy's default overprovisioning factor, which its admin shows on every assignment.
_OVERPROVISIONING = 140
#: What Envoy's admin shows instead of a sensitive field (a private key, even its path).
_REDACTED = "[redacted]"


def _redacted_secret(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret as Envoy's admin shows it: every field of a private key redacted."""
    shown = json.loads(json.dumps(resource))  # a deep copy
    key = (shown.get("tls_certificate") or {}).get("private_key")
    if isinstance(key, dict):
        inline = base64.b64encode(_REDACTED.encode()).decode()  # bytes show as base64
        for name in key:
            key[name] = inline if name == "inline_bytes" else _REDACTED
    return dict(shown)


def as_applied(type_url: str, resource: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``resource`` as Envoy reports it applied: a ClusterLoadAssignment with Envoy's
    defaults filled in (overprovisioning factor, endpoint weight 1, an empty health-check
    config) and its empty localities dropped, which is how its admin shows endpoints; a
    Secret with its private key redacted. Other types unchanged. Both sides are compared
    in this form."""
    if resource is not None and type_url == SECRET:
        return _redacted_secret(resource)
    if resource is None or type_url != ENDPOINT:
        return None if resource is None else dict(resource)
    applied = json.loads(json.dumps(resource))  # a deep copy
    applied.setdefault("policy", {}).setdefault("overprovisioning_factor", _OVERPROVISIONING)
    localities = []
    for locality in applied.get("endpoints", []):
        hosts = locality.get("lb_endpoints", [])
        if not hosts:
            continue
        for host in hosts:
            host.setdefault("load_balancing_weight", 1)
            host.setdefault("endpoint", {}).setdefault("health_check_config", {})
        localities.append(locality)
    if localities:
        applied["endpoints"] = localities
    else:
        applied.pop("endpoints", None)
    return dict(applied)


def compare(dump: Dump, envoy: EnvoyView, proxy: Mapping[str, Any] | None) -> Comparison:
    """The hub's dump against an Envoy's view: unified diffs (hub first) of every
    resource that differs, and the NACK messages of the types that do."""
    same: dict[str, int] = {}
    diffs: dict[str, list[str]] = {}
    notes: list[str] = []
    nacks = (proxy or {}).get("types") or {}
    for type_url, served in dump.resources.items():
        short = _short(type_url)
        theirs = envoy.resources.get(type_url, {})
        ours = {s.name: s.resource for s in served}
        same[short], diffs[short] = 0, []
        for name in sorted(ours.keys() | theirs.keys()):
            mine = as_applied(type_url, ours.get(name))
            other = as_applied(type_url, theirs.get(name))
            if mine is not None and mine == other:
                same[short] += 1
                continue
            diffs[short].extend(
                difflib.unified_diff(
                    _yaml(mine),
                    _yaml(other),
                    fromfile=f"hub/{short}/{name}" if mine is not None else "/dev/null",
                    tofile=f"envoy/{short}/{name}" if other is not None else "/dev/null",
                )
            )
            if name in envoy.errors:
                notes.append(f"{short} {name}: Envoy rejected it: {envoy.errors[name]}")
        nack = (nacks.get(type_url) or {}).get("last_nack")
        if diffs[short] and nack:
            notes.append(
                f"{short}: the hub's version {nack.get('version')} was NACKed by "
                f"{envoy.node_id or 'this Envoy'} at {nack.get('at')}: {nack.get('message')}"
            )
    return Comparison(same, diffs, notes)


def render_comparison(comparison: Comparison, envoy: EnvoyView, admin: str) -> str:
    lines = [f"hub vs Envoy {envoy.node_id or '?'} ({admin}):"]
    for short, count in comparison.same.items():
        differing = sum(1 for line in comparison.diffs[short] if line.startswith("--- "))
        lines.append(f"  {short}: {count} same, {differing} differ")
    text = "\n".join(lines) + "\n"
    for short in comparison.same:
        text += "".join(comparison.diffs[short])
    for note in comparison.notes:
        text += note + "\n"
    return text


def types_of(names: Sequence[str]) -> list[str]:
    """``--type`` values to type URLs (all when none); InvalidInputError for others."""
    if not names:
        return list(TYPES.values())
    unknown = [n for n in names if n not in TYPES]
    if unknown:
        raise InvalidInputError(f"--type {', '.join(unknown)}: not one of {', '.join(TYPES)}")
    return [TYPES[n] for n in names]
