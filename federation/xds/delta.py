"""Incremental (delta) ADS streams (``DeltaAggregatedResources``).

Created by :mod:`federation.xds.server` for each delta call. How the xDS rules are kept
in this variant of the protocol:

* Each response has its own nonce, and a request carrying it ACKs or NACKs that response
  (Envoy answers in order, so older unanswered nonces are settled with it).
* CDS and LDS are wildcard when the first request subscribes to no name (or to ``*``);
  other types are served by name. A response holds only what changed.
* What the client holds (``initial_resource_versions``, e.g. from a previous hub) is not
  sent again: versions are content hashes, so they survive a hub restart.
* Removals of clusters (then of assignments, then of Secrets) go in responses after the
  routes, so by the time a cluster or a Secret goes, the routes and listeners that used
  it have been replaced.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from federation.xds.snapshot import CLUSTER, ENDPOINT, ORDER, SECRET, Resource, Snapshot
from federation.xds.stream import FULL_STATE_TYPES, Stream, log, placeholder

DeltaDiscoveryRequest = Any
# Delta nonces remembered per type for ACKs that have not arrived yet.
_MAX_OUTSTANDING = 64
# A version no resource has: a name known at it is sent again at the next push.
_RESEND = ""
# Types whose removals go after the routes: what a route or listener may still use.
_REMOVED_LATE = (CLUSTER, ENDPOINT, SECRET)


@dataclass
class DeltaWatch:
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
    #: Nonce -> (system_version_info, names upserted) of responses not answered yet,
    #: oldest first.
    outstanding: OrderedDict[str, tuple[str, tuple[str, ...]]] = field(default_factory=OrderedDict)
    #: The nonce of the last response of this type.
    last_nonce: str = ""
    #: The names upserted by the last NACKed response (re-offered after the backoff).
    rejected: tuple[str, ...] = ()

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


class DeltaStream(Stream):
    protocol = "delta"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watches: dict[str, DeltaWatch] = {}
        #: Removals computed but not sent yet (they go after the routes), by type.
        self.late: dict[str, set[str]] = {}

    def on_request(self, request: DeltaDiscoveryRequest) -> None:
        type_url = request.type_url
        if not type_url:
            log.warning("ignoring a delta request without type_url from %s", self.sync.node_id)
            return
        # Subscriptions add up: count what the stream holds plus what the request adds.
        self.check_names(
            len(request.resource_names_subscribe)
            + len(request.initial_resource_versions)
            + len(self.watches)
            + (type_url not in self.watches)
            # A wildcard watch holds what the server pushed (bounded by the snapshot); a
            # named one holds its names and the versions the client reported of them.
            + sum(
                len(w.names) if w.wildcard else max(len(w.names), len(w.known))
                for w in self.watches.values()
            )
        )
        watch = self.watches.get(type_url)
        if watch is None:
            watch = self.watches[type_url] = DeltaWatch(type_url)
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
            self._answer(watch, request, nonce)
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

    def _answer(self, watch: DeltaWatch, request: DeltaDiscoveryRequest, nonce: str) -> None:
        answered = watch.outstanding.get(nonce)
        if answered is None:
            self.metrics.stale_requests += 1
            return
        version, upserted = answered
        # Envoy answers responses in order: older nonces will not be answered any more.
        while watch.outstanding:
            older, _ = watch.outstanding.popitem(last=False)
            if older == nonce:
                break
        if request.HasField("error_detail"):
            watch.rejected = upserted
            self.nacked(watch.type_url, version, nonce, request.error_detail.message)
        else:
            self.acked(watch.type_url, version, nonce)
        if watch.type_url == CLUSTER and self.warming and not watch.outstanding:
            self.poke()  # the held rest of the push may go now

    def reoffer(self, type_url: str, nonce: str) -> bool:
        watch = self.watches.get(type_url)
        if watch is None or watch.last_nonce != nonce:
            return False
        for name in watch.rejected:
            if name in watch.known:
                watch.known[name] = _RESEND
                watch.pending.add(name)
        watch.rejected = ()
        return True

    def respond(
        self, watch: DeltaWatch, version: str, upserts: Sequence[Resource], removals: Sequence[str]
    ) -> bytes:
        nonce = self.next_nonce()
        watch.outstanding[nonce] = (version, tuple(r.name for r in upserts))
        watch.last_nonce = nonce
        if len(watch.outstanding) > _MAX_OUTSTANDING:
            watch.outstanding.popitem(last=False)
        self.sync.sent(watch.type_url, version, nonce, self.seen)
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
        clusters = self.watches.get(CLUSTER)
        endpoints = self.watches.get(ENDPOINT)
        forced: frozenset[str] = frozenset()
        if clusters is not None:
            upserts, added = self._push(clusters, snapshot, changes, previous, frozenset(), out)
            # Their assignments go again right after: changed clusters are warming.
            forced = snapshot.assignments_of(r.name for r in upserts)
            if added and endpoints is not None and not endpoints.wildcard:
                self.hold_for(snapshot.assignments_of(added) - endpoints.names)
        if endpoints is not None:
            self._push(endpoints, snapshot, changes, previous, forced, out)
        cds_answered = clusters is None or not clusters.outstanding
        sent = () if endpoints is None else endpoints.known.keys()
        if self.holding(snapshot, sent, cds_answered):
            return out  # secrets, listeners, routes and removals wait for new clusters to warm
        others = sorted(t for t in self.watches if t not in ORDER)
        # Secrets, then listeners (which name them), then routes.
        for type_url in (*ORDER[2:], *others):
            watch = self.watches.get(type_url)
            if watch is not None:
                self._push(watch, snapshot, changes, previous, frozenset(), out)
        # Clusters (then their assignments) are removed after the routes have moved off,
        # Secrets after the listeners have.
        for type_url in _REMOVED_LATE:
            watch = self.watches.get(type_url)
            removals = self.late.pop(type_url, set())
            if watch is not None:
                removals = {n for n in removals if n not in watch.known}  # re-added since
            if watch is not None and removals:
                out.append(self.respond(watch, snapshot.version(type_url), (), sorted(removals)))
        for type_url in self.watches:
            self.sync.evaluated(type_url, snapshot.version(type_url))
        return out

    def _push(
        self,
        watch: DeltaWatch,
        snapshot: Snapshot,
        changes: dict[str, set[str]] | None,
        previous: int | None,
        forced: frozenset[str],
        out: list[bytes],
    ) -> tuple[list[Resource], frozenset[str]]:
        """Diff one type and send what changed now; returns the upserts and the new names."""
        type_url = watch.type_url
        upserts, added, removals, late = self._diff(watch, snapshot, changes, previous, forced)
        if late:
            self.late.setdefault(type_url, set()).update(late)
        if upserts or removals:
            out.append(self.respond(watch, snapshot.version(type_url), upserts, removals))
        elif not self.late.get(type_url) and not watch.outstanding:
            self.sync.already_has(type_url, snapshot.version(type_url), self.seen)
        return upserts, added

    def _diff(
        self,
        watch: DeltaWatch,
        snapshot: Snapshot,
        changes: dict[str, set[str]] | None,
        previous: int | None,
        forced: frozenset[str],
    ) -> tuple[list[Resource], frozenset[str], list[str], list[str]]:
        """Upserts, the names among them the client never had, removals to send now, and
        removals to send after the routes."""
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
        removals_late = type_url in _REMOVED_LATE
        clusters = snapshot.of(CLUSTER)
        upserts: list[Resource] = []
        added: set[str] = set()
        removals: list[str] = []
        late: list[str] = []
        for name in sorted(candidates):
            if not watch.wants(name):
                continue
            resource = resources.get(name)
            known = watch.known.get(name)
            if resource is None and type_url == ENDPOINT and name in watch.names:
                resource = placeholder(name, known, clusters)
            if resource is None:
                if known is not None:
                    del watch.known[name]
                    (late if removals_late else removals).append(name)
                continue
            if known == resource.version and name not in forced:
                continue
            if known is None:
                added.add(name)
            watch.known[name] = resource.version
            upserts.append(resource)
        return upserts, frozenset(added), removals, late
