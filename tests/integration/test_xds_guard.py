"""Who the real xDS server serves, and what it refuses: identity, membership and limits.

Each test starts :func:`federation.xds.server.serve` on a free loopback port (with mTLS
from real certificates where identity matters) and speaks ADS to it with grpc.aio
channels. The e2e tests (``e2e/test_xds_security.py``) do the same with real Envoys.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from e2e.cluster import free_port
from e2e.xds_resources import eds_cluster
from federation.cli import pki
from federation.pki import CertificateAuthority
from federation.xds.peers import CertificateGroup, NodeGroup, ServerLimits, claimed_group
from federation.xds.server import serve
from federation.xds.snapshot import CLUSTER, ENDPOINT, Snapshot, SnapshotCache
from federation.xds.status import SyncRegistry, XdsMetrics
from federation.xds.stream import StreamSettings
from federation.xds.tls import TlsFiles, reloading_credentials

pytestmark = pytest.mark.integration

DEADLINE = 5.0
TRUST_DOMAIN = "federation.local"


@dataclass
class Server:
    address: str
    cache: SnapshotCache
    sync: SyncRegistry
    metrics: XdsMetrics
    pki: Path | None


async def _start(
    tmp_path: Path,
    *,
    tls: bool = False,
    limits: ServerLimits | None = None,
    settings: StreamSettings | None = None,
    groups: tuple[str, ...] = ("a", "b"),
) -> tuple[Server, grpc.aio.Server]:
    cache = SnapshotCache()
    for group in groups:
        cache.set(group, Snapshot.build([eds_cluster(f"{group}-svc")]))
    cache.mark_ready()
    sync = SyncRegistry(cache.snapshot_versions)
    metrics = XdsMetrics()
    address = f"127.0.0.1:{free_port()}"
    credentials = None
    node_group: NodeGroup = claimed_group
    directory = None
    if tls:
        directory = tmp_path / "pki"
        pki.init(directory, clusters=["a", "b"], hub_ips=["127.0.0.1"])
        hub = directory / "hub"
        files = TlsFiles(hub / "tls.crt", hub / "tls.key", hub / "ca.crt")
        credentials = reloading_credentials(files, metrics.tls_reloaded)
        node_group = CertificateGroup(TRUST_DOMAIN)
    server = await serve(
        cache,
        sync,
        address,
        metrics=metrics,
        credentials=credentials,
        node_group=node_group,
        limits=limits,
        settings=settings,
    )
    return Server(address, cache, sync, metrics, directory), server


@pytest.fixture
async def plain(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """Plain text; ``ServerLimits``/``StreamSettings`` from the parameter, if any."""
    param: Any = getattr(request, "param", None)
    limits = param if isinstance(param, ServerLimits) else None
    settings = param if isinstance(param, StreamSettings) else None
    state, server = await _start(tmp_path, limits=limits, settings=settings)
    try:
        yield state
    finally:
        await server.stop(None)


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[Server]:
    state, server = await _start(tmp_path, tls=True)
    try:
        yield state
    finally:
        await server.stop(None)


def _channel(server: Server, cluster: str | None = None) -> grpc.aio.Channel:
    if server.pki is None:
        return grpc.aio.insecure_channel(server.address)
    ca = (server.pki / "ca.crt").read_bytes()
    if cluster is None:
        credentials = grpc.ssl_channel_credentials(ca)
    else:
        member = server.pki / "clusters" / cluster
        credentials = grpc.ssl_channel_credentials(
            ca, (member / "tls.key").read_bytes(), (member / "tls.crt").read_bytes()
        )
    return grpc.aio.secure_channel(server.address, credentials)


def _request(cluster: str, names: list[str] | None = None, type_url: str = CLUSTER) -> Any:
    return discovery_pb2.DiscoveryRequest(
        type_url=type_url,
        resource_names=names or [],
        node=base_pb2.Node(id=f"envoy-{cluster}", cluster=cluster),
    )


async def _first_response(channel: grpc.aio.Channel, *requests: Any) -> Any:
    """Open a stream, send ``requests``, return the first response (or raise its error)."""
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    for request in requests:
        await call.write(request)
    async with asyncio.timeout(DEADLINE):
        response = await call.read()
    call.cancel()
    return response


async def _refused(channel: grpc.aio.Channel, *requests: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _first_response(channel, *requests)
    return raised.value


@pytest.mark.parametrize("plain", [ServerLimits(max_streams_per_peer=1)], indirect=True)
async def test_an_unknown_cluster_is_told_so_recorded_and_logged_once(
    plain: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Also: each refused stream gives its peer's slot back (the bound here is one)."""
    caplog.set_level(logging.WARNING, "federation.xds.server")
    async with _channel(plain) as channel:
        for _ in range(3):
            error = await _refused(channel, _request("z"))
            assert error.code() is grpc.StatusCode.NOT_FOUND
            assert "'z' is no member cluster" in (error.details() or "")
        served = await _first_response(channel, _request("a"))
    assert served.type_url == CLUSTER
    (refused,) = plain.sync.refused()
    assert (refused.group, refused.reason, refused.code, refused.count) == (
        "z",
        "unknown-cluster",
        "NOT_FOUND",
        3,
    )
    assert plain.metrics.refusals == {"unknown-cluster": 3}
    logged = [r for r in caplog.records if "unknown-cluster" in r.getMessage()]
    assert len(logged) == 1


