"""What ``/debug/config-dump?cluster=<id>`` answers: a node group's snapshot as it is served.

Each resource goes out as the hub serves it (name, content-hash version, serialized bytes
in base64): the hub does not decode what it serves; ``fedctl config-dump`` does
(:mod:`federation.cli.config_dump`).
"""

from __future__ import annotations

import base64

from federation.debug_payloads import ConfigDump
from federation.hub.extension import GroupRun
from federation.xds.snapshot import ORDER, Resource, SnapshotCache


def payload(cache: SnapshotCache, group: str, run: GroupRun | None = None) -> ConfigDump | None:
    """The group's current snapshot, or None when the hub has none for it; with ``run``
    (an extension server's last run of it), what each hook changed."""
    snapshot = cache.get(group)
    if snapshot is None:
        return None
    types = [t for t in ORDER if t in snapshot.resources]
    types += sorted(t for t in snapshot.resources if t not in ORDER)
    found: ConfigDump = {
        "cluster": group,
        "ready": cache.ready,
        "generation": cache.generation(group),
        "versions": {t: snapshot.version(t) for t in types},
        "resources": {
            t: [
                {
                    "name": r.name,
                    "version": r.version,
                    "body": base64.b64encode(r.body).decode(),
                }
                for r in sorted(snapshot.of(t).values(), key=lambda r: r.name)
            ]
            for t in types
        },
    }
    if run is not None:
        found["extension"] = {
            "error": run.error,
            "hooks": {
                hook: [
                    {"type": t, "name": n, "before": _b64(before), "after": _b64(after)}
                    for t, n, (before, after) in changes
                ]
                for hook, changes in run.changes().items()
            },
        }
    return found


def _b64(resource: Resource | None) -> str | None:
    return None if resource is None else base64.b64encode(resource.body).decode()
