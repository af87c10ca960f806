"""The Redis registry store: :class:`RedisWriter` and :class:`RedisReader`.

The production implementation of the :mod:`federation.registry.store`
Protocols, on ``redis.asyncio``. A cluster's agent writes its own keys through
a :class:`RedisWriter` (with its own ACL user, see :mod:`acl`); every agent and
every hub replica reads all clusters through a :class:`RedisReader`, wrapped
by the registry watcher. The key layout is in :mod:`keys`.

What the Protocols promise and how this store keeps it:

* A change of ``records`` and its stream entry are one MULTI/EXEC, and a
  snapshot reads ``records`` with the stream's last id in one MULTI/EXEC, so
  tailing from a snapshot's position sees every later change exactly once.
  Every transaction touches one cluster's keys only (one hash slot); the
  members set is added to before, on its own: it only ever grows.
* ``withdraw`` of an absent key appends nothing: the hash is WATCHed, the
  field checked, and the MULTI/EXEC retried if the hash changed meanwhile.
* Every redis-py or socket error is raised as
  :class:`~federation.registry.store.RegistryUnavailableError`, chained to
  the original (an ACL refusal included); a TLS misconfiguration as its
  subclass :class:`~federation.registry.store.RegistryTlsError`.

Clients must return bytes (``decode_responses=False``): records are handed
to readers raw, and only ids, ops and keys are decoded here. Needs Redis 7
(XINFO STREAM fields used below; ACL selectors in :mod:`acl`). A blocking
``read`` holds a connection for up to ``block_ms``, so a client's
``socket_timeout`` (:data:`SOCKET_TIMEOUT` by default) must be longer than the
longest block.

Nothing here retries. Clients made by ``from_url`` do not either (redis-py's
default there), so after a Redis restart the first call on a pooled
connection fails with RegistryUnavailableError and the next one reconnects:
callers (the agent, the watcher) retry with backoff. A transaction whose
reply was lost may have been applied, and retrying it appends its entry
again; readers apply level-triggered records idempotently, so that is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import CrossSlotTransactionError, ResponseError, WatchError
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

from federation.errors import InvalidInputError
from federation.registry import doorbell, keys
from federation.registry.kinds import Kind, Record, RecordRef, encode_record, ref_of
from federation.registry.records import ClusterRecord, encode_cluster
from federation.registry.replies import xread_streams
from federation.registry.store import (
    START,
    ClusterSnapshot,
    Op,
    RegistryUnavailableError,
    StreamEntry,
    StreamState,
    parse_id,
)
from federation.registry.tls_errors import refusal_hint, tls_failure
from federation.registry.topology import (
    CLIENT_ERRORS,
    RegistryClient,
    client_from_url,
    connection_kwargs,
)
from federation.retry import Backoff, retry_call

log = logging.getLogger(__name__)

#: WATCH retries of ``withdraw`` before giving up. Only the cluster's own agent
#: writes its hash, so a conflict means two writers for one cluster: retrying
#: forever would hide that.
_WATCH_RETRIES = 16

#: Largest sequence number of a stream id (Redis ids are two unsigned 64-bit ints).
_MAX_SEQ = 2**64 - 1


@contextlib.contextmanager
def unavailable(what: str, client: RegistryClient | None = None) -> Iterator[None]:
    """Translate redis and socket errors into RegistryUnavailableError.

    A TLS misconfiguration (a certificate that does not verify, see
    :mod:`~federation.registry.tls_errors`) becomes its subclass RegistryTlsError,
    with a message naming ``client``'s address.
    """
    try:
        yield
    except CrossSlotTransactionError:
        raise  # a transaction spanning clusters' slots is a bug here, not an outage
    except CLIENT_ERRORS as err:
        # builtins ConnectionError and TimeoutError (asyncio's too) are OSErrors.
        tls = tls_failure(err, client)
        if tls is not None:
            raise tls from err
        hint = refusal_hint(err, client)
        raise RegistryUnavailableError(f"registry {what} failed: {err}{hint}") from err


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _check_bytes_client(client: RegistryClient) -> None:
    if connection_kwargs(client).get("decode_responses"):
        raise ValueError("the registry needs a Redis client with decode_responses=False")


def _unique(clusters: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(clusters))


def _format_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def _before(entry_id: str) -> str:
    """The largest id a stream could hold before ``entry_id``."""
    ms, seq = parse_id(entry_id)
    if seq > 0:
        return _format_id(ms, seq - 1)
    return _format_id(ms - 1, _MAX_SEQ) if ms > 0 else START


def _max_id(*ids: str) -> str:
    return max(ids, key=parse_id)


def _stream_entry(cluster: str, entry_id: bytes | str, fields: Mapping[Any, Any]) -> StreamEntry:
    """A stream entry from its raw fields.

    An entry this store cannot interpret (unknown op or kind, upsert without a
    record, undecodable key) is reported as RESYNC: the reader then reloads the
    cluster from a snapshot, which is always correct for level-triggered
    records, instead of crashing or silently missing a change.
    """
    eid = _text(entry_id)
    raw = {_raw(k): _raw(v) for k, v in fields.items()}
    try:
        op = Op(raw[b"op"].decode())
        if op is Op.RESYNC:
            return StreamEntry(cluster, eid, op)
        kind = Kind(raw[b"kind"].decode())
        namespace, sep, name = raw[b"key"].decode().partition("/")
    except (KeyError, ValueError, UnicodeDecodeError):
        log.warning("cluster %s: stream entry %s is malformed; treating it as resync", cluster, eid)
        return StreamEntry(cluster, eid, Op.RESYNC)
    record = raw.get(b"record")
    if not sep or not namespace or not name or (op is Op.UPSERT and record is None):
        log.warning(
            "cluster %s: stream entry %s lacks key or record; treating it as resync", cluster, eid
        )
        return StreamEntry(cluster, eid, Op.RESYNC)
    ref = RecordRef(kind, namespace, name)
    return StreamEntry(cluster, eid, op, ref, record if op is Op.UPSERT else None)


def _entries(response: Any, positions: Mapping[str, str]) -> list[StreamEntry]:
    """The stream entries of an XREAD reply over the streams of ``positions``' clusters."""
    clusters = {keys.stream(c): c for c in positions}
    entries: list[StreamEntry] = []
    for name, items in xread_streams(response):
        cluster = clusters[_text(name)]
        entries.extend(
            _stream_entry(cluster, eid, fields or {}) for eid, fields in items if eid is not None
        )
    return entries


