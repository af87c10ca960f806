"""IR clusters into Envoy clusters and ClusterLoadAssignments.

Called by :mod:`federation.translate.proxy` for the clusterset's clusters
(:class:`~federation.translate.ir.ServiceClusterIR`, one locality per source cluster) and
the local Services that Gateway routes use (:class:`~federation.translate.ir.LocalClusterIR`,
one locality), through the same :func:`cluster` and :func:`add_locality`. What every
cluster has beyond EDS over ADS comes from the features (:mod:`.features`).

Rules the endpoints keep:

* A locality is ``region="" zone=<cluster id> sub_zone=<cluster id>``. ``sub_zone`` is
  what the translation and the access log read. ``zone`` is there for Envoy's zone
  statistics: with the Envoy's own cluster id as its node's zone (``fedctl bootstrap``),
  Envoy counts requests, response classes and upstream times per source cluster
  (``cluster.<name>.zone.<own>.<source>.upstream_rq_*``, tagged ``source_cluster`` by the
  bootstrap's tag extractors when asked). Envoy's zone-aware routing stays off (it needs
  a ``local_cluster_name``, which we never set): failover is done with priorities.
* Local first: for an Envoy in an *exporting* cluster, its own cluster's locality has
  priority 0 and every other cluster's priority 1. An Envoy in a cluster that does not
  export the Service sees everything at priority 0, so all non-exporters share one
  ClusterLoadAssignment: a Service has at most exporters + 1 variants per address family
  (:func:`variant_for`), never one per member cluster. Envoy's default overprovisioning
  factor (1.4) moves traffic to priority 1 progressively as the local endpoints become
  unhealthy or ejected.
* Unless the viewer's own FailoverPolicy says otherwise (:class:`FailoverIR
  <federation.translate.ir.FailoverIR>`): then its Envoys get a variant of their own,
  the exporters it lists first (``order``: a priority level each; ``weights``: one level
  with those weights), the others at the level after. Only clusters with such a policy
  add variants.
* One address family per node group (``TranslateOptions.ip_families``): a dual-stack
  Service's pods are listed once, never once per family.
* Unhealthy endpoints stay listed, so that they count against their priority level's
  health, which is what moves traffic to the next priority. A stale cluster's locality
  carries ``filter_metadata {"federation": {"stale": true}}``.
* Deterministic: equal inputs give equal bytes, whatever the order of slices and
  endpoints.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

import socket
from collections.abc import Collection
from typing import Any, NamedTuple, Protocol

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from federation.model.imports import exposes
from federation.registry.records import EndpointSet, ServicePort
from federation.translate.inputs import AddressMap, TranslateOptions
from federation.translate.ir import (
    FailoverIR,
    LocalClusterIR,
    PolicyClusterIR,
    ServiceClusterIR,
)
from federation.translate.proxy.common import ads
from federation.translate.proxy.features import CLUSTER_HOOKS, ClusterSource

STALE_METADATA_KEY = "federation"

_HEALTHY: int = health_check_pb2.HEALTHY
_UNHEALTHY: int = health_check_pb2.UNHEALTHY
_DRAINING: int = health_check_pb2.DRAINING
# When two slices list the same (address, port), the most available state wins:
# during a slice migration the same pod can briefly appear in both.
_HEALTH_RANK = {_HEALTHY: 0, _DRAINING: 1, _UNHEALTHY: 2}
_FAMILIES = {"IPv4": socket.AF_INET, "IPv6": socket.AF_INET6}


def cluster(ir: ClusterSource, options: TranslateOptions) -> cluster_pb2.Cluster:
    """An EDS cluster, its endpoints over ADS, with every feature's part."""
    out = cluster_pb2.Cluster(name=ir.name, type=cluster_pb2.Cluster.EDS)
    # No service_name: the ClusterLoadAssignment is named after the cluster.
    out.eds_cluster_config.eds_config.CopyFrom(ads())
    for hook in CLUSTER_HOOKS:
        hook(ir, out, options)
    return out


def policy_cluster(ir: PolicyClusterIR, options: TranslateOptions) -> cluster_pb2.Cluster:
    """A copy of cluster ``ir.base`` with a BackendTrafficPolicy's settings, reading the
    base's ClusterLoadAssignment (EDS ``service_name``): the same endpoints, one copy."""
    out = cluster(ir, options)
    out.eds_cluster_config.service_name = ir.base
    return out


