"""What every connected Envoy was sent, ACKed and NACKed, and the xDS server's counters.

The xDS server (:mod:`federation.xds.server`) opens one :class:`StreamSync` per ADS stream
in the :class:`SyncRegistry` and records on it every response it sends and every ACK and
NACK it receives; the entry goes when the stream ends. The hub process
(:mod:`federation.hub`) creates the registry with the cache's ``snapshot_versions``
and serves :meth:`SyncRegistry.list` to ``fedctl`` and to metrics: "is every Envoy in sync,
and with what?" (user story 4). Pure bookkeeping: no I/O, no grpc.

Per stream and type, the state is:

* ``nacked``: Envoy rejected the latest version sent; it is offered again after a
  backoff, or sent anew when the snapshot changes (the NACK's message, version and time
  are kept);
* ``synced``: Envoy ACKed the latest response, and the stream has already handled the
  group's current snapshot of that type;
* ``stale``: anything else (a response in flight, a change not pushed yet, a requested
  resource that does not exist yet).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeAlias

from federation.xds.snapshot import ORDER

Json: TypeAlias = "str | int | float | bool | list[Json] | dict[str, Json] | None"
#: Refused nodes remembered (most recent first out), and how long they are shown.
REFUSED_KEPT = 256
REFUSED_SHOWN_FOR = 600.0
#: A peer refused for one reason is logged again after this many seconds at the earliest.
REFUSAL_LOG_EVERY = 300.0
#: Current versions of a group's snapshot by type (``SnapshotCache.snapshot_versions``).
SnapshotVersions = Callable[[str], Mapping[str, str]]


class SyncState(StrEnum):
    SYNCED = "synced"
    STALE = "stale"
    NACKED = "nacked"


def _timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Nack:
    """A response Envoy rejected: its version, nonce, Envoy's message and when (Unix time)."""

    version: str
    nonce: str
    message: str
    at: float

    def to_json(self) -> dict[str, Json]:
        return {
            "version": self.version,
            "nonce": self.nonce,
            "message": self.message,
            "at": _timestamp(self.at),
        }


@dataclass(frozen=True)
class TypeStatus:
    """One resource type on one stream."""

    type_url: str
    state: SyncState
    #: The version of the type in the group's current snapshot (None: no snapshot).
    snapshot_version: str | None
    sent_version: str | None
    sent_nonce: str | None
    acked_version: str | None
    last_nack: Nack | None

    def to_json(self) -> dict[str, Json]:
        return {
            "state": self.state.value,
            "snapshot_version": self.snapshot_version,
            "sent_version": self.sent_version,
            "sent_nonce": self.sent_nonce,
            "acked_version": self.acked_version,
            "last_nack": None if self.last_nack is None else self.last_nack.to_json(),
        }


@dataclass(frozen=True)
class ProxyStatus:
    """One connected Envoy (one ADS stream)."""

    stream_id: int
    node_id: str
    #: The node group: the Envoy's ``node.cluster``, its member cluster id.
    group: str
    #: ``sotw`` or ``delta``.
    protocol: str
    #: Unix time the stream was opened.
    connected_since: float
    types: tuple[TypeStatus, ...]

    @property
    def synced(self) -> bool:
        """True when every type the Envoy subscribed to is synced."""
        return all(t.state is SyncState.SYNCED for t in self.types)

    def type(self, type_url: str) -> TypeStatus | None:
        return next((t for t in self.types if t.type_url == type_url), None)

    def to_json(self) -> dict[str, Json]:
        return {
            "stream": self.stream_id,
            "node_id": self.node_id,
            "group": self.group,
            "protocol": self.protocol,
            "connected_since": _timestamp(self.connected_since),
            "synced": self.synced,
            "types": {t.type_url: t.to_json() for t in self.types},
        }


