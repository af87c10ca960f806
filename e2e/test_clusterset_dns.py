"""clusterset.local as each agent serves it, asked directly over UDP and TCP.

On the control-plane clusters (``a``, ``b`` and dual-stack ``c``, an agent each): the
records follow the ServiceImports (ClusterSetIPs of each family, headless endpoints of
every exporter with their hostnames, SRV), a deleted export stops resolving, garbage and
oversized queries get FORMERR or nothing and do not disturb other clients, and
``fedctl dns`` and the metrics say what was answered. The node tier's test
(``e2e/node_tier/test_clusterset_dns.py``) asks through pods and CoreDNS.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from kubernetes.client import ApiClient

from e2e import scenario as sc
from e2e.federation import Federation, fedctl, metric
from e2e.test_service_federation import eventually
from e2e.traffic import DEADLINE


@pytest.fixture
def fed(control_plane: Federation) -> Federation:
    """The control-plane clusters; the tests work in a namespace of their own."""
    return control_plane


@pytest.fixture
def ns(control_plane: Federation) -> str:
    return sc.namespace_everywhere(control_plane.env.clusters.values(), "dns")


def server(fed: Federation, cluster_id: str) -> tuple[str, int]:
    host, _, port = fed.agent_dns_address(cluster_id).rpartition(":")
    return host, int(port)


def ask(fed: Federation, cluster_id: str, name: str, qtype: str = "A", *, tcp: bool = False) -> Any:
    host, port = server(fed, cluster_id)
    query = dns.message.make_query(name, qtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, host, port=port, timeout=2)


def rdata(reply: Any, qtype: str) -> set[str]:
    return {
        rd.to_text()
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.from_text(qtype)
        for rd in rrset
    }


def headless_slice(fed: Federation, cluster_id: str, ns: str, hosts: dict[str, int]) -> sc.Obj:
    """An EndpointSlice of ``db`` whose endpoints have hostnames (a StatefulSet's)."""
    cluster = fed.env.cluster(cluster_id)
    obj = sc.endpoint_slice(cluster, ns, "db", list(hosts.values()), ports=(("pg", 5432),))
    for endpoint, hostname in zip(obj["endpoints"], hosts, strict=True):
        endpoint["hostname"] = hostname
    return obj


def test_records_follow_the_imports(
    fed: Federation, control_plane_clients: dict[str, ApiClient], ns: str
) -> None:
    clients = control_plane_clients
    c = fed.env.cluster("c")
    web = sc.service(ns, "web", (("http", 80, "TCP"),))
    web["spec"].update({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"})
    sc.apply(c, web, sc.endpoint_slice(c, ns, "web", [11]), sc.export(ns, "web"))
    for cluster_id, hosts in (("a", {"db-0": 21, "db-1": 22}), ("c", {"db-0": 31})):
        sc.apply(
            fed.env.cluster(cluster_id),
            sc.service(ns, "db", (("pg", 5432, "TCP"),), headless=True),
            headless_slice(fed, cluster_id, ns, hosts),
            sc.export(ns, "db"),
        )
    web_name = f"web.{ns}.svc.clusterset.local."

    def clusterset_ips_answered() -> None:
        for cluster_id in ("b", "c"):
            imported = sc.get_custom(clients[cluster_id], "serviceimports", ns, "web")
            assert imported is not None and imported["spec"].get("ips"), cluster_id
            ips = set(imported["spec"]["ips"])
            answered = rdata(ask(fed, cluster_id, web_name), "A") | rdata(
                ask(fed, cluster_id, web_name, "AAAA"), "AAAA"
            )
            assert answered == ips, (cluster_id, answered, ips)
        assert any(":" in ip for ip in rdata(ask(fed, "c", web_name, "AAAA"), "AAAA"))

    eventually(clusterset_ips_answered, "web's ClusterSetIPs answered in b and c (IPv6 in c)")
    # b has no IPv6: the name exists, with no AAAA record (NODATA, not NXDOMAIN).
    nodata = ask(fed, "b", web_name, "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    srv = ask(fed, "b", web_name, "SRV")
    assert rdata(srv, "SRV") == {f"0 100 80 {web_name}"}

    a, pods = fed.env.cluster("a"), {c.pod_ip(31)}
    pods |= {a.pod_ip(21), a.pod_ip(22)}
    db_name = f"db.{ns}.svc.clusterset.local."

    def headless_answered() -> None:
        assert rdata(ask(fed, "b", db_name), "A") == pods
        targets = {
            f"0 33 5432 {host}.{cluster}.db.{ns}.svc.clusterset.local."
            for host, cluster in (("db-0", "a"), ("db-1", "a"), ("db-0", "c"))
        }
        assert rdata(ask(fed, "b", db_name, "SRV", tcp=True), "SRV") == targets

    eventually(headless_answered, "db's endpoints of a and c answered in b")
    for hostname, cluster_id, ip in (
        ("db-0", "a", a.pod_ip(21)), ("db-1", "a", a.pod_ip(22)), ("db-0", "c", c.pod_ip(31)),
    ):  # fmt: skip
        name = f"{hostname}.{cluster_id}.db.{ns}.svc.clusterset.local."
        assert rdata(ask(fed, "b", name), "A") == {ip}, name

    # fedctl says the same, and why.
    agent_b = f"http://127.0.0.1:{fed.agents['b'].metrics_port}"
    proc = fedctl("dns", f"db-1.a.db.{ns}.svc.clusterset.local", "--agent", agent_b)
    assert proc.returncode == 0, proc.stderr
    assert f"IN A {a.pod_ip(22)}" in proc.stdout
    assert f"why: endpoint db-1 of cluster a, headless import {ns}/db" in proc.stdout


def test_a_deleted_export_stops_resolving(fed: Federation, ns: str) -> None:
    a = fed.env.cluster("a")
    sc.apply(
        a, sc.service(ns, "gone"), sc.endpoint_slice(a, ns, "gone", [12]), sc.export(ns, "gone")
    )
    name = f"gone.{ns}.svc.clusterset.local."
    eventually(lambda: _assert_rcode(fed, name, dns.rcode.NOERROR, answered=True), "gone in b")
    nxdomain_before = _dns_count(fed, "b", "NXDOMAIN")
    deleted = time.monotonic()
    sc.delete(a, "serviceexport", ns, "gone")
    eventually(lambda: _assert_rcode(fed, name, dns.rcode.NXDOMAIN), "gone NXDOMAIN in b")
    print(f"NXDOMAIN in b {time.monotonic() - deleted:.3f} s after the export was deleted")
    assert _dns_count(fed, "b", "NXDOMAIN") > nxdomain_before


def _assert_rcode(fed: Federation, name: str, rcode: int, *, answered: bool = False) -> None:
    reply = ask(fed, "b", name)
    assert reply.rcode() == rcode and bool(reply.answer) == answered, reply


def _dns_count(fed: Federation, cluster_id: str, rcode: str) -> float:
    return metric(
        fed.metrics(cluster_id),
        f'federation_agent_dns_queries_total{{cluster="{cluster_id}",transport="udp",qtype="A",'
        f'rcode="{rcode}"}}',
        0.0,
    )


def test_garbage_and_oversized_queries_do_not_disturb_others(fed: Federation, ns: str) -> None:
    a = fed.env.cluster("a")
    sc.apply(a, sc.service(ns, "ok"), sc.endpoint_slice(a, ns, "ok", [13]), sc.export(ns, "ok"))
    name = f"ok.{ns}.svc.clusterset.local."
    eventually(lambda: _assert_rcode(fed, name, dns.rcode.NOERROR, answered=True), "ok in b")
    host, port = server(fed, "b")
    garbage = [
        b"\x00",  # shorter than a header: dropped
        b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff",  # cut short
        b"\xbe\xef\x01\x00" + b"\x00" * 8 + b"\x07" * 9000,  # oversized
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(2)
        for data in garbage:
            udp.sendto(data, (host, port))
            if len(data) >= 12:
                reply, _ = udp.recvfrom(65535)
                qid, flags = struct.unpack("!HH", reply[:4])
                assert qid == 0xBEEF and flags & dns.flags.QR and flags & 0xF == dns.rcode.FORMERR
            # Another client is answered between every bad message.
            assert rdata(ask(fed, "b", name), "A")
    # A TCP client that sends half a message and stalls holds only its own connection.
    with socket.create_connection((host, port), timeout=2) as stalled:
        stalled.sendall(struct.pack("!H", 300) + b"\x01\x02")
        assert rdata(ask(fed, "b", name, tcp=True), "A")
        assert rdata(ask(fed, "b", name), "A")
    # A TCP message longer than a query may be gets FORMERR over that connection.
    with socket.create_connection((host, port), timeout=2) as big:
        body = b"\xbe\xef\x01\x00" + b"\x00" * 8 + b"\x07" * 20000
        big.sendall(struct.pack("!H", len(body)) + body)
        (length,) = struct.unpack("!H", _read(big, 2))
        reply = _read(big, length)
        assert struct.unpack("!H", reply[2:4])[0] & 0xF == dns.rcode.FORMERR
    assert _dns_count(fed, "b", "NOERROR") > 0
    formerr = metric(
        fed.metrics("b"),
        'federation_agent_dns_queries_total{cluster="b",transport="udp",qtype="none",'
        'rcode="FORMERR"}',
    )
    assert formerr >= 2


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    deadline = time.monotonic() + DEADLINE
    while len(data) < count and time.monotonic() < deadline:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data
