"""References across namespaces and to backends: ReferenceGrants and backendRefs.

Used by the listener stage (certificate Secrets) and the route stage (backends and
mirrors). A reference into another namespace is allowed only by a ReferenceGrant in the
*target* namespace that names the referring kind and namespace and the target kind (and
name, if it names one); deleting the grant revokes the reference at the next
translation.

A backend resolves to an Envoy cluster:

* ``Service`` (core group, the default): a Service of the route's own cluster, as its
  agent published it (a local Service record); the cluster ``local/<ns>/<name>/<port>``.
* ``ServiceImport`` (``multicluster.x-k8s.io``): the clusterset Service, served by every
  exporting cluster with one locality each, local first; the cluster
  ``clusterset/<ns>/<name>/<port>`` that every Envoy already has.

Anything else is ``InvalidKind``. The port must be one of the Service's (an HTTP port,
see :mod:`federation.translate.protocols`), and a GRPCRoute's backend must speak HTTP/2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from federation.registry.gatewayapi import (
    GATEWAY_GROUP,
    ReferenceGrantRecord,
    SecretObjectReference,
)
from federation.registry.records import LocalService, ServicePort
from federation.translate import names
from federation.translate.gateway.inputs import ClusterInputs
from federation.translate.gateway.status import ListenerReason, RouteReason
from federation.translate.ir import LocalClusterIR
from federation.translate.protocols import PortProtocol, port_protocol

MCS_GROUP = "multicluster.x-k8s.io"
CORE_GROUP = ""


def granted(
    grants: Iterable[ReferenceGrantRecord],
    *,
    from_group: str = GATEWAY_GROUP,
    from_kind: str,
    from_namespace: str,
    to_group: str,
    to_kind: str,
    to_namespace: str,
    to_name: str,
) -> bool:
    """Whether a ReferenceGrant in ``to_namespace`` allows this reference."""
    for grant in grants:
        if grant.namespace != to_namespace:
            continue
        if not any(
            f.group == from_group and f.kind == from_kind and f.namespace == from_namespace
            for f in grant.spec.from_
        ):
            continue
        if any(
            t.group == to_group and t.kind == to_kind and (t.name is None or t.name == to_name)
            for t in grant.spec.to
        ):
            return True
    return False


@dataclass(frozen=True)
class Backend:
    """A resolved backend: the Envoy cluster, or why there is none."""

    cluster: str | None
    #: Set when ``cluster`` is a Service of this cluster (it needs a cluster of its own).
    local: LocalService | None = None
    port: ServicePort | None = None
    problem: RouteReason | None = None
    message: str = ""

    @property
    def http2(self) -> bool:
        """Whether the backend's port speaks HTTP/2 (its cluster does then)."""
        return self.port is not None and port_protocol(self.port) is PortProtocol.HTTP2

    def local_cluster(self, cluster: str) -> LocalClusterIR | None:
        """The cluster of a Service of member cluster ``cluster`` (None: not one)."""
        if self.local is None or self.cluster is None or self.port is None:
            return None
        return LocalClusterIR(
            name=self.cluster,
            cluster=cluster,
            namespace=self.local.namespace,
            service=self.local.name,
            port=self.port,
            ports=self.local.ports,
            http2=self.http2,
            endpoints=self.local.endpoints,
        )


def gateway_may_use(
    grants: Iterable[ReferenceGrantRecord],
    gateway_namespace: str,
    kind: str,
    namespace: str,
    name: str,
) -> bool:
    """Whether a Gateway of ``gateway_namespace`` may refer to core ``kind`` (a Secret, a
    ConfigMap) ``namespace``/``name``: its own namespace's, or a ReferenceGrant there
    allows it."""
    return namespace == gateway_namespace or granted(
        grants,
        from_kind="Gateway",
        from_namespace=gateway_namespace,
        to_group=CORE_GROUP,
        to_kind=kind,
        to_namespace=namespace,
        to_name=name,
    )