def _stream_state(info: Mapping[Any, Any]) -> StreamState:
    """A StreamState from XINFO STREAM.

    Redis updates ``max-deleted-entry-id`` only on XDEL, not when XADD MAXLEN
    or XTRIM trims (checked on 7.0). Trimming shows instead as
    ``entries-added`` exceeding ``length``, with every removed entry older
    than ``recorded-first-entry-id``; the id just before that one is then a
    safe bound for the newest removed id. It can be newer than the real one
    (by a millisecond boundary), which costs a reader at most one needless
    reload, never a missed change.
    """
    fields = {_text(k): v for k, v in info.items()}
    try:
        last_id = _text(fields["last-generated-id"])
        deleted = _text(fields["max-deleted-entry-id"])
        added = int(fields["entries-added"])
        length = int(fields["length"])
        first = _text(fields["recorded-first-entry-id"])
    except KeyError as err:
        raise RegistryUnavailableError(
            f"XINFO STREAM lacks {err}: the registry needs Redis 7 or newer"
        ) from err
    if added > length:
        trimmed = last_id if length == 0 else _before(first)
        deleted = _max_id(deleted, trimmed)
    return StreamState(exists=True, last_id=last_id, max_deleted_id=deleted)


#: Counter answers a writer remembers (the most recent), to notice one answered twice.
_ANSWERS_KEPT = 4096


