"""Serialized xDS resources, per-node-group snapshots of them, and the cache the server reads.

The hub (:mod:`federation.hub`) turns the translator's protobuf messages into
:class:`Resource` values (:meth:`Resource.of`), puts one :class:`Snapshot` per node group
(an Envoy's ``node.cluster``, i.e. its member cluster id) into the :class:`SnapshotCache`,
and calls :meth:`SnapshotCache.mark_ready` once it has loaded the whole registry. The xDS
server (:mod:`federation.xds.server`) subscribes to the cache and serves what it holds.

What this module guarantees:

* A resource is serialized once; its version is a hash of its bytes, so identical bytes
  always have the same version, in every process and after every restart.
* The wire fragments that put a resource into a response (the ``Any``, the state-of-the-
  world ``resources`` entry, the delta ``Resource`` entry) are built once, lazily, and
  shared by every stream that sends the resource.
* A type's version in a snapshot is a digest of its ``(name, version)`` pairs that is
  updated in O(changed) by :meth:`SnapshotCache.update`, so an endpoint-only change costs
  the same whatever the number of other resources.
* Until :meth:`SnapshotCache.mark_ready` the server serves nothing: a hub that has just
  started must not push empty configuration (it makes Envoys drop live traffic).

The cache is not thread-safe: call it from the event loop that runs the server.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Protocol

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from federation.errors import InvalidInputError

TYPE_PREFIX = "type.googleapis.com/"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
#: The message class of each type, for decoding a resource's bytes (:func:`decode`).
MESSAGE_TYPES: Mapping[str, Any] = MappingProxyType(
    {
        CLUSTER: cluster_pb2.Cluster,
        ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
        LISTENER: listener_pb2.Listener,
        ROUTE: route_pb2.RouteConfiguration,
        SECRET: secret_pb2.Secret,
    }
)
#: The order in which the server pushes the types: a resource never arrives before one
#: it names (a route names a cluster, a cluster's endpoints follow it, a listener names
#: the Secrets of its certificates).
ORDER = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)

_MASK = (1 << 64) - 1


class ProtoMessage(Protocol):
    """What :meth:`Resource.of` needs of a protobuf message (upb or pure Python)."""

    @property
    def DESCRIPTOR(self) -> Any: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


@dataclass(frozen=True)
class Resource:
    """One serialized xDS resource. Equal when name, type and version are equal.

    ``version`` is the first 16 hex digits of the SHA-256 of ``body``. The wire fragments
    (:attr:`any`, :attr:`sotw_entry`, :attr:`delta_entry`) are built on first use and then
    shared by every stream.
    """

    name: str
    type_url: str
    body: bytes = field(repr=False, compare=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidInputError(f"an xDS resource of type {self.type_url} has no name")
        object.__setattr__(self, "version", hashlib.sha256(self.body).hexdigest()[:16])

    @classmethod
    def of(cls, message: ProtoMessage, name: str) -> Resource:
        """Serialize ``message`` once (deterministically) as the resource ``name``."""
        type_url = TYPE_PREFIX + str(message.DESCRIPTOR.full_name)
        return cls(name, type_url, message.SerializeToString(deterministic=True))

    @cached_property
    def assignment(self) -> str:
        """For a cluster: the name of the ClusterLoadAssignment it reads over EDS, its EDS
        ``service_name`` when it has one (a policy's copy of a cluster reads the
        original's), else its own name. Parsed once per resource version."""
        if self.type_url != CLUSTER:
            return self.name
        config = cluster_pb2.Cluster.FromString(self.body).eds_cluster_config
        return str(config.service_name) or self.name

    @cached_property
    def any(self) -> any_pb2.Any:
        """The ``google.protobuf.Any`` that carries this resource, built once."""
        return any_pb2.Any(type_url=self.type_url, value=self.body)

    @cached_property
    def sotw_entry(self) -> bytes:
        """This resource as one encoded ``DiscoveryResponse.resources`` entry.

        Protobuf concatenation merges messages and appends repeated fields, so a response
        is its header followed by the entries of its resources: nothing is re-encoded per
        stream.
        """
        return bytes(discovery_pb2.DiscoveryResponse(resources=[self.any]).SerializeToString())

    @cached_property
    def delta_entry(self) -> bytes:
        """This resource as one encoded ``DeltaDiscoveryResponse.resources`` entry."""
        entry = discovery_pb2.Resource(name=self.name, version=self.version, resource=self.any)
        return bytes(discovery_pb2.DeltaDiscoveryResponse(resources=[entry]).SerializeToString())

    @cached_property
    def digest(self) -> int:
        """64-bit hash of ``(name, version)``; a type's version is the sum of these."""
        pair = hashlib.sha256(f"{self.name}\0{self.version}".encode()).digest()
        return int.from_bytes(pair[:8], "big")


def version_of(resources: Iterable[Resource]) -> str:
    """The version of a set of resources: an order-independent digest of (name, version)."""
    return _format(sum(r.digest for r in resources) & _MASK)


def _format(digest: int) -> str:
    return f"{digest:016x}"


_EMPTY: Mapping[str, Resource] = MappingProxyType({})


@dataclass(frozen=True)
class Snapshot:
    """The resources of one node group: ``resources[type_url][name]``.

    Immutable by contract: neither the snapshot nor the mappings in it may be changed once
    built (streams keep references to them). Build one with :meth:`build`, or derive one
    with :meth:`with_changes`.
    """

    resources: Mapping[str, Mapping[str, Resource]] = field(default_factory=dict)
    # Per-type caches: the version digest and the encoded SotW ``resources`` of the type.
    _digests: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _bodies: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, resources: Iterable[Resource]) -> Snapshot:
        """A snapshot of ``resources``; two resources of one type may not share a name."""
        by_type: dict[str, dict[str, Resource]] = {}
        for resource in resources:
            of_type = by_type.setdefault(resource.type_url, {})
            if resource.name in of_type:
                raise InvalidInputError(
                    f"two xDS resources of type {resource.type_url} are named {resource.name!r}"
                )
            of_type[resource.name] = resource
        return cls(resources=by_type)

    def of(self, type_url: str) -> Mapping[str, Resource]:
        """The resources of one type, by name (empty when the type has none)."""
        return self.resources.get(type_url, _EMPTY)

    def get(self, type_url: str, name: str) -> Resource | None:
        return self.of(type_url).get(name)

    def assignments_of(self, clusters: Iterable[str]) -> frozenset[str]:
        """The ClusterLoadAssignments that the clusters named ``clusters`` read."""
        of_type = self.of(CLUSTER)
        return frozenset(of_type[name].assignment if name in of_type else name for name in clusters)

    def version(self, type_url: str) -> str:
        """Digest of the type's ``(name, version)`` pairs; equal content, equal version."""
        digest = self._digests.get(type_url)
        if digest is None:
            digest = sum(r.digest for r in self.of(type_url).values()) & _MASK
            self._digests[type_url] = digest
        return _format(digest)

    def versions(self) -> dict[str, str]:
        """The version of every type: those of :data:`ORDER` and any other one held."""
        types = list(ORDER) + sorted(t for t in self.resources if t not in ORDER)
        return {t: self.version(t) for t in types}

    def sotw_body(self, type_url: str) -> bytes:
        """Every resource of the type as encoded ``DiscoveryResponse.resources``, by name.

        Built once per snapshot and type: the body of every state-of-the-world CDS and LDS
        response, shared by all the streams of the group.
        """
        body = self._bodies.get(type_url)
        if body is None:
            of_type = self.of(type_url)
            body = b"".join(of_type[name].sotw_entry for name in sorted(of_type))
            self._bodies[type_url] = body
        return body

    def with_changes(
        self, type_url: str, upserts: Mapping[str, Resource], removals: Iterable[str] = ()
    ) -> Snapshot:
        """A new snapshot with one type changed; the other types are shared, not copied."""
        return _apply(self, type_url, upserts, removals)[0]


