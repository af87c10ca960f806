"""The Aggregated Discovery Service (ADS) on grpc.aio: state of the world and delta.

``federation-hub`` (:mod:`federation.cli.hub`) calls :func:`serve` with its
:class:`~federation.xds.snapshot.SnapshotCache` and
:class:`~federation.xds.status.SyncRegistry`. Every Envoy opens one ADS stream; its node
group is decided from the first request's node (later requests may omit it) and the
client's certificate, and it is served that group's snapshot by a
:class:`~federation.xds.sotw.SotwStream` or a :class:`~federation.xds.delta.DeltaStream`.
Resources are opaque here: they come pre-serialized, and every response is the
concatenation of a small header and the resources' cached wire entries, so one change
fans out to many streams without re-encoding anything.

Who may read which group, and the bounds on what one client may use, are in
:mod:`federation.xds.peers` (mTLS credentials in :mod:`federation.xds.tls`).

The rules every stream keeps (the protocol modules say how):

* **Not ready, serve nothing.** Requests are recorded but answered only once the cache is
  ready and holds a snapshot for the group: a hub that has just started must not push
  empty configuration, which makes Envoys drop live traffic.
* **No going back when an Envoy moves.** With several hub replicas an Envoy may come from
  one that had read the registry further than this one has. A stream whose first request
  says it holds configuration already (a ``version_info``, or initial resource versions
  in delta) is answered only once this hub has applied a read of the registry begun
  after the stream opened, every stream to its end and the membership checks included
  (``caught_up``), so that it is never sent an older view than it had, nor refused as
  unknown for a cluster this replica had not read yet; at most
  :data:`CATCH_UP_TIMEOUT` seconds, then what the hub has (a registry that cannot be
  read must not keep an Envoy from every update).
* **ACK/NACK.** A NACK is recorded (version, message, time) in the sync registry and
  counted. What was NACKed is not resent in a loop: it is sent again when it changes, or
  after a backoff that doubles per NACK (a rejection may have a cause outside the config,
  such as a listener port held by another process, that goes away).
* **Complete CDS and LDS.** A state-of-the-world CDS or LDS response holds every resource
  of the type in the group's snapshot (a missing one would be deleted), whatever names were
  requested. EDS, SDS and RDS are served by name: a response holds only the requested
  resources that changed, so an endpoint change sends one ClusterLoadAssignment, nothing
  else.
* **Order and removal.** Each push goes cluster -> endpoint -> secret -> listener -> route
  (other types after): a Secret Envoy asks for goes before the listeners that name it (a
  listener naming a Secret Envoy does not hold yet warms until Envoy has asked for it and
  got it). Clusters are removed last ("make before break"): by the time a cluster goes,
  the listeners and routes that used it have been replaced.
* **Warm before route.** After a cluster is added or changed, its ClusterLoadAssignment is
  sent (again, even if unchanged) right after the CDS response: Envoy keeps the cluster
  warming until it arrives. A *new* cluster's assignment can only be sent once Envoy asks
  for it, so the rest of the push waits for that (see :mod:`federation.xds.stream`): a
  route never names a cluster that Envoy cannot use yet. A ClusterLoadAssignment is named
  like its cluster, or by the cluster's EDS ``service_name`` when it has one (a
  BackendTrafficPolicy's copy of a cluster reads the original's assignment): the one
  convention this layer relies on.
* **Unknown names.** A requested ClusterLoadAssignment that does not exist is answered at
  once with an empty one (``cluster_name`` set, no endpoints) and the name is remembered:
  when it appears it is pushed. When an assignment disappears while its cluster stays, the
  empty one is sent too; when its cluster goes as well, Envoy keeps the old endpoints until
  the cluster is removed. Unknown route configurations and Secrets are held (no
  response) until they appear.
* **Debounce.** A stream woken by a change sends the latest state, never a queue of
  intermediate ones; a change that follows a push by less than ``push_interval`` waits for
  the rest of the interval, so a burst costs each stream a few pushes while a single change
  goes out at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from federation.errors import FederationError
from federation.node_groups import parse_group
from federation.xds.delta import DeltaStream
from federation.xds.peers import NodeGroup, Peer, PeerSlots, Refusal, ServerLimits, claimed_group
from federation.xds.snapshot import SnapshotCache
from federation.xds.sotw import SotwStream
from federation.xds.status import SyncRegistry, XdsMetrics
from federation.xds.stream import Stream, StreamSettings

log = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
#: The longest a stream from an Envoy that holds configuration waits for ``caught_up``.
CATCH_UP_TIMEOUT = 5.0
#: The extension config discovery service (ECDS) on a stream of its own: the agent serves
#: it to its Gateways' Envoys (:mod:`agents.credentials`). The same protocol and streams
#: as ADS, restricted by the client to one type.
EXTENSION_SERVICE = "envoy.service.extension.v3.ExtensionConfigDiscoveryService"
#: The methods of each service, state of the world then delta.
_METHODS = {
    SERVICE: ("StreamAggregatedResources", "DeltaAggregatedResources"),
    EXTENSION_SERVICE: ("StreamExtensionConfigs", "DeltaExtensionConfigs"),
}


class XdsServeError(FederationError):
    """The xDS server cannot listen on its address."""


class AggregatedDiscoveryServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """ADS over grpc.aio, serving each Envoy its node group's snapshot from the cache.

    ``node_group`` decides which group a stream is served (:mod:`federation.xds.peers`:
    the claimed ``node.cluster`` in plain text, the certificate's cluster with mTLS).
    A stream is refused, with a status and a reason the peer sees, when it names no node
    group, when its credentials do not allow that group, when the group is no member
    cluster the hub knows, when its peer has too many streams open, when its first
    request does not come in time, or when it (or its peer's streams together) subscribes
    to too many names. Each such refusal is counted by reason and logged at most every
    few minutes per peer and reason. gRPC itself refuses, below this code and in no
    metric of ours, a client without a valid certificate (in the TLS handshake), a
    request larger than ``max_message_bytes`` and a stream beyond
    ``max_streams_per_connection`` on one connection.

    Register it with :meth:`add_to_server`, not with the generated
    ``add_AggregatedDiscoveryServiceServicer_to_server``: responses are pre-encoded bytes,
    which the generated registration would try to serialize again.
    """

    def __init__(
        self,
        cache: SnapshotCache,
        sync: SyncRegistry,
        metrics: XdsMetrics | None = None,
        *,
        settings: StreamSettings | None = None,
        limits: ServerLimits | None = None,
        node_group: NodeGroup = claimed_group,
        server_name: str = "the hub",
        caught_up: Callable[[], Awaitable[object]] | None = None,
        catch_up_timeout: float = CATCH_UP_TIMEOUT,
    ) -> None:
        self.cache = cache
        self.catch_up_timeout = catch_up_timeout
        #: Returns once the hub has applied a read of its source begun after the call
        #: (None: the cache has no source that could be behind another server's).
        self.caught_up = caught_up
        #: Who serves, in refusals: the hub, or a cluster's agent.
        self.server_name = server_name
        self.sync = sync
        self.metrics = metrics if metrics is not None else XdsMetrics()
        self.settings = settings if settings is not None else StreamSettings()
        self.limits = limits if limits is not None else ServerLimits()
        self.node_group = node_group
        self.peers = PeerSlots(self.limits.max_streams_per_peer, self.limits.max_names_per_peer)

    def add_to_server(self, server: grpc.aio.Server, service: str = SERVICE) -> None:
        """Serve the snapshots as ``service``: ADS (the hub) or ECDS (the agent)."""
        sotw, delta = _METHODS[service]
        handlers = {
            sotw: grpc.stream_stream_rpc_method_handler(
                self.StreamAggregatedResources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            ),
            delta: grpc.stream_stream_rpc_method_handler(
                self.DeltaAggregatedResources,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        await self._serve(request_iterator, context, SotwStream)

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._serve(request_iterator, context, DeltaStream)

    async def _serve(
        self,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
        kind: type[SotwStream] | type[DeltaStream],
    ) -> None:
        peer = Peer.of(context)
        node_id = group = ""
        try:
            self.peers.acquire(peer.key)
        except Refusal as refusal:
            await self._refuse(context, peer, node_id, group, refusal)
            return
        try:
            requests = aiter(request_iterator)
            try:
                async with asyncio.timeout(self.limits.first_request_timeout):
                    first = await anext(requests)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise Refusal(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "no-first-request",
                    f"no request within {self.limits.first_request_timeout:g} s of opening "
                    "the stream",
                ) from None
            node_id, group = first.node.id, first.node.cluster  # as claimed, until decided
            group = self.node_group(first.node, peer)
            await self._run(requests, context, kind, first, peer, group)
        except Refusal as refusal:
            await self._refuse(context, peer, node_id, group, refusal)
        finally:
            self.peers.release(peer.key)

    async def _loaded(self, group: str) -> None:
        """Return once the hub has loaded the registry; until then it cannot tell
        whether ``group`` is a member: the stream waits."""
        if not self.cache.ready:
            loaded = asyncio.Event()
            self.cache.subscribe(group, loaded)
            try:
                while not self.cache.ready:
                    await loaded.wait()
                    loaded.clear()
            finally:
                self.cache.unsubscribe(group, loaded)

    def _member(self, group: str) -> None:
        """A Refusal when the loaded hub does not know ``group`` as a member cluster."""
        if self.cache.get(group) is None:
            parsed = parse_group(group)
            if parsed.gateway is not None:
                raise Refusal(
                    grpc.StatusCode.NOT_FOUND,
                    "unknown-gateway",
                    f"cluster {parsed.cluster!r} has no Gateway {'/'.join(parsed.gateway)} "
                    f"of our GatewayClass that {self.server_name} knows (yet): it has no "
                    "configuration for its Envoys",
                )
            raise Refusal(
                grpc.StatusCode.NOT_FOUND,
                "unknown-cluster",
                f"{group!r} is no member cluster that {self.server_name} serves: it has no "
                "configuration for it (is its agent running and connected to the registry?)",
            )

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext,
        peer: Peer,
        node_id: str,
        group: str,
        refusal: Refusal,
    ) -> None:
        self.metrics.count_refusal(refusal.reason)
        code = refusal.code.name
        if self.sync.refuse(peer.key, node_id, group, refusal.reason, code, refusal.message):
            log.warning(
                "xDS stream refused (%s, %s): peer %s, node %r, cluster %r: %s",
                refusal.reason,
                code,
                peer.key,
                node_id,
                group,
                refusal.message,
            )
        await context.abort(refusal.code, refusal.message)

    async def _run(
        self,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
        kind: type[SotwStream] | type[DeltaStream],
        first: Any,
        peer: Peer,
        group: str,
    ) -> None:
        """Serve an admitted stream until it ends; raises a Refusal from its requests."""
        node_id = first.node.id
        sync = self.sync.open(node_id, group, kind.protocol)
        stream = kind(
            self.cache,
            self.metrics,
            self.settings,
            group,
            sync,
            charge=lambda names: self.peers.charge(peer.key, names),
        )
        self.metrics.streams_opened += 1
        self.metrics.streams_active += 1
        self.cache.subscribe(group, stream.wake)
        log.info(
            "xDS %s stream %d opened by %s (group %s)",
            kind.protocol,
            sync.stream_id,
            node_id,
            group,
        )
        reader: asyncio.Task[None] | None = None
        try:
            stream.on_request(first)
            # Listed (stale) while the hub loads; refused if it then knows no such cluster.
            await self._loaded(group)
            if self.caught_up is not None and _holds_configuration(first):
                # Before membership: a cluster or Gateway the Envoy's last replica knew
                # may be one this replica is about to read.
                await self._catch_up(sync.stream_id)
            self._member(group)
            self.sync.admitted(sync)
            reader = asyncio.create_task(
                self._read(requests, stream), name=f"xds-stream-{sync.stream_id}-reader"
            )
            await stream.run(context)
            if isinstance(stream.failure, Refusal):
                raise stream.failure
            if stream.failure is not None:
                await context.abort(grpc.StatusCode.INTERNAL, "the xDS server failed a request")
        finally:
            if reader is not None:
                reader.cancel()
            stream.close()
            stream.release_names()
            self.cache.unsubscribe(group, stream.wake)
            self.sync.close(sync)
            self.metrics.streams_active -= 1
            log.info("xDS stream %d of %s (group %s) closed", sync.stream_id, node_id, group)

    async def _catch_up(self, stream_id: int) -> None:
        assert self.caught_up is not None
        self.metrics.catch_ups += 1
        try:
            async with asyncio.timeout(self.catch_up_timeout):
                await self.caught_up()
        except TimeoutError:
            self.metrics.catch_up_timeouts += 1
            log.warning(
                "xDS stream %d: no read of the registry applied within %g s; serving what "
                "this hub has",
                stream_id,
                self.catch_up_timeout,
            )

    @staticmethod
    async def _read(requests: AsyncIterator[Any], stream: Stream) -> None:
        """Handle the stream's requests until it ends, then wake run() to finish."""
        try:
            while True:
                try:
                    request = await anext(requests)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The peer went away or the server is stopping: not our failure.
                    log.debug("xDS stream %d ended: %r", stream.sync.stream_id, exc)
                    return
                try:
                    stream.on_request(request)
                except Refusal as refusal:
                    stream.failure = refusal
                    return
                except Exception as exc:
                    log.exception("xDS stream %d failed on a request", stream.sync.stream_id)
                    stream.failure = exc
                    return
        finally:
            stream.close()


def _holds_configuration(first: Any) -> bool:
    """Whether the first request of a stream comes from an Envoy that has configuration
    already (it reconnects, perhaps from another hub replica)."""
    if isinstance(first, discovery_pb2.DeltaDiscoveryRequest):
        return bool(first.initial_resource_versions)
    return bool(first.version_info)


async def serve(
    cache: SnapshotCache,
    sync: SyncRegistry,
    address: str,
    *,
    metrics: XdsMetrics | None = None,
    credentials: grpc.ServerCredentials | None = None,
    node_group: NodeGroup = claimed_group,
    settings: StreamSettings | None = None,
    limits: ServerLimits | None = None,
    service: str = SERVICE,
    server_name: str = "the hub",
    caught_up: Callable[[], Awaitable[object]] | None = None,
    catch_up_timeout: float = CATCH_UP_TIMEOUT,
) -> grpc.aio.Server:
    """Start the ADS server (or ``service``) on ``address`` (``host:port``) and return it,
    started.

    ``credentials`` (:func:`federation.xds.tls.reloading_credentials`) turn on mTLS, and
    ``node_group`` (:class:`federation.xds.peers.CertificateGroup`) then binds each stream
    to its certificate's cluster. Without them the server is plain text and serves
    whatever ``node.cluster`` a client claims: bind it to a trusted network only.
    ``settings`` tune the streams' timing, ``limits`` bound what one client may use.
    ``caught_up``: see "No going back when an Envoy moves" above.
    Stop it with ``await server.stop(grace)``.
    """
    limits = limits if limits is not None else ServerLimits()
    servicer = AggregatedDiscoveryServicer(
        cache,
        sync,
        metrics,
        settings=settings,
        limits=limits,
        node_group=node_group,
        server_name=server_name,
        caught_up=caught_up,
        catch_up_timeout=catch_up_timeout,
    )
    server = grpc.aio.server(options=limits.grpc_options())
    servicer.add_to_server(server, service)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise XdsServeError(f"cannot listen for xDS on {address}: {exc}") from exc
    if not port:
        raise XdsServeError(f"cannot listen for xDS on {address}")
    await server.start()
    log.info(
        "xDS server (%s) listening on %s (port %d, %s)",
        service.rpartition(".")[2],
        address,
        port,
        "mTLS" if credentials else "PLAIN TEXT: any client may claim any cluster",
    )
    return server