class _Counted:
    """One transaction's check of the cluster's counter (see :class:`RedisWriter`)."""

    def __init__(self, writer: RedisWriter, high_at_start: int | None) -> None:
        self._writer = writer
        self._start = high_at_start

    def answer(self, raw: Any, *, baseline: bool = False) -> None:
        """The counter this transaction was answered; a ``baseline`` (everything was
        written again) is the new mark, whatever came before it."""
        seq, writer = int(raw), self._writer
        if baseline:
            writer._high, writer._answers = seq, {seq}
            return
        if self._start is not None and seq <= self._start:
            writer._lost_writes(f"counter {seq}, at least {self._start + 1} expected")
        elif seq in writer._answers:
            # Two transactions answered one value: the counter went back in between
            # (transactions that overlapped a failover, which the first check misses).
            writer._lost_writes(f"counter {seq} answered twice")
        writer._answers.add(seq)
        writer._high = seq if writer._high is None else max(writer._high, seq)
        if len(writer._answers) > _ANSWERS_KEPT:
            floor = writer._high - _ANSWERS_KEPT // 2
            writer._answers = {a for a in writer._answers if a > floor}


class RedisWriter:
    """One cluster's agent writing its own keys (a :class:`~store.RegistryWriter`).

    Every transaction also increments the cluster's counter (:func:`keys.seq`), and
    the writer remembers the highest value it was answered. The counter never goes
    down, so a transaction started after an answer of ``n`` must be answered more than
    ``n`` (whatever runs concurrently), and the counter is at least the highest answer.
    Anything less means writes we were told were done are gone: a failover promoted a
    replica that had not received them (Redis replicates asynchronously).
    :meth:`renew_lease` then says the registry lost the cluster's data, and the agent
    republishes everything, as after a restart.
    """

    def __init__(self, client: RegistryClient, cluster: str, *, owns_client: bool = False) -> None:
        """Write ``cluster``'s keys through ``client``.

        ``close`` closes the client only if ``owns_client`` (as with
        :meth:`from_url`); a shared client stays open for its owner.
        """
        _check_bytes_client(client)
        self._client = client
        self._cluster = cluster
        self._owns_client = owns_client
        self._records = keys.records(cluster)
        self._stream = keys.stream(cluster)
        self._seq_key = keys.seq(cluster)
        #: On a Redis Cluster, readers wait on the doorbell, not on our stream.
        self._cluster_client = client if isinstance(client, RedisCluster) else None
        #: The highest counter a transaction of ours was answered (None: none yet).
        self._high: int | None = None
        #: The counter values we were answered (recent ones): each is answered once.
        self._answers: set[int] = set()
        #: Set when the counter showed lost writes; cleared by a replace_all that
        #: succeeded with no new loss seen meanwhile.
        self._lost = False
        self._losses = 0

    @classmethod
    def from_url(cls, url: str, cluster: str, **options: Any) -> RedisWriter:
        """A writer with its own client, e.g. ``redis://agent-a:secret@127.0.0.1:6379/0``.

        ``options`` go to ``redis.asyncio.Redis.from_url`` (TLS files, timeouts).
        """
        return cls(client_from_url(url, options), cluster, owns_client=True)

    @property
    def cluster(self) -> str:
        return self._cluster

    def _own(self, what: str, cluster: str) -> None:
        # Key permissions stop an agent writing another cluster's keys; this
        # stops it writing a record that claims to be another cluster's.
        if cluster != self._cluster:
            raise InvalidInputError(
                f"writer of cluster {self._cluster!r} cannot store {what} of cluster {cluster!r}"
            )

    def _append(
        self,
        pipe: Pipeline | ClusterPipeline,
        op: Op,
        ref: RecordRef | None = None,
        record: bytes | None = None,
    ) -> None:
        fields: dict[FieldT, EncodableT] = {"op": op.value}
        if ref is not None:
            fields["kind"] = ref.kind.value
            fields["key"] = f"{ref.namespace}/{ref.name}"
        if record is not None:
            fields["record"] = record
        pipe.xadd(self._stream, fields, maxlen=keys.STREAM_MAXLEN, approximate=True)

    @contextlib.asynccontextmanager
    async def _writing(self, what: str) -> AsyncIterator[_Counted]:
        """One transaction of ours: errors become RegistryUnavailableError; the caller
        gives the counter it was answered to the yielded :class:`_Counted`."""
        counted = _Counted(self, self._high)
        with unavailable(what, self._client):
            yield counted

    def _lost_writes(self, why: str) -> None:
        self._losses += 1
        if not self._lost:
            log.warning(
                "registry lost writes of cluster %s (%s): a failover to a replica that had "
                "not received them? republishing at the next lease renewal",
                self._cluster,
                why,
            )
        self._lost = True

    async def _ring(self) -> None:
        if self._cluster_client is not None:
            await doorbell.ring(self._cluster_client, self._cluster)

    async def _add_member(self) -> None:
        # Not in the cluster's transactions: the members key has a slot of its own.
        # It only ever grows, so adding before the transaction is always safe.
        await self._client.sadd(keys.MEMBERS, self._cluster)

    async def join(self, record: ClusterRecord) -> None:
        self._own("the cluster record", record.cluster)
        with unavailable(f"join of {self._cluster}", self._client):
            await self._add_member()
            await self._client.set(keys.cluster_record(self._cluster), encode_cluster(record))

    async def publish(self, record: Record) -> str:
        ref = ref_of(record)
        self._own(f"{ref.kind} {ref.namespace}/{ref.name}", record.cluster)
        data = encode_record(record)
        async with self._writing(f"publish of {self._cluster}/{ref.field}") as counted:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._records, ref.field, data)
                self._append(pipe, Op.UPSERT, ref, data)
                pipe.incr(self._seq_key)
                _, entry_id, seq = await pipe.execute()
            counted.answer(seq)
        await self._ring()
        return _text(entry_id)

    async def withdraw(self, ref: RecordRef) -> str | None:
        key = ref.field
        async with (
            self._writing(f"withdraw of {self._cluster}/{key}") as counted,
            self._client.pipeline(transaction=True) as pipe,
        ):

            async def attempt() -> str | None:
                # WATCH puts the pipeline in immediate mode until multi(): HEXISTS
                # runs now, and EXEC fails (WatchError) if the hash changed since.
                await pipe.watch(self._records)
                if not await pipe.hexists(self._records, key):
                    return None  # leaving the pipeline UNWATCHes
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hdel(self._records, key)
                self._append(pipe, Op.DELETE, ref)
                pipe.incr(self._seq_key)
                _, entry_id, seq = await pipe.execute()
                counted.answer(seq)
                return _text(entry_id)

            try:
                # Optimistic concurrency: a conflict is retried after a short backoff
                # (logged at debug level: it is no failure), a bounded number of times.
                entry_id = await retry_call(
                    "registry-withdraw",
                    attempt,
                    retry_if=lambda err: isinstance(err, WatchError),
                    backoff=Backoff(initial=0.001, maximum=0.05, jitter=0.005),
                    attempts=_WATCH_RETRIES,
                    logger=log,
                    level=lambda _: logging.DEBUG,
                )
            except WatchError:
                raise RegistryUnavailableError(
                    f"withdraw of {self._cluster}/{key}: the hash kept changing, or the "
                    f"connection kept failing ({_WATCH_RETRIES} attempts); is another "
                    f"writer using cluster {self._cluster!r}, or is the registry failing over?"
                ) from None
        if entry_id is not None:
            await self._ring()
        return entry_id

    async def replace_all(self, records: Sequence[Record], record: ClusterRecord) -> str:
        self._own("the cluster record", record.cluster)
        mapping: dict[FieldT, EncodableT] = {}
        for rec in records:
            ref = ref_of(rec)
            self._own(f"{ref.kind} {ref.namespace}/{ref.name}", rec.cluster)
            mapping[ref.field] = encode_record(rec)
        losses = self._losses
        async with self._writing(f"replace_all of {self._cluster}") as counted:
            await self._add_member()
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._records)
                if mapping:  # HSET with no fields is a syntax error
                    pipe.hset(self._records, mapping=mapping)
                pipe.set(keys.cluster_record(self._cluster), encode_cluster(record))
                self._append(pipe, Op.RESYNC)
                pipe.incr(self._seq_key)
                results = await pipe.execute()
            counted.answer(results[-1], baseline=True)
        if self._losses == losses:
            self._lost = False  # what was lost is in what this wrote
        await self._ring()
        return _text(results[-2])

    async def renew_lease(self, ttl_ms: int, token: str) -> bool:
        # The mark before sending: a transaction answered while this one is on its way
        # may have incremented the counter after this one read it.
        high = self._high
        with unavailable(f"lease renewal of {self._cluster}", self._client):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(keys.lease(self._cluster), token, px=ttl_ms)
                pipe.exists(keys.cluster_record(self._cluster))
                pipe.get(self._seq_key)
                _, exists, seq = await pipe.execute()
        if high is not None and (seq is None or int(seq) < high):
            self._lost_writes(f"counter {None if seq is None else int(seq)}, ours {high}")
        return bool(exists) and not self._lost

    async def release_lease(self) -> None:
        with unavailable(f"lease release of {self._cluster}", self._client):
            await self._client.delete(keys.lease(self._cluster))

    async def close(self) -> None:
        if self._owns_client:
            with unavailable("close", self._client):
                await self._client.aclose()


