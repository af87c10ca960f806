"""The ADS protocol of ``federation.xds.server``, spoken by a real gRPC client.

Each test starts the real grpc.aio server (:func:`federation.xds.server.serve`) on a free
loopback port and talks to it through the generated ADS stub over a grpc.aio channel,
with resources built from the real Envoy protobuf classes. No Envoy is needed here (the
tests with a real Envoy live elsewhere); what is checked is the protocol the hub owes every
Envoy: readiness, ACK/NACK, nonces, the node cache, complete CDS, push order and removal
order, warm before route, Secrets before the listeners that name them, re-offers after a
NACK, endpoint-only pushes, unknown names, delta, and the sync registry.

Waiting is bounded by ``asyncio.timeout``; the only fixed waits are the negative checks
("no response arrives"), which wait ``QUIET`` seconds (or, once, past a backoff) for a
response that must not come.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from e2e.cluster import free_port
from e2e.xds_resources import eds_cluster, loopback_assignment
from federation.cli.fedctl import render_proxy_status
from federation.xds.server import serve
from federation.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ORDER,
    ROUTE,
    SECRET,
    Resource,
    Snapshot,
    SnapshotCache,
)
from federation.xds.status import ProxyStatus, SyncRegistry, SyncState, XdsMetrics
from federation.xds.stream import StreamSettings

pytestmark = pytest.mark.integration

GROUP = "b"
#: Bound on every wait for something that must happen.
DEADLINE = 5.0
#: How long a negative check waits for a response that must not come.
QUIET = 0.3


# --- Envoy resources, built with the real protobuf classes -------------------------------


def cluster(name: str, timeout: int = 1) -> Resource:
    return eds_cluster(name, timeout)


def assignment(name: str, *ports: int) -> Resource:
    return loopback_assignment(name, ports)


def listener(name: str, stat_prefix: str = "v1") -> Resource:
    return Resource.of(listener_pb2.Listener(name=name, stat_prefix=stat_prefix), name)


def secret(name: str, directory: str) -> Resource:
    """A certificate Secret as the hub serves it: where the files are, never a key."""
    certificate = common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(filename=f"{directory}/tls.crt"),
        private_key=base_pb2.DataSource(filename=f"{directory}/tls.key"),
        watched_directory=base_pb2.WatchedDirectory(path=directory),
    )
    return Resource.of(secret_pb2.Secret(name=name, tls_certificate=certificate), name)


def tls_listener(name: str, *secrets: str, stat_prefix: str = "v1") -> Resource:
    """A listener whose one filter chain terminates TLS with ``secrets`` over ADS."""
    context = tls_pb2.DownstreamTlsContext()
    for secret_name in secrets:
        config = context.common_tls_context.tls_certificate_sds_secret_configs.add(name=secret_name)
        config.sds_config.ads.SetInParent()
    message = listener_pb2.Listener(name=name, stat_prefix=stat_prefix)
    chain = message.filter_chains.add()
    chain.transport_socket.name = "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.Pack(context)
    return Resource.of(message, name)


def routes(name: str, *clusters: str) -> Resource:
    message = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="all",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=f"/{target}"),
                        route=route_components_pb2.RouteAction(cluster=target),
                    )
                    for target in clusters
                ],
            )
        ],
    )
    return Resource.of(message, name)


def world(
    clusters: Sequence[str] = ("c1", "c2"),
    port: int = 8080,
    stat_prefix: str = "v1",
    route_clusters: Sequence[str] | None = None,
    timeout: int = 1,
) -> Snapshot:
    """Clusters with one assignment each, listener ``http`` and its routes ``http``, and
    Secret ``cert`` (its files in a directory named after ``stat_prefix``)."""
    return Snapshot.build(
        [
            *(cluster(name, timeout) for name in clusters),
            *(assignment(name, port) for name in clusters),
            secret("cert", f"/secrets/{stat_prefix}"),
            listener("http", stat_prefix),
            routes("http", *(clusters if route_clusters is None else route_clusters)),
        ]
    )


_DECODERS: dict[str, Callable[[bytes], Any]] = {
    CLUSTER: cluster_pb2.Cluster.FromString,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment.FromString,
    LISTENER: listener_pb2.Listener.FromString,
    ROUTE: route_pb2.RouteConfiguration.FromString,
    SECRET: secret_pb2.Secret.FromString,
}


def decode(type_url: str, value: bytes) -> Any:
    return _DECODERS[type_url](value)


def name_of(type_url: str, message: Any) -> str:
    return str(message.cluster_name if type_url == ENDPOINT else message.name)


def names(response: Any) -> list[str]:
    """The names of the resources in a state-of-the-world response, in order."""
    assert all(a.type_url == response.type_url for a in response.resources)
    return [name_of(response.type_url, decode(a.type_url, a.value)) for a in response.resources]


def delta_names(response: Any) -> dict[str, str]:
    """Name -> version of the resources in a delta response (checked against their bodies)."""
    found = {}
    for entry in response.resources:
        assert entry.resource.type_url == response.type_url
        assert entry.name == name_of(
            response.type_url, decode(entry.resource.type_url, entry.resource.value)
        )
        found[entry.name] = entry.version
    return found


# --- the hub side and a client --------------------------------------------------------


@dataclass
class Hub:
    cache: SnapshotCache
    sync: SyncRegistry
    metrics: XdsMetrics
    stub: Any

    def status(self) -> ProxyStatus:
        (status,) = self.sync.list()
        return status

    def state(self, type_url: str) -> SyncState | None:
        statuses = self.sync.list()
        if not statuses:
            return None
        found = statuses[0].type(type_url)
        return None if found is None else found.state

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            await self.sync.wait_for(predicate)


#: Stream timing for tests of re-offers and warming: short, but longer than ``QUIET``.
FAST = StreamSettings(nack_retry_base=0.6, nack_retry_max=1.2, warm_timeout=0.6)


@pytest.fixture
async def hub(request: pytest.FixtureRequest) -> AsyncIterator[Hub]:
    """The server, with default timing or the :class:`StreamSettings` given as the
    fixture's parameter (``@pytest.mark.parametrize("hub", [FAST], indirect=True)``)."""
    settings: StreamSettings | None = getattr(request, "param", None)
    cache = SnapshotCache()
    sync = SyncRegistry(cache.snapshot_versions)
    metrics = XdsMetrics()
    address = f"127.0.0.1:{free_port()}"
    server = await serve(cache, sync, address, metrics=metrics, settings=settings)
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Hub(cache, sync, metrics, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel))
        # The clients are closed by now (their fixtures were set up later): let the server
        # see every stream end before stopping it.
        async with asyncio.timeout(DEADLINE):
            await sync.wait_for(lambda: len(sync) == 0)
    finally:
        await channel.close()
        await server.stop(None)


