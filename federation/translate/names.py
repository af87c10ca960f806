"""The documented names of the xDS resources the hub serves.

Used by the translator (``federation.translate.clusterset``) to name what it
builds, by the hub's xDS layer to recognise resource names Envoy asks for, and
by ``fedctl`` to show them. A name is part of the contract with every Envoy
that holds config from us: changing the scheme replaces every resource.

* EDS cluster (and its ClusterLoadAssignment) per ServiceImport port:
  ``clusterset/<namespace>/<name>/<port>``, ``<port>`` the service port
  *number*: port names may be empty, numbers never are. Only TCP ports are
  translated (the data path is an HTTP listener), so the number is unique
  within an import even when a UDP port shares it.
* Route configuration: ``clusterset``; listener: ``clusterset-http``.
* Host names: ``<name>.<namespace>.svc.clusterset.local`` (MCS DNS).
"""

from __future__ import annotations

from federation.errors import InvalidInputError

#: The MCS DNS zone of the clusterset (KEP-1645).
SUFFIX = "svc.clusterset.local"

CLUSTER_PREFIX = "clusterset"
ROUTE_CONFIG_NAME = "clusterset"
LISTENER_NAME = "clusterset-http"


def cluster_name(namespace: str, name: str, port: int) -> str:
    """The EDS cluster (and ClusterLoadAssignment) name of one ServiceImport port."""
    return f"{CLUSTER_PREFIX}/{namespace}/{name}/{port}"


def parse_cluster_name(value: str) -> tuple[str, str, int]:
    """``(namespace, name, port)`` of a :func:`cluster_name`; raise InvalidInputError otherwise.

    For the xDS layer, which must answer requests for names it does not know
    (yet) and wants to tell ours from garbage.
    """
    parts = value.split("/")
    if (
        len(parts) != 4
        or parts[0] != CLUSTER_PREFIX
        or not parts[1]
        or not parts[2]
        or not parts[3].isdigit()
        or not 1 <= int(parts[3]) <= 65535
        or str(int(parts[3])) != parts[3]
    ):
        raise InvalidInputError(
            f"{value!r} is not a clusterset cluster name "
            f"({CLUSTER_PREFIX}/<namespace>/<name>/<port>)"
        )
    return parts[1], parts[2], int(parts[3])


def host(namespace: str, name: str) -> str:
    """The clusterset DNS name of a ServiceImport: ``<name>.<namespace>.svc.clusterset.local``."""
    return f"{name}.{namespace}.{SUFFIX}"


def hostnames(namespace: str, name: str, port: int, *, default: bool = False) -> tuple[str, ...]:
    """The virtual host domains of one ServiceImport port.

    Always ``<host>:<port>`` (what clients send in ``Host`` for a non-default
    port); with ``default`` also the bare ``<host>``, which clients send for
    the port their scheme implies. Only one port of an import may be the
    default, so that domains stay unique in the route configuration.
    """
    h = host(namespace, name)
    return (h, f"{h}:{port}") if default else (f"{h}:{port}",)
