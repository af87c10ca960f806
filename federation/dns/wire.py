"""A DNS query's bytes in, the response's bytes out, for the ``clusterset.local`` zone.

:func:`respond` is what the agent's UDP and TCP server calls for every message. It
follows RFC 1035, 2181, 2308 and 6891:

* a message shorter than a header, or one that is itself a response, gets no answer
  (a response to a response invites loops and reflection);
* a message that does not parse, or is larger than :data:`MAX_QUERY`, or asks more or
  fewer than one question: FORMERR, echoing the id;
* an opcode other than QUERY: NOTIMP; a class other than IN: REFUSED; EDNS of a version
  above 0: BADVERS;
* SERVFAIL while the zone is still loading;
* otherwise :meth:`federation.dns.zone.Zone.lookup`'s answer, authoritative (AA).

Over UDP a response fits what the client said it can take (512 bytes without EDNS0, its
EDNS0 payload size up to :data:`UDP_PAYLOAD` with it); a response that does not fit
loses its additional section first, then its answers, with TC set so that the client
asks again over TCP, where up to 65,535 bytes go (beyond that, as many records as fit).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from federation.dns.zone import Zone

#: The largest query accepted: a question and EDNS0 options fit in far less.
MAX_QUERY = 4096
#: The UDP payload size this server offers in EDNS0 (the DNS flag day 2020 value, which
#: avoids IP fragmentation).
UDP_PAYLOAD = 1232
#: Responses larger than this are not kept by :class:`CachedResponder` (they are rare,
#: and 4,096 of them could weigh 256 MiB).
CACHED_RESPONSE_MAX = 2048
_HEADER = 12
_PLAIN_UDP = 512
_TCP_MAX = 65535


@dataclass(frozen=True)
class Reply:
    """The response's bytes (None: none is sent) and what to count it as."""

    wire: bytes | None
    qtype: str
    rcode: str
    why: str = ""


def respond(zone: Zone, data: bytes, *, tcp: bool, loaded: bool = True) -> Reply:
    """The response to the message ``data`` received over UDP or TCP (``tcp``).

    Until the zone is ``loaded`` (the agent is still writing its imports at start-up),
    questions get SERVFAIL (which a cache such as CoreDNS's keeps a few seconds at most,
    as a failure, never as the name's absence) rather than an NXDOMAIN for a name that
    exists."""
    if len(data) < _HEADER:
        return Reply(None, "none", "dropped", "shorter than a DNS header")
    (flags,) = struct.unpack_from("!H", data, 2)
    if flags & dns.flags.QR:
        return Reply(None, "none", "dropped", "a response, not a query")
    if len(data) > MAX_QUERY:
        return _header_only(data, dns.rcode.FORMERR, f"a query of {len(data)} bytes")
    try:
        query = dns.message.from_wire(data)
    except dns.exception.DNSException as err:
        return _header_only(data, dns.rcode.FORMERR, f"does not parse: {err}")
    qtype = dns.rdatatype.to_text(query.question[0].rdtype) if query.question else "none"
    if query.opcode() != dns.opcode.QUERY:
        opcode = dns.opcode.to_text(query.opcode())
        return _error(query, dns.rcode.NOTIMP, qtype, f"opcode {opcode}")
    if len(query.question) != 1:
        return _error(query, dns.rcode.FORMERR, qtype, f"{len(query.question)} questions")
    question = query.question[0]
    if query.edns > 0:
        return _error(query, dns.rcode.BADVERS, qtype, f"EDNS version {query.edns}")
    if question.rdclass != dns.rdataclass.IN:
        return _error(query, dns.rcode.REFUSED, qtype, "class is not IN")
    if not loaded:
        return _error(query, dns.rcode.SERVFAIL, qtype, "the zone is still loading")
    answer = zone.lookup(question.name, question.rdtype)
    # Authoritative for the zone's own names; a REFUSED name is not this server's.
    response = _response(query, answer.rcode, authoritative=answer.rcode != dns.rcode.REFUSED)
    response.answer = list(answer.answer)
    response.authority = list(answer.authority)
    response.additional = list(answer.additional)
    return Reply(
        _render(response, _max_size(query, tcp)),
        qtype,
        dns.rcode.to_text(answer.rcode),
        answer.why,
    )