def decode(resource: Resource) -> Any:
    """The typed message of a resource of one of :data:`MESSAGE_TYPES`."""
    message = MESSAGE_TYPES[resource.type_url]()
    message.ParseFromString(resource.body)
    return message


class _Layered(Mapping[str, Resource]):
    """An immutable mapping: a shared base with a few names changed or removed on top.

    :func:`_apply` derives a type's next mapping as a new top over the same base, in
    O(changed) instead of copying every resource of the type; once the top grows past
    about the square root of the base it is folded into a fresh base, so a change costs
    amortized O(sqrt(n)) and lookups at most two dict probes. In the top, None marks a
    removed name.
    """

    __slots__ = ("_base", "_len", "_top")

    def __init__(self, base: Mapping[str, Resource], top: dict[str, Resource | None]) -> None:
        self._base = base
        self._top = top
        size = len(base)
        for name, resource in top.items():
            size += (resource is not None) - (name in base)
        self._len = size

    def __getitem__(self, name: str) -> Resource:
        if name in self._top:
            resource = self._top[name]
            if resource is None:
                raise KeyError(name)
            return resource
        return self._base[name]

    def __contains__(self, name: object) -> bool:
        if name in self._top:
            return self._top[name] is not None
        return name in self._base

    def __iter__(self) -> Iterator[str]:
        top = self._top
        yield from (name for name in self._base if name not in top)
        yield from (name for name, resource in top.items() if resource is not None)

    def __len__(self) -> int:
        return self._len


