"""What ``/debug/config-dump?cluster=<id>`` answers: a node group's snapshot as it is served.

Each resource goes out as the hub serves it (name, content-hash version, serialized bytes
in base64): the hub does not decode what it serves; ``fedctl config-dump`` does
(:mod:`federation.cli.config_dump`).
"""

from __future__ import annotations

import base64

from federation.debug_payloads import ConfigDump
from federation.xds.snapshot import ORDER, SnapshotCache


def payload(cache: SnapshotCache, group: str) -> ConfigDump | None:
    """The group's current snapshot, or None when the hub has none for it."""
    snapshot = cache.get(group)
    if snapshot is None:
        return None
    types = [t for t in ORDER if t in snapshot.resources]
    types += sorted(t for t in snapshot.resources if t not in ORDER)
    return {
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
