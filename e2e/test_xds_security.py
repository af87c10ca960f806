"""The hub's xDS port over mTLS, with real Envoys: who is served, who is refused, and a
certificate rotation under traffic.

The environment is the shared three-cluster one (``data_plane`` in ``e2e/fixtures.py``),
whose hub serves mTLS with the PKI ``fedctl pki`` minted (``Federation.ensure_pki``) and
whose Envoys present their cluster's certificate. Impostors are extra Envoy processes
with an admin port of their own; they get no listener, since they get no configuration.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from e2e import scenario as sc
from e2e.cluster import free_port
from e2e.envoy import Envoy
from e2e.federation import Federation, fedctl, metric
from e2e.processes import wait_until
from e2e.traffic import DEADLINE, Loop, export_with_backends, host, wait_served_by
from federation.cli.bootstrap import XDS_CLUSTER, BootstrapTls
from federation.pki import CertificateAuthority
from federation.xds.snapshot import CLUSTER

pytestmark = pytest.mark.integration

MISMATCHES = 'federation_xds_streams_refused_total{reason="identity-mismatch"}'


@pytest.fixture
def fed(data_plane: Federation) -> Federation:
    return data_plane


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "sec")


def proxy_status(fed: Federation) -> list[dict[str, Any]]:
    result = fedctl("proxy-status", "--hub", f"http://127.0.0.1:{fed.hub_http_port}", "-o", "json")
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, Any]] = json.loads(result.stdout)
    return entries


def proxy_table(fed: Federation) -> str:
    result = fedctl("proxy-status", "--hub", f"http://127.0.0.1:{fed.hub_http_port}")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def extra_envoys(fed: Federation) -> Iterator[list[Envoy]]:
    """Envoys a test starts beside the environment's; stopped after it."""
    started: list[Envoy] = []
    yield started
    for envoy in started:
        envoy.stop()


def start_extra_envoy(
    fed: Federation,
    started: list[Envoy],
    *,
    name: str,
    claims: str,
    tls: BootstrapTls | None,
) -> Envoy:
    """An Envoy claiming cluster ``claims`` with ``tls``'s certificate (None: plain text)."""
    cluster = fed.env.cluster("a")
    envoy = Envoy(
        fed.env.group,
        cluster.tools.envoy,
        fed.env.workdir / name,
        cluster=claims,
        xds_address=f"127.0.0.1:{fed.hub_xds_port}",
        admin_address=f"127.0.0.1:{free_port()}",
        listener_address=f"127.0.0.1:{free_port()}",
        node_id=name,
        tls=tls,
    )
    envoy.start()
    started.append(envoy)
    return envoy


def dynamic_clusters(envoy: Envoy) -> set[str]:
    return envoy.cluster_names() - {XDS_CLUSTER}


def test_every_cluster_envoy_syncs_over_mtls_and_serves(fed: Federation, ns: str) -> None:
    fed.start_backend("a", 40)
    export_with_backends(fed, "a", ns, [40])
    for cluster_id in ("b", "c"):
        wait_served_by(fed.envoys[cluster_id], host(ns), "a")

    def all_synced() -> bool:
        entries = {e["node_id"]: e for e in proxy_status(fed) if "refused" not in e}
        return all(entries.get(f"envoy-{c}", {}).get("synced") for c in ("a", "b", "c"))

    wait_until(all_synced, timeout=DEADLINE, what="every cluster's Envoy synced")
    table = proxy_table(fed)
    for cluster_id in ("a", "b", "c"):
        row = next(
            line.split() for line in table.splitlines() if line.startswith(f"envoy-{cluster_id} ")
        )
        assert row[1] == cluster_id and row[-1] == "yes", table
    assert fed.hub is not None
    assert f"(port {fed.hub_xds_port}, mTLS)" in fed.hub.log.read_text()


def test_an_envoy_with_b_certificate_claiming_a_gets_nothing(
    fed: Federation, extra_envoys: list[Envoy]
) -> None:
    before = metric(fed.hub_http("/metrics"), MISMATCHES, default=0.0)
    impostor = start_extra_envoy(
        fed, extra_envoys, name="impostor-b-as-a", claims="a", tls=fed.xds_tls("b")
    )

    def refused() -> bool:
        return any(
            e.get("node_id") == "impostor-b-as-a"
            and e.get("refused", {}).get("reason") == "identity-mismatch"
            for e in proxy_status(fed)
        )

    wait_until(refused, timeout=DEADLINE, what="the hub to refuse b's certificate claiming a")
    entry = next(e for e in proxy_status(fed) if e.get("node_id") == "impostor-b-as-a")
    assert entry["group"] == "a"
    assert entry["peer"] == "spiffe://federation.local/cluster/b"
    assert entry["refused"]["code"] == "PERMISSION_DENIED"
    assert "REFUSED" in next(
        line for line in proxy_table(fed).splitlines() if line.startswith("impostor-b-as-a ")
    )
    # Nothing of a's configuration reached it: a's own Envoy has clusters, it has none.
    assert dynamic_clusters(fed.envoys["a"])
    assert dynamic_clusters(impostor) == set()
    assert impostor.stats(r"^control_plane\.connected_state$") == {
        "control_plane.connected_state": 0
    }
    after = metric(fed.hub_http("/metrics"), MISMATCHES)
    assert after > before