class Client:
    """One ADS stream. Responses are read by a task into a queue, so that a bounded wait
    for a response never cancels a read (which would cancel the whole call)."""

    def __init__(self, call: Any, node: Any) -> None:
        self.call = call
        self.node = node
        self.first = True
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.error: grpc.aio.AioRpcError | None = None
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    return
                self.responses.put_nowait(response)
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        except asyncio.CancelledError:
            if not self.call.cancelled():
                raise  # this task was cancelled, not the call by close()

    def with_node(self, request: Any) -> Any:
        """Only the first request carries the node, as Envoy may do."""
        if self.first:
            request.node.CopyFrom(self.node)
            self.first = False
        return request

    async def recv(self) -> Any:
        async with asyncio.timeout(DEADLINE):
            return await self.responses.get()

    async def quiet(self) -> None:
        """Negative check: no response within QUIET seconds."""
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(QUIET):
                response = await self.responses.get()
                pytest.fail(f"unexpected response: {response}")

    async def close(self) -> None:
        self.call.cancel()
        await self.pump


class SotwClient(Client):
    async def request(
        self,
        type_url: str,
        resource_names: Iterable[str] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(resource_names),
            version_info=version,
            response_nonce=nonce,
        )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(self.with_node(request))

    async def ack(self, response: Any, resource_names: Iterable[str] = ()) -> None:
        await self.request(
            response.type_url, resource_names, version=response.version_info, nonce=response.nonce
        )

    async def nack(
        self, response: Any, message: str, resource_names: Iterable[str] = (), accepted: str = ""
    ) -> None:
        await self.request(
            response.type_url, resource_names, version=accepted, nonce=response.nonce, error=message
        )


class DeltaClient(Client):
    async def request(
        self,
        type_url: str,
        *,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        initial: Mapping[str, str] | None = None,
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=dict(initial or {}),
            response_nonce=nonce,
        )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(self.with_node(request))

    async def ack(self, response: Any) -> None:
        await self.request(response.type_url, nonce=response.nonce)


def node(group: str = GROUP, node_id: str = "envoy-b-1") -> Any:
    return base_pb2.Node(id=node_id, cluster=group)


@pytest.fixture
async def sotw(hub: Hub) -> AsyncIterator[SotwClient]:
    client = SotwClient(hub.stub.StreamAggregatedResources(), node())
    yield client
    await client.close()


@pytest.fixture
async def delta(hub: Hub) -> AsyncIterator[DeltaClient]:
    client = DeltaClient(hub.stub.DeltaAggregatedResources(), node(node_id="envoy-b-delta"))
    yield client
    await client.close()


def ready(hub: Hub, snapshot: Snapshot) -> Snapshot:
    hub.cache.set(GROUP, snapshot)
    hub.cache.mark_ready()
    return snapshot


async def subscribe_all(
    hub: Hub, client: SotwClient, eds: Sequence[str] = ("c1", "c2")
) -> dict[str, Any]:
    """Subscribe to every type the way Envoy does (Secrets once it has the listeners
    that name them), ACK everything; the responses."""
    got = {}
    await client.request(CLUSTER)
    got[CLUSTER] = await client.recv()
    await client.ack(got[CLUSTER])
    await client.request(ENDPOINT, eds)
    got[ENDPOINT] = await client.recv()
    await client.ack(got[ENDPOINT], eds)
    await client.request(LISTENER)
    got[LISTENER] = await client.recv()
    await client.ack(got[LISTENER])
    await client.request(SECRET, ["cert"])
    got[SECRET] = await client.recv()
    await client.ack(got[SECRET], ["cert"])
    await client.request(ROUTE, ["http"])
    got[ROUTE] = await client.recv()
    await client.ack(got[ROUTE], ["http"])
    await hub.wait(lambda: all(hub.state(t) is SyncState.SYNCED for t in ORDER))
    return got


# --- state of the world ---------------------------------------------------------------


async def test_nothing_is_served_until_the_cache_is_ready(hub: Hub, sotw: SotwClient) -> None:
    await sotw.request(CLUSTER)
    await sotw.request(LISTENER)
    await sotw.quiet()
    snapshot = world(("c1", "c2", "c3"))
    hub.cache.set(GROUP, snapshot)
    await sotw.quiet()  # a snapshot is not enough: the hub has not loaded everything yet
    assert hub.state(CLUSTER) is SyncState.STALE

    hub.cache.mark_ready()
    clusters = await sotw.recv()
    assert clusters.type_url == CLUSTER
    assert names(clusters) == ["c1", "c2", "c3"]
    assert clusters.version_info == snapshot.version(CLUSTER)
    assert clusters.nonce
    listeners = await sotw.recv()
    assert listeners.type_url == LISTENER
    assert names(listeners) == ["http"]