@pytest.mark.parametrize("plain", [ServerLimits(first_request_timeout=0.3)], indirect=True)
async def test_a_stream_that_never_asks_is_closed_at_its_deadline(plain: Server) -> None:
    async with _channel(plain) as channel:
        error = await _refused(channel)  # opens the stream, sends nothing
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert plain.metrics.refusals == {"no-first-request": 1}


@pytest.mark.parametrize("plain", [StreamSettings(max_subscribed_names=100)], indirect=True)
async def test_subscriptions_beyond_the_bound_are_refused(plain: Server) -> None:
    async with _channel(plain) as channel:
        served = await _first_response(
            channel, _request("a", [f"n{i}" for i in range(98)], ENDPOINT)
        )
        assert served.type_url == ENDPOINT
        error = await _refused(channel, _request("a", [f"n{i}" for i in range(100)], ENDPOINT))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "101 resource names" in (error.details() or "")
    assert plain.metrics.refusals == {"too-many-names": 1}


async def test_a_message_larger_than_the_bound_is_refused_before_it_is_read(
    plain: Server,
) -> None:
    names = [f"name-{i:07d}" for i in range(1_000_000)]  # ~14 MB: above 8 MiB
    async with _channel(plain) as channel:
        error = await _refused(channel, _request("a", names, ENDPOINT))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        served = await _first_response(channel, _request("a"))
    assert served.type_url == CLUSTER
    assert plain.metrics.streams_opened == 1  # the refused one never became a stream


@pytest.mark.parametrize("plain", [ServerLimits(max_names_per_peer=150)], indirect=True)
async def test_a_peers_streams_share_one_names_budget(plain: Server) -> None:
    async with _channel(plain) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        first = stub.StreamAggregatedResources()
        await first.write(_request("a", [f"n{i}" for i in range(98)], ENDPOINT))
        async with asyncio.timeout(DEADLINE):
            assert (await first.read()).type_url == ENDPOINT
        error = await _refused(channel, _request("a", [f"m{i}" for i in range(98)], ENDPOINT))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "streams would subscribe to 198 resource names together" in (error.details() or "")
        first.cancel()
        async with asyncio.timeout(DEADLINE):  # its names are given back when it ends
            await plain.sync.wait_for(lambda: len(plain.sync) == 0)
        served = await _first_response(
            channel, _request("a", [f"m{i}" for i in range(98)], ENDPOINT)
        )
        assert served.type_url == ENDPOINT


@pytest.mark.parametrize("plain", [StreamSettings(max_subscribed_names=100)], indirect=True)
async def test_a_delta_client_holding_what_it_subscribed_to_stays_within_the_bound(
    plain: Server,
) -> None:
    """40 clusters (wildcard CDS) and their 40 assignments: 82 names and types, under 100,
    though the stream holds 40 + 40 + 40 entries (what it was sent, what it asked for)."""
    clusters = [eds_cluster(f"c{i}") for i in range(40)]
    plain.cache.set("a", Snapshot.build(clusters))
    async with _channel(plain) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        cds = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
        cds.node.CopyFrom(base_pb2.Node(id="envoy-a", cluster="a"))
        await call.write(cds)
        async with asyncio.timeout(DEADLINE):
            pushed = await call.read()
        assert len(pushed.resources) == 40
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=pushed.nonce)
        )
        names = [f"c{i}" for i in range(40)]
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=names)
        )
        async with asyncio.timeout(DEADLINE):
            endpoints = await call.read()
        assert endpoints.type_url == ENDPOINT
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, response_nonce=endpoints.nonce)
        )
        async with asyncio.timeout(DEADLINE):
            await plain.sync.wait_for(
                lambda: all(t.acked_version for s in plain.sync.list() for t in s.types)
            )
        assert plain.metrics.refusals == {}
        call.cancel()


