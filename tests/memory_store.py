"""An in-memory registry with the Redis store's semantics, for tests (a test double: it
ships with the tests, not with the product).

Unit tests of the watcher, the agent and the hub use :class:`MemoryRegistry`
instead of a redis-server: ``registry.writer("a")`` is a
:class:`~federation.registry.store.RegistryWriter` for cluster ``a`` and
``registry.reader()`` a :class:`~federation.registry.store.RegistryReader`,
all sharing one state. It passes the same contract tests as the Redis store
(tests/integration/test_registry_contract.py), so what a test proves with it
holds against Redis.

Like Redis it has per-stream ids ``<ms>-<seq>`` (``ms`` from the injected
clock: with a clock that stands still, ids differ by ``seq`` only), reads
that block until an entry arrives, approximate trimming to ``maxlen`` that
records the newest removed id, and leases that expire by the injected clock.
Unlike Redis it never fails, and it adds test helpers that simulate what goes
wrong in production: :meth:`MemoryRegistry.flush` (data loss),
:meth:`MemoryRegistry.trim` (a reader falling behind) and
:meth:`MemoryRegistry.put_raw` (a garbage record).

It is meant for one event loop thread; blocked reads of any loop are woken.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.errors import InvalidInputError
from federation.registry import keys
from federation.registry.kinds import Record, RecordRef, encode_record, parse_field, ref_of
from federation.registry.records import ClusterRecord, InvalidRecordError, encode_cluster
from federation.registry.store import (
    START,
    ClusterSnapshot,
    Op,
    RegistryUnavailableError,
    StreamEntry,
    StreamState,
    parse_id,
)

_Id = tuple[int, int]


def _format(entry_id: _Id) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def _parse_position(position: str) -> _Id:
    try:
        ms, seq = parse_id(position)
    except ValueError as err:
        # Redis refuses a bad id with an error reply; the Redis store raises this too.
        raise RegistryUnavailableError(f"invalid stream id {position!r}") from err
    if ms < 0 or seq < 0:
        raise RegistryUnavailableError(f"invalid stream id {position!r}")
    return ms, seq


@dataclass
class _Stream:
    """One cluster's stream: entries in id order, like a Redis stream."""

    ids: list[_Id] = field(default_factory=list)
    entries: list[StreamEntry] = field(default_factory=list)
    last_id: _Id = (0, 0)
    max_deleted: _Id = (0, 0)

    def drop_oldest(self, n: int) -> None:
        if n <= 0:
            return
        n = min(n, len(self.ids))
        self.max_deleted = max(self.max_deleted, self.ids[n - 1])
        del self.ids[:n]
        del self.entries[:n]

    def after(self, position: _Id, count: int) -> list[StreamEntry]:
        start = bisect.bisect_right(self.ids, position)
        return self.entries[start : start + count]


@dataclass
class _Lease:
    token: str
    expires_at: float