@dataclass
class XdsMetrics:
    """Counters of the xDS server, exposed as metrics by the hub."""

    streams_opened: int = 0
    streams_active: int = 0
    #: Streams refused, by reason (:class:`~federation.xds.peers.Refusal`): no or a
    #: foreign ``node.cluster``, an unknown cluster, a limit.
    refusals: dict[str, int] = field(default_factory=dict)
    responses_sent: int = 0
    bytes_sent: int = 0
    acks: int = 0
    nacks: int = 0
    #: State-of-the-world requests ignored because their nonce was not the latest sent.
    stale_requests: int = 0
    #: NACKed responses offered again after their backoff.
    nack_reoffers: int = 0
    #: Streams of Envoys that held configuration, answered once the hub had read the
    #: registry since they opened; and those that waited for that in vain.
    catch_ups: int = 0
    catch_up_timeouts: int = 0
    #: The TLS files were re-read after a change (and could not be used).
    tls_reloads: int = 0
    tls_reload_failures: int = 0

    @property
    def streams_rejected(self) -> int:
        return sum(self.refusals.values())

    def count_refusal(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def tls_reloaded(self, ok: bool) -> None:
        if ok:
            self.tls_reloads += 1
        else:
            self.tls_reload_failures += 1


@dataclass
class RefusedNode:
    """A node the server refused, for ``fedctl proxy-status``: who, why, how often."""

    peer: str
    node_id: str
    group: str
    reason: str
    code: str
    message: str
    first_at: float
    last_at: float
    count: int = 1

    def to_json(self) -> dict[str, Json]:
        return {
            "node_id": self.node_id,
            "group": self.group,
            "peer": self.peer,
            "synced": False,
            "types": {},
            "refused": {
                "reason": self.reason,
                "code": self.code,
                "message": self.message,
                "count": self.count,
                "first_at": _timestamp(self.first_at),
                "last_at": _timestamp(self.last_at),
            },
        }


@dataclass
class _TypeSync:
    sent_version: str | None = None
    sent_nonce: str | None = None
    acked_version: str | None = None
    last_nack: Nack | None = None
    # The version Envoy rejected, until a different version is sent.
    rejected_version: str | None = None
    # The snapshot version the stream last brought this type up to date with.
    evaluated_version: str | None = None


@dataclass(slots=True)
class Push:
    """One response sent on a stream: which cache generation it brought the Envoy to,
    when, and when (and how) Envoy answered it. For ``fedctl trace``."""

    type_url: str
    nonce: str
    generation: int | None
    sent_at: float
    answered_at: float | None = None
    nack: str | None = None

    def to_json(self) -> dict[str, Json]:
        return {
            "type_url": self.type_url,
            "nonce": self.nonce,
            "generation": self.generation,
            "sent_at": self.sent_at,
            "answered_at": self.answered_at,
            "nack": self.nack,
        }


#: Responses remembered per stream (the most recent), for ``fedctl trace``.
PUSHES_KEPT = 64
#: Closed streams remembered (the most recent), for ``fedctl trace``.
CLOSED_KEPT = 64


@dataclass(eq=False)
class StreamSync:
    """The sync state of one stream, written by the server as it sends and hears back."""

    stream_id: int
    node_id: str
    group: str
    protocol: str
    connected_since: float
    _registry: SyncRegistry = field(repr=False)
    _types: dict[str, _TypeSync] = field(default_factory=dict, repr=False)
    #: The latest responses sent, oldest first.
    pushes: deque[Push] = field(default_factory=lambda: deque(maxlen=PUSHES_KEPT), repr=False)
    #: When the stream ended (None while open).
    closed_at: float | None = None

    def subscribed(self, type_url: str) -> None:
        """Envoy asked for the type (it is listed, stale, until it is served and ACKed)."""
        if type_url not in self._types:
            self._types[type_url] = _TypeSync()
            self._registry._changed()

    def sent(self, type_url: str, version: str, nonce: str, generation: int | None = None) -> None:
        """A response of ``version`` went out with ``nonce``; it brings the Envoy to the
        cache's ``generation`` of its group."""
        self.pushes.append(Push(type_url, nonce, generation, self._registry._clock()))
        state = self._type(type_url)
        state.sent_version = version
        state.sent_nonce = nonce
        if state.rejected_version != version:
            state.rejected_version = None
        self._registry._changed()

    def already_has(self, type_url: str, version: str, generation: int | None = None) -> None:
        """A delta client reconnected holding every current resource: nothing to send.

        Counts as sent and ACKed, so a reconnect to a restarted hub shows synced.
        Only before anything was sent on this stream: afterwards ACKs tell.
        """
        state = self._type(type_url)
        if state.sent_version is None:
            state.sent_version = state.acked_version = version
            now = self._registry._clock()
            self.pushes.append(Push(type_url, "", generation, now, now))
            self._registry._changed()

    def acked(self, type_url: str, version: str, nonce: str = "") -> None:
        self._answered(type_url, nonce, None)
        state = self._type(type_url)
        state.acked_version = version
        if state.rejected_version == version:
            state.rejected_version = None  # offered again after a NACK, and taken this time
        self._registry._changed()

    def nacked(self, type_url: str, version: str, nonce: str, message: str) -> None:
        self._answered(type_url, nonce, message)
        state = self._type(type_url)
        state.last_nack = Nack(version, nonce, message, self._registry._clock())
        state.rejected_version = version
        self._registry._changed()

    def evaluated(self, type_url: str, snapshot_version: str) -> None:
        """The stream has pushed whatever this snapshot version required for the type."""
        state = self._type(type_url)
        if state.evaluated_version != snapshot_version:
            state.evaluated_version = snapshot_version
            self._registry._changed()

    def status(self, current: Mapping[str, str]) -> ProxyStatus:
        """This stream's status against the group's current versions by type."""
        return ProxyStatus(
            stream_id=self.stream_id,
            node_id=self.node_id,
            group=self.group,
            protocol=self.protocol,
            connected_since=self.connected_since,
            types=tuple(
                _type_status(type_url, self._types[type_url], current.get(type_url))
                for type_url in _ordered(self._types)
            ),
        )

    def _answered(self, type_url: str, nonce: str, nack: str | None) -> None:
        """Envoy answered ``nonce``: that push, and the earlier unanswered ones of its type
        (superseded: Envoy answers only the latest it got), are answered now."""
        now = self._registry._clock()
        found = False
        for push in reversed(self.pushes):
            if push.type_url != type_url:
                continue
            if push.nonce == nonce:
                found = True
            if found and push.answered_at is None:
                push.answered_at = now
                push.nack = nack if push.nonce == nonce else None

    def _type(self, type_url: str) -> _TypeSync:
        state = self._types.get(type_url)
        if state is None:
            state = self._types[type_url] = _TypeSync()
        return state


def _ordered(type_urls: Mapping[str, object]) -> Iterator[str]:
    yield from (t for t in ORDER if t in type_urls)
    yield from sorted(t for t in type_urls if t not in ORDER)


def _type_status(type_url: str, state: _TypeSync, current: str | None) -> TypeStatus:
    if state.rejected_version is not None:
        sync = SyncState.NACKED
    elif (
        current is not None
        and state.sent_version is not None
        and state.acked_version == state.sent_version
        and state.evaluated_version == current
    ):
        sync = SyncState.SYNCED
    else:
        sync = SyncState.STALE
    return TypeStatus(
        type_url=type_url,
        state=sync,
        snapshot_version=current,
        sent_version=state.sent_version,
        sent_nonce=state.sent_nonce,
        acked_version=state.acked_version,
        last_nack=state.last_nack,
    )


class SyncRegistry:
    """Every open ADS stream and its per-type sync state.

    ``snapshot_versions(group)`` gives the current version of each type for a group
    (normally ``SnapshotCache.snapshot_versions``); statuses are computed against it when
    asked for, so recording a send or an ACK stays O(1).
    """

    def __init__(
        self,
        snapshot_versions: SnapshotVersions | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot_versions = snapshot_versions
        self._clock = clock
        self._streams: dict[int, StreamSync] = {}
        self._closed: deque[StreamSync] = deque(maxlen=CLOSED_KEPT)
        self._ids = itertools.count(1)
        self._refused: OrderedDict[tuple[str, str, str, str], RefusedNode] = OrderedDict()
        #: When each (peer, reason) was last logged: node ids are the client's to choose.
        self._logged: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._waiters: asyncio.Event | None = None

    def open(self, node_id: str, group: str, protocol: str) -> StreamSync:
        stream = StreamSync(
            stream_id=next(self._ids),
            node_id=node_id,
            group=group,
            protocol=protocol,
            connected_since=self._clock(),
            _registry=self,
        )
        self._streams[stream.stream_id] = stream
        self._changed()
        return stream

    def admitted(self, stream: StreamSync) -> None:
        """The stream is served: its node, refused before (say, before its cluster
        joined), is no longer shown as refused."""
        for key in [k for k in self._refused if k[1:3] == (stream.node_id, stream.group)]:
            del self._refused[key]

    def close(self, stream: StreamSync) -> None:
        if self._streams.pop(stream.stream_id, None) is not None:
            stream.closed_at = self._clock()
            self._closed.append(stream)
            self._changed()

    def closed(self) -> list[StreamSync]:
        """The most recently closed streams (:data:`CLOSED_KEPT`), with their pushes:
        ``fedctl trace`` tells an Envoy that went away before it ACKed a change."""
        return list(self._closed)

    def __len__(self) -> int:
        return len(self._streams)

    def streams(self) -> list[StreamSync]:
        """Every open stream (its push history included)."""
        return list(self._streams.values())

    def refuse(
        self, peer: str, node_id: str, group: str, reason: str, code: str, message: str
    ) -> bool:
        """Record a refused stream. True when the caller should log it: the first refusal
        of this peer for this reason in :data:`REFUSAL_LOG_EVERY` seconds (a client
        retrying in a loop, whatever node ids it makes up, is logged once in a while).
        The most recent :data:`REFUSED_KEPT` are kept, for :meth:`refused`."""
        key = (peer, node_id, group, reason)
        now = self._clock()
        last = self._logged.get((peer, reason))
        log_it = last is None or now - last >= REFUSAL_LOG_EVERY
        if log_it:
            self._logged[(peer, reason)] = now
            self._logged.move_to_end((peer, reason))
            while len(self._logged) > REFUSED_KEPT:
                self._logged.popitem(last=False)
        entry = self._refused.get(key)
        if entry is not None:
            entry.count += 1
            entry.last_at = now
            entry.message = message
            self._refused.move_to_end(key)
            return log_it
        self._refused[key] = RefusedNode(peer, node_id, group, reason, code, message, now, now)
        while len(self._refused) > REFUSED_KEPT:
            self._refused.popitem(last=False)
        return log_it

    def refused(self, within: float = REFUSED_SHOWN_FOR) -> list[RefusedNode]:
        """Nodes refused in the last ``within`` seconds, by group and node id."""
        since = self._clock() - within
        recent = [r for r in self._refused.values() if r.last_at >= since]
        return sorted(recent, key=lambda r: (r.group, r.node_id, r.reason))

    def snapshot_versions(self, group: str) -> Mapping[str, str]:
        """The current versions of the group's snapshot, by type ({} when unknown)."""
        return {} if self._snapshot_versions is None else self._snapshot_versions(group)

    def list(self, group: str | None = None) -> list[ProxyStatus]:
        """Every open stream (of ``group``, when given), by group, node id and stream id."""
        versions: dict[str, Mapping[str, str]] = {}
        statuses = []
        for stream in self._streams.values():
            if group is not None and stream.group != group:
                continue
            if stream.group not in versions:
                versions[stream.group] = self.snapshot_versions(stream.group)
            statuses.append(stream.status(versions[stream.group]))
        return sorted(statuses, key=lambda s: (s.group, s.node_id, s.stream_id))

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true, re-checking it after every recorded change.

        For the hub (a Gateway is Programmed once its Envoys ACK) and for tests; bound it
        with ``asyncio.timeout``.
        """
        while not predicate():
            if self._waiters is None:
                self._waiters = asyncio.Event()
            await self._waiters.wait()

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, None
        if waiters is not None:
            waiters.set()