def _derive(
    old: Mapping[str, Resource], changes: dict[str, Resource | None]
) -> Mapping[str, Resource]:
    """``old`` with ``changes`` applied (None: remove), without changing ``old``."""
    if isinstance(old, _Layered):
        base, top = old._base, {**old._top, **changes}
    else:
        base, top = old, changes
    if len(top) * len(top) <= len(base):
        return _Layered(base, top)
    flat = dict(base)
    for name, resource in top.items():
        if resource is None:
            flat.pop(name, None)
        else:
            flat[name] = resource
    return flat


def _apply(
    snapshot: Snapshot, type_url: str, upserts: Mapping[str, Resource], removals: Iterable[str]
) -> tuple[Snapshot, set[str]]:
    """``snapshot`` with one type changed, and the names that actually changed."""
    old = snapshot.of(type_url)
    changes: dict[str, Resource | None] = {}
    digest = snapshot._digests.get(type_url)
    for name, resource in upserts.items():
        if resource.name != name or resource.type_url != type_url:
            raise InvalidInputError(
                f"resource {resource.type_url}/{resource.name} upserted as {type_url}/{name}"
            )
        previous = old.get(name)
        if previous == resource:
            continue
        changes[name] = resource
        if digest is not None:
            digest += resource.digest - (previous.digest if previous is not None else 0)
    for name in removals:
        previous = old.get(name)
        if previous is None or name in upserts or name in changes:
            continue
        changes[name] = None
        if digest is not None:
            digest -= previous.digest
    if not changes:
        return snapshot, set()
    resources = dict(snapshot.resources)
    resources[type_url] = _derive(old, changes)
    result = Snapshot(resources=resources)
    result._digests.update(snapshot._digests)
    result._bodies.update(snapshot._bodies)
    result._bodies.pop(type_url, None)
    if digest is None:
        result._digests.pop(type_url, None)
    else:
        result._digests[type_url] = digest & _MASK
    return result, set(changes)


def diff(old: Snapshot, new: Snapshot) -> dict[str, frozenset[str]]:
    """The names that differ between two snapshots, by type (types without change omitted)."""
    changes: dict[str, frozenset[str]] = {}
    for type_url in old.resources.keys() | new.resources.keys():
        before, after = old.of(type_url), new.of(type_url)
        if before is after:
            continue
        names = frozenset(name for name, _ in before.items() ^ after.items())
        if names:
            changes[type_url] = names
    return changes


@dataclass(frozen=True)
class _Change:
    """One entry of a group's journal: what turned generation ``before`` into ``after``."""

    before: int
    after: int
    names: Mapping[str, frozenset[str]]


