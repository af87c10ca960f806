"""The Aggregated Discovery Service (ADS) on grpc.aio: state of the world and delta.

``federation-hub`` (:mod:`federation.cli.hub`) calls :func:`serve` with its
:class:`~federation.xds.snapshot.SnapshotCache` and
:class:`~federation.xds.status.SyncRegistry`. Every Envoy opens one ADS stream; its node
group is the ``node.cluster`` of the first request (cached: later requests may omit the
node), and it is served that group's snapshot by a :class:`~federation.xds.sotw.SotwStream`
or a :class:`~federation.xds.delta.DeltaStream`. Resources are opaque here: they come
pre-serialized, and every response is the concatenation of a small header and the
resources' cached wire entries, so one change fans out to many streams without
re-encoding anything.

The rules every stream keeps (the protocol modules say how):

* **Not ready, serve nothing.** Requests are recorded but answered only once the cache is
  ready and holds a snapshot for the group: a hub that has just started must not push
  empty configuration, which makes Envoys drop live traffic.
* **ACK/NACK.** A NACK is recorded (version, message, time) in the sync registry and
  counted. What was NACKed is not resent in a loop: it is sent again when it changes, or
  after a backoff that doubles per NACK (a rejection may have a cause outside the config,
  such as a listener port held by another process, that goes away).
* **Complete CDS and LDS.** A state-of-the-world CDS or LDS response holds every resource
  of the type in the group's snapshot (a missing one would be deleted), whatever names were
  requested. EDS and RDS are served by name: a response holds only the requested resources
  that changed, so an endpoint change sends one ClusterLoadAssignment, nothing else.
* **Order and removal.** Each push goes cluster -> endpoint -> listener -> route (other
  types after). Clusters are removed last ("make before break"): by the time a cluster
  goes, the listeners and routes that used it have been replaced.
* **Warm before route.** After a cluster is added or changed, its ClusterLoadAssignment is
  sent (again, even if unchanged) right after the CDS response: Envoy keeps the cluster
  warming until it arrives. A *new* cluster's assignment can only be sent once Envoy asks
  for it, so the rest of the push waits for that (see :mod:`federation.xds.stream`): a
  route never names a cluster that Envoy cannot use yet. A ClusterLoadAssignment is named
  like its cluster (the one convention this layer relies on).
* **Unknown names.** A requested ClusterLoadAssignment that does not exist is answered at
  once with an empty one (``cluster_name`` set, no endpoints) and the name is remembered:
  when it appears it is pushed. When an assignment disappears while its cluster stays, the
  empty one is sent too; when its cluster goes as well, Envoy keeps the old endpoints until
  the cluster is removed. Unknown route configurations are held (no response) until they
  appear.
* **Debounce.** A stream woken by a change sends the latest state, never a queue of
  intermediate ones; a change that follows a push by less than ``push_interval`` waits for
  the rest of the interval, so a burst costs each stream a few pushes while a single change
  goes out at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from federation.errors import FederationError
from federation.xds.delta import DeltaStream
from federation.xds.snapshot import SnapshotCache
from federation.xds.sotw import SotwStream
from federation.xds.status import SyncRegistry, XdsMetrics
from federation.xds.stream import Stream, StreamSettings

log = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

#: grpc.aio server options for thousands of long-lived Envoy streams.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    # Several Envoys may share a connection (e.g. through a proxy): do not cap streams low.
    ("grpc.max_concurrent_streams", 100_000),
    # Find dead peers on idle connections, and accept the Envoys' own keepalive pings.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # Delta requests list every resource version Envoy holds.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # A second hub on the same port must fail, not share it.
    ("grpc.so_reuseport", 0),
)


class XdsServeError(FederationError):
    """The xDS server cannot listen on its address."""


class NodeAuthorizer(Protocol):
    """Decides whether a peer may receive a node group's configuration.

    The mTLS seam: with TLS on, ``peer_identities`` are the identities of the
    client certificate (``ServicerContext.peer_identities()``); without TLS it is empty.
    """

    def __call__(self, group: str, node_id: str, peer_identities: Sequence[bytes]) -> bool: ...


class AggregatedDiscoveryServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """ADS over grpc.aio, serving each Envoy its node group's snapshot from the cache.

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
        authorizer: NodeAuthorizer | None = None,
    ) -> None:
        self.cache = cache
        self.sync = sync
        self.metrics = metrics if metrics is not None else XdsMetrics()
        self.settings = settings if settings is not None else StreamSettings()
        self.authorizer = authorizer

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.StreamAggregatedResources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.DeltaAggregatedResources,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)

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
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        node = first.node
        group, node_id = node.cluster, node.id
        if not group:
            self.metrics.streams_rejected += 1
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first request of an ADS stream must carry node.cluster "
                "(the Envoy's member cluster id, --service-cluster)",
            )
            return
        if self.authorizer is not None:
            identities = context.peer_identities() or ()
            if not self.authorizer(group, node_id, identities):
                self.metrics.streams_rejected += 1
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"these credentials may not receive the configuration of {group!r}",
                )
                return
        sync = self.sync.open(node_id, group, kind.protocol)
        stream = kind(self.cache, self.metrics, self.settings, group, sync)
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
            reader = asyncio.create_task(
                self._read(requests, stream), name=f"xds-stream-{sync.stream_id}-reader"
            )
            await stream.run(context)
            if stream.failure is not None:
                await context.abort(grpc.StatusCode.INTERNAL, "the xDS server failed a request")
        finally:
            if reader is not None:
                reader.cancel()
            stream.close()
            self.cache.unsubscribe(group, stream.wake)
            self.sync.close(sync)
            self.metrics.streams_active -= 1
            log.info("xDS stream %d of %s (group %s) closed", sync.stream_id, node_id, group)

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
                except Exception as exc:
                    log.exception("xDS stream %d failed on a request", stream.sync.stream_id)
                    stream.failure = exc
                    return
        finally:
            stream.close()


async def serve(
    cache: SnapshotCache,
    sync: SyncRegistry,
    address: str,
    *,
    metrics: XdsMetrics | None = None,
    credentials: grpc.ServerCredentials | None = None,
    authorizer: NodeAuthorizer | None = None,
    settings: StreamSettings | None = None,
    options: Sequence[tuple[str, int]] = SERVER_OPTIONS,
) -> grpc.aio.Server:
    """Start the ADS server on ``address`` (``host:port``) and return it, started.

    ``credentials`` (``grpc.ssl_server_credentials(..., require_client_auth=True)``) turn
    on mTLS; ``authorizer`` then checks each stream's node group against the client's
    identities. Without them the server is plaintext: bind it to a trusted network only.
    ``settings`` tune the streams' timing (debounce, NACK re-offers, warming).
    Stop it with ``await server.stop(grace)``.
    """
    servicer = AggregatedDiscoveryServicer(
        cache, sync, metrics, settings=settings, authorizer=authorizer
    )
    server = grpc.aio.server(options=list(options))
    servicer.add_to_server(server)
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
        "xDS server listening on %s (port %d, %s)",
        address,
        port,
        "mTLS" if credentials else "plaintext",
    )
    return server
