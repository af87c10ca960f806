"""The registry's key layout in Redis (schema version 2).

Every key starts with ``fed:v<SCHEMA_VERSION>:`` so a new encoding can live
beside the old one during an upgrade. Cluster ``c`` owns every key under
``fed:v2:{c}:`` and its agent's Redis user may write only those (see acl.py).
The braces are a Redis Cluster hash tag: all of one cluster's keys hash to one
slot, so each of its MULTI/EXEC transactions stays in one slot and the
registry can live on Redis Cluster.

=============================  ======  ===========================================
key                            type    contents
=============================  ======  ===========================================
``fed:v2:members``             set     ids of every cluster that ever joined
                                       (agents may only SADD it; never in a
                                       transaction with a cluster's keys)
``fed:v2:{c}:records``         hash    ``<kind>/<namespace>/<name>`` -> record
                                       (JSON, see federation.registry.kinds)
``fed:v2:{c}:cluster``         string  the cluster record (JSON), with its epoch
``fed:v2:{c}:stream``          stream  one entry per change of ``records``:
                                       ``op`` (upsert, delete, resync), ``kind``,
                                       ``key`` (``namespace/name``), ``record``
                                       (JSON, on upsert)
``fed:v2:{c}:lease``           string  the agent's liveness, with a TTL
``fed:v2:{c}:seq``             string  a counter every transaction of ``c``'s
                                       writer increments: a count that is not
                                       the writer's tells it that a failover
                                       lost writes it had been told were done
``fed:v2:{_doorbell}:stream``  stream  on a Redis Cluster only, ``c`` after each
                                       change of ``c``: what wakes readers, who
                                       cannot block on every stream in one
                                       command there (see doorbell.py); agents
                                       may only XADD it
``fed:v2:{_hub}:programmed``   hash    ``<cluster>/<hub id>`` -> what that hub
                                       replica saw the cluster's Envoys apply of
                                       its Gateways (see hub_state.py); written
                                       by the hub only
=============================  ======  ===========================================

A writer changes ``records`` and appends to ``stream`` in one MULTI/EXEC, so
a reader that loads ``records`` with the stream's last id in one MULTI/EXEC
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
    """Every key of ``cluster`` starts with this; ``{cluster}`` is its hash tag."""
    return f"{PREFIX}{{{cluster}}}:"


#: On a Redis Cluster: which clusters changed, a hint for readers (doorbell.py).
DOORBELL = f"{PREFIX}{{_doorbell}}:stream"
#: The doorbell is a hint, so a short history does: a reader that misses rings
#: polls every stream anyway.
DOORBELL_MAXLEN = 1_000

#: The hub's own keys. ``_hub`` is no cluster id: ids are RFC 1123 subdomains.
HUB_PREFIX = f"{PREFIX}{{_hub}}:"


def programmed() -> str:
    return HUB_PREFIX + "programmed"


def records(cluster: str) -> str:
    return cluster_prefix(cluster) + "records"


def cluster_record(cluster: str) -> str:
    return cluster_prefix(cluster) + "cluster"


def stream(cluster: str) -> str:
    return cluster_prefix(cluster) + "stream"


def lease(cluster: str) -> str:
    return cluster_prefix(cluster) + "lease"


def seq(cluster: str) -> str:
    return cluster_prefix(cluster) + "seq"