async def test_ack_is_recorded_as_synced(hub: Hub, sotw: SotwClient) -> None:
    snapshot = ready(hub, world())
    await sotw.request(CLUSTER)
    response = await sotw.recv()
    await hub.wait(lambda: hub.state(CLUSTER) is SyncState.STALE)  # sent, not ACKed yet
    await sotw.ack(response)
    await hub.wait(lambda: hub.state(CLUSTER) is SyncState.SYNCED)
    status = hub.status().type(CLUSTER)
    assert status is not None
    assert status.acked_version == status.sent_version == snapshot.version(CLUSTER)
    assert status.sent_nonce == response.nonce
    assert hub.metrics.acks == 1


async def test_nack_is_recorded_and_the_same_version_is_not_resent(
    hub: Hub, sotw: SotwClient
) -> None:
    ready(hub, world())
    await sotw.request(CLUSTER)
    await sotw.request(ENDPOINT, ["c1"])
    clusters = await sotw.recv()
    endpoints = await sotw.recv()
    await sotw.ack(endpoints, ["c1"])
    await sotw.nack(clusters, "cluster c2: bad connect_timeout")
    await hub.wait(lambda: hub.state(CLUSTER) is SyncState.NACKED)
    status = hub.status().type(CLUSTER)
    assert status is not None and status.last_nack is not None
    assert status.last_nack.message == "cluster c2: bad connect_timeout"
    assert status.last_nack.version == clusters.version_info
    assert status.last_nack.nonce == clusters.nonce
    assert hub.metrics.nacks == 1
    # What the hub's /debug/proxy-status serves is what `fedctl proxy-status` shows.
    shown = render_proxy_status(json.loads(json.dumps([p.to_json() for p in hub.sync.list()])))
    assert f"Cluster NACKed version {clusters.version_info}: cluster c2: bad connect_timeout" in (
        shown
    )

    # Not answered with the same version, not even when something else wakes the stream.
    hub.cache.update(GROUP, ENDPOINT, {"c2": assignment("c2", 9999)})
    await sotw.quiet()

    # A changed snapshot is pushed again.
    hub.cache.update(GROUP, CLUSTER, {"c2": cluster("c2", timeout=5)})
    fixed = await sotw.recv()
    assert fixed.type_url == CLUSTER and fixed.version_info != clusters.version_info
    await sotw.ack(fixed)
    await hub.wait(lambda: hub.state(CLUSTER) is SyncState.SYNCED)
    status = hub.status().type(CLUSTER)
    assert status is not None and status.last_nack is not None  # kept for the operator


async def test_a_request_with_a_stale_nonce_is_ignored(hub: Hub, sotw: SotwClient) -> None:
    ready(hub, world())
    await sotw.request(ENDPOINT, ["c1"])
    first = await sotw.recv()
    hub.cache.update(GROUP, ENDPOINT, {"c1": assignment("c1", 8081)})
    second = await sotw.recv()
    assert second.nonce != first.nonce

    # Envoy's late answer to the first response: neither its ACK nor its names count.
    await sotw.request(ENDPOINT, ["c1", "c2"], version=first.version_info, nonce=first.nonce)
    await sotw.quiet()

    # The same request answering the latest response is honoured.
    await sotw.request(ENDPOINT, ["c1", "c2"], version=second.version_info, nonce=second.nonce)
    third = await sotw.recv()
    assert names(third) == ["c2"]
    # Requests are handled in order, so the stale one was handled before this answer.
    assert hub.metrics.stale_requests == 1
    assert hub.metrics.acks == 1


async def test_a_request_without_nonce_after_a_response_resets_nothing(
    hub: Hub, sotw: SotwClient
) -> None:
    """Envoy may send a request before our response reaches it: it ACKs nothing, its
    names count, and nothing already sent is sent again."""
    ready(hub, world())
    await sotw.request(CLUSTER)
    await sotw.request(ENDPOINT, ["c1"])
    clusters = await sotw.recv()
    first = await sotw.recv()
    assert names(first) == ["c1"]
    await sotw.request(CLUSTER)
    await sotw.request(ENDPOINT, ["c1", "c2"])
    added = await sotw.recv()
    assert added.type_url == ENDPOINT and names(added) == ["c2"]
    await sotw.quiet()
    await sotw.ack(clusters)
    await hub.wait(lambda: hub.state(CLUSTER) is SyncState.SYNCED)


async def test_the_node_of_the_first_request_is_kept_for_the_stream(
    hub: Hub, sotw: SotwClient
) -> None:
    ready(hub, world())
    await sotw.request(CLUSTER)  # carries the node
    await sotw.recv()
    await sotw.request(LISTENER)  # no node from here on
    await sotw.request(ROUTE, ["http"])
    assert names(await sotw.recv()) == ["http"]
    assert names(await sotw.recv()) == ["http"]
    status = hub.status()
    assert (status.node_id, status.group, status.protocol) == ("envoy-b-1", GROUP, "sotw")


async def test_a_stream_without_node_cluster_is_refused(hub: Hub) -> None:
    call = hub.stub.StreamAggregatedResources()
    await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=base_pb2.Node(id="x")))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with asyncio.timeout(DEADLINE):
            await call.read()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "node.cluster" in (refused.value.details() or "")
    assert hub.metrics.streams_rejected == 1
    assert hub.sync.list() == []