class RedisReader:
    """A reader of every cluster's keys (a :class:`~store.RegistryReader`).

    On a Redis Cluster no command spans slots: streams are read one XREAD each,
    pipelined per node, woken by the doorbell (:mod:`doorbell`); cluster records are
    read one GET each, pipelined the same way.
    """

    def __init__(self, client: RegistryClient, *, owns_client: bool = False) -> None:
        """Read through ``client``; ``close`` closes it only if ``owns_client``."""
        _check_bytes_client(client)
        self._client = client
        self._owns_client = owns_client
        self._doorbell = doorbell.DoorbellTail(client) if isinstance(client, RedisCluster) else None
        #: Clusters whose last per-stream read was cut at ``count``: read again at once.
        self._more: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisReader:
        """A reader with its own client; ``options`` go to ``Redis.from_url``."""
        return cls(client_from_url(url, options), owns_client=True)

    async def members(self) -> set[str]:
        with unavailable("members", self._client):
            raw = await self._client.smembers(keys.MEMBERS)
        return {_text(m) for m in raw}

    async def snapshot(self, cluster: str) -> ClusterSnapshot:
        with unavailable(f"snapshot of {cluster}", self._client):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.records(cluster))
                pipe.get(keys.cluster_record(cluster))
                # XINFO STREAM fails on a missing key; XREVRANGE returns [] instead.
                pipe.xrevrange(keys.stream(cluster), "+", "-", count=1)
                records, record, last = await pipe.execute()
        return ClusterSnapshot(
            cluster=cluster,
            # Field names of a garbage writer may not be UTF-8; the watcher
            # rejects the mangled key instead of this reader crashing.
            records={_raw(k).decode(errors="replace"): _raw(v) for k, v in (records or {}).items()},
            record=None if record is None else _raw(record),
            position=_text(last[0][0]) if last else START,
        )

    async def read(
        self, positions: Mapping[str, str], block_ms: int, count: int = 1000
    ) -> list[StreamEntry]:
        if not positions:
            # Nothing to wait on; sleeping keeps a caller's tail loop from spinning.
            await asyncio.sleep(block_ms / 1000)
            return []
        if self._doorbell is not None:
            return await self._read_per_slot(self._doorbell, positions, block_ms, count)
        streams: dict[KeyT, StreamIdT] = {keys.stream(c): p for c, p in positions.items()}
        with unavailable("read", self._client):
            # BLOCK 0 means "forever" to Redis; block_ms == 0 means "do not block" here.
            response = await self._client.xread(
                streams, count=count, block=block_ms if block_ms > 0 else None
            )
        return _entries(response, positions)

    async def _read_per_slot(
        self, bell: doorbell.DoorbellTail, positions: Mapping[str, str], block_ms: int, count: int
    ) -> list[StreamEntry]:
        """One XREAD per stream, pipelined per node: the streams that rang the doorbell,
        or every stream (see :meth:`doorbell.DoorbellTail.wait`)."""
        with unavailable("read", self._client):
            more = sorted(self._more & positions.keys())
            if more:
                return await self._read_streams(more, positions, count)
            while True:
                rang = await bell.wait(positions, block_ms)
                wanted = list(positions) if rang is None else sorted(rang)
                entries = await self._read_streams(wanted, positions, count)
                # The first wait only finds the doorbell's end: block once more.
                if entries or bell.waited or block_ms <= 0:
                    return entries

    async def _read_streams(
        self, clusters: list[str], positions: Mapping[str, str], count: int
    ) -> list[StreamEntry]:
        if not clusters:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for cluster in clusters:
                pipe.xread({keys.stream(cluster): positions[cluster]}, count=count)
            responses = await pipe.execute()
        entries: list[StreamEntry] = []
        for cluster, response in zip(clusters, responses, strict=True):
            read = _entries(response, positions)
            (self._more.add if len(read) >= count else self._more.discard)(cluster)
            entries.extend(read)
        return entries

    async def stream_states(self, clusters: Iterable[str]) -> dict[str, StreamState]:
        wanted = _unique(clusters)
        if not wanted:
            return {}
        with unavailable("stream states", self._client):
            async with self._client.pipeline(transaction=False) as pipe:
                for cluster in wanted:
                    pipe.xinfo_stream(keys.stream(cluster))
                results = await pipe.execute(raise_on_error=False)
        states: dict[str, StreamState] = {}
        for cluster, result in zip(wanted, results, strict=True):
            if isinstance(result, ResponseError) and "no such key" in str(result).lower():
                states[cluster] = StreamState(exists=False)
            elif isinstance(result, Exception):
                raise RegistryUnavailableError(
                    f"registry stream state of {cluster} failed: {result}"
                ) from result
            else:
                states[cluster] = _stream_state(result)
        return states

    async def live_leases(self, clusters: Iterable[str]) -> set[str]:
        wanted = _unique(clusters)
        if not wanted:
            return set()
        with unavailable("live leases", self._client):
            async with self._client.pipeline(transaction=False) as pipe:
                for cluster in wanted:
                    pipe.exists(keys.lease(cluster))
                results = await pipe.execute()
        return {c for c, n in zip(wanted, results, strict=True) if n}

    async def cluster_records(self, clusters: Iterable[str]) -> dict[str, bytes | None]:
        wanted = _unique(clusters)
        if not wanted:
            return {}  # MGET with no keys is a syntax error
        names = [keys.cluster_record(c) for c in wanted]
        with unavailable("cluster records", self._client):
            if self._doorbell is None:
                values = await self._client.mget(names)
            else:  # one slot per cluster: a GET each, pipelined per node
                async with self._client.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.get(name)
                    values = await pipe.execute()
        return {c: None if v is None else _raw(v) for c, v in zip(wanted, values, strict=True)}

    async def close(self) -> None:
        if self._owns_client:
            with unavailable("close", self._client):
                await self._client.aclose()