# --- endpoints ------------------------------------------------------------------------------


class EndpointSource(Protocol):
    """What a locality's endpoints are read from: an exporter's, or a local Service's."""

    @property
    def ports(self) -> tuple[ServicePort, ...]: ...

    @property
    def endpoints(self) -> tuple[EndpointSet, ...]: ...


def _endpoint_port(
    s: EndpointSet, source: EndpointSource, port: ServicePort, single: bool
) -> int | None:
    """The port the backends of ``s`` listen on for the import port ``port``, or None.

    None unless the source exposes exactly that port (name, protocol, number): one whose
    port of that name lost a PortConflict gets none of its traffic. Then by name (an
    EndpointSlice port is named after its Service port); else, when the import has one
    port and the slice one, that one.
    """
    if not exposes(source, port):
        return None
    for ep in s.ports:
        if ep.name == port.name and ep.protocol == port.protocol:
            return ep.port
    if single and len(s.ports) == 1 and s.ports[0].protocol == port.protocol:
        return s.ports[0].port
    return None


def _endpoints(
    source: EndpointSource,
    port: ServicePort,
    single: bool,
    amap: AddressMap | None,
    family_name: str,
) -> list[tuple[tuple[str, int], int]]:
    """``((address, port), health)`` of one source's backends for ``port``, unique, sorted.

    Only slices of ``family_name`` count: a dual-stack Service has a slice per family
    listing the same pods, and one pod must be one endpoint. FQDN slices never count (an
    EDS cluster takes IP addresses only), and neither do addresses that are not IPs of the
    slice's family: one bad address must not make Envoy reject the whole assignment. Only
    an endpoint's first address is used: Kubernetes says the addresses of one endpoint are
    fungible. The result is one source's, i.e. one locality's: two clusters that reuse the
    same pod range keep their endpoints apart.

    Health: ready is HEALTHY; terminating but still serving is DRAINING (Envoy sends it no
    new requests, as Kubernetes intends); anything else UNHEALTHY.
    """
    found: dict[tuple[str, int], int] = {}
    pton, ntop = socket.inet_pton, socket.inet_ntop
    family = _FAMILIES[family_name]
    for s in source.endpoints:
        if s.address_type != family_name:
            continue
        target = _endpoint_port(s, source, port, single)
        if target is None:
            continue
        for e in s.endpoints:
            address = e.addresses[0]
            if amap is not None:
                address = amap.translate(address)
            try:
                packed = pton(family, address)
            except OSError:
                continue
            if family == socket.AF_INET6:
                address = ntop(family, packed)  # one spelling per address
            if e.ready:
                health = _HEALTHY
            elif e.serving and e.terminating:
                health = _DRAINING
            else:
                health = _UNHEALTHY
            key = (address, target)
            held = found.get(key)
            if held is None or _HEALTH_RANK[health] < _HEALTH_RANK[held]:
                found[key] = health
    return sorted(found.items())


def add_locality(
    cla: endpoint_pb2.ClusterLoadAssignment,
    cluster_id: str,
    source: EndpointSource,
    port: ServicePort,
    options: TranslateOptions,
    family: str,
    *,
    priority: int = 0,
    single: bool,
) -> Any:
    """Add ``cluster_id``'s locality with the endpoints of ``source`` for ``port``."""
    locality = cla.endpoints.add(priority=priority)
    locality.locality.zone = locality.locality.sub_zone = cluster_id
    locality.load_balancing_weight.value = options.weight(cluster_id)
    add = locality.lb_endpoints.add
    amap = options.address_maps.get(cluster_id)
    for (address, port_value), health in _endpoints(source, port, single, amap, family):
        # Field by field on the added message: measured 3x faster with upb
        # than constructing nested messages and appending them.
        socket_address = add(health_status=health).endpoint.address.socket_address
        socket_address.address = address
        socket_address.port_value = port_value
    return locality


