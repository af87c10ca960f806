"""Cluster identity within a ClusterSet (KEP-2149).

A member cluster's id is the value of its cluster-scoped ClusterProperty named
``cluster.clusterset.k8s.io``: unique in the ClusterSet, immutable, and an
RFC-1123 subdomain (KEP-2149); at most 63 characters here, since it is also a
label value. The agent reads it at start (``agents.identity``); the id
then names the cluster's registry keys, its Envoy node cluster and the
``status.clusters`` entries of ServiceImports.

Pure and below every layer of ``federation``: the registry's record codec and
the model both validate ids with it.
"""

from __future__ import annotations

import re
from typing import NewType

from federation.errors import InvalidInputError

CLUSTER_ID_PROPERTY = "cluster.clusterset.k8s.io"
MAX_SUBDOMAIN_LENGTH = 253
MAX_LABEL_LENGTH = 63

ClusterId = NewType("ClusterId", str)

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def subdomain_errors(value: str) -> list[str]:
    """Why ``value`` is not an RFC-1123 subdomain; empty when it is one."""
    if not value:
        return ["must not be empty"]
    errors = []
    if len(value) > MAX_SUBDOMAIN_LENGTH:
        errors.append(f"must be at most {MAX_SUBDOMAIN_LENGTH} characters (has {len(value)})")
    for label in value.split("."):
        if len(label) > MAX_LABEL_LENGTH:
            errors.append(f"label {label[:20]!r}... is longer than {MAX_LABEL_LENGTH} characters")
        elif not _LABEL.match(label):
            errors.append(
                f"label {label!r} must consist of lower case alphanumeric characters or '-', "
                "and start and end with an alphanumeric character"
            )
    return errors


def cluster_id_errors(value: str) -> list[str]:
    """Why ``value`` is not a cluster id: an RFC-1123 subdomain that is also a label value
    (at most 63 characters), since imported EndpointSlices carry it in the
    ``multicluster.kubernetes.io/source-cluster`` label. Empty when it is one."""
    errors = subdomain_errors(value)
    if len(value) > MAX_LABEL_LENGTH:
        errors.append(
            f"must be at most {MAX_LABEL_LENGTH} characters (has {len(value)}): it is used "
            "as a label value"
        )
    return errors


def parse_cluster_id(value: str) -> ClusterId:
    """Validate ``value`` as a cluster id; raise :class:`InvalidInputError` naming every problem."""
    errors = cluster_id_errors(value)
    if errors:
        raise InvalidInputError(
            f"invalid cluster id {value!r} ({CLUSTER_ID_PROPERTY} must be an RFC-1123 "
            f"subdomain of at most {MAX_LABEL_LENGTH} characters): {'; '.join(errors)}"
        )
    return ClusterId(value)