async def test_cds_and_lds_responses_hold_every_resource(hub: Hub, sotw: SotwClient) -> None:
    ready(hub, world(("c1", "c2", "c3")))
    await sotw.request(CLUSTER)
    first = await sotw.recv()
    assert names(first) == ["c1", "c2", "c3"]
    await sotw.ack(first)
    hub.cache.update(GROUP, CLUSTER, {"c2": cluster("c2", timeout=7)})
    second = await sotw.recv()
    assert names(second) == ["c1", "c2", "c3"]  # not only the changed one
    assert decode(CLUSTER, second.resources[1].value).connect_timeout.seconds == 7

    # Names in a CDS/LDS request do not narrow the response.
    await sotw.request(LISTENER, ["something-else"])
    assert names(await sotw.recv()) == ["http"]


async def test_a_changed_cluster_is_followed_by_its_assignment(hub: Hub, sotw: SotwClient) -> None:
    ready(hub, world())
    got = await subscribe_all(hub, sotw)
    hub.cache.update(GROUP, CLUSTER, {"c1": cluster("c1", timeout=3)})
    clusters = await sotw.recv()
    assert clusters.type_url == CLUSTER and names(clusters) == ["c1", "c2"]
    endpoints = await sotw.recv()
    assert endpoints.type_url == ENDPOINT
    assert names(endpoints) == ["c1"]
    # The same, unchanged assignment: Envoy needs it again to finish warming the cluster.
    before = {name_of(ENDPOINT, decode(ENDPOINT, a.value)): a for a in got[ENDPOINT].resources}
    assert endpoints.resources[0].value == before["c1"].value
    await sotw.quiet()


def copy_of(base: str, name: str, timeout: int = 1) -> Resource:
    """A copy of cluster ``base`` reading its assignment (EDS ``service_name``), as a
    BackendTrafficPolicy's cluster is."""
    message = decode(CLUSTER, cluster(name, timeout).body)
    message.eds_cluster_config.service_name = base
    return Resource.of(message, name)


async def test_a_changed_copy_of_a_cluster_is_followed_by_the_assignment_it_reads(
    hub: Hub, sotw: SotwClient
) -> None:
    ready(hub, world())
    hub.cache.update(GROUP, CLUSTER, {"policy/c1": copy_of("c1", "policy/c1")})
    got = await subscribe_all(hub, sotw)
    assert "policy/c1" in names(got[CLUSTER])
    hub.cache.update(GROUP, CLUSTER, {"policy/c1": copy_of("c1", "policy/c1", timeout=5)})
    clusters = await sotw.recv()
    assert clusters.type_url == CLUSTER
    # Envoy warms the changed copy until the assignment it reads arrives again: without
    # it, until its EDS fetch times out (15 s), the policy's routes have no cluster.
    endpoints = await sotw.recv()
    assert endpoints.type_url == ENDPOINT and names(endpoints) == ["c1"]
    await sotw.quiet()


async def test_pushes_go_cluster_endpoint_secret_listener_route(hub: Hub, sotw: SotwClient) -> None:
    ready(hub, world())
    await subscribe_all(hub, sotw)
    hub.cache.set(GROUP, world(port=9090, stat_prefix="v2", timeout=2, route_clusters=["c2"]))
    order = [(await sotw.recv()).type_url for _ in ORDER]
    assert order == [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE]
    await sotw.quiet()


async def test_new_clusters_come_first_and_dropped_clusters_last(
    hub: Hub, sotw: SotwClient
) -> None:
    ready(hub, world(("c1", "c2")))
    got = await subscribe_all(hub, sotw)

    # c3 replaces c2 and the routes move from c2 to c3 in one snapshot.
    hub.cache.set(GROUP, world(("c1", "c3")))
    make = await sotw.recv()
    assert make.type_url == CLUSTER
    assert names(make) == ["c1", "c2", "c3"]  # c3 added, c2 still there
    # The routes wait: until c3's endpoints arrive, Envoy keeps c3 warming and a route to
    # it would answer 503 (no_cluster).
    await sotw.quiet()
    # Envoy asks for c3's endpoints as soon as it has applied the CDS response.
    await sotw.ack(got[ENDPOINT], ["c1", "c2", "c3"])
    endpoints = await sotw.recv()
    assert endpoints.type_url == ENDPOINT and names(endpoints) == ["c3"]
    moved = await sotw.recv()
    assert moved.type_url == ROUTE
    assert [
        r.route.cluster for r in decode(ROUTE, moved.resources[0].value).virtual_hosts[0].routes
    ] == [
        "c1",
        "c3",
    ]
    brk = await sotw.recv()
    assert brk.type_url == CLUSTER
    assert names(brk) == ["c1", "c3"]  # c2 goes once no route uses it
    await sotw.quiet()  # c2 kept its endpoints meanwhile: no empty assignment for it

    # Envoy then ACKs, and no longer asks for c2's endpoints.
    await sotw.ack(brk)
    await sotw.ack(endpoints, ["c1", "c3"])

    # Dropping a cluster only: routes first, then the CDS response without it.
    await hub.wait(lambda: hub.state(CLUSTER) is SyncState.SYNCED)
    hub.cache.set(
        GROUP, world(("c1", "c3"), route_clusters=["c1"]).with_changes(CLUSTER, {}, ["c3"])
    )
    assert (await sotw.recv()).type_url == ROUTE
    last = await sotw.recv()
    assert last.type_url == CLUSTER and names(last) == ["c1"]


