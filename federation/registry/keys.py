"""The registry's key layout in Redis (version 1).

Every key starts with ``fed:v<SCHEMA_VERSION>:`` so a new encoding can live
beside the old one during an upgrade. Cluster ``c`` owns every key under
``fed:v1:c:`` and its agent's Redis user may write only those (see acl.py):

=============================  ======  ===========================================
key                            type    contents
=============================  ======  ===========================================
``fed:v1:members``             set     ids of every cluster that ever joined
                                       (agents may only SADD it)
``fed:v1:{c}:services``        hash    ``namespace/name`` -> service record (JSON)
``fed:v1:{c}:cluster``         string  the cluster record (JSON), with its epoch
``fed:v1:{c}:stream``          stream  one entry per change of ``services``:
                                       ``op`` (upsert, delete, resync), ``key``,
                                       ``record`` (JSON, on upsert)
``fed:v1:{c}:lease``           string  the agent's liveness, with a TTL
=============================  ======  ===========================================

A writer changes ``services`` and appends to ``stream`` in one MULTI/EXEC, so
a reader that loads ``services`` with the stream's last id in one MULTI/EXEC
and then tails from that id sees every change exactly once.
"""

from __future__ import annotations

from federation.registry.records import SCHEMA_VERSION

PREFIX = f"fed:v{SCHEMA_VERSION}:"
MEMBERS = PREFIX + "members"
#: Streams are trimmed (approximately) to this many entries; a reader that falls
#: further behind reloads the cluster in full.
STREAM_MAXLEN = 10_000


def cluster_prefix(cluster: str) -> str:
    return f"{PREFIX}{cluster}:"


def services(cluster: str) -> str:
    return cluster_prefix(cluster) + "services"


def cluster_record(cluster: str) -> str:
    return cluster_prefix(cluster) + "cluster"


def stream(cluster: str) -> str:
    return cluster_prefix(cluster) + "stream"


def lease(cluster: str) -> str:
    return cluster_prefix(cluster) + "lease"