def local_assignment(
    local: LocalClusterIR, options: TranslateOptions
) -> endpoint_pb2.ClusterLoadAssignment:
    """A local Service's endpoints: one locality, its own cluster's, at priority 0."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=local.name)
    family = options.ip_family(local.cluster)
    add_locality(
        cla, local.cluster, local, local.port, options, family, single=len(local.ports) == 1
    )
    return cla


# --- the variants of a clusterset cluster's assignment ---------------------------------------


class ClaVariant(NamedTuple):
    """A key of one distinct ClusterLoadAssignment of a clusterset cluster.

    ``local`` is the exporter whose locality alone has priority 0 (None: every locality at
    priority 0); ``family`` the address family of the endpoints; ``preferred`` the member
    cluster whose FailoverPolicy decides the priorities instead (its Envoys' variant).
    """

    local: str | None
    family: str
    preferred: str | None = None


def variant_for(
    exporters: Collection[str], viewer: str | None, options: TranslateOptions
) -> ClaVariant:
    """Which assignment variant of a service exported by ``exporters`` the Envoys of
    ``viewer`` get (the same for every cluster of one service: they share localities).

    ``local`` is ``viewer`` when it is one of several exporters and local-first is on (its
    own locality is then the only one at priority 0), None otherwise: the variant every
    other cluster of the same family shares. Equal keys mean byte-identical assignments,
    so callers build and serialize each key once.
    """
    local = None
    if options.local_first and len(exporters) > 1 and viewer in exporters:
        local = viewer
    return ClaVariant(local, options.ip_family(viewer))


def failover_levels(failover: FailoverIR, present: Collection[str]) -> dict[str, tuple[int, int]]:
    """Each of the ``present`` exporters' (priority, weight) under ``failover``: weight 0
    keeps the cluster's default weight. Levels are contiguous from 0, as Envoy needs."""
    if failover.order:
        listed = [c for c in dict.fromkeys(failover.order) if c in present]
        levels = {c: (i, 0) for i, c in enumerate(listed)}
        rest = len(listed)
    else:
        weighted = [(c, w) for c, w in failover.weights if c in present]
        levels = {c: (0, w) for c, w in weighted}
        rest = 1 if weighted else 0
    for cluster in present:
        levels.setdefault(cluster, (rest, 0))
    return levels


def _preferred(base: Any, failover: FailoverIR) -> Any:
    """``base`` (the shared variant) with the priorities and weights of ``failover``."""
    cla = endpoint_pb2.ClusterLoadAssignment()
    cla.CopyFrom(base)
    levels = failover_levels(failover, [loc.locality.sub_zone for loc in cla.endpoints])
    for locality in cla.endpoints:
        priority, weight = levels[locality.locality.sub_zone]
        locality.priority = priority
        if weight:
            locality.load_balancing_weight.value = weight
    return cla


def _priority(cluster_id: str, local: str | None) -> int:
    return 1 if local is not None and cluster_id != local else 0


def assignment(
    ir: ServiceClusterIR, variant: ClaVariant, options: TranslateOptions
) -> endpoint_pb2.ClusterLoadAssignment:
    """One variant of a clusterset cluster's ClusterLoadAssignment."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=ir.name)
    for source in ir.localities:
        locality = add_locality(
            cla,
            source.cluster,
            source,
            ir.port,
            options,
            variant.family,
            priority=_priority(source.cluster, variant.local),
            single=ir.single_port,
        )
        if source.stale:
            locality.metadata.filter_metadata[STALE_METADATA_KEY].update({"stale": True})
    return cla


def assignments(
    ir: ServiceClusterIR, options: TranslateOptions
) -> dict[ClaVariant, endpoint_pb2.ClusterLoadAssignment]:
    """Every distinct ClusterLoadAssignment of a clusterset cluster, keyed by
    :func:`variant_for`.

    Per address family some node group uses, the endpoints are translated once; each
    exporter's own variant is a copy with its priorities changed. Equal to calling
    :func:`assignment` for each key.
    """
    out: dict[ClaVariant, Any] = {}
    for family in options.families():
        base = assignment(ir, ClaVariant(None, family), options)
        out[ClaVariant(None, family)] = base
        for failover in ir.failover:
            if options.ip_family(failover.viewer) == family:
                out[ClaVariant(None, family, failover.viewer)] = _preferred(base, failover)
        if not options.local_first or len(ir.localities) < 2:
            continue
        for source in ir.localities:
            if options.ip_family(source.cluster) != family:
                continue  # that exporter's Envoys get another family
            cla = endpoint_pb2.ClusterLoadAssignment()
            cla.CopyFrom(base)
            for locality in cla.endpoints:
                locality.priority = _priority(locality.locality.sub_zone, source.cluster)
            out[ClaVariant(source.cluster, family)] = cla
    return out