@pytest.mark.parametrize("hub", [FAST], indirect=True)
async def test_routes_wait_for_new_clusters_until_envoy_answers_their_cds_response(
    hub: Hub, sotw: SotwClient
) -> None:
    """Envoy asks for a new cluster's endpoints before it answers the CDS response; one
    it rejected it never asks for, and the routes must not wait for it forever."""
    ready(hub, world(("c1",)))
    await subscribe_all(hub, sotw, eds=("c1",))
    hub.cache.set(GROUP, world(("c1", "c2")))
    make = await sotw.recv()
    assert make.type_url == CLUSTER and names(make) == ["c1", "c2"]
    await sotw.quiet()
    await sotw.nack(make, "cluster c2: rejected")
    assert (await sotw.recv()).type_url == ROUTE
    # And the hold has a deadline even when Envoy says nothing at all.
    hub.cache.set(GROUP, world(("c1", "c2", "c3")))
    assert names(await sotw.recv()) == ["c1", "c2", "c3"]
    await sotw.quiet()
    assert (await sotw.recv()).type_url == ROUTE  # after FAST.warm_timeout


async def test_delta_routes_wait_for_the_endpoints_of_new_clusters(
    hub: Hub, delta: DeltaClient
) -> None:
    ready(hub, world(("c1", "c2")))
    for type_url, subscribe in (
        (CLUSTER, ()),
        (ENDPOINT, ("c1", "c2")),
        (LISTENER, ()),
        (SECRET, ("cert",)),
    ):
        await delta.request(type_url, subscribe=subscribe)
        await delta.ack(await delta.recv())
    await delta.request(ROUTE, subscribe=["http"])
    await delta.ack(await delta.recv())
    await hub.wait(lambda: all(hub.state(t) is SyncState.SYNCED for t in ORDER))

    hub.cache.set(GROUP, world(("c1", "c3")))
    added = await delta.recv()
    assert added.type_url == CLUSTER and list(delta_names(added)) == ["c3"]
    assert list(added.removed_resources) == []  # c2 stays until the routes moved off
    await delta.quiet()
    await delta.request(ENDPOINT, subscribe=["c3"])
    endpoints = await delta.recv()
    assert endpoints.type_url == ENDPOINT and list(delta_names(endpoints)) == ["c3"]
    moved = await delta.recv()
    assert moved.type_url == ROUTE
    removed = await delta.recv()
    assert removed.type_url == CLUSTER and list(removed.removed_resources) == ["c2"]


@pytest.mark.parametrize("hub", [FAST], indirect=True)
async def test_a_nacked_listener_is_offered_again_after_a_backoff(
    hub: Hub, sotw: SotwClient
) -> None:
    """A NACK may have a cause outside the config (a port taken by another process): the
    same version is offered again, not at once and not in a loop, until Envoy takes it."""
    ready(hub, world())
    await sotw.request(LISTENER)
    first = await sotw.recv()
    await sotw.nack(first, "cannot bind 127.0.0.1:10080: address already in use")
    await hub.wait(lambda: hub.state(LISTENER) is SyncState.NACKED)
    await sotw.quiet()  # not at once: FAST.nack_retry_base is longer than QUIET
    again = await sotw.recv()
    assert again.type_url == LISTENER and again.version_info == first.version_info
    assert again.nonce != first.nonce and names(again) == names(first)
    assert hub.metrics.nack_reoffers == 1
    await sotw.nack(again, "cannot bind 127.0.0.1:10080: address already in use")
    await sotw.quiet()
    third = await sotw.recv()
    assert third.version_info == first.version_info
    await sotw.ack(third)
    await hub.wait(lambda: hub.state(LISTENER) is SyncState.SYNCED)
    assert hub.metrics.nack_reoffers == 2 and hub.metrics.nacks == 2
    await sotw.quiet()
    status = hub.status().type(LISTENER)
    assert status is not None and status.last_nack is not None  # kept for the operator


@pytest.mark.parametrize("hub", [FAST], indirect=True)
async def test_a_nacked_assignment_is_offered_again_and_a_newer_one_replaces_the_reoffer(
    hub: Hub, sotw: SotwClient
) -> None:
    ready(hub, world(("c1", "c2")))
    await sotw.request(ENDPOINT, ["c1", "c2"])
    first = await sotw.recv()
    await sotw.nack(first, "c2: bad", ["c1", "c2"])
    again = await sotw.recv()
    assert again.type_url == ENDPOINT and names(again) == ["c1", "c2"]
    await sotw.nack(again, "c2: bad", ["c1", "c2"])
    # Something newer goes out before the re-offer is due: only it is sent.
    hub.cache.update(GROUP, ENDPOINT, {"c2": assignment("c2", 9999)})
    newer = await sotw.recv()
    assert names(newer) == ["c2"]
    await sotw.ack(newer, ["c1", "c2"])
    await hub.wait(lambda: hub.state(ENDPOINT) is SyncState.SYNCED)
    await asyncio.sleep(FAST.nack_retry_max)  # past any re-offer that was still scheduled
    await sotw.quiet()
    assert hub.metrics.nack_reoffers == 1


@pytest.mark.parametrize("hub", [FAST], indirect=True)
async def test_delta_nacked_resources_are_offered_again(hub: Hub, delta: DeltaClient) -> None:
    ready(hub, world(("c1", "c2")))
    await delta.request(CLUSTER)
    first = await delta.recv()
    await delta.request(CLUSTER, nonce=first.nonce, error="cluster c2: bad")
    await hub.wait(lambda: hub.state(CLUSTER) is SyncState.NACKED)
    await delta.quiet()
    again = await delta.recv()
    assert again.type_url == CLUSTER and delta_names(again) == delta_names(first)
    await delta.ack(again)
    await hub.wait(lambda: hub.state(CLUSTER) is SyncState.SYNCED)
    assert hub.metrics.nack_reoffers == 1