class SnapshotCache:
    """The current :class:`Snapshot` of every node group, and who to wake when one changes.

    Subscribers (one :class:`asyncio.Event` per xDS stream) are set on every change of
    their group and when the cache becomes ready; a stream then reads the latest snapshot,
    so a burst of changes costs each stream one push, and nobody polls. A short journal of
    changed names per group lets a stream find what changed since the generation it last
    saw in O(changed) (:meth:`changes_since`) instead of comparing every resource.
    """

    def __init__(self, *, journal_size: int = 64) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._generations: dict[str, int] = {}
        self._journals: dict[str, deque[_Change]] = {}
        self._subscribers: dict[str, builtins.set[asyncio.Event]] = {}
        self._journal_size = journal_size
        # One clock for every group: a generation number is never reused, even after
        # discard(), so a stream can never mistake an old generation for a new one.
        self._clock = 0
        self._ready = False

    @property
    def ready(self) -> bool:
        """False until :meth:`mark_ready`: until then the server sends nothing."""
        return self._ready

    def mark_ready(self) -> None:
        """Declare the cache complete (the whole registry is loaded) and wake every stream."""
        if self._ready:
            return
        self._ready = True
        for events in self._subscribers.values():
            for event in events:
                event.set()

    def get(self, group: str) -> Snapshot | None:
        """The group's current snapshot, or None when the hub has none for it."""
        return self._snapshots.get(group)

    def groups(self) -> list[str]:
        return sorted(self._snapshots)

    def generation(self, group: str) -> int:
        """A number that changes whenever the group's snapshot does (0: never set)."""
        return self._generations.get(group, 0)

    def snapshot_versions(self, group: str) -> dict[str, str]:
        """The version of each type in the group's snapshot ({} when there is none)."""
        snapshot = self._snapshots.get(group)
        return {} if snapshot is None else snapshot.versions()

    def set(self, group: str, snapshot: Snapshot) -> bool:
        """Replace the group's snapshot. Returns False (and wakes nobody) if nothing changed."""
        old = self._snapshots.get(group)
        changes = diff(old if old is not None else Snapshot(), snapshot)
        if old is not None:
            if not changes:
                return False
            # Keep the per-type caches (version digests, encoded bodies) of unchanged types.
            for type_url in old.resources.keys() - changes.keys():
                if type_url in old._digests:
                    snapshot._digests.setdefault(type_url, old._digests[type_url])
                if type_url in old._bodies:
                    snapshot._bodies.setdefault(type_url, old._bodies[type_url])
        self._commit(group, snapshot, changes)
        return True

    def update(
        self,
        group: str,
        type_url: str,
        upserts: Mapping[str, Resource],
        removals: Iterable[str] = (),
    ) -> bool:
        """Change some resources of one type (e.g. one ClusterLoadAssignment).

        Nothing else is rebuilt, and streams send only what changed. Returns False (and
        wakes nobody) if nothing changed. The group must have a snapshot (:meth:`set`).
        """
        old = self._snapshots.get(group)
        if old is None:
            # A snapshot of one type would make the server send the others empty.
            raise InvalidInputError(f"node group {group!r} has no snapshot: set() one first")
        new, changed = _apply(old, type_url, upserts, removals)
        if not changed:
            return False
        self._commit(group, new, {type_url: frozenset(changed)} if changed else {})
        return True

    def discard(self, group: str) -> None:
        """Forget a group (its member cluster left). Its streams stay open and get nothing
        more: Envoys keep their last configuration (fail-static)."""
        if self._snapshots.pop(group, None) is None:
            return
        self._clock += 1
        self._generations[group] = self._clock
        self._journals.pop(group, None)
        self._wake(group)

    def changes_since(self, group: str, generation: int) -> dict[str, builtins.set[str]] | None:
        """Names changed per type since ``generation``; None when the journal does not go
        back that far (the caller then compares everything)."""
        current = self._generations.get(group)
        if current is None:
            return None
        if generation == current:
            return {}
        journal = self._journals.get(group)
        if not journal or journal[0].before > generation or generation > current:
            return None
        merged: dict[str, builtins.set[str]] = {}
        for change in journal:
            if change.after <= generation:
                continue
            for type_url, names in change.names.items():
                merged.setdefault(type_url, set()).update(names)
        return merged

    def subscribe(self, group: str, event: asyncio.Event) -> None:
        """Set ``event`` whenever the group's snapshot changes or the cache becomes ready."""
        self._subscribers.setdefault(group, set()).add(event)

    def unsubscribe(self, group: str, event: asyncio.Event) -> None:
        events = self._subscribers.get(group)
        if events is not None:
            events.discard(event)
            if not events:
                del self._subscribers[group]

    def _commit(self, group: str, snapshot: Snapshot, changes: dict[str, frozenset[str]]) -> None:
        before = self._generations.get(group)
        self._clock += 1
        self._snapshots[group] = snapshot
        self._generations[group] = self._clock
        journal = self._journals.get(group)
        if before is None or journal is None:
            journal = self._journals[group] = deque(maxlen=self._journal_size)
            if before is None:
                # A stream that saw the group before it had a snapshot has nothing to diff.
                before = self._clock
        journal.append(_Change(before, self._clock, changes))
        self._wake(group)

    def _wake(self, group: str) -> None:
        for event in self._subscribers.get(group, ()):
            event.set()
