"""State-of-the-world ADS streams (``StreamAggregatedResources``).

Created by :mod:`federation.xds.server` for each state-of-the-world call. How the xDS
rules are kept in this variant of the protocol:

* A request whose ``response_nonce`` is the last one sent for its type ACKs it, or NACKs
  it when it carries ``error_detail``; any other non-empty nonce is stale and the request
  is ignored entirely. A request without a nonce after a response was sent before the
  response reached the client: it ACKs nothing, and its names still count.
* CDS and LDS responses hold every resource of the type (a missing one is deleted). EDS,
  SDS and RDS are served by name, and a response holds only the requested resources that
  changed; a requested Secret or route configuration that does not exist is held until
  it does (Envoy keeps the listener that named it warming meanwhile).
* Make before break: when a push both adds or changes clusters and drops some, the first
  CDS response still carries the dropped ones (at their old versions) and a final CDS
  response without them follows the routes; a push that only drops clusters sends its
  CDS response after the routes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from federation.xds.snapshot import CLUSTER, ENDPOINT, ORDER, Resource, Snapshot, version_of
from federation.xds.stream import FULL_STATE_TYPES, Stream, log, placeholder

DiscoveryRequest = Any


@dataclass
class SotwWatch:
    """One type on a state-of-the-world stream."""

    type_url: str
    #: Requested names (EDS, SDS, RDS); ignored for CDS and LDS, which always get everything.
    names: frozenset[str] = frozenset()
    #: Nonce and version_info of the last response.
    nonce: str = ""
    version: str = ""
    #: The last nonce Envoy ACKed or NACKed.
    answered: str = ""
    #: CDS and LDS: the version and the resources of the last complete set sent (NACKed
    #: or not: offered again only after the NACK's backoff). None: send everything.
    state_version: str | None = None
    sent: Mapping[str, Resource] = field(default_factory=dict)
    #: CDS: clusters kept in ``sent`` only until the routes have moved off them.
    dropping: set[str] = field(default_factory=set)
    #: Named types: what the client was last offered, by name (NACKed or not).
    offered: dict[str, Resource] = field(default_factory=dict)
    #: Named types: the names in the last response.
    last_names: tuple[str, ...] = ()
    #: Names requested since the last push.
    pending: set[str] = field(default_factory=set)
    #: The generation ``sent`` was computed at; the journal is only valid from there.
    generation: int | None = None


class SotwStream(Stream):
    protocol = "sotw"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watches: dict[str, SotwWatch] = {}

    def on_request(self, request: DiscoveryRequest) -> None:
        type_url = request.type_url
        if not type_url:
            log.warning("ignoring an ADS request without type_url from %s", self.sync.node_id)
            return
        # Names are replaced per type: count the request's instead of this type's.
        self.check_names(
            len(request.resource_names)
            + len(self.watches)
            + (type_url not in self.watches)
            + sum(len(w.names) for t, w in self.watches.items() if t != type_url)
        )
        watch = self.watches.get(type_url)
        if watch is None:
            watch = self.watches[type_url] = SotwWatch(type_url)
            self.sync.subscribed(type_url)
            self.poke()
        nonce = request.response_nonce
        if nonce and watch.nonce:
            if nonce != watch.nonce:
                # A newer response is on its way; Envoy will answer that one.
                self.metrics.stale_requests += 1
                return
            if watch.answered != nonce:
                watch.answered = nonce
                if request.HasField("error_detail"):
                    self.nacked(type_url, watch.version, nonce, request.error_detail.message)
                else:
                    self.acked(type_url, request.version_info, nonce)
                if type_url == CLUSTER and self.warming:
                    self.poke()  # the held rest of the push may go now
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

    def reoffer(self, type_url: str, nonce: str) -> bool:
        watch = self.watches.get(type_url)
        if watch is None or watch.nonce != nonce:
            return False
        if type_url in FULL_STATE_TYPES:
            # Everything again. For CDS, what Envoy holds is unknown after a NACK, so every
            # cluster counts as changed: their assignments follow (the clusters warm).
            watch.state_version = None
            watch.generation = None
            if type_url == CLUSTER:
                watch.sent = {}
                watch.dropping = set()
        else:
            for name in watch.last_names:
                if name in watch.names:
                    watch.offered.pop(name, None)
                    watch.pending.add(name)
        return True

    def respond(self, watch: SotwWatch, version: str, body: bytes) -> bytes:
        nonce = self.next_nonce()
        watch.nonce = nonce
        watch.version = version
        self.sync.sent(watch.type_url, version, nonce, self.seen)
        head = discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=watch.type_url, nonce=nonce
        ).SerializeToString()
        return bytes(head) + body

    def plan(
        self, snapshot: Snapshot, changes: dict[str, set[str]] | None, previous: int | None
    ) -> list[bytes]:
        generation = self.seen
        out: list[bytes] = []
        changed: frozenset[str] = frozenset()
        clusters = self.watches.get(CLUSTER)
        endpoints = self.watches.get(ENDPOINT)
        if clusters is not None:
            changed, added = self._plan_clusters(clusters, snapshot, changes, previous, out)
            clusters.generation = generation
            changed = snapshot.assignments_of(changed)
            if added and endpoints is not None:
                self.hold_for(snapshot.assignments_of(added) - endpoints.names)
        if endpoints is not None:
            self._plan_named(endpoints, snapshot, changes, previous, changed, out)
            endpoints.generation = generation
        cds_answered = clusters is None or clusters.answered == clusters.nonce
        sent = () if endpoints is None else endpoints.offered.keys()
        if self.holding(snapshot, sent, cds_answered):
            return out  # secrets, listeners, routes and removals wait for new clusters to warm
        others = sorted(t for t in self.watches if t not in ORDER)
        # Secrets, then listeners (which name them), then routes.
        for type_url in (*ORDER[2:], *others):
            watch = self.watches.get(type_url)
            if watch is None:
                continue
            if type_url in FULL_STATE_TYPES:
                self._plan_full(watch, snapshot, out)
            else:
                self._plan_named(watch, snapshot, changes, previous, frozenset(), out)
            watch.generation = generation
        if clusters is not None and clusters.dropping:
            out.append(self._respond_full(clusters, snapshot))
        for type_url in self.watches:
            self.sync.evaluated(type_url, snapshot.version(type_url))
        return out

    def _respond_full(self, watch: SotwWatch, snapshot: Snapshot) -> bytes:
        version = snapshot.version(watch.type_url)
        watch.state_version = version
        watch.sent = snapshot.of(watch.type_url)
        watch.dropping = set()
        return self.respond(watch, version, snapshot.sotw_body(watch.type_url))

    def _plan_full(self, watch: SotwWatch, snapshot: Snapshot, out: list[bytes]) -> None:
        if watch.state_version != snapshot.version(watch.type_url):
            out.append(self._respond_full(watch, snapshot))

    def _plan_clusters(
        self,
        watch: SotwWatch,
        snapshot: Snapshot,
        changes: dict[str, set[str]] | None,
        previous: int | None,
        out: list[bytes],
    ) -> tuple[frozenset[str], frozenset[str]]:
        """Send the clusters that were added or changed; keep dropped ones for later.

        Returns the added or changed cluster names (their assignments are resent) and the
        added ones. Dropped clusters stay in ``watch.dropping``: :meth:`plan` sends the
        CDS response without them after the routes.
        """
        if watch.state_version == snapshot.version(CLUSTER):
            return frozenset(), frozenset()
        old, new = watch.sent, snapshot.of(CLUSTER)
        names: Iterable[str]
        if (
            watch.state_version is not None
            and changes is not None
            and previous is not None
            and watch.generation == previous
        ):
            names = set(changes.get(CLUSTER, ())) | watch.dropping
        else:
            names = old.keys() | new.keys()
        changed = frozenset(n for n in names if n in new and old.get(n) != new[n])
        added = frozenset(n for n in changed if n not in old)
        dropped = {n for n in names if n in old and n not in new}
        if watch.state_version is None or not dropped:
            out.append(self._respond_full(watch, snapshot))
        elif changed:
            # Make before break: the new and changed clusters now, the dropped ones kept.
            union = dict(new)
            union.update((n, old[n]) for n in dropped)
            version = version_of(union.values())
            body = b"".join(union[n].sotw_entry for n in sorted(union))
            out.append(self.respond(watch, version, body))
            watch.sent, watch.state_version, watch.dropping = union, version, dropped
        else:
            watch.dropping = dropped  # only removals: they go after the routes
        return changed, added

    def _plan_named(
        self,
        watch: SotwWatch,
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
                resource = placeholder(name, None if before is None else before.version, clusters)
                if resource is None:
                    continue
            if resource == before and name not in forced:
                continue
            watch.offered[name] = resource
            send.append(resource)
        if send:
            watch.last_names = tuple(r.name for r in send)
            body = b"".join(r.sotw_entry for r in send)
            out.append(self.respond(watch, snapshot.version(type_url), body))
