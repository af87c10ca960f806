"""One cluster's ``clusterset.local`` zone, and the answer to one question.

:class:`Zone` holds the names of every import of the cluster (:mod:`federation.dns.records`)
and is changed one import at a time, as the agent writes or deletes the ServiceImport.
:meth:`Zone.lookup` answers per RFC 1034 and 2308:

* a name with records of the type asked: those records (for SRV, the targets' addresses
  in the additional section);
* a name that exists without records of that type (an empty non-terminal such as
  ``<ns>.svc.clusterset.local`` while the namespace has imports, or a headless import
  with no ready endpoint): NOERROR without data (NODATA), the zone's SOA in the
  authority section;
* a name that does not exist: NXDOMAIN, the SOA in the authority section;
* a name outside the zone: REFUSED (this server is not a resolver).

Every answer says why, in words, for ``fedctl dns``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from federation.dns.records import TTL, ZONE, ImportedService, Node, records, service_name

SVC = dns.name.Name((b"svc", *ZONE.labels))
#: The version of the MCS DNS schema served, at ``dns-version.clusterset.local`` (TXT).
DNS_VERSION = dns.name.Name((b"dns-version", *ZONE.labels))
SCHEMA_VERSION = "1.0.0"
#: The zone's name server and mailbox in its SOA; nothing resolves them, as in
#: Kubernetes' own ``cluster.local``.
SOA_MNAME = dns.name.Name((b"ns", b"dns", *ZONE.labels))
SOA_RNAME = dns.name.Name((b"hostmaster", *ZONE.labels))
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


@dataclass(frozen=True)
class Answer:
    """The answer to one question: rcode, sections, and why."""

    rcode: dns.rcode.Rcode
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    why: str = ""


class Zone:
    """The zone of one cluster: its imports' names, changed one import at a time."""

    def __init__(self, serial: int = 1) -> None:
        #: Increases with every change (the SOA's serial).
        self.serial = serial
        self._imports: dict[tuple[str, str], ImportedService] = {}
        self._names: dict[tuple[str, str], list[dns.name.Name]] = {}
        self._nodes: dict[dns.name.Name, Node] = {}
        self._namespaces: Counter[str] = Counter()
        self._soa: tuple[int, dns.rrset.RRset] | None = None

    def __len__(self) -> int:
        return len(self._imports)

    def imports(self) -> list[tuple[str, str]]:
        """The (namespace, name) of every import in the zone."""
        return list(self._imports)

    def put(self, svc: ImportedService) -> bool:
        """Add or replace an import's names; whether anything changed."""
        if self._imports.get(svc.key) == svc:
            return False
        nodes = records(svc)  # first: whatever it makes of the import, the old names go
        self._drop(svc.key)
        self._imports[svc.key] = svc
        self._names[svc.key] = list(nodes)
        self._nodes.update(nodes)
        self._namespaces[svc.namespace] += 1
        self.serial += 1
        return True

    def remove(self, namespace: str, name: str) -> bool:
        """Remove an import's names; whether it was there."""
        if (namespace, name) not in self._imports:
            return False
        self._drop((namespace, name))
        self.serial += 1
        return True

    def _drop(self, key: tuple[str, str]) -> None:
        if self._imports.pop(key, None) is None:
            return
        for name in self._names.pop(key):
            del self._nodes[name]
        self._namespaces[key[0]] -= 1
        if not self._namespaces[key[0]]:
            del self._namespaces[key[0]]

    # --- answers ---------------------------------------------------------------------

    def soa(self) -> dns.rrset.RRset:
        """The zone's SOA, made once per serial (every negative answer carries it)."""
        if self._soa is not None and self._soa[0] == self.serial:
            return self._soa[1]
        rrset = dns.rrset.RRset(ZONE, dns.rdataclass.IN, dns.rdatatype.SOA)
        rrset.update_ttl(TTL)
        fields = f"{SOA_MNAME} {SOA_RNAME} {self.serial % 2**32} 7200 1800 86400 {TTL}"
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, fields))
        self._soa = (self.serial, rrset)
        return rrset

    def lookup(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType) -> Answer:
        """The answer to ``qname`` of type ``qtype`` (class IN)."""
        if not qname.is_subdomain(ZONE):
            return Answer(
                dns.rcode.REFUSED,
                why=f"{qname} is outside {ZONE}: this server answers only that zone",
            )
        node = self._nodes.get(qname)
        if node is not None:
            return self._answer(qname, qtype, node)
        if qname == DNS_VERSION:
            if qtype in (dns.rdatatype.TXT, dns.rdatatype.ANY):
                return Answer(dns.rcode.NOERROR, (_dns_version(),), why="the schema version")
            return self._negative(dns.rcode.NOERROR, "the schema version has only its TXT")
        if qname == ZONE:
            if qtype == dns.rdatatype.SOA:
                return Answer(dns.rcode.NOERROR, (self.soa(),), why="the zone's SOA")
            return self._negative(dns.rcode.NOERROR, "the zone's apex has only its SOA")
        if qname == SVC:
            return self._negative(dns.rcode.NOERROR, f"{SVC} holds the namespaces")
        if qname.parent() == SVC:
            namespace = _label(qname, 0)
            count = self._namespaces.get(namespace, 0)
            if count:
                return self._negative(
                    dns.rcode.NOERROR, f"namespace {namespace} has {count} import(s) here"
                )
            return self._negative(dns.rcode.NXDOMAIN, f"namespace {namespace} has no import here")
        return self._negative(dns.rcode.NXDOMAIN, self._missing(qname))

    def _answer(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, node: Node) -> Answer:
        if qtype == dns.rdatatype.ANY:
            found = tuple(node.rrsets.values())
        else:
            found = tuple(r for r in (node.rrsets.get(qtype),) if r is not None)
        if not found:
            held = ", ".join(dns.rdatatype.to_text(t) for t in node.rrsets)
            has = f"it has {held} only" if held else "a name without records"
            return self._negative(dns.rcode.NOERROR, f"{node.why}; {has}")
        additional: list[dns.rrset.RRset] = []
        for rrset in found:
            if rrset.rdtype != dns.rdatatype.SRV:
                continue
            for target in dict.fromkeys(rd.target for rd in rrset):
                target_node = self._nodes.get(target)
                if target_node is not None:
                    additional += [r for t, r in target_node.rrsets.items() if t in _ADDRESS_TYPES]
        return Answer(
            dns.rcode.NOERROR,
            tuple(_named(r, qname) for r in found),
            additional=tuple(additional),
            why=node.why,
        )

    def _negative(self, rcode: dns.rcode.Rcode, why: str) -> Answer:
        return Answer(rcode, authority=(self.soa(),), why=why)

    def _missing(self, qname: dns.name.Name) -> str:
        """Why a name of the zone does not exist."""
        if not qname.is_subdomain(SVC):
            return f"the zone has names below {SVC} only"
        labels = qname.relativize(SVC).labels
        namespace, name = _label(qname, len(labels) - 1), _label(qname, len(labels) - 2)
        svc = self._imports.get((namespace, name))
        if svc is None:
            return f"no import {namespace}/{name} in this cluster"
        kind = "headless" if svc.headless else "ClusterSetIP"
        if svc.headless and not svc.endpoints:
            return f"headless import {namespace}/{name} has no ready endpoint"
        below = qname.relativize(service_name(namespace, name))
        return f"{kind} import {namespace}/{name} has no name {below}"


def _dns_version() -> dns.rrset.RRset:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, f'"{SCHEMA_VERSION}"')
    return dns.rrset.from_rdata_list(DNS_VERSION, TTL, [rdata])


def _label(qname: dns.name.Name, index: int) -> str:
    """Label ``index`` of ``qname`` (0: the leftmost), lower case, as text."""
    return qname.labels[index].decode("ascii", "replace").lower()


def _named(rrset: dns.rrset.RRset, qname: dns.name.Name) -> dns.rrset.RRset:
    """``rrset`` owned by ``qname`` as the question spelt it (names match whatever their
    case, and some clients check the case they sent)."""
    if rrset.name.to_wire() == qname.to_wire():
        return rrset
    return dns.rrset.from_rdata_list(qname, rrset.ttl, list(rrset))
