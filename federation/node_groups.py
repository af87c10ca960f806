"""Node groups: which Envoys get the same configuration, and how a group is named.

Every member cluster has two kinds of Envoys, each a node group of its own:

* the cluster's **shared Envoys** (the agent chart's ``gateway`` Deployment, or any Envoy
  started with ``fedctl bootstrap --cluster b``), which serve the clusterset listener:
  group ``b``;
* each **Gateway's own Envoys** (provisioned by the cluster's agent for every Gateway of
  our class), which serve that Gateway's listeners and nothing else: group
  ``b/<namespace>/<name>``. Two Gateways on the same port therefore never share an Envoy
  listener, and one Gateway's rejected configuration is that Gateway's alone.

An Envoy names its Gateway in its node metadata (:data:`GATEWAY_METADATA`, written by
``fedctl bootstrap --gateway NAMESPACE/NAME``); its cluster still comes from its client
certificate, so an Envoy of cluster b can only ever be served b's Gateways.

Cluster ids, namespaces and Gateway names never contain ``/``, so a group name is
unambiguous. Pure and below every layer: the xDS server, the hub and the agents use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.errors import InvalidInputError
from federation.identity import parse_cluster_id, subdomain_errors

#: The node metadata key naming the Gateway an Envoy serves (``<namespace>/<name>``).
GATEWAY_METADATA = "federation.gateway"


@dataclass(frozen=True, order=True)
class GroupName:
    """A parsed node group: a cluster's shared Envoys, or one Gateway's Envoys."""

    cluster: str
    namespace: str | None = None
    name: str | None = None

    @property
    def gateway(self) -> tuple[str, str] | None:
        """(namespace, name) of the Gateway, or None for the cluster's shared Envoys."""
        if self.namespace is None or self.name is None:
            return None
        return self.namespace, self.name

    def __str__(self) -> str:
        if self.gateway is None:
            return self.cluster
        return f"{self.cluster}/{self.namespace}/{self.name}"


def gateway_group(cluster: str, namespace: str, name: str) -> str:
    """The group name of the Envoys of Gateway ``namespace/name`` in ``cluster``."""
    return str(GroupName(cluster, namespace, name))


def parse_group(group: str) -> GroupName:
    """The parts of a group name (as :func:`gateway_group` or a cluster id writes it)."""
    parts = group.split("/")
    if len(parts) == 3:
        return GroupName(*parts)
    return GroupName(group)


def cluster_of_group(group: str) -> str:
    """The member cluster a node group belongs to."""
    return group.split("/", 1)[0]


def parse_gateway_ref(value: str, what: str = "gateway") -> tuple[str, str]:
    """``NAMESPACE/NAME`` of a Gateway, checked; raises InvalidInputError."""
    namespace, sep, name = value.partition("/")
    if not sep or "/" in name:
        raise InvalidInputError(f"{what} must be NAMESPACE/NAME, got {value!r}")
    for part, label in ((namespace, "namespace"), (name, "name")):
        errors = subdomain_errors(part)
        if errors:
            raise InvalidInputError(f"{what} {label} {part!r}: {'; '.join(errors)}")
    return namespace, name


def group_for(cluster: str, gateway: str | None) -> str:
    """The group of an Envoy of ``cluster`` that names ``gateway`` (None or empty: the
    cluster's shared Envoys); raises InvalidInputError on a malformed name."""
    parse_cluster_id(cluster)
    if not gateway:
        return cluster
    return gateway_group(cluster, *parse_gateway_ref(gateway))