def test_a_client_without_a_certificate_is_refused(
    fed: Federation, extra_envoys: list[Envoy]
) -> None:
    plain = start_extra_envoy(fed, extra_envoys, name="plain-envoy", claims="b", tls=None)
    ca = (fed.ensure_pki() / "ca.crt").read_bytes()
    with (
        pytest.raises(grpc.RpcError) as refused,
        grpc.secure_channel(
            f"127.0.0.1:{fed.hub_xds_port}", grpc.ssl_channel_credentials(ca)
        ) as channel,
    ):
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        request = discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER, node=base_pb2.Node(id="no-cert", cluster="b")
        )
        next(iter(stub.StreamAggregatedResources(iter([request]), timeout=5)))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE  # the TLS handshake
    # The Envoy without TLS never gets a stream up; b's own Envoy has its configuration.
    wait_until(
        lambda: (
            plain.stats(r"^control_plane\.connected_state$").get("control_plane.connected_state")
            == 0
        ),
        timeout=DEADLINE,
        what="the plain-text Envoy to be disconnected",
    )
    assert dynamic_clusters(plain) == set()
    assert dynamic_clusters(fed.envoys["b"])
    assert not any(e.get("node_id") in ("no-cert", "plain-envoy") for e in proxy_status(fed))


def served_certificate(fed: Federation) -> x509.Certificate:
    """The hub's certificate as a new connection sees it (presenting b's certificate)."""
    context = ssl.create_default_context(cafile=str(fed.ensure_pki() / "ca.crt"))
    context.set_alpn_protocols(["h2"])
    member = fed.xds_tls_dir("b")
    context.load_cert_chain(member / "tls.crt", member / "tls.key")
    with (
        socket.create_connection(("127.0.0.1", fed.hub_xds_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in one step (as the kubelet swaps a Secret's files)."""
    temporary = path.with_suffix(path.suffix + ".new")
    temporary.write_bytes(data)
    temporary.chmod(0o600)
    os.replace(temporary, path)


def test_rotating_the_hub_certificate_drops_no_request(fed: Federation, ns: str) -> None:
    fed.start_backend("a", 41)
    export_with_backends(fed, "a", ns, [41])
    wait_served_by(fed.envoys["b"], host(ns), "a")
    before = served_certificate(fed)
    pki = fed.ensure_pki()
    ca = CertificateAuthority.load((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    renewed = ca.hub("federation.local", ips=["127.0.0.1"])
    reloads = metric(fed.hub_http("/metrics"), "federation_xds_tls_reloads_total")
    opened = metric(fed.hub_http("/metrics"), "federation_xds_streams_opened_total")
    with Loop(fed.envoys["b"], host(ns), count=300, seconds=30) as loop:
        loop.wait_for(50)
        replace(pki / "hub" / "tls.key", renewed.key_pem)
        replace(pki / "hub" / "tls.crt", renewed.cert_pem)
        wait_until(
            lambda: served_certificate(fed).serial_number != before.serial_number,
            timeout=DEADLINE,
            what="new connections to get the renewed certificate",
        )
        # A change still reaches the Envoys on their pre-rotation streams.
        fed.start_backend("a", 42)
        export_with_backends(fed, "a", ns, [41, 42])
        wait_until(
            lambda: len(fed.envoys["b"].host_health(f"clusterset/{ns}/echo/80")) == 2,
            timeout=DEADLINE,
            what="b's Envoy to get the new endpoint after the rotation",
        )
        loop.wait_for(200)
    after = served_certificate(fed)
    assert after.serial_number == x509.load_pem_x509_certificate(renewed.cert_pem).serial_number
    # The Envoys' streams lived through it (none reconnected), and every one is synced.
    assert metric(fed.hub_http("/metrics"), "federation_xds_streams_opened_total") == opened
    entries = {e["node_id"]: e for e in proxy_status(fed) if "refused" not in e}
    assert all(entries[f"envoy-{c}"]["synced"] for c in ("a", "b", "c")), entries
    assert metric(fed.hub_http("/metrics"), "federation_xds_tls_reloads_total") > reloads
    print(f"rotation under load: {sum(loop.served().values())} requests, {loop.failures()} failed")
    assert loop.failures() == 0, loop.failed[:5]
