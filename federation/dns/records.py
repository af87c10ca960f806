"""One import's names and records in ``clusterset.local``.

The record forms of the MCS DNS specification (KEP-1645), relative to the zone
``clusterset.local``:

* ``<svc>.<ns>.svc``: for a ClusterSetIP import, A/AAAA with its ClusterSetIPs (one per
  family); for a headless import, A/AAAA with the ready endpoint addresses of every
  exporting cluster. SRV with one record per port (ClusterSetIP: the target is the
  service's own name) or per port and endpoint (headless: the target is the endpoint's
  name below).
* ``_<port>._<proto>.<svc>.<ns>.svc``: SRV for a named port, targets as above.
* ``<hostname>.<clusterid>.<svc>.<ns>.svc``: headless only, A/AAAA of one endpoint of one
  exporting cluster. An endpoint without a hostname (a Deployment's pod) is named after
  its address with dashes (``10-1-2-3``, ``fd00--1``), as Kubernetes' own DNS does.

Names between those (``<clusterid>.<svc>.<ns>.svc``, ``_tcp.<svc>.<ns>.svc``) exist
without records: empty non-terminals, which answer NOERROR without data, not NXDOMAIN.
Identical records are one record (RFC 2181): a TCP and a UDP port of the same number
give one SRV record.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from federation.model.imports import MergedImport, imported_endpoint_sets
from federation.registry.records import ExportedService, ServiceType

#: The zone the product serves.
ZONE = dns.name.from_text("clusterset.local.")
#: Seconds answers (and NXDOMAIN or NODATA, through the SOA's minimum) may be cached. Short,
#: so that a change of an import is seen quickly also behind caches: the cluster's CoreDNS
#: caches at most this long too.
TTL = 5

_IN = dns.rdataclass.IN
_A, _AAAA, _SRV = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV


@dataclass(frozen=True)
class DnsPort:
    """A port of the import: its name (may be empty for a single port), protocol, number."""

    name: str
    protocol: str
    port: int


@dataclass(frozen=True)
class DnsEndpoint:
    """A ready endpoint of one exporting cluster (headless imports only)."""

    cluster: str
    addresses: tuple[str, ...]
    hostname: str | None = None


@dataclass(frozen=True)
class ImportedService:
    """What the zone holds for one ServiceImport of this cluster."""

    namespace: str
    name: str
    headless: bool
    ports: tuple[DnsPort, ...]
    #: The ClusterSetIPs (ClusterSetIP imports; empty when this cluster has none).
    ips: tuple[str, ...] = ()
    #: The ready endpoints of every exporting cluster (headless imports).
    endpoints: tuple[DnsEndpoint, ...] = ()
    #: The exporting clusters, for the reasons of the answers.
    clusters: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


@dataclass
class Node:
    """One name of the zone: its records by type (none: an empty non-terminal) and why
    it exists, in words (``fedctl dns``)."""

    why: str
    rrsets: dict[dns.rdatatype.RdataType, dns.rrset.RRset] = field(default_factory=dict)

    def add(self, name: dns.name.Name, rdata: dns.rdata.Rdata) -> None:
        rrset = self.rrsets.get(rdata.rdtype)
        if rrset is None:
            rrset = self.rrsets[rdata.rdtype] = dns.rrset.RRset(name, _IN, rdata.rdtype)
            rrset.update_ttl(TTL)
        rrset.add(rdata)


def service_name(namespace: str, name: str) -> dns.name.Name:
    return dns.name.Name((name.encode(), namespace.encode(), b"svc", *ZONE.labels))


def endpoint_label(endpoint: DnsEndpoint, address: str) -> str:
    """The first label of an endpoint's name: its hostname, or its address with dashes."""
    if endpoint.hostname:
        return endpoint.hostname
    return address.replace(".", "-").replace(":", "-")


def address_rdata(address: str) -> dns.rdata.Rdata:
    """An A or AAAA record's data for ``address``."""
    rdtype = _A if ipaddress.ip_address(address).version == 4 else _AAAA
    return dns.rdata.from_text(_IN, rdtype, address)


def _srv(port: int, target: dns.name.Name, count: int) -> dns.rdata.Rdata:
    # Equal priority; weights share 100 between the targets, as Kubernetes' DNS does.
    weight = max(1, 100 // max(count, 1))
    return dns.rdata.from_text(_IN, _SRV, f"0 {weight} {port} {target}")


def records(svc: ImportedService) -> dict[dns.name.Name, Node]:
    """Every name of ``svc`` below ``<svc>.<ns>.svc.clusterset.local``, that one included,
    with its records."""
    base = service_name(svc.namespace, svc.name)
    kind = f"{'headless' if svc.headless else 'ClusterSetIP'} import {svc.namespace}/{svc.name}"
    exporters = ", ".join(svc.clusters) or "none"
    nodes: dict[dns.name.Name, Node] = {}

    def node(name: dns.name.Name, why: str) -> Node:
        return nodes.setdefault(name, Node(why))

    top = node(base, f"{kind}, exported by {exporters}")
    # Targets of the SRV records: the service's own name, or each endpoint's name.
    targets: list[dns.name.Name] = []
    if svc.headless:
        for endpoint in svc.endpoints:
            for address in endpoint.addresses:
                label = endpoint_label(endpoint, address)
                cluster_name = dns.name.Name((endpoint.cluster.encode(), *base.labels))
                node(cluster_name, f"exporting cluster {endpoint.cluster} of {kind}")
                name = dns.name.Name((label.encode(), *cluster_name.labels))
                node(name, f"endpoint {label} of cluster {endpoint.cluster}, {kind}").add(
                    name, address_rdata(address)
                )
                top.add(base, address_rdata(address))
                if name not in targets:
                    targets.append(name)
    else:
        for ip in svc.ips:
            top.add(base, address_rdata(ip))
        targets.append(base)
    for port in svc.ports:
        for target in targets:
            top.add(base, _srv(port.port, target, len(targets)))
        if not port.name:
            continue
        proto = dns.name.Name((f"_{port.protocol.lower()}".encode(), *base.labels))
        node(proto, f"protocol {port.protocol} of {kind}")
        named = dns.name.Name((f"_{port.name}".encode(), *proto.labels))
        port_node = node(named, f"port {port.name} ({port.protocol} {port.port}) of {kind}")
        for target in targets:
            port_node.add(named, _srv(port.port, target, len(targets)))
    return nodes


def imported_service(
    merged: MergedImport, exports: Sequence[ExportedService], ips: Sequence[str]
) -> ImportedService:
    """The zone's view of one import: ``merged`` from ``exports``, with ``ips``, the
    ClusterSetIPs of its derived Service here. A headless import's endpoints are those
    its EndpointSlices hold (:func:`~federation.model.imports.imported_endpoint_sets`),
    the ready ones."""
    headless = merged.type is ServiceType.HEADLESS
    endpoints: dict[DnsEndpoint, None] = {}
    if headless:
        for rec in sorted(exports, key=lambda r: r.cluster):
            for endpoint_set, _ in imported_endpoint_sets(merged, rec):
                for e in endpoint_set.endpoints:
                    if e.ready and e.addresses:
                        endpoints[DnsEndpoint(rec.cluster, e.addresses, e.hostname)] = None
    return ImportedService(
        namespace=merged.namespace,
        name=merged.name,
        headless=headless,
        ports=tuple(DnsPort(p.name, p.protocol, p.port) for p in merged.ports),
        ips=() if headless else tuple(ips),
        endpoints=tuple(endpoints),
        clusters=merged.clusters,
    )
