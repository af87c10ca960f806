"""The clusterset.local zone: imports in, records out (golden files), and the wire rules.

Golden cases in ``tests/golden/dns``: each ``.in.yaml`` lists imports and questions; the
``.out.yaml`` holds every answer (rcode, sections, why) as ``fedctl dns`` reports it.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
import yaml

from federation.dns import coredns
from federation.dns.explain import explain, render
from federation.dns.records import DnsEndpoint, DnsPort, ImportedService, imported_service
from federation.dns.wire import MAX_QUERY, UDP_PAYLOAD, CachedResponder, respond
from federation.dns.zone import Zone
from federation.model.imports import merge_exports
from federation.registry.records import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    ExportedService,
    ServicePort,
    ServiceType,
)
from tests import golden_files

GOLDEN = golden_files.ROOT / "dns"


def _service(raw: dict[str, Any]) -> ImportedService:
    return ImportedService(
        namespace=raw["namespace"],
        name=raw["name"],
        headless=raw.get("headless", False),
        ports=tuple(DnsPort(p["name"], p["protocol"], p["port"]) for p in raw["ports"]),
        ips=tuple(raw.get("ips", ())),
        endpoints=tuple(
            DnsEndpoint(e["cluster"], tuple(e["addresses"]), e.get("hostname"))
            for e in raw.get("endpoints", ())
        ),
        clusters=tuple(raw.get("clusters", ())),
    )


def zone_of(*services: ImportedService) -> Zone:
    zone = Zone()
    for svc in services:
        zone.put(svc)
    return zone


@pytest.mark.parametrize("case", golden_files.cases(GOLDEN))
def test_golden(case: str, update_golden: bool) -> None:
    spec = yaml.safe_load((GOLDEN / f"{case}.in.yaml").read_text())
    zone = zone_of(*(_service(raw) for raw in spec["imports"]))
    answers = [render(explain(zone, name, qtype, "b")) for name, qtype in spec["questions"]]
    golden_files.check(GOLDEN, case, "\n".join(answers), update_golden)


def test_no_orphan_golden_outputs() -> None:
    assert golden_files.orphan_outputs(GOLDEN) == []


HELLO = ImportedService(
    "demo", "hello", False, (DnsPort("http", "TCP", 80),), ips=("10.96.0.12",), clusters=("a",)
)


def ask(zone: Zone, name: str, qtype: str = "A", **kwargs: Any) -> dns.message.Message:
    wire = respond(zone, dns.message.make_query(name, qtype, **kwargs).to_wire(), tcp=False)
    assert wire.wire is not None
    return dns.message.from_wire(wire.wire)


def test_put_replace_and_remove_change_the_answer_and_the_serial() -> None:
    zone = zone_of(HELLO)
    serial = zone.serial
    assert zone.put(HELLO) is False and zone.serial == serial
    moved = ImportedService("demo", "hello", False, HELLO.ports, ips=("10.96.0.99",))
    assert zone.put(moved) is True and zone.serial == serial + 1
    assert [r.to_text() for r in ask(zone, "hello.demo.svc.clusterset.local.").answer[0]] == [
        "10.96.0.99"
    ]
    assert zone.remove("demo", "hello") is True and zone.remove("demo", "hello") is False
    gone = ask(zone, "hello.demo.svc.clusterset.local.")
    assert gone.rcode() == dns.rcode.NXDOMAIN
    # The namespace's empty non-terminal went with its last import.
    assert ask(zone, "demo.svc.clusterset.local.").rcode() == dns.rcode.NXDOMAIN
    soa = gone.authority[0][0]
    assert soa.serial == zone.serial and gone.authority[0].ttl == soa.minimum


def test_answers_are_authoritative_and_echo_the_question() -> None:
    reply = ask(zone_of(HELLO), "HELLO.demo.svc.clusterset.local.", want_dnssec=False)
    assert reply.flags & dns.flags.AA and reply.flags & dns.flags.QR
    assert reply.question[0].name.to_text() == "HELLO.demo.svc.clusterset.local."
    assert reply.answer[0].name.to_text() == "HELLO.demo.svc.clusterset.local."


def test_outside_the_zone_is_refused_without_authority() -> None:
    reply = ask(zone_of(HELLO), "kubernetes.default.svc.cluster.local.")
    assert reply.rcode() == dns.rcode.REFUSED and not reply.flags & dns.flags.AA


def test_class_other_than_in_is_refused() -> None:
    query = dns.message.make_query("hello.demo.svc.clusterset.local.", "A", rdclass="CH")
    reply = respond(zone_of(HELLO), query.to_wire(), tcp=False)
    assert reply.rcode == "REFUSED"


def test_other_opcodes_are_not_implemented() -> None:
    query = dns.message.make_query("hello.demo.svc.clusterset.local.", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    reply = dns.message.from_wire(respond(zone_of(HELLO), query.to_wire(), tcp=False).wire or b"")
    assert reply.rcode() == dns.rcode.NOTIMP and reply.id == query.id


def test_edns_is_answered_with_our_payload_and_a_newer_version_gets_badvers() -> None:
    reply = ask(zone_of(HELLO), "hello.demo.svc.clusterset.local.", use_edns=0, payload=4096)
    assert reply.edns == 0 and reply.payload == UDP_PAYLOAD
    reply = ask(zone_of(HELLO), "hello.demo.svc.clusterset.local.", use_edns=1)
    assert reply.rcode() == dns.rcode.BADVERS and reply.edns == 0 and not reply.answer


def test_an_edns_option_is_no_error() -> None:
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, b"\x01" * 8)
    reply = ask(zone_of(HELLO), "hello.demo.svc.clusterset.local.", use_edns=0, options=[cookie])
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer


def _many_endpoints(count: int) -> ImportedService:
    endpoints = tuple(DnsEndpoint("a", (f"10.200.{i // 250}.{i % 250 + 1}",)) for i in range(count))
    return ImportedService(
        "demo", "big", True, (DnsPort("http", "TCP", 80),), endpoints=endpoints, clusters=("a",)
    )


def test_a_large_answer_sheds_the_additional_section_first() -> None:
    zone = zone_of(_many_endpoints(7))
    name = "big.demo.svc.clusterset.local."
    reply = ask(zone, name, "SRV")  # 7 SRV records fit in 512 bytes; with their A records not
    assert len(reply.answer[0]) == 7 and not reply.additional
    assert not reply.flags & dns.flags.TC
    over_tcp = respond(zone, dns.message.make_query(name, "SRV").to_wire(), tcp=True)
    full = dns.message.from_wire(over_tcp.wire or b"")
    assert len(full.additional) == 7  # one A record per target


def test_an_answer_that_does_not_fit_is_truncated_and_whole_over_tcp() -> None:
    zone = zone_of(_many_endpoints(200))
    name = "big.demo.svc.clusterset.local."
    plain = ask(zone, name)
    assert plain.flags & dns.flags.TC and not plain.answer
    with_edns = ask(zone, name, use_edns=0, payload=4096)  # capped at our 1232
    assert with_edns.flags & dns.flags.TC
    over_tcp = respond(zone, dns.message.make_query(name, "A").to_wire(), tcp=True)
    whole = dns.message.from_wire(over_tcp.wire or b"")
    assert not whole.flags & dns.flags.TC and len(whole.answer[0]) == 200


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff", "a question cut short"),
        (b"\x12\x34\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00" + b"junk", "trailing junk"),
        (b"\x12\x34\x01\x00" + b"\x00" * 8 + b"\x00" * (MAX_QUERY + 1), "oversized"),
    ],
)
def test_garbage_gets_formerr_with_its_id(data: bytes, why: str) -> None:
    reply = respond(zone_of(HELLO), data, tcp=False)
    assert reply.rcode == "FORMERR", why
    assert reply.wire is not None
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", reply.wire[:12])
    assert qid == 0x1234 and flags & dns.flags.QR and flags & 0xF == dns.rcode.FORMERR
    assert (qd, an, ns, ar) == (0, 0, 0, 0)


def test_two_questions_get_formerr() -> None:
    query = dns.message.make_query("hello.demo.svc.clusterset.local.", "A")
    query.question.append(query.question[0])
    assert respond(zone_of(HELLO), query.to_wire(), tcp=False).rcode == "FORMERR"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 11, dns.message.make_response(dns.message.make_query("x.", "A")).to_wire()],
)
def test_short_messages_and_responses_get_no_answer(data: bytes) -> None:
    assert respond(zone_of(HELLO), data, tcp=False).wire is None


def test_a_zone_still_loading_answers_servfail() -> None:
    query = dns.message.make_query("hello.demo.svc.clusterset.local.", "A")
    reply = respond(zone_of(HELLO), query.to_wire(), tcp=False, loaded=False)
    assert reply.rcode == "SERVFAIL"


def _export(
    cluster: str, *endpoints: Endpoint, slice_ports: tuple[EndpointPort, ...]
) -> ExportedService:
    return ExportedService(
        cluster=cluster,
        namespace="db",
        name="pg",
        type=ServiceType.HEADLESS,
        ports=(ServicePort("pg", "TCP", 5432),),
        created=f"2026-01-0{1 if cluster == 'a' else 2}T00:00:00Z",
        endpoints=(EndpointSet(f"pg-{cluster}", "IPv4", slice_ports, endpoints),),
    )


def test_an_import_in_the_zone_has_the_ready_endpoints_its_slices_carry() -> None:
    pg = EndpointPort("pg", "TCP", 5432)
    ready = Endpoint(("10.200.0.5",), True, True, False, hostname="pg-0")
    not_ready = Endpoint(("10.200.0.6",), False, False, False, hostname="pg-1")
    exports = [
        _export("a", ready, not_ready, slice_ports=(pg,)),
        # c's slice has only a port the import does not carry: not imported, not in DNS.
        _export(
            "c",
            Endpoint(("10.202.0.7",), True, True, False),
            slice_ports=(EndpointPort("x", "TCP", 1),),
        ),
    ]
    svc = imported_service(merge_exports(exports), exports, ips=["10.96.0.1"])
    assert svc.headless and svc.ips == () and svc.clusters == ("a", "c")
    assert svc.endpoints == (DnsEndpoint("a", ("10.200.0.5",), "pg-0"),)


def test_fedctl_dns_rejects_a_bad_question() -> None:
    from federation.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="not a DNS record type"):
        explain(zone_of(HELLO), "hello.demo.svc.clusterset.local", "BOGUS", "b")
    with pytest.raises(InvalidInputError, match="name"):
        explain(zone_of(HELLO), "a" * 64 + ".clusterset.local", "A", "b")


def test_golden_inputs_exist() -> None:
    assert sorted(Path(GOLDEN).glob("*.in.yaml"))


def test_a_repeated_query_is_answered_from_the_cache_until_the_zone_changes() -> None:
    zone = zone_of(HELLO)
    responder = CachedResponder(zone)
    first = dns.message.make_query("hello.demo.svc.clusterset.local.", "A")
    again = dns.message.make_query("hello.demo.svc.clusterset.local.", "A")
    again.id = first.id ^ 0xFFFF
    a = responder.respond(first.to_wire(), tcp=False)
    b = responder.respond(again.to_wire(), tcp=False)
    assert responder.hits == 1
    assert dns.message.from_wire(b.wire or b"").id == again.id
    assert (a.wire or b"")[2:] == (b.wire or b"")[2:]
    zone.put(ImportedService("demo", "hello", False, HELLO.ports, ips=("10.96.0.77",)))
    changed = dns.message.from_wire(responder.respond(again.to_wire(), tcp=False).wire or b"")
    assert responder.hits == 1
    assert [r.to_text() for r in changed.answer[0]] == ["10.96.0.77"]
    # Loading, the same query gets SERVFAIL, not the cached answer.
    loading = responder.respond(again.to_wire(), tcp=False, loaded=False)
    assert loading.rcode == "SERVFAIL"


DEFAULT_COREFILE = """.:53 {
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa
    forward . /etc/resolv.conf
    cache 30
    reload
}
"""


def test_the_coredns_block_is_added_once_replaced_and_removed_leaving_the_rest() -> None:
    added = coredns.with_block(DEFAULT_COREFILE, "10.96.0.53")
    assert added.startswith(DEFAULT_COREFILE)
    assert "clusterset.local:53 {\n    errors\n    cache 5\n    forward . 10.96.0.53\n}\n" in added
    assert coredns.with_block(added, "10.96.0.53") == added
    moved = coredns.with_block(added, "10.96.0.54:5353", force_tcp=True)
    assert moved.count(coredns.BEGIN) == 1 and "10.96.0.53" not in moved
    assert "forward . 10.96.0.54:5353 {\n        force_tcp\n    }" in moved
    assert coredns.without_block(moved) == DEFAULT_COREFILE
    assert coredns.without_block(DEFAULT_COREFILE) == DEFAULT_COREFILE
    assert coredns.with_block(DEFAULT_COREFILE.rstrip("\n"), "10.0.0.1").count("}\n# BEGIN") == 1


def test_over_tcp_an_answer_too_large_for_any_message_keeps_what_fits() -> None:
    zone = zone_of(_many_endpoints(6000))  # 6,000 A records: 96 KB, over TCP's 64 KiB
    query = dns.message.make_query("big.demo.svc.clusterset.local.", "A")
    reply = respond(zone, query.to_wire(), tcp=True)
    assert reply.wire is not None and len(reply.wire) <= 65535
    message = dns.message.from_wire(reply.wire)
    assert not message.flags & dns.flags.TC and 1000 < len(message.answer[0]) < 6000


def test_a_zone_never_loses_an_import_to_names_dns_cannot_carry() -> None:
    zone = zone_of(HELLO)
    serial = zone.serial
    long_name = ImportedService("x" * 63, "y" * 63, False, HELLO.ports, ips=("10.96.0.1",))
    assert zone.put(long_name) is True and zone.serial == serial + 1
    assert ask(zone, "hello.demo.svc.clusterset.local.").answer  # the others are intact
    # An FQDN endpoint (a legal EndpointSlice address type) is not in the answers.
    fqdn = ExportedService(
        cluster="a", namespace="db", name="ext", type=ServiceType.HEADLESS,
        ports=(ServicePort("http", "TCP", 80),),
        endpoints=(EndpointSet("ext-a", "FQDN", (EndpointPort("http", "TCP", 80),),
                               (Endpoint(("db.example.com",), True, True, False),)),),
    )  # fmt: skip
    svc = imported_service(merge_exports([fqdn]), [fqdn], ips=[])
    assert svc.endpoints == ()
    assert zone.put(svc) is True
    assert ask(zone, "ext.db.svc.clusterset.local.").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("corefile", "message"),
    [
        (DEFAULT_COREFILE + coredns.BEGIN + "\nclusterset.local:53 {\n", "expected one pair"),
        (coredns.END + "\n" + DEFAULT_COREFILE + coredns.BEGIN + "\n", "expected one pair"),
        (DEFAULT_COREFILE + "clusterset.local:53 {\n    forward . 10.0.0.9\n}\n", "not ours"),
    ],
)
def test_a_corefile_unsafe_to_edit_is_left_alone(corefile: str, message: str) -> None:
    with pytest.raises(coredns.CorefileError, match=message):
        coredns.with_block(corefile, "10.96.0.53")
    with pytest.raises(coredns.CorefileError, match=message):
        coredns.check(corefile)
