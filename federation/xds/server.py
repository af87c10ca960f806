"""The Aggregated Discovery Service (ADS) on grpc.aio: state of the world and delta.

The hub process (``federation/cli/hub.py``) calls :func:`serve` with its
:class:`~federation.xds.snapshot.SnapshotCache` and
:class:`~federation.xds.status.SyncRegistry`. Every Envoy opens one ADS stream; its node
group is the ``node.cluster`` of the first request (cached: later requests may omit the
node), and it is served that group's snapshot. Resources are opaque here: they come
pre-serialized, and every response is the concatenation of a small header and the
resources' cached wire entries, so one change fans out to many streams without
re-encoding anything (design §5, §9).

The rules of design §5, and how they are kept:

* **Not ready, serve nothing.** Requests are recorded but answered only once the cache is
  ready and holds a snapshot for the group.
* **ACK/NACK.** In state of the world, a request whose ``response_nonce`` is the last one
  sent for its type ACKs it, or NACKs it when it carries ``error_detail``; a request with
  any other non-empty nonce is stale and ignored entirely. In delta, each nonce ACKs or
  NACKs its own response. A NACK is recorded (version, message, time) in the sync registry
  and counted; what was NACKed is never resent: a resource is sent again only when its
  version changes (or its cluster changed, see below).
* **Complete CDS and LDS.** A state-of-the-world CDS or LDS response holds every resource
  of the type in the group's snapshot (a missing one would be deleted), whatever names were
  requested. EDS and RDS are served by name: a response holds only the requested resources
  that changed, so an endpoint change sends one ClusterLoadAssignment, nothing else. Delta
  CDS and LDS are wildcard when the first request subscribes to no name (or to ``*``).
* **Order and removal.** Each push goes cluster -> endpoint -> listener -> route (other
  types after), so a route never points at a cluster Envoy has not been sent. Clusters are
  removed last ("make before break"): when a push both adds or changes clusters and drops
  some, the first CDS response still carries the dropped ones (their old versions) and a
  final CDS response without them follows the route response; when it only drops clusters,
  the single CDS response follows the routes. In delta the same holds with
  ``removed_resources``: cluster removals (then endpoint removals) go in responses after
  the route response. Envoy applies responses in order, so by the time a cluster goes,
  the listeners and routes that used it have been replaced.
* **Warming clusters.** After a cluster is added or changed, its ClusterLoadAssignment is
  sent again right after the CDS response, even if unchanged: Envoy keeps a changed
  cluster warming until its assignment arrives again. A ClusterLoadAssignment is named
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
import itertools
import logging
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import grpc
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from federation.errors import FederationError
from federation.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ORDER,
    Resource,
    Snapshot,
    SnapshotCache,
    version_of,
)
from federation.xds.status import StreamSync, SyncRegistry, XdsMetrics

log = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
#: Types whose state-of-the-world responses hold every resource (wildcard).
FULL_STATE_TYPES = frozenset({CLUSTER, LISTENER})
#: Minimum time between two pushes of one stream that a cache change waits for.
DEFAULT_PUSH_INTERVAL = 0.02
# Delta nonces remembered per type for ACKs that have not arrived yet.
_MAX_OUTSTANDING = 64

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

DiscoveryRequest = Any
DeltaDiscoveryRequest = Any


class XdsServeError(FederationError):
    """The xDS server cannot listen on its address."""


class NodeAuthorizer(Protocol):
    """Decides whether a peer may receive a node group's configuration.

    The mTLS seam (design §8): with TLS on, ``peer_identities`` are the identities of the
    client certificate (``ServicerContext.peer_identities()``); without TLS it is empty.
    """

    def __call__(self, group: str, node_id: str, peer_identities: Sequence[bytes]) -> bool: ...


@lru_cache(maxsize=4096)
def empty_load_assignment(name: str) -> Resource:
    """The ClusterLoadAssignment sent for a requested name that does not exist."""
    return Resource.of(endpoint_pb2.ClusterLoadAssignment(cluster_name=name), name)


def _placeholder(
    name: str, previous: str | None, clusters: Mapping[str, Resource]
) -> Resource | None:
    """What to send for a requested ClusterLoadAssignment missing from the snapshot.

    ``previous`` is the version the stream last sent for the name. Never sent: the empty
    assignment at once. Sent before and its cluster remains: the empty assignment (its
    endpoints are gone). Sent before and its cluster goes too: nothing, so the cluster
    keeps its endpoints until routes have moved off it and it is removed.
    """
    if previous is None or name in clusters:
        return empty_load_assignment(name)
    return None


class _Stream:
    """What state-of-the-world and delta streams share: identity, wake-up and push loop."""

    protocol = ""

    def __init__(self, servicer: AggregatedDiscoveryServicer, group: str, sync: StreamSync) -> None:
        self.cache = servicer.cache
        self.metrics = servicer.metrics
        self.push_interval = servicer.push_interval
        self.group = group
        self.sync = sync
        #: Set by the cache on changes and by the reader on requests that need an answer.
        self.wake = asyncio.Event()
        #: A request arrived that needs an answer: answer without debouncing.
        self.requested = False
        self.closed = False
        self.failure: BaseException | None = None
        #: The cache generation of the snapshot the last push was computed from.
        self.seen: int | None = None
        self._nonces = itertools.count(1)

    def next_nonce(self) -> str:
        return str(next(self._nonces))

    def poke(self) -> None:
        self.requested = True
        self.wake.set()

    def on_request(self, request: Any) -> None:
        raise NotImplementedError

    def plan(
        self, snapshot: Snapshot, changes: dict[str, set[str]] | None, previous: int | None
    ) -> list[bytes]:
        """The responses that bring the stream up to ``snapshot``, in push order."""
        raise NotImplementedError

    async def run(self, context: grpc.aio.ServicerContext) -> None:
        loop = asyncio.get_running_loop()
        last_push = -float("inf")
        while True:
            await self.wake.wait()
            if self.closed:
                return
            if not self.cache.ready or self.cache.get(self.group) is None:
                self.wake.clear()
                continue
            wait = last_push + self.push_interval - loop.time()
            if not self.requested and wait > 0:
                # A change right after a push: gather the rest of the burst first.
                await asyncio.sleep(wait)
                if self.closed:
                    return
            self.wake.clear()
            snapshot = self.cache.get(self.group)
            if snapshot is None:
                continue
            generation = self.cache.generation(self.group)
            previous = self.seen
            changes = None if previous is None else self.cache.changes_since(self.group, previous)
            self.seen = generation
            self.requested = False
            responses = self.plan(snapshot, changes, previous)
            for response in responses:
                await context.write(response)
                self.metrics.responses_sent += 1
                self.metrics.bytes_sent += len(response)
            if responses:
                last_push = loop.time()


@dataclass
class _SotwWatch:
    """One type on a state-of-the-world stream."""

    type_url: str
    #: Requested names (named types); ignored for CDS and LDS, which always get everything.
    names: frozenset[str] = frozenset()
    #: Nonce and version_info of the last response.
    nonce: str = ""
    version: str = ""
    #: CDS and LDS: the snapshot version and the resources of the last complete set sent
    #: (NACKed or not: never offered again).
    state_version: str | None = None
    sent: Mapping[str, Resource] = field(default_factory=dict)
    #: EDS and RDS: what the client was last offered, by name (NACKed or not).
    offered: dict[str, Resource] = field(default_factory=dict)
    #: Names requested since the last push.
    pending: set[str] = field(default_factory=set)
    #: The generation ``sent`` was computed at; the journal is only valid from there.
    generation: int | None = None


class _SotwStream(_Stream):
    protocol = "sotw"

    def __init__(self, servicer: AggregatedDiscoveryServicer, group: str, sync: StreamSync) -> None:
        super().__init__(servicer, group, sync)
        self.watches: dict[str, _SotwWatch] = {}

    def on_request(self, request: DiscoveryRequest) -> None:
        type_url = request.type_url
        if not type_url:
            log.warning("ignoring an ADS request without type_url from %s", self.sync.node_id)
            return
        watch = self.watches.get(type_url)
        if watch is None:
            watch = self.watches[type_url] = _SotwWatch(type_url)
            self.sync.subscribed(type_url)
            self.poke()
        nonce = request.response_nonce
        if nonce and watch.nonce:
            if nonce != watch.nonce:
                # A newer response is on its way; Envoy will answer that one.
                self.metrics.stale_requests += 1
                return
            if request.HasField("error_detail"):
                self.nack(type_url, watch.version, nonce, request.error_detail.message)
            else:
                self.metrics.acks += 1
                self.sync.acked(type_url, request.version_info)
        # A request without a nonce after we answered was sent before our response reached
        # the client: it ACKs nothing, and its names (below) still count. It never resets
        # what was sent; a client that starts over opens a new stream.
        if type_url in FULL_STATE_TYPES:
            return
        # Envoy repeats every name in every request (ACKs included): compare first, and
        # intern (one copy of each name for all streams) only when the set changed.
        requested = frozenset(request.resource_names)
        if requested != watch.names:
            names = frozenset(map(sys.intern, requested))
            added = names - watch.names
            dropped = watch.names - names
            # Envoy forgets what it unsubscribed from: resend it if asked again.
            for name in dropped:
                watch.offered.pop(name, None)
            watch.names = names
            if added:
                watch.pending |= added
                self.poke()

    def nack(self, type_url: str, version: str, nonce: str, message: str) -> None:
        self.metrics.nacks += 1
        self.sync.nacked(type_url, version, nonce, message)
        log.warning(
            "Envoy %s (group %s) rejected %s version %s: %s",
            self.sync.node_id,
            self.group,
            type_url,
            version,
            message,
        )

    def respond(self, watch: _SotwWatch, version: str, body: bytes) -> bytes:
        nonce = self.next_nonce()
        watch.nonce = nonce
        watch.version = version
        self.sync.sent(watch.type_url, version, nonce)
        head = discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=watch.type_url, nonce=nonce
        ).SerializeToString()
        return bytes(head) + body

    def plan(
        self, snapshot: Snapshot, changes: dict[str, set[str]] | None, previous: int | None
    ) -> list[bytes]:
        generation = self.seen
        out: list[bytes] = []
        changed_clusters: frozenset[str] = frozenset()
        drop_clusters = False
        clusters = self.watches.get(CLUSTER)
        if clusters is not None:
            changed_clusters, drop_clusters = self._plan_clusters(
                clusters, snapshot, changes, previous, out
            )
        others = sorted(t for t in self.watches if t not in ORDER)
        for type_url in (*ORDER[1:], *others):
            watch = self.watches.get(type_url)
            if watch is None:
                continue
            if type_url in FULL_STATE_TYPES:
                self._plan_full(watch, snapshot, out)
            else:
                forced = changed_clusters if type_url == ENDPOINT else frozenset()
                self._plan_named(watch, snapshot, changes, previous, forced, out)
            watch.generation = generation
        if clusters is not None:
            if drop_clusters:
                out.append(self._respond_full(clusters, snapshot))
            clusters.generation = generation
        for type_url in self.watches:
            self.sync.evaluated(type_url, snapshot.version(type_url))
        return out

    def _respond_full(self, watch: _SotwWatch, snapshot: Snapshot) -> bytes:
        version = snapshot.version(watch.type_url)
        watch.state_version = version
        watch.sent = snapshot.of(watch.type_url)
        return self.respond(watch, version, snapshot.sotw_body(watch.type_url))

    def _plan_full(self, watch: _SotwWatch, snapshot: Snapshot, out: list[bytes]) -> None:
        if watch.state_version != snapshot.version(watch.type_url):
            out.append(self._respond_full(watch, snapshot))

    def _plan_clusters(
        self,
        watch: _SotwWatch,
        snapshot: Snapshot,
        changes: dict[str, set[str]] | None,
        previous: int | None,
        out: list[bytes],
    ) -> tuple[frozenset[str], bool]:
        """Send the clusters that were added or changed; say whether some must go last.

        Returns the added or changed cluster names (their assignments are resent) and
        whether a final CDS response without the dropped clusters must follow the routes.
        """
        if watch.state_version == snapshot.version(CLUSTER):
            return frozenset(), False
        old, new = watch.sent, snapshot.of(CLUSTER)
        if changes is not None and previous is not None and watch.generation == previous:
            names: Iterable[str] = changes.get(CLUSTER, ())
        else:
            names = old.keys() | new.keys()
        changed = frozenset(n for n in names if n in new and old.get(n) != new[n])
        dropped = [n for n in names if n in old and n not in new]
        if not dropped or watch.state_version is None:
            out.append(self._respond_full(watch, snapshot))
            return changed, False
        if changed:
            # Make before break: the new and changed clusters now, the dropped ones kept.
            union = dict(new)
            union.update((n, old[n]) for n in dropped)
            body = b"".join(union[n].sotw_entry for n in sorted(union))
            out.append(self.respond(watch, version_of(union.values()), body))
            watch.sent = union
        return changed, True

    def _plan_named(
        self,
        watch: _SotwWatch,
        snapshot: Snapshot,
        changes: dict[str, set[str]] | None,
        previous: int | None,
        forced: frozenset[str],
        out: list[bytes],
    ) -> None:
        type_url = watch.type_url
        if changes is None or previous is None or watch.generation != previous:
            candidates: Iterable[str] = watch.names
        else:
            candidates = (changes.get(type_url, set()) | watch.pending | forced) & watch.names
        watch.pending = set()
        resources = snapshot.of(type_url)
        clusters = snapshot.of(CLUSTER)
        send: list[Resource] = []
        for name in sorted(candidates):
            resource = resources.get(name)
            before = watch.offered.get(name)
            if resource is None:
                if type_url != ENDPOINT:
                    continue  # held until it exists
                resource = _placeholder(name, None if before is None else before.version, clusters)
                if resource is None:
                    continue
            if resource == before and name not in forced:
                continue
            watch.offered[name] = resource
            send.append(resource)
        if send:
            body = b"".join(r.sotw_entry for r in send)
            out.append(self.respond(watch, snapshot.version(type_url), body))


@dataclass
class _DeltaWatch:
    """One type on a delta stream."""

    type_url: str
    wildcard: bool = False
    #: Names subscribed to explicitly.
    names: set[str] = field(default_factory=set)
    #: The version the client has (or was offered, NACKed or not) of each resource.
    known: dict[str, str] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    #: Compare everything at the next push (new subscription, wildcard change).
    full: bool = True
    generation: int | None = None
    #: Nonce -> system_version_info of responses not ACKed yet, oldest first.
    outstanding: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


class _DeltaStream(_Stream):
    protocol = "delta"

    def __init__(self, servicer: AggregatedDiscoveryServicer, group: str, sync: StreamSync) -> None:
        super().__init__(servicer, group, sync)
        self.watches: dict[str, _DeltaWatch] = {}

    def on_request(self, request: DeltaDiscoveryRequest) -> None:
        type_url = request.type_url
        if not type_url:
            log.warning("ignoring a delta request without type_url from %s", self.sync.node_id)
            return
        watch = self.watches.get(type_url)
        if watch is None:
            watch = self.watches[type_url] = _DeltaWatch(type_url)
            # What the client already holds (e.g. from a previous hub): only differences
            # are sent. Versions are content hashes, so they survive a hub restart.
            for name, version in request.initial_resource_versions.items():
                watch.known[sys.intern(name)] = version
            if type_url in FULL_STATE_TYPES and not request.resource_names_subscribe:
                watch.wildcard = True
            self.sync.subscribed(type_url)
            self.poke()
        nonce = request.response_nonce
        if nonce:
            self._ack(watch, request, nonce)
        for name in request.resource_names_subscribe:
            if name == "*":
                if not watch.wildcard:
                    watch.wildcard = watch.full = True
                    self.poke()
            elif name not in watch.names:
                name = sys.intern(name)
                watch.names.add(name)
                watch.pending.add(name)
                self.poke()
        for name in request.resource_names_unsubscribe:
            if name == "*":
                watch.wildcard = False
                watch.known = {n: v for n, v in watch.known.items() if n in watch.names}
            else:
                watch.names.discard(name)
                watch.pending.discard(name)
                if not watch.wildcard:
                    watch.known.pop(name, None)

    def _ack(self, watch: _DeltaWatch, request: DeltaDiscoveryRequest, nonce: str) -> None:
        version = watch.outstanding.get(nonce)
        if version is None:
            self.metrics.stale_requests += 1
            return
        # Envoy answers responses in order: older nonces will not be answered any more.
        while watch.outstanding:
            older, _ = watch.outstanding.popitem(last=False)
            if older == nonce:
                break
        if request.HasField("error_detail"):
            message = request.error_detail.message
            self.metrics.nacks += 1
            self.sync.nacked(watch.type_url, version, nonce, message)
            log.warning(
                "Envoy %s (group %s) rejected %s version %s: %s",
                self.sync.node_id,
                self.group,
                watch.type_url,
                version,
                message,
            )
        else:
            self.metrics.acks += 1
            self.sync.acked(watch.type_url, version)

    def respond(
        self, watch: _DeltaWatch, version: str, upserts: Sequence[Resource], removals: Sequence[str]
    ) -> bytes:
        nonce = self.next_nonce()
        watch.outstanding[nonce] = version
        if len(watch.outstanding) > _MAX_OUTSTANDING:
            watch.outstanding.popitem(last=False)
        self.sync.sent(watch.type_url, version, nonce)
        head = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version,
            type_url=watch.type_url,
            nonce=nonce,
            removed_resources=removals,
        ).SerializeToString()
        return bytes(head) + b"".join(r.delta_entry for r in upserts)

    def plan(
        self, snapshot: Snapshot, changes: dict[str, set[str]] | None, previous: int | None
    ) -> list[bytes]:
        out: list[bytes] = []
        late: list[tuple[_DeltaWatch, list[str]]] = []
        forced: frozenset[str] = frozenset()
        others = sorted(t for t in self.watches if t not in ORDER)
        for type_url in (*ORDER, *others):
            watch = self.watches.get(type_url)
            if watch is None:
                continue
            upserts, removals, removed_late = self._diff(
                watch,
                snapshot,
                changes,
                previous,
                forced if type_url == ENDPOINT else frozenset(),
            )
            if type_url == CLUSTER:
                # Their assignments go again right after: changed clusters are warming.
                forced = frozenset(r.name for r in upserts)
            if upserts or removals:
                out.append(self.respond(watch, snapshot.version(type_url), upserts, removals))
            elif not removed_late and not watch.outstanding:
                self.sync.already_has(type_url, snapshot.version(type_url))
            if removed_late:
                late.append((watch, removed_late))
        # Clusters (then their assignments) are removed after the routes have moved off.
        for watch, names in late:
            out.append(self.respond(watch, snapshot.version(watch.type_url), (), names))
        for type_url in self.watches:
            self.sync.evaluated(type_url, snapshot.version(type_url))
        return out

    def _diff(
        self,
        watch: _DeltaWatch,
        snapshot: Snapshot,
        changes: dict[str, set[str]] | None,
        previous: int | None,
        forced: frozenset[str],
    ) -> tuple[list[Resource], list[str], list[str]]:
        """Upserts, removals to send now, and removals to send after the routes."""
        type_url = watch.type_url
        resources = snapshot.of(type_url)
        if watch.full or changes is None or previous is None or watch.generation != previous:
            candidates: set[str] = set(watch.names) | watch.known.keys()
            if watch.wildcard:
                candidates |= resources.keys()
        else:
            candidates = changes.get(type_url, set()) | watch.pending | forced
        watch.full = False
        watch.pending = set()
        watch.generation = self.seen
        removals_late = type_url in (CLUSTER, ENDPOINT)
        clusters = snapshot.of(CLUSTER)
        upserts: list[Resource] = []
        removals: list[str] = []
        late: list[str] = []
        for name in sorted(candidates):
            if not watch.wants(name):
                continue
            resource = resources.get(name)
            known = watch.known.get(name)
            if resource is None and type_url == ENDPOINT and name in watch.names:
                resource = _placeholder(name, known, clusters)
            if resource is None:
                if known is not None:
                    del watch.known[name]
                    (late if removals_late else removals).append(name)
                continue
            if known == resource.version and name not in forced:
                continue
            watch.known[name] = resource.version
            upserts.append(resource)
        return upserts, removals, late


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
        push_interval: float = DEFAULT_PUSH_INTERVAL,
        authorizer: NodeAuthorizer | None = None,
    ) -> None:
        self.cache = cache
        self.sync = sync
        self.metrics = metrics if metrics is not None else XdsMetrics()
        self.push_interval = push_interval
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
        self, request_iterator: AsyncIterator[DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await self._serve(request_iterator, context, _SotwStream)

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._serve(request_iterator, context, _DeltaStream)

    async def _serve(
        self,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
        kind: type[_SotwStream] | type[_DeltaStream],
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
        stream = kind(self, group, sync)
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
            self.cache.unsubscribe(group, stream.wake)
            self.sync.close(sync)
            self.metrics.streams_active -= 1
            log.info("xDS stream %d of %s (group %s) closed", sync.stream_id, node_id, group)

    @staticmethod
    async def _read(requests: AsyncIterator[Any], stream: _Stream) -> None:
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
            stream.closed = True
            stream.wake.set()


async def serve(
    cache: SnapshotCache,
    sync: SyncRegistry,
    address: str,
    *,
    metrics: XdsMetrics | None = None,
    credentials: grpc.ServerCredentials | None = None,
    authorizer: NodeAuthorizer | None = None,
    push_interval: float = DEFAULT_PUSH_INTERVAL,
    options: Sequence[tuple[str, int]] = SERVER_OPTIONS,
) -> grpc.aio.Server:
    """Start the ADS server on ``address`` (``host:port``) and return it, started.

    ``credentials`` (``grpc.ssl_server_credentials(..., require_client_auth=True)``) turn
    on mTLS; ``authorizer`` then checks each stream's node group against the client's
    identities. Without them the server is plaintext: bind it to a trusted network only.
    Stop it with ``await server.stop(grace)``.
    """
    servicer = AggregatedDiscoveryServicer(
        cache, sync, metrics, push_interval=push_interval, authorizer=authorizer
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