class CachedResponder:
    """:func:`respond` with the responses to repeated queries kept.

    A query repeated byte for byte but for its id (the same question, spelt the same,
    with the same flags and EDNS options) gets the same response but for the id, as long
    as the zone has not changed (its serial) and it is still loading or not: the bytes
    are kept and the id put in. At most ``size`` responses are kept; when full, the
    cache starts afresh.
    """

    def __init__(self, zone: Zone, size: int = 4096) -> None:
        self.zone = zone
        self.size = size
        self._serial = zone.serial
        self._replies: dict[tuple[bytes, bool, bool], Reply] = {}
        self.hits = 0

    def respond(self, data: bytes, *, tcp: bool, loaded: bool = True) -> Reply:
        if self._serial != self.zone.serial or len(self._replies) >= self.size:
            self._replies.clear()
            self._serial = self.zone.serial
        key = (data[2:], tcp, loaded)
        cached = self._replies.get(key)
        if cached is not None and cached.wire is not None:  # kept replies all have bytes
            self.hits += 1
            return Reply(data[:2] + cached.wire[2:], cached.qtype, cached.rcode, cached.why)
        reply = respond(self.zone, data, tcp=tcp, loaded=loaded)
        small = reply.wire is not None and len(reply.wire) <= CACHED_RESPONSE_MAX
        if small and reply.rcode != "FORMERR":  # garbage is too varied to be worth keeping
            self._replies[key] = reply
        return reply


def _response(
    query: dns.message.Message, rcode: dns.rcode.Rcode, *, authoritative: bool
) -> dns.message.Message:
    response = dns.message.make_response(query, our_payload=UDP_PAYLOAD)
    if authoritative:
        response.flags |= dns.flags.AA
    response.set_rcode(rcode)
    return response


def _max_size(query: dns.message.Message, tcp: bool) -> int:
    if tcp:
        return _TCP_MAX
    if query.edns >= 0:
        return max(_PLAIN_UDP, min(query.payload, UDP_PAYLOAD))
    return _PLAIN_UDP


def _render(response: dns.message.Message, max_size: int) -> bytes:
    """``response`` in at most ``max_size`` bytes: without the additional section if it
    does not fit; then, over UDP, truncated (TC) without records, so that the client asks
    over TCP; over TCP, where asking again gets no more, with as many of the records as
    fit (halving them until they do), as CoreDNS does."""
    try:
        return response.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        pass
    response.additional = []
    while True:
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            pass
        if max_size < _TCP_MAX or not any(len(rrset) > 1 for rrset in response.answer):
            break
        response.answer = [_first_half(rrset) for rrset in response.answer]
    response.answer, response.authority = [], []
    response.flags |= dns.flags.TC
    return response.to_wire(max_size=max_size)


def _first_half(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    kept = list(rrset)[: max(1, len(rrset) // 2)]
    return dns.rrset.from_rdata_list(rrset.name, rrset.ttl, kept)


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode, qtype: str, why: str) -> Reply:
    response = _response(query, rcode, authoritative=False)
    if rcode == dns.rcode.BADVERS:
        # Answered in the version we speak; the rcode's upper bits live in the EDNS flags,
        # so it is set again after them.
        response.use_edns(0, 0, UDP_PAYLOAD)
        response.set_rcode(rcode)
    return Reply(response.to_wire(), qtype, dns.rcode.to_text(rcode), why)


def _header_only(data: bytes, rcode: dns.rcode.Rcode, why: str) -> Reply:
    """A response of only a header, for a query that cannot be read: its id and opcode
    echoed, no question."""
    qid, flags = struct.unpack_from("!HH", data)
    out_flags = dns.flags.QR | (flags & 0x7800) | (flags & dns.flags.RD) | int(rcode)
    return Reply(struct.pack("!HHHHHH", qid, out_flags, 0, 0, 0, 0), "none", rcode.name, why)
