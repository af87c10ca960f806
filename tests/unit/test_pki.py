"""The clusterset PKI: identities in certificates, and the node group they allow."""

from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.config.core.v3 import base_pb2

from federation.cli import pki as pki_cli
from federation.errors import InvalidInputError
from federation.node_groups import GATEWAY_METADATA
from federation.pki import CertificateAuthority, cluster_of, uris_of
from federation.xds.peers import CertificateGroup, Peer, PeerSlots, Refusal, claimed_group


def Node(cluster: str, id: str = "envoy", gateway: object = None) -> Any:
    """An Envoy's node as the xDS server receives it, naming ``gateway`` in its metadata."""
    node = base_pb2.Node(id=id, cluster=cluster)
    if isinstance(gateway, str):
        node.metadata.fields[GATEWAY_METADATA].string_value = gateway
    elif gateway is not None:
        node.metadata.fields[GATEWAY_METADATA].number_value = 1
    return node


def test_a_cluster_certificate_names_its_cluster_and_the_hub_its_role() -> None:
    ca = CertificateAuthority.create("ca")
    assert uris_of(ca.cluster("example.org", "b").cert_pem) == ["spiffe://example.org/cluster/b"]
    hub = ca.hub("example.org", names=["hub.fed.svc"], ips=["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(hub.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["hub.fed.svc"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert uris_of(hub.cert_pem) == ["spiffe://example.org/hub"]


@pytest.mark.parametrize(
    ("uris", "expected"),
    [
        (["spiffe://example.org/cluster/b"], "b"),
        (["spiffe://other.org/cluster/b"], None),
        (["spiffe://example.org/hub", "spiffe://example.org/cluster/c"], "c"),
        (["spiffe://example.org/cluster/b/extra"], None),
        ([], None),
    ],
)
def test_cluster_of_reads_only_this_trust_domain(uris: list[str], expected: str | None) -> None:
    assert cluster_of(uris, "example.org") == expected


def test_bad_names_are_refused_when_minting() -> None:
    ca = CertificateAuthority.create("ca")
    with pytest.raises(InvalidInputError, match="invalid cluster id"):
        ca.cluster("example.org", "Not_A_Cluster")
    with pytest.raises(InvalidInputError, match="trust domain"):
        ca.cluster("Bad Domain", "a")
    with pytest.raises(InvalidInputError, match="at least one DNS name or IP"):
        ca.hub("example.org")


def test_the_certificate_decides_the_group_and_a_foreign_claim_is_denied() -> None:
    group = CertificateGroup("example.org")
    b = Peer("ipv4:10.0.0.1:4000", ("spiffe://example.org/cluster/b",))
    assert group(Node("b"), b) == "b"
    assert group(Node(""), b) == "b"
    with pytest.raises(Refusal) as denied:
        group(Node("a"), b)
    assert denied.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.reason == "identity-mismatch"
    with pytest.raises(Refusal) as anonymous:
        group(Node("a"), Peer("ipv4:10.0.0.1:4000", ("spiffe://other.org/cluster/a",)))
    assert anonymous.value.reason == "no-cluster-identity"


def test_a_gateways_envoy_is_served_that_gateway_of_its_own_cluster_only() -> None:
    group = CertificateGroup("example.org")
    b = Peer("ipv4:10.0.0.1:4000", ("spiffe://example.org/cluster/b",))
    assert group(Node("b", gateway="shop/gw"), b) == "b/shop/gw"
    assert group(Node("", gateway="shop/gw"), b) == "b/shop/gw"
    assert group(Node("b", gateway=""), b) == "b"
    with pytest.raises(Refusal) as foreign:
        group(Node("a", gateway="shop/gw"), b)  # a's Gateway with b's certificate
    assert foreign.value.reason == "identity-mismatch"
    for bad in ("shop", "shop/gw/x", "Shop/gw", "shop/", 7):
        with pytest.raises(Refusal) as refused:
            group(Node("b", gateway=bad), b)
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT, bad
        assert refused.value.reason == "bad-gateway-metadata", bad
    assert claimed_group(Node("a", gateway="x/y"), Peer("ipv4:127.0.0.1:1")) == "a/x/y"


def test_plain_text_serves_the_claim_and_needs_one() -> None:
    assert claimed_group(Node("a"), Peer("ipv4:127.0.0.1:1")) == "a"
    with pytest.raises(Refusal) as refused:
        claimed_group(Node(""), Peer("ipv4:127.0.0.1:1"))
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_peers_are_counted_by_identity_else_by_host() -> None:
    assert Peer("ipv4:127.0.0.1:5000").key == "ipv4:127.0.0.1"
    assert Peer("ipv6:[::1]:5000").key == "ipv6:[::1]"
    assert Peer("ipv4:127.0.0.1:5000", ("spiffe://x/cluster/b",)).key == "spiffe://x/cluster/b"
    slots = PeerSlots(limit=2)
    slots.acquire("p")
    slots.acquire("p")
    with pytest.raises(Refusal) as full:
        slots.acquire("p")
    assert full.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    slots.acquire("q")
    slots.release("p")
    slots.acquire("p")
    assert slots.open("p") == 2


def test_fedctl_pki_writes_secret_shaped_directories_and_never_overwrites_a_ca(
    tmp_path: Path,
) -> None:
    written = pki_cli.init(tmp_path, clusters=["a", "b"], hub_names=["hub.fed.svc"])
    assert written == [
        tmp_path / "hub",
        tmp_path / "clusters" / "a",
        tmp_path / "clusters" / "b",
        tmp_path / "agents" / "a",
        tmp_path / "agents" / "b",
    ]
    for directory in written:
        assert sorted(p.name for p in directory.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
        assert (directory / "tls.key").stat().st_mode & 0o077 == 0
    with pytest.raises(InvalidInputError, match="already holds a PKI"):
        pki_cli.init(tmp_path, clusters=["c"], hub_names=["hub"])
    pki_cli.add_cluster(tmp_path, "c")
    assert uris_of((tmp_path / "clusters" / "c" / "tls.crt").read_bytes()) == [
        "spiffe://federation.local/cluster/c"
    ]
    # The agent's serving certificate names the cluster's agent, which is no cluster.
    agent = (tmp_path / "agents" / "c" / "tls.crt").read_bytes()
    assert uris_of(agent) == ["spiffe://federation.local/cluster/c/agent"]
    assert cluster_of(uris_of(agent), "federation.local") is None
    assert pki_cli.default_secret_name("agents/c") == pki_cli.AGENT_SECRET
    secret = pki_cli.secret_manifest(tmp_path, "clusters/c", "xds", "federation")
    assert secret["type"] == "kubernetes.io/tls"
    assert sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