async def test_an_endpoint_change_resends_only_its_assignment(hub: Hub, sotw: SotwClient) -> None:
    ready(hub, world(("c1", "c2", "c3")))
    await subscribe_all(hub, sotw, eds=("c1", "c2", "c3"))
    sent = hub.metrics.responses_sent
    hub.cache.update(GROUP, ENDPOINT, {"c2": assignment("c2", 8080, 8081)})
    response = await sotw.recv()
    assert response.type_url == ENDPOINT
    assert names(response) == ["c2"]
    lb = decode(ENDPOINT, response.resources[0].value).endpoints[0].lb_endpoints
    assert [e.endpoint.address.socket_address.port_value for e in lb] == [8080, 8081]
    await sotw.quiet()
    assert hub.metrics.responses_sent == sent + 1


async def test_a_burst_of_changes_is_pushed_as_its_latest_state(hub: Hub, sotw: SotwClient) -> None:
    ready(hub, world())
    await sotw.request(ENDPOINT, ["c1"])
    await sotw.ack(await sotw.recv(), ["c1"])
    for port in range(9000, 9050):
        hub.cache.update(GROUP, ENDPOINT, {"c1": assignment("c1", port)})
    response = await sotw.recv()
    lb = decode(ENDPOINT, response.resources[0].value).endpoints[0].lb_endpoints
    assert lb[0].endpoint.address.socket_address.port_value == 9049
    await sotw.quiet()


async def test_an_unknown_assignment_is_answered_at_once_and_pushed_when_it_appears(
    hub: Hub, sotw: SotwClient
) -> None:
    ready(hub, world(("c1",)))
    await sotw.request(ENDPOINT, ["c1", "ghost"])
    response = await sotw.recv()
    assert names(response) == ["c1", "ghost"]
    ghost = decode(ENDPOINT, response.resources[1].value)
    assert ghost.cluster_name == "ghost" and len(ghost.endpoints) == 0
    await sotw.ack(response, ["c1", "ghost"])
    await sotw.quiet()  # the empty answer is not repeated

    hub.cache.update(GROUP, ENDPOINT, {"ghost": assignment("ghost", 7070)})
    appeared = await sotw.recv()
    assert names(appeared) == ["ghost"]
    assert len(decode(ENDPOINT, appeared.resources[0].value).endpoints[0].lb_endpoints) == 1


async def test_an_unknown_route_configuration_is_held_until_it_appears(
    hub: Hub, sotw: SotwClient
) -> None:
    ready(hub, world())
    await sotw.request(ROUTE, ["other"])
    await sotw.quiet()
    hub.cache.update(GROUP, ROUTE, {"other": routes("other", "c1")})
    assert names(await sotw.recv()) == ["other"]


# --- Secrets ------------------------------------------------------------------------------


def with_tls(
    *secrets: Resource, listener_secrets: Sequence[str] = ("cert/a",), stat_prefix: str = "v1"
) -> Snapshot:
    """``world()`` plus listener ``https`` naming ``listener_secrets``, and ``secrets``."""
    https = tls_listener("https", *listener_secrets, stat_prefix=stat_prefix)
    snapshot = world().with_changes(LISTENER, {"https": https})
    return snapshot.with_changes(SECRET, {s.name: s for s in secrets})


async def test_a_changed_secret_goes_before_the_changed_listener_that_names_it(
    hub: Hub, sotw: SotwClient
) -> None:
    ready(hub, with_tls(secret("cert/a", "/secrets/a")))
    await sotw.request(LISTENER)
    await sotw.ack(await sotw.recv())
    await sotw.request(SECRET, ["cert/a"])
    await sotw.ack(await sotw.recv(), ["cert/a"])
    await hub.wait(lambda: hub.state(SECRET) is SyncState.SYNCED)
    # The listener now names a second certificate too, and the first one moved.
    hub.cache.set(
        GROUP,
        with_tls(
            secret("cert/a", "/secrets/a2"),
            secret("cert/b", "/secrets/b"),
            listener_secrets=("cert/a", "cert/b"),
        ),
    )
    first = await sotw.recv()
    assert first.type_url == SECRET and names(first) == ["cert/a"]
    listeners = await sotw.recv()
    assert listeners.type_url == LISTENER
    await sotw.quiet()  # cert/b only once Envoy asks for it, having the listener
    await sotw.ack(first, ["cert/a", "cert/b"])
    added = await sotw.recv()
    assert added.type_url == SECRET and names(added) == ["cert/b"]


async def test_an_unknown_secret_is_held_until_it_appears(hub: Hub, sotw: SotwClient) -> None:
    ready(hub, world())
    await sotw.request(SECRET, ["cert/late"])
    await sotw.quiet()
    hub.cache.update(GROUP, SECRET, {"cert/late": secret("cert/late", "/secrets/late")})
    assert names(await sotw.recv()) == ["cert/late"]