def gateway_ref_problem(
    grants: Iterable[ReferenceGrantRecord],
    gateway_namespace: str,
    ref: SecretObjectReference,
    kind: str,
    wrong_kind: ListenerReason,
    field: str,
) -> tuple[ListenerReason, str] | None:
    """Why a Gateway's reference ``ref`` (in ``field``, which must name a core ``kind``)
    cannot be used: another kind (``wrong_kind``), or another namespace that grants
    nothing (``RefNotPermitted``); None when it can."""
    group = CORE_GROUP if ref.group is None else ref.group
    found = kind if ref.kind is None else ref.kind
    namespace = ref.namespace or gateway_namespace
    if (group, found) != (CORE_GROUP, kind):
        return wrong_kind, f"{field} {group or 'core'}/{found} {ref.name} is not a {kind}"
    if not gateway_may_use(grants, gateway_namespace, kind, namespace, ref.name):
        return (
            ListenerReason.REF_NOT_PERMITTED,
            f"{kind} {namespace}/{ref.name} is in another namespace and no ReferenceGrant in "
            f"{namespace} allows Gateways of {gateway_namespace} to refer to it",
        )
    return None


def local_cluster_name(namespace: str, name: str, port: int) -> str:
    return f"local/{namespace}/{name}/{port}"


def resolve_backend(
    inputs: ClusterInputs,
    *,
    route_group: str = GATEWAY_GROUP,
    route_kind: str,
    route_namespace: str,
    group: str | None,
    kind: str | None,
    namespace: str | None,
    name: str,
    port: int | None,
) -> Backend:
    """Resolve one backendRef (or mirror backendRef) of a route (or, with
    ``route_group`` and ``route_kind``, another referring object) in ``route_namespace``."""
    group = CORE_GROUP if group is None else group
    kind = "Service" if kind is None else kind
    target_ns = namespace or route_namespace
    what = f"{kind} {target_ns}/{name}"
    if (group, kind) not in ((CORE_GROUP, "Service"), (MCS_GROUP, "ServiceImport")):
        return _bad(
            RouteReason.INVALID_KIND,
            f"backendRef {group or 'core'}/{kind} {name}: only Service and "
            f"{MCS_GROUP}/ServiceImport are supported",
        )
    if target_ns != route_namespace and not granted(
        inputs.grants,
        from_group=route_group,
        from_kind=route_kind,
        from_namespace=route_namespace,
        to_group=group,
        to_kind=kind,
        to_namespace=target_ns,
        to_name=name,
    ):
        return _bad(
            RouteReason.REF_NOT_PERMITTED,
            f"{what} is in another namespace and no ReferenceGrant in {target_ns} allows "
            f"{_plural(route_kind)} of {route_namespace} to refer to it",
        )
    if port is None:
        return _bad(RouteReason.BACKEND_NOT_FOUND, f"{what}: the backendRef needs a port")
    if kind == "Service":
        local = inputs.local_services.get((target_ns, name))
        if local is None:
            return _bad(RouteReason.BACKEND_NOT_FOUND, f"{what} does not exist in this cluster")
        found = _port(local.ports, port)
        if found is None:
            return _bad(RouteReason.BACKEND_NOT_FOUND, f"{what} has no HTTP port {port}")
        problem = _protocol_problem(route_kind, found, what)
        if problem is not None:
            return problem
        cluster = local_cluster_name(target_ns, name, port)
        return Backend(cluster, local=local, port=found)
    merged = inputs.imports.get((target_ns, name))
    if merged is None:
        return _bad(
            RouteReason.BACKEND_NOT_FOUND, f"{what} does not exist: no cluster exports {name}"
        )
    found = _port(merged.ports, port)
    if found is None:
        return _bad(RouteReason.BACKEND_NOT_FOUND, f"{what} has no HTTP port {port}")
    problem = _protocol_problem(route_kind, found, what)
    if problem is not None:
        return problem
    return Backend(names.cluster_name(target_ns, name, port), port=found)


def _plural(kind: str) -> str:
    """``HTTPRoutes``, ``SecurityPolicies``."""
    return f"{kind[:-1]}ies" if kind.endswith("y") else f"{kind}s"


def _port(ports: Iterable[ServicePort], number: int) -> ServicePort | None:
    for p in ports:
        if p.port == number and port_protocol(p).served:
            return p
    return None


def _protocol_problem(route_kind: str, port: ServicePort, what: str) -> Backend | None:
    if route_kind == "GRPCRoute" and port_protocol(port) is not PortProtocol.HTTP2:
        return _bad(
            RouteReason.UNSUPPORTED_PROTOCOL,
            f"{what} port {port.port} does not speak HTTP/2, which gRPC needs: set its "
            "appProtocol to grpc (or kubernetes.io/h2c), or name it grpc",
        )
    return None


def _bad(reason: RouteReason, message: str) -> Backend:
    return Backend(None, problem=reason, message=message)
