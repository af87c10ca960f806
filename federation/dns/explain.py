"""A DNS question answered in words: what ``fedctl dns`` prints.

The agent's ``/debug/dns`` endpoint calls :func:`explain` on the zone its DNS server
answers from: the records and the reason are the zone's. What the wire adds is not
shown (SERVFAIL while the zone loads at start-up, truncation of a large answer).
"""

from __future__ import annotations

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from federation.debug_payloads import DnsExplanation
from federation.dns.zone import Zone
from federation.errors import InvalidInputError


def parse_question(name: str, qtype: str) -> tuple[dns.name.Name, dns.rdatatype.RdataType]:
    """``name`` (absolute, whether or not it ends in a dot) and ``qtype``;
    InvalidInputError naming what is wrong."""
    try:
        qname = dns.name.from_text(name if name.endswith(".") else name + ".")
    except dns.exception.DNSException as err:
        raise InvalidInputError(f"name {name!r}: {err}") from err
    try:
        rdtype = dns.rdatatype.from_text(qtype.upper())
    except dns.exception.DNSException as err:
        raise InvalidInputError(f"type {qtype!r}: not a DNS record type") from err
    return qname, rdtype


def explain(zone: Zone, name: str, qtype: str, cluster: str) -> DnsExplanation:
    """What ``zone`` answers to ``name`` of type ``qtype``, and why."""
    qname, rdtype = parse_question(name, qtype)
    answer = zone.lookup(qname, rdtype)
    return {
        "cluster": cluster,
        "name": qname.to_text(),
        "type": dns.rdatatype.to_text(rdtype),
        "rcode": dns.rcode.to_text(answer.rcode),
        "answer": _lines(answer.answer),
        "authority": _lines(answer.authority),
        "additional": _lines(answer.additional),
        "why": answer.why,
    }


def render(explanation: DnsExplanation) -> str:
    """The explanation as ``fedctl dns`` prints it."""
    lines = [
        f"{explanation['name']} {explanation['type']} in cluster {explanation['cluster']}: "
        f"{explanation['rcode']}"
    ]
    for section in ("answer", "authority", "additional"):
        records = explanation[section]
        if records:
            lines.append(f"{section}:")
            lines += [f"  {record}" for record in records]
    lines.append(f"why: {explanation['why']}")
    return "\n".join(lines) + "\n"


def _lines(rrsets: tuple[dns.rrset.RRset, ...]) -> list[str]:
    return [line for rrset in rrsets for line in rrset.to_text().splitlines()]