async def test_delta_secrets_go_before_listeners_and_are_removed_after_them(
    hub: Hub, delta: DeltaClient
) -> None:
    ready(hub, with_tls(secret("cert/a", "/secrets/a")))
    await delta.request(LISTENER)
    await delta.ack(await delta.recv())
    await delta.request(SECRET, subscribe=["cert/a"])
    first = await delta.recv()
    assert first.type_url == SECRET and list(delta_names(first)) == ["cert/a"]
    served = decode(SECRET, first.resources[0].resource.value).tls_certificate
    assert served.private_key.filename == "/secrets/a/tls.key"  # a path, never a key
    await delta.ack(first)
    await hub.wait(lambda: hub.state(SECRET) is SyncState.SYNCED)

    # The certificate moves and the listener changes with it: the Secret goes first.
    moved = with_tls(secret("cert/a", "/secrets/a2"), stat_prefix="v2")
    hub.cache.set(GROUP, moved)
    changed = await delta.recv()
    assert changed.type_url == SECRET and list(delta_names(changed)) == ["cert/a"]
    await delta.ack(changed)
    assert (await delta.recv()).type_url == LISTENER

    # The HTTPS listener goes, and its Secret with it: the Secret only once the listener
    # that named it has been replaced.
    hub.cache.set(GROUP, world())
    gone = await delta.recv()
    assert gone.type_url == LISTENER and list(gone.removed_resources) == ["https"]
    removed = await delta.recv()
    assert removed.type_url == SECRET and list(removed.removed_resources) == ["cert/a"]
    await delta.quiet()


# --- delta ------------------------------------------------------------------------------


async def test_delta_subscribe_update_unsubscribe_and_remove(hub: Hub, delta: DeltaClient) -> None:
    snapshot = ready(hub, world(("c1", "c2")))
    await delta.request(CLUSTER)  # wildcard
    clusters = await delta.recv()
    assert delta_names(clusters) == {n: r.version for n, r in snapshot.of(CLUSTER).items()}
    assert clusters.system_version_info == snapshot.version(CLUSTER)
    await delta.ack(clusters)
    await delta.request(ENDPOINT, subscribe=["c1"])
    endpoints = await delta.recv()
    assert list(delta_names(endpoints)) == ["c1"]
    await delta.ack(endpoints)
    await hub.wait(lambda: hub.state(ENDPOINT) is SyncState.SYNCED)

    # An update sends the changed resource only.
    new_c1 = assignment("c1", 8181)
    hub.cache.update(GROUP, ENDPOINT, {"c1": new_c1, "c2": assignment("c2", 8282)})
    update = await delta.recv()
    assert delta_names(update) == {"c1": new_c1.version}  # c2 is not subscribed
    assert list(update.removed_resources) == []
    await delta.ack(update)

    # Unsubscribed from c1 (and subscribed to c2, whose answer shows the request was
    # handled): no more updates of c1.
    await delta.request(ENDPOINT, subscribe=["c2"], unsubscribe=["c1"])
    assert list(delta_names(await delta.recv())) == ["c2"]
    hub.cache.update(GROUP, ENDPOINT, {"c1": assignment("c1", 8383)})
    await delta.quiet()

    # A removed cluster is announced in removed_resources.
    hub.cache.update(GROUP, CLUSTER, {}, ["c2"])
    removal = await delta.recv()
    assert removal.type_url == CLUSTER
    assert list(removal.removed_resources) == ["c2"]
    assert len(removal.resources) == 0
    await delta.ack(removal)

    # A NACK is recorded through error_detail as well.
    hub.cache.update(GROUP, CLUSTER, {"c3": cluster("c3")})
    added = await delta.recv()
    assert list(delta_names(added)) == ["c3"]
    await delta.request(CLUSTER, nonce=added.nonce, error="cluster c3: no endpoints")
    await hub.wait(lambda: hub.state(CLUSTER) is SyncState.NACKED)
    status = hub.status().type(CLUSTER)
    assert status is not None and status.last_nack is not None
    assert status.last_nack.message == "cluster c3: no endpoints"
    await delta.quiet()


async def test_delta_starts_from_the_versions_envoy_already_has(
    hub: Hub, delta: DeltaClient
) -> None:
    snapshot = ready(hub, world(("c1", "c2")))
    have = {"c1": snapshot.of(CLUSTER)["c1"].version, "c2": "0000000000000000", "gone": "1"}
    await delta.request(CLUSTER, initial=have)
    upserts = await delta.recv()
    assert delta_names(upserts) == {"c2": snapshot.of(CLUSTER)["c2"].version}
    removals = await delta.recv()  # clusters are removed last, in their own response
    assert list(removals.removed_resources) == ["gone"]
    await delta.quiet()


async def test_delta_unknown_assignment_and_cluster_change(hub: Hub, delta: DeltaClient) -> None:
    ready(hub, world(("c1",)))
    await delta.request(CLUSTER)
    await delta.ack(await delta.recv())
    await delta.request(ENDPOINT, subscribe=["c1", "ghost"])
    endpoints = await delta.recv()
    assert set(delta_names(endpoints)) == {"c1", "ghost"}
    await delta.ack(endpoints)

    # A changed cluster gets its (unchanged) assignment again, right after it.
    hub.cache.update(GROUP, CLUSTER, {"c1": cluster("c1", timeout=4)})
    clusters = await delta.recv()
    assert clusters.type_url == CLUSTER and list(delta_names(clusters)) == ["c1"]
    again = await delta.recv()
    assert again.type_url == ENDPOINT and list(delta_names(again)) == ["c1"]
    await delta.quiet()

    # So does a changed copy of it, which reads c1's assignment.
    hub.cache.update(GROUP, CLUSTER, {"policy/c1": copy_of("c1", "policy/c1")})
    for _ in (CLUSTER, ENDPOINT):  # the new copy, then the assignment it reads
        await delta.ack(await delta.recv())
    await delta.quiet()
    hub.cache.update(GROUP, CLUSTER, {"policy/c1": copy_of("c1", "policy/c1", timeout=6)})
    clusters = await delta.recv()
    assert clusters.type_url == CLUSTER and list(delta_names(clusters)) == ["policy/c1"]
    again = await delta.recv()
    assert again.type_url == ENDPOINT and list(delta_names(again)) == ["c1"]
    await delta.quiet()