class MemoryRegistry:
    """The shared state behind :class:`MemoryWriter` and :class:`MemoryReader`."""

    def __init__(
        self,
        *,
        maxlen: int = keys.STREAM_MAXLEN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``maxlen``: streams keep at least this many entries (see ``_append``).

        ``clock`` (seconds) times leases and makes stream ids; tests pass a
        fake one and advance it to expire leases without waiting.
        """
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, not {maxlen}")
        self.maxlen = maxlen
        self.clock = clock
        self._members: set[str] = set()
        #: Per cluster: record field -> bytes (the Redis ``records`` hash).
        self._records: dict[str, dict[str, bytes]] = {}
        self._cluster_records: dict[str, bytes] = {}
        self._streams: dict[str, _Stream] = {}
        self._leases: dict[str, _Lease] = {}
        self._waiters: set[asyncio.Future[None]] = set()

    # --- the stores -----------------------------------------------------------

    def writer(self, cluster: str) -> MemoryWriter:
        return MemoryWriter(self, cluster)

    def reader(self) -> MemoryReader:
        return MemoryReader(self)

    # --- test helpers ---------------------------------------------------------

    def flush(self) -> None:
        """Lose everything, like FLUSHALL or a restart without persistence.

        Streams restart from scratch: the next id of a stream depends only on
        the clock again, so with a clock that has not moved, new ids are lower
        than old ones (a stream "going backwards", as after a failover).
        Blocked reads stay blocked, as in Redis.
        """
        self._members.clear()
        self._records.clear()
        self._cluster_records.clear()
        self._streams.clear()
        self._leases.clear()

    def trim(self, cluster: str, keep: int) -> None:
        """Trim ``cluster``'s stream to exactly its ``keep`` newest entries (XTRIM MAXLEN =)."""
        stream = self._streams.get(cluster)
        if stream is not None:
            stream.drop_oldest(len(stream.ids) - max(keep, 0))

    def put_raw(self, cluster: str, field: str, data: bytes) -> None:
        """Store ``data`` under the record field ``field`` and append its UPSERT, unchecked.

        Simulates a buggy or hostile writer: readers must cope with garbage. A field
        that names no record is appended as the Redis store would report its entry:
        as a RESYNC.
        """
        self._records.setdefault(cluster, {})[field] = data
        try:
            ref: RecordRef | None = parse_field(field)
        except InvalidRecordError:
            ref = None
        if ref is None:
            self._append(cluster, Op.RESYNC)
        else:
            self._append(cluster, Op.UPSERT, ref, data)

    @property
    def blocked_readers(self) -> int:
        """Reads waiting for an entry right now (tests wait for a read to block)."""
        return sum(1 for w in self._waiters if not w.done())

    # --- what the stores share ------------------------------------------------

    def _next_id(self, stream: _Stream) -> _Id:
        # Redis's rule for XADD *: the clock's millisecond, or the last id's
        # millisecond with the next sequence when the clock has not passed it.
        now_ms = int(self.clock() * 1000)
        last_ms, last_seq = stream.last_id
        if now_ms > last_ms:
            return now_ms, 0
        return last_ms, last_seq + 1

    def _append(
        self, cluster: str, op: Op, ref: RecordRef | None = None, record: bytes | None = None
    ) -> str:
        stream = self._streams.setdefault(cluster, _Stream())
        entry_id = self._next_id(stream)
        stream.last_id = entry_id
        stream.ids.append(entry_id)
        stream.entries.append(StreamEntry(cluster, _format(entry_id), op, ref, record))
        # Approximate like XADD MAXLEN ~: trim in chunks once the stream is a
        # tenth over maxlen, never below maxlen; readers must not rely on more.
        if len(stream.ids) > self.maxlen + self.maxlen // 10:
            stream.drop_oldest(len(stream.ids) - self.maxlen)
        self._wake()
        return _format(entry_id)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if waiter.done():
                continue
            loop = waiter.get_loop()
            if loop is _running_loop():
                waiter.set_result(None)
            else:
                loop.call_soon_threadsafe(_set_if_pending, waiter)

    async def _wait_for_append(self, timeout: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    def _lease_live(self, cluster: str) -> bool:
        lease = self._leases.get(cluster)
        if lease is None:
            return False
        if self.clock() >= lease.expires_at:
            del self._leases[cluster]
            return False
        return True


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class MemoryWriter:
    """Cluster ``cluster``'s writer on a :class:`MemoryRegistry`."""

    def __init__(self, registry: MemoryRegistry, cluster: str) -> None:
        self._registry = registry
        self._cluster = cluster

    @property
    def cluster(self) -> str:
        return self._cluster

    def _own(self, what: str, cluster: str) -> None:
        if cluster != self._cluster:  # as RedisWriter
            raise InvalidInputError(
                f"writer of cluster {self._cluster!r} cannot store {what} of cluster {cluster!r}"
            )

    async def join(self, record: ClusterRecord) -> None:
        self._own("the cluster record", record.cluster)
        reg = self._registry
        reg._members.add(self._cluster)
        reg._cluster_records[self._cluster] = encode_cluster(record)

    async def publish(self, record: Record) -> str:
        ref = ref_of(record)
        self._own(f"{ref.kind} {ref.namespace}/{ref.name}", record.cluster)
        data = encode_record(record)
        self._registry._records.setdefault(self._cluster, {})[ref.field] = data
        return self._registry._append(self._cluster, Op.UPSERT, ref, data)

    async def withdraw(self, ref: RecordRef) -> str | None:
        records = self._registry._records.get(self._cluster, {})
        if ref.field not in records:
            return None
        del records[ref.field]
        return self._registry._append(self._cluster, Op.DELETE, ref)

    async def replace_all(self, records: Sequence[Record], record: ClusterRecord) -> str:
        self._own("the cluster record", record.cluster)
        stored: dict[str, bytes] = {}
        for rec in records:
            ref = ref_of(rec)
            self._own(f"{ref.kind} {ref.namespace}/{ref.name}", rec.cluster)
            stored[ref.field] = encode_record(rec)
        reg = self._registry
        reg._records[self._cluster] = stored
        reg._cluster_records[self._cluster] = encode_cluster(record)
        reg._members.add(self._cluster)
        return reg._append(self._cluster, Op.RESYNC)

    async def renew_lease(self, ttl_ms: int, token: str) -> bool:
        if ttl_ms <= 0:  # Redis refuses SET PX 0 and the Redis store raises this
            raise RegistryUnavailableError(f"invalid lease ttl {ttl_ms} ms")
        reg = self._registry
        reg._leases[self._cluster] = _Lease(token, reg.clock() + ttl_ms / 1000)
        return self._cluster in reg._cluster_records

    async def release_lease(self) -> None:
        self._registry._leases.pop(self._cluster, None)

    async def close(self) -> None:
        pass


class MemoryReader:
    """A reader of every cluster on a :class:`MemoryRegistry`."""

    def __init__(self, registry: MemoryRegistry) -> None:
        self._registry = registry

    async def members(self) -> set[str]:
        return set(self._registry._members)

    async def snapshot(self, cluster: str) -> ClusterSnapshot:
        reg = self._registry
        stream = reg._streams.get(cluster)
        # The last entry's id, as the Redis store's XREVRANGE gives it.
        position = _format(stream.ids[-1]) if stream and stream.ids else START
        return ClusterSnapshot(
            cluster=cluster,
            records=dict(reg._records.get(cluster, {})),
            record=reg._cluster_records.get(cluster),
            position=position,
        )

    def _collect(self, positions: Mapping[str, _Id], count: int) -> list[StreamEntry]:
        entries: list[StreamEntry] = []
        for cluster, position in positions.items():
            stream = self._registry._streams.get(cluster)
            if stream is not None:
                entries.extend(stream.after(position, count))
        return entries

    async def read(
        self, positions: Mapping[str, str], block_ms: int, count: int = 1000
    ) -> list[StreamEntry]:
        if not positions:
            await asyncio.sleep(block_ms / 1000)
            return []
        parsed = {c: _parse_position(p) for c, p in positions.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while True:
            entries = self._collect(parsed, count)
            remaining = deadline - loop.time()
            if entries or remaining <= 0:
                return entries
            await self._registry._wait_for_append(remaining)

    async def stream_states(self, clusters: Iterable[str]) -> dict[str, StreamState]:
        states: dict[str, StreamState] = {}
        for cluster in clusters:
            stream = self._registry._streams.get(cluster)
            if stream is None:
                states[cluster] = StreamState(exists=False)
            else:
                states[cluster] = StreamState(
                    exists=True,
                    last_id=_format(stream.last_id),
                    max_deleted_id=_format(stream.max_deleted),
                )
        return states

    async def live_leases(self, clusters: Iterable[str]) -> set[str]:
        return {c for c in clusters if self._registry._lease_live(c)}

    async def cluster_records(self, clusters: Iterable[str]) -> dict[str, bytes | None]:
        return {c: self._registry._cluster_records.get(c) for c in clusters}

    async def close(self) -> None:
        pass


class FlakyReader:
    """A memory reader whose reads fail while ``failing`` (the registry cut off); its
    reads block at most 20 ms."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def read(self, positions: Any, block_ms: int, count: int = 1000) -> Any:
        if self.failing:
            raise RegistryUnavailableError("registry read failed: cut off")
        return await self._inner.read(positions, min(block_ms, 20), count)
