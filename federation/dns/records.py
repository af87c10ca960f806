"""One import's names and records in ``clusterset.local``.

The record forms of the MCS DNS specification (KEP-1645), relative to the zone
``clusterset.local``:

* ``<svc>.<ns>.svc``: for a ClusterSetIP import, A/AAAA with its ClusterSetIPs (one per
  family); for a headless import, A/AAAA with the ready endpoint addresses of every
  exporting cluster (no ready endpoint: the name does not exist). SRV with one record
  per named port (ClusterSetIP: the target is the service's own name) or per named port
  and endpoint (headless: the target is the endpoint's name below); unnamed ports have
  no SRV record.
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

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
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


@dataclass(frozen=True)
class Node:
    """One name of the zone: its records by type (none: an empty non-terminal) and why
    it exists, in words (``fedctl dns``)."""

    why: str
    rrsets: dict[dns.rdatatype.RdataType, dns.rrset.RRset] = field(default_factory=dict)


def service_name(namespace: str, name: str) -> dns.name.Name:
    return dns.name.Name((name.encode(), namespace.encode(), b"svc", *ZONE.labels))


def endpoint_label(endpoint: DnsEndpoint, address: str) -> str:
    """The first label of an endpoint's name: its hostname, or its address with dashes,
    as CoreDNS spells it (the canonical address; a leading or trailing dash of an IPv6
    address gets a 0: ``fd00::`` is ``fd00--0``)."""
    if endpoint.hostname:
        return endpoint.hostname
    dashed = str(ipaddress.ip_address(address)).replace(".", "-").replace(":", "-")
    return ("0" if dashed.startswith("-") else "") + dashed + ("0" if dashed.endswith("-") else "")


def address_rdata(address: str) -> dns.rdata.Rdata:
    """An A or AAAA record's data for ``address`` (ValueError if it is not an address).
    Built directly, not parsed from text: a large headless import has thousands."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return dns.rdtypes.IN.A.A(_IN, _A, str(ip))  # type: ignore[no-untyped-call]
    return dns.rdtypes.IN.AAAA.AAAA(_IN, _AAAA, str(ip))  # type: ignore[no-untyped-call]


def _srv(port: int, target: dns.name.Name, count: int) -> dns.rdata.Rdata:
    # Equal priority; weights share 100 between the targets, as Kubernetes' DNS does.
    weight = max(1, 100 // max(count, 1))
    return dns.rdtypes.IN.SRV.SRV(_IN, _SRV, 0, weight, port, target)  # type: ignore[no-untyped-call]


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _child(label: str, parent: dns.name.Name) -> dns.name.Name | None:
    """``label`` below ``parent``, or None when that is no valid name (a label with a
    dot, over 63 bytes, or a name over 255)."""
    if not label or "." in label:
        return None
    try:
        return dns.name.Name((label.encode(), *parent.labels))
    except dns.exception.DNSException:
        return None


#: Records of one name by type; a dict keeps each record once, in the order added.
_Records = dict[dns.rdatatype.RdataType, dict[dns.rdata.Rdata, None]]


class _Builder:
    """Names and their records, each record once, in the order first added."""

    def __init__(self) -> None:
        self.why: dict[dns.name.Name, str] = {}
        self.data: dict[dns.name.Name, _Records] = {}

    def name(self, name: dns.name.Name, why: str) -> None:
        self.why.setdefault(name, why)
        self.data.setdefault(name, {})

    def add(self, name: dns.name.Name, rdata: dns.rdata.Rdata) -> None:
        self.data[name].setdefault(rdata.rdtype, {})[rdata] = None

    def nodes(self) -> dict[dns.name.Name, Node]:
        out = {}
        for name, by_type in self.data.items():
            rrsets = {
                rdtype: dns.rrset.from_rdata_list(name, TTL, list(rdatas))
                for rdtype, rdatas in by_type.items()
            }
            out[name] = Node(self.why[name], rrsets)
        return out


def records(svc: ImportedService) -> dict[dns.name.Name, Node]:
    """Every name of ``svc`` below ``<svc>.<ns>.svc.clusterset.local``, that one included,
    with its records. None for a headless import without a ready endpoint (NXDOMAIN, as
    the MCS DNS specification says) or whose name is too long for DNS. An endpoint of a
    cluster whose id is not one DNS label (``us.east``), or whose name would not be a
    valid name, is answered for at the service's name but has no name of its own (and so
    no SRV record)."""
    try:
        base = service_name(svc.namespace, svc.name)
    except dns.exception.DNSException:
        return {}
    kind = f"{'headless' if svc.headless else 'ClusterSetIP'} import {svc.namespace}/{svc.name}"
    exporters = ", ".join(svc.clusters) or "none"
    if svc.headless and not svc.endpoints:
        return {}
    out = _Builder()
    out.name(base, f"{kind}, exported by {exporters}")
    # Targets of the SRV records: the service's own name, or each endpoint's name.
    targets: dict[dns.name.Name, None] = {}
    if svc.headless:
        for endpoint in svc.endpoints:
            cluster_name = _child(endpoint.cluster, base)
            for address in endpoint.addresses:
                rdata = address_rdata(address)
                out.add(base, rdata)
                if cluster_name is None:
                    continue
                label = endpoint_label(endpoint, address)
                name = _child(label, cluster_name)
                if name is None:
                    continue
                out.name(cluster_name, f"exporting cluster {endpoint.cluster} of {kind}")
                out.name(name, f"endpoint {label} of cluster {endpoint.cluster}, {kind}")
                out.add(name, rdata)
                targets[name] = None
    else:
        for ip in svc.ips:
            out.add(base, address_rdata(ip))
        targets[base] = None
    for port in svc.ports:
        # Unnamed ports have no SRV records (the MCS DNS specification, as Kubernetes').
        proto = _child(f"_{port.protocol.lower()}", base)
        named = _child(f"_{port.name}", proto) if port.name and proto else None
        if named is None or proto is None:
            continue
        out.name(proto, f"protocol {port.protocol} of {kind}")
        out.name(named, f"port {port.name} ({port.protocol} {port.port}) of {kind}")
        for target in targets:
            out.add(base, _srv(port.port, target, len(targets)))
            out.add(named, _srv(port.port, target, len(targets)))
    return out.nodes()


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
                    addresses = tuple(a for a in e.addresses if _is_address(a))  # not FQDN
                    if e.ready and addresses:
                        endpoints[DnsEndpoint(rec.cluster, addresses, e.hostname)] = None
    return ImportedService(
        namespace=merged.namespace,
        name=merged.name,
        headless=headless,
        ports=tuple(DnsPort(p.name, p.protocol, p.port) for p in merged.ports),
        ips=() if headless else tuple(ips),
        endpoints=tuple(endpoints),
        clusters=merged.clusters,
    )