# --- sync registry ----------------------------------------------------------------------


async def test_the_sync_registry_lists_streams_and_drops_closed_ones(hub: Hub) -> None:
    ready(hub, world())
    client = SotwClient(hub.stub.StreamAggregatedResources(), node(node_id="envoy-b-7"))
    try:
        await client.request(CLUSTER)
        await client.request(LISTENER)
        clusters = await client.recv()
        listeners = await client.recv()
        await client.ack(clusters)
        await client.nack(listeners, "listener http: address missing")
        await hub.wait(
            lambda: (
                hub.state(CLUSTER) is SyncState.SYNCED and hub.state(LISTENER) is SyncState.NACKED
            )
        )
        status = hub.status()
        assert status.node_id == "envoy-b-7" and status.group == GROUP
        assert [t.type_url for t in status.types] == [CLUSTER, LISTENER]
        assert not status.synced
        document = json.loads(json.dumps(status.to_json()))
        assert document["node_id"] == "envoy-b-7"
        assert document["types"][CLUSTER]["state"] == "synced"
        assert document["types"][LISTENER]["state"] == "nacked"
        nack = document["types"][LISTENER]["last_nack"]
        assert nack["message"] == "listener http: address missing"
        assert nack["version"] == listeners.version_info
        assert hub.metrics.streams_active == 1
    finally:
        await client.close()
    await hub.wait(lambda: not hub.sync.list())
    assert hub.metrics.streams_active == 0
    assert hub.metrics.streams_opened == 1
    assert hub.metrics.bytes_sent > 0


# --- an Envoy that comes from another hub replica -----------------------------------


@dataclass
class CatchingHub(Hub):
    #: Set: the hub has read its registry since the stream opened.
    read_again: asyncio.Event


@pytest.fixture
async def catching_hub(request: pytest.FixtureRequest) -> AsyncIterator[CatchingHub]:
    """A server whose ``caught_up`` returns once the test sets ``read_again``; the
    fixture's parameter, if any, is how long a stream waits for it."""
    cache = SnapshotCache()
    sync = SyncRegistry(cache.snapshot_versions)
    metrics = XdsMetrics()
    read_again = asyncio.Event()
    address = f"127.0.0.1:{free_port()}"
    timeout = getattr(request, "param", DEADLINE)
    server = await serve(
        cache,
        sync,
        address,
        metrics=metrics,
        caught_up=read_again.wait,
        catch_up_timeout=timeout,
    )
    channel = grpc.aio.insecure_channel(address)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    try:
        yield CatchingHub(cache, sync, metrics, stub, read_again)
    finally:
        await channel.close()
        await server.stop(None)


async def test_an_envoy_holding_configuration_waits_for_the_hub_to_read_again(
    catching_hub: CatchingHub,
) -> None:
    """An Envoy that reconnects with a version (perhaps from a replica that had read
    further) is answered only once this hub has read the registry since; an Envoy
    without configuration is answered at once."""
    hub = catching_hub
    snapshot = ready(hub, world())
    fresh = SotwClient(hub.stub.StreamAggregatedResources(), node(node_id="envoy-new"))
    moved = SotwClient(hub.stub.StreamAggregatedResources(), node(node_id="envoy-moved"))
    delta = DeltaClient(hub.stub.DeltaAggregatedResources(), node(node_id="envoy-delta"))
    try:
        await fresh.request(CLUSTER)
        assert names(await fresh.recv()) == ["c1", "c2"]
        await moved.request(CLUSTER, version="a-version-of-another-replica")
        await delta.request(CLUSTER, initial={"c1": "a-version-of-another-replica"})
        await moved.quiet()
        await delta.quiet()
        assert hub.metrics.catch_ups == 2

        hub.read_again.set()
        clusters = await moved.recv()
        assert (names(clusters), clusters.version_info) == (["c1", "c2"], snapshot.version(CLUSTER))
        assert sorted(delta_names(await delta.recv())) == ["c1", "c2"]
        assert hub.metrics.catch_up_timeouts == 0
    finally:
        for client in (fresh, moved, delta):
            await client.close()


@pytest.mark.parametrize("catching_hub", [QUIET], indirect=True)
async def test_a_hub_that_cannot_read_again_serves_what_it_has_after_a_while(
    catching_hub: CatchingHub,
) -> None:
    """A registry that cannot be read must not keep a moving Envoy from every update."""
    hub = catching_hub
    snapshot = ready(hub, world())
    moved = SotwClient(hub.stub.StreamAggregatedResources(), node(node_id="envoy-moved"))
    try:
        await moved.request(CLUSTER, version="a-version-of-another-replica")
        clusters = await moved.recv()
        assert clusters.version_info == snapshot.version(CLUSTER)
        assert (hub.metrics.catch_ups, hub.metrics.catch_up_timeouts) == (1, 1)
    finally:
        await moved.close()


async def test_a_moving_envoy_is_not_refused_for_what_the_hub_reads_while_it_waits(
    catching_hub: CatchingHub,
) -> None:
    """Its cluster may be one the replica it came from knew and this one is reading
    now: membership is decided after the wait."""
    hub = catching_hub
    ready(hub, world())
    newcomer = SotwClient(hub.stub.StreamAggregatedResources(), node("c", "envoy-c-1"))
    try:
        await newcomer.request(CLUSTER, version="a-version-of-another-replica")
        await newcomer.quiet()
        hub.cache.set("c", world(("c9",)))  # what the read brought
        hub.read_again.set()
        assert names(await newcomer.recv()) == ["c9"]
        assert newcomer.error is None
    finally:
        await newcomer.close()