@pytest.mark.parametrize(
    "plain", [ServerLimits(min_ping_interval=0.5, keepalive_time=3600)], indirect=True
)
async def test_a_client_pinging_at_the_allowed_rate_keeps_its_stream(plain: Server) -> None:
    """Envoy pings every 15 s without data; a server that took that for abuse would cut
    every quiet Envoy off (GOAWAY too_many_pings). Here: pings every second, allowed
    every half second, for six seconds."""
    options = [
        ("grpc.keepalive_time_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(plain.address, options=options) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(_request("a"))
        async with asyncio.timeout(DEADLINE):
            first = await call.read()
        await call.write(
            discovery_pb2.DiscoveryRequest(
                type_url=CLUSTER, version_info=first.version_info, response_nonce=first.nonce
            )
        )
        # Negative check: the stream must not end (a task reads: a cancelled read would
        # cancel the call).
        reader = asyncio.create_task(call.read())
        done, _ = await asyncio.wait({reader}, timeout=6.0)
        assert not done, reader.result() if not reader.exception() else reader.exception()
        plain.cache.set("a", Snapshot.build([eds_cluster("a-svc"), eds_cluster("a-new")]))
        async with asyncio.timeout(DEADLINE):
            assert len((await reader).resources) == 2
        call.cancel()


@pytest.mark.parametrize("plain", [ServerLimits(max_streams_per_peer=3)], indirect=True)
async def test_a_peer_gets_a_bounded_number_of_streams(plain: Server) -> None:
    async with _channel(plain) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        calls = []
        for _ in range(3):
            call = stub.StreamAggregatedResources()
            await call.write(_request("a"))
            async with asyncio.timeout(DEADLINE):
                assert (await call.read()).type_url == CLUSTER
            calls.append(call)
        error = await _refused(channel, _request("a"))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        calls.pop().cancel()
        async with asyncio.timeout(DEADLINE):
            await plain.sync.wait_for(lambda: len(plain.sync) == 2)
        assert (await _first_response(channel, _request("a"))).type_url == CLUSTER
        for call in calls:
            call.cancel()
    assert plain.metrics.refusals == {"too-many-streams": 1}


async def test_mtls_serves_a_cluster_its_own_configuration_only(mtls: Server) -> None:
    async with _channel(mtls, "b") as channel:
        served = await _first_response(channel, _request("b"))
        assert served.type_url == CLUSTER
        assert b"b-svc" in served.resources[0].value
        error = await _refused(channel, _request("a"))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "cluster 'b'" in (error.details() or "")
    (refused,) = mtls.sync.refused()
    assert (refused.peer, refused.group, refused.reason) == (
        f"spiffe://{TRUST_DOMAIN}/cluster/b",
        "a",
        "identity-mismatch",
    )


async def test_mtls_refuses_a_certificate_that_names_no_cluster(mtls: Server) -> None:
    assert mtls.pki is not None
    ca = CertificateAuthority.load(
        (mtls.pki / "ca.crt").read_bytes(), (mtls.pki / "ca.key").read_bytes()
    )
    anonymous = ca.client("somebody")  # signed by the CA, but no cluster URI
    credentials = grpc.ssl_channel_credentials(
        (mtls.pki / "ca.crt").read_bytes(), anonymous.key_pem, anonymous.cert_pem
    )
    async with grpc.aio.secure_channel(mtls.address, credentials) as channel:
        error = await _refused(channel, _request("a"))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "names no member cluster" in (error.details() or "")
    assert mtls.metrics.refusals == {"no-cluster-identity": 1}


async def test_mtls_refuses_a_client_without_a_certificate(mtls: Server) -> None:
    async with _channel(mtls, None) as channel:
        error = await _refused(channel, _request("a"))
    assert error.code() is grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
    assert mtls.metrics.streams_opened == 0


def _served_certificate(address: str, ca: Path) -> x509.Certificate:
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    # The server asks for a client certificate: present b's so the handshake completes.
    member = ca.parent / "clusters" / "b"
    context.load_cert_chain(member / "tls.crt", member / "tls.key")
    with (
        socket.create_connection((host, int(port)), timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_new_certificate_files_are_used_by_new_connections_and_old_streams_live_on(
    mtls: Server,
) -> None:
    assert mtls.pki is not None
    before = _served_certificate(mtls.address, mtls.pki / "ca.crt")
    async with _channel(mtls, "b") as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.StreamAggregatedResources()
        await call.write(_request("b"))
        async with asyncio.timeout(DEADLINE):
            first = await call.read()
        # Rotate: a new certificate from the same CA, written as a Secret update would.
        ca = CertificateAuthority.load(
            (mtls.pki / "ca.crt").read_bytes(), (mtls.pki / "ca.key").read_bytes()
        )
        renewed = ca.hub(TRUST_DOMAIN, ips=["127.0.0.1"])
        renewed.write(mtls.pki / "hub", "tls")
        after = await asyncio.to_thread(_served_certificate, mtls.address, mtls.pki / "ca.crt")
        assert after.serial_number != before.serial_number
        assert after.serial_number == x509.load_pem_x509_certificate(renewed.cert_pem).serial_number
        assert mtls.metrics.tls_reloads == 1
        # The stream opened before the rotation still gets pushes.
        await call.write(
            discovery_pb2.DiscoveryRequest(
                type_url=CLUSTER, version_info=first.version_info, response_nonce=first.nonce
            )
        )
        mtls.cache.set("b", Snapshot.build([eds_cluster("b-svc"), eds_cluster("b-new")]))
        async with asyncio.timeout(DEADLINE):
            pushed = await call.read()
        assert len(pushed.resources) == 2
        call.cancel()
