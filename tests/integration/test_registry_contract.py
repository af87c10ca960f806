"""The registry store contract, run against both stores.

Every test runs twice: on :class:`MemoryRegistry` (with a fake clock) and on
the Redis store against a real redis-server (the session's ``redis_server``,
flushed before each test). What the watcher, the agent and the hub rely on is
asserted here once, so unit tests built on the memory store hold on Redis.
Waiting is done by polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Protocol, TypeVar

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from e2e.cluster import free_port
from e2e.redis_server import RedisServer
from e2e.redis_topologies import RedisClusterServers, RedisSentinelSet
from federation.errors import InvalidInputError
from federation.registry import doorbell, keys
from federation.registry import gatewayapi as g
from federation.registry import policies as p
from federation.registry.codec import from_json
from federation.registry.kinds import (
    Kind,
    Record,
    RecordRef,
    decode_record,
    encode_record,
    kind_of,
    ref_of,
)
from federation.registry.records import (
    ClusterRecord,
    ExportedService,
    ServicePort,
    ServiceType,
    encode_cluster,
    encode_service,
)
from federation.registry.redis_store import RedisReader, RedisWriter
from federation.registry.store import (
    START,
    Op,
    RegistryReader,
    RegistryUnavailableError,
    RegistryWriter,
    StreamEntry,
    parse_id,
)
from federation.registry.topology import client_from_url
from tests import samples
from tests.memory_store import MemoryRegistry

pytestmark = pytest.mark.integration

DEADLINE = 10.0
#: Long enough that a lease renewed with it is still live when checked.
LONG_TTL_MS = 60_000
#: Short enough for Redis to expire the lease while a test polls.
SHORT_TTL_MS = 200


def svc_ref(name: str) -> RecordRef:
    return RecordRef(Kind.SERVICE, "demo", name)


def entry_key(entry: StreamEntry) -> str | None:
    """``namespace/name`` of a stream entry's record (None for RESYNC)."""
    return None if entry.ref is None else f"{entry.ref.namespace}/{entry.ref.name}"


def service(cluster: str, name: str, generation: int = 1) -> ExportedService:
    return ExportedService(
        cluster=cluster,
        namespace="demo",
        name=name,
        type=ServiceType.CLUSTER_SET_IP,
        ports=(ServicePort("http", "TCP", 80),),
        created="2026-01-01T00:00:00Z",
        generation=generation,
    )


def cluster_record(cluster: str, epoch: str = "e1") -> ClusterRecord:
    return ClusterRecord(cluster=cluster, agent_version="test", last_full_sync=1.0, epoch=epoch)


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds or DEADLINE passes."""
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE}s waiting for {what}")
        await asyncio.sleep(0.02)


T = TypeVar("T")


async def retried(call: Callable[[], Awaitable[T]], within: float = DEADLINE) -> T:
    """``call``'s result, retried while the registry is unavailable (as callers do),
    for up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except RegistryUnavailableError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.02)


async def read_all(
    reader: RegistryReader, positions: dict[str, str], count: int = 1000
) -> list[StreamEntry]:
    """Read without blocking until nothing is left, advancing ``positions``."""
    seen: list[StreamEntry] = []
    while entries := await reader.read(positions, block_ms=0, count=count):
        for entry in entries:
            positions[entry.cluster] = entry.id
        seen.extend(entries)
    return seen


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backend(Protocol):
    """One store under test, with the test's view of its internals."""

    name: str

    def writer(self, cluster: str) -> RegistryWriter: ...
    def reader(self) -> RegistryReader: ...
    async def flush(self) -> None: ...
    async def trim(self, cluster: str, keep: int) -> None: ...
    async def put_raw(self, cluster: str, field: str, data: bytes) -> None: ...
    async def blocked_readers(self) -> int: ...
    def let_time_pass(self, ms: int) -> None: ...
    async def close(self) -> None: ...


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.registry = MemoryRegistry(clock=self.clock)

    def writer(self, cluster: str) -> RegistryWriter:
        return self.registry.writer(cluster)

    def reader(self) -> RegistryReader:
        return self.registry.reader()

    async def flush(self) -> None:
        self.registry.flush()

    async def trim(self, cluster: str, keep: int) -> None:
        self.registry.trim(cluster, keep)

    async def put_raw(self, cluster: str, field: str, data: bytes) -> None:
        self.registry.put_raw(cluster, field, data)

    async def blocked_readers(self) -> int:
        return self.registry.blocked_readers

    def let_time_pass(self, ms: int) -> None:
        self.clock.advance(ms / 1000)

    async def close(self) -> None:
        pass


class RedisBackend:
    """A real registry: one redis-server, a Redis Cluster or a sentinel set, by URL."""

    def __init__(self, name: str, registry: RedisServer | RedisClusterServers | RedisSentinelSet):
        self.name = name
        self.registry = registry
        self.admin = client_from_url(registry.admin_url, {})
        self._stores: list[RedisWriter | RedisReader] = []

    def writer(self, cluster: str) -> RegistryWriter:
        writer = RedisWriter.from_url(self.registry.admin_url, cluster)
        self._stores.append(writer)
        return writer

    def reader(self) -> RegistryReader:
        reader = RedisReader.from_url(self.registry.admin_url)
        self._stores.append(reader)
        return reader

    async def flush(self) -> None:
        if isinstance(self.admin, RedisCluster):
            await self.admin.flushall(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.admin.flushall()

    async def trim(self, cluster: str, keep: int) -> None:
        await self.admin.xtrim(keys.stream(cluster), maxlen=keep, approximate=False)

    async def put_raw(self, cluster: str, field: str, data: bytes) -> None:
        kind, _, key = field.partition("/")
        async with self.admin.pipeline(transaction=True) as pipe:
            pipe.hset(keys.records(cluster), field, data)
            entry = {"op": "upsert", "kind": kind, "key": key, "record": data}
            pipe.xadd(keys.stream(cluster), entry)  # type: ignore[arg-type]
            await pipe.execute()
        if isinstance(self.admin, RedisCluster):
            await doorbell.ring(self.admin, cluster)

    async def blocked_readers(self) -> int:
        blocked = 0
        for node in self.registry.nodes:
            if node.process is not None and node.process.running():
                client = node.async_admin_client()
                try:
                    blocked += int((await client.info("clients"))["blocked_clients"])
                finally:
                    await client.aclose()
        return blocked

    def let_time_pass(self, ms: int) -> None:
        pass  # Redis's own clock expires keys; tests poll for it

    async def close(self) -> None:
        for store in self._stores:
            await store.close()
        await self.admin.aclose()


#: The Redis registries every contract test also runs on (fixture name by backend).
REDIS_BACKENDS = {
    "redis": "redis_server",
    "redis-cluster": "redis_cluster",
    "redis-sentinel": "redis_sentinel",
}


@pytest.fixture(params=["memory", *REDIS_BACKENDS])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    store: MemoryBackend | RedisBackend
    if request.param == "memory":
        store = MemoryBackend()
    else:
        # Looked up here, not as an argument, so memory-only runs start no Redis.
        registry = request.getfixturevalue(REDIS_BACKENDS[request.param])
        store = RedisBackend(request.param, registry)
        await store.flush()
    try:
        yield store
    finally:
        await store.close()


# --- writes and snapshots -------------------------------------------------------


async def test_publish_withdraw_and_replace_all_show_in_snapshot(backend: Backend) -> None:
    writer, reader = backend.writer("a"), backend.reader()
    x1, y1 = service("a", "x"), service("a", "y")
    await writer.publish(x1)
    await writer.publish(y1)
    snap = await reader.snapshot("a")
    assert snap.cluster == "a"
    assert dict(snap.records) == {
        "service/demo/x": encode_service(x1),
        "service/demo/y": encode_service(y1),
    }
    assert snap.record is None  # published without joining

    assert await writer.withdraw(svc_ref("y")) is not None
    assert dict((await reader.snapshot("a")).records) == {"service/demo/x": encode_service(x1)}

    z1, rec = service("a", "z"), cluster_record("a", "e2")
    await writer.replace_all([z1], rec)
    snap = await reader.snapshot("a")
    assert dict(snap.records) == {"service/demo/z": encode_service(z1)}
    assert snap.record == encode_cluster(rec)

    await writer.replace_all([], rec)
    assert dict((await reader.snapshot("a")).records) == {}


@pytest.mark.parametrize("sample", samples.every_kind("a"), ids=lambda r: kind_of(r).value)
async def test_every_kind_is_stored_under_its_kind_and_named_in_the_stream(
    backend: Backend, sample: Record
) -> None:
    writer, reader = backend.writer("a"), backend.reader()
    ref = ref_of(sample)
    position = (await reader.snapshot("a")).position
    await writer.publish(sample)
    snap = await reader.snapshot("a")
    assert dict(snap.records) == {f"{ref.kind}/{ref.namespace}/{ref.name}": encode_record(sample)}
    assert decode_record(ref.kind, snap.records[ref.field]) == sample
    (entry,) = await reader.read({"a": position}, block_ms=0)
    assert (entry.op, entry.ref, entry.record) == (Op.UPSERT, ref, encode_record(sample))
    assert await writer.withdraw(ref) is not None
    (gone,) = await reader.read({"a": entry.id}, block_ms=0)
    assert (gone.op, gone.ref) == (Op.DELETE, ref)


async def test_records_of_different_kinds_with_one_name_are_distinct(backend: Backend) -> None:
    writer, reader = backend.writer("a"), backend.reader()
    same: list[Record] = [samples.service("a", "x"), samples.local_service("a", "x")]
    await writer.replace_all(same, cluster_record("a"))
    snap = await reader.snapshot("a")
    assert set(snap.records) == {"service/demo/x", "localservice/demo/x"}
    assert await writer.withdraw(RecordRef(Kind.LOCAL_SERVICE, "demo", "x")) is not None
    assert set((await reader.snapshot("a")).records) == {"service/demo/x"}


async def test_a_gateways_certificate_verdicts_go_through_the_store_and_change_it(
    backend: Backend,
) -> None:
    """A Gateway record's ``certificateChecks`` (the agent's verdicts on its Secrets,
    never their content) are stored and streamed with it; a changed verdict is a new
    upsert of the record, and a record without them reads as having none."""
    writer, reader = backend.writer("a"), backend.reader()
    missing = g.CertificateCheck("demo", "cert", False, "Secret demo/cert does not exist")
    before = replace(samples.gateway("a"), certificate_checks=(missing,))
    ref = ref_of(before)
    position = (await reader.snapshot("a")).position
    await writer.publish(before)
    fixed = replace(before, certificate_checks=(g.CertificateCheck("demo", "cert", True),))
    await writer.publish(fixed)
    entries = await reader.read({"a": position}, block_ms=0)
    assert [(e.op, e.ref) for e in entries] == [(Op.UPSERT, ref), (Op.UPSERT, ref)]
    assert [decode_record(Kind.GATEWAY, e.record or b"") for e in entries] == [before, fixed]
    stored = (await reader.snapshot("a")).records[ref.field]
    assert decode_record(Kind.GATEWAY, stored) == fixed
    assert json.loads(stored)["certificateChecks"] == [
        {"namespace": "demo", "name": "cert", "usable": True}
    ]
    # What an agent without the checks publishes: no field, read as no verdicts.
    legacy = samples.gateway("a")
    await writer.publish(legacy)
    stored = (await reader.snapshot("a")).records[ref.field]
    assert b"certificateChecks" not in stored
    decoded = decode_record(Kind.GATEWAY, stored)
    assert isinstance(decoded, g.GatewayRecord) and decoded.certificate_checks == ()


async def test_a_security_policys_secret_verdicts_go_through_the_store(backend: Backend) -> None:
    """A SecurityPolicy with basic auth and API keys is stored with the agent's verdict
    on each Secret it names (``secretChecks``) and the Secrets' names: nothing else of
    them, since the credentials stay in their cluster."""
    writer, reader = backend.writer("a"), backend.reader()
    spec = from_json(
        p.SecurityPolicySpec,
        {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
            "basicAuth": {"users": {"name": "users"}, "forwardUsernameHeader": "x-user"},
            "apiKeyAuth": {
                "credentialRefs": [{"name": "keys"}],
                "extractFrom": [{"headers": ["x-api-key"]}, {"cookies": ["key"]}],
                "forwardClientIDHeader": "x-client",
                "sanitize": True,
            },
        },
    )
    checks = (
        p.SecretCheck("demo", "keys", True),
        p.SecretCheck("demo", "users", False, "it does not exist"),
    )
    record = p.SecurityPolicyRecord("a", "demo", "auth", spec, secret_checks=checks)
    await writer.publish(record)
    ref = ref_of(record)
    stored = (await reader.snapshot("a")).records[ref.field]
    assert decode_record(Kind.SECURITY_POLICY, stored) == record
    assert json.loads(stored)["secretChecks"] == [
        {"namespace": "demo", "name": "keys", "usable": True},
        {"namespace": "demo", "name": "users", "usable": False, "message": "it does not exist"},
    ]


async def test_join_members_and_cluster_records(backend: Backend) -> None:
    reader = backend.reader()
    assert await reader.members() == set()
    assert await reader.cluster_records([]) == {}
    rec_a, rec_b = cluster_record("a"), cluster_record("b", "e9")
    await backend.writer("a").join(rec_a)
    await backend.writer("b").join(rec_b)
    assert await reader.members() == {"a", "b"}
    assert await reader.cluster_records(["a", "b", "c"]) == {
        "a": encode_cluster(rec_a),
        "b": encode_cluster(rec_b),
        "c": None,
    }
    # Joining again only replaces the record.
    rec_a2 = cluster_record("a", "e3")
    await backend.writer("a").join(rec_a2)
    assert await reader.members() == {"a", "b"}
    assert (await reader.cluster_records(["a"]))["a"] == encode_cluster(rec_a2)


async def test_snapshot_of_unknown_cluster_is_empty(backend: Backend) -> None:
    snap = await backend.reader().snapshot("nowhere")
    assert (dict(snap.records), snap.record, snap.position) == ({}, None, START)


async def test_writer_refuses_records_of_another_cluster(backend: Backend) -> None:
    writer = backend.writer("a")
    with pytest.raises(InvalidInputError):
        await writer.publish(service("b", "x"))
    with pytest.raises(InvalidInputError):
        await writer.join(cluster_record("b"))
    with pytest.raises(InvalidInputError):
        await writer.replace_all([service("b", "x")], cluster_record("a"))
    snap = await backend.reader().snapshot("a")
    assert (dict(snap.records), snap.position) == ({}, START)


# --- the change feed ----------------------------------------------------------


async def test_tail_from_snapshot_sees_every_later_change_once_in_order(
    backend: Backend,
) -> None:
    a, b, reader = backend.writer("a"), backend.writer("b"), backend.reader()
    await a.publish(service("a", "x", 1))
    snap = await reader.snapshot("a")
    assert snap.position != START

    y1, x2, z1 = service("a", "y"), service("a", "x", 2), service("b", "z")
    await a.publish(y1)
    await b.publish(z1)
    await a.publish(x2)
    assert await a.withdraw(svc_ref("y")) is not None
    await a.replace_all([x2], cluster_record("a"))

    # count=2 makes the reader page through the stream.
    positions = {"a": snap.position, "b": START}
    seen = await read_all(reader, positions, count=2)
    in_a = [e for e in seen if e.cluster == "a"]
    assert [(e.op, entry_key(e), e.record) for e in in_a] == [
        (Op.UPSERT, "demo/y", encode_service(y1)),
        (Op.UPSERT, "demo/x", encode_service(x2)),
        (Op.DELETE, "demo/y", None),
        (Op.RESYNC, None, None),
    ]
    in_b = [e for e in seen if e.cluster == "b"]
    assert [(e.op, entry_key(e), e.record) for e in in_b] == [
        (Op.UPSERT, "demo/z", encode_service(z1))
    ]
    for entries in (in_a, in_b):
        ids = [parse_id(e.id) for e in entries]
        assert ids == sorted(set(ids)), "ids must be unique and increasing"
    assert parse_id(in_a[0].id) > parse_id(snap.position)
    # Caught up: nothing is delivered twice.
    assert await reader.read(positions, block_ms=0) == []
    assert positions["a"] == (await reader.snapshot("a")).position


async def test_read_blocks_until_a_publish_from_another_task(backend: Backend) -> None:
    writer, reader = backend.writer("a"), backend.reader()
    position = (await reader.snapshot("a")).position
    # Far longer than the test waits: only the publish can end this read in time.
    task = asyncio.create_task(reader.read({"a": position, "b": START}, block_ms=60_000))
    try:
        await eventually(
            lambda: _positive(backend.blocked_readers()), "the read to block in the store"
        )
        assert not task.done()
        x1 = service("a", "x")
        await writer.publish(x1)
        entries = await asyncio.wait_for(task, DEADLINE)
    finally:
        task.cancel()
    assert [(e.cluster, e.op, entry_key(e), e.record) for e in entries] == [
        ("a", Op.UPSERT, "demo/x", encode_service(x1))
    ]


async def _positive(value: Awaitable[int]) -> bool:
    return await value > 0


async def test_read_without_entries_returns_empty(backend: Backend) -> None:
    reader = backend.reader()
    await backend.writer("a").publish(service("a", "x"))
    position = (await reader.snapshot("a")).position
    assert await reader.read({"a": position}, block_ms=0) == []
    # A short block times out empty (a missing stream is waited on too).
    assert await reader.read({"a": position, "nowhere": START}, block_ms=50) == []
    assert await reader.read({}, block_ms=0) == []
    assert await reader.read({}, block_ms=20) == []


async def test_withdraw_of_absent_key_appends_nothing(backend: Backend) -> None:
    writer, reader = backend.writer("a"), backend.reader()
    assert await writer.withdraw(svc_ref("never")) is None
    assert (await reader.stream_states(["a"]))["a"].exists is False
    await writer.publish(service("a", "x"))
    before = (await reader.snapshot("a")).position
    assert await writer.withdraw(svc_ref("y")) is None
    assert await writer.withdraw(svc_ref("x")) is not None
    assert await writer.withdraw(svc_ref("x")) is None
    seen = await read_all(reader, {"a": before})
    assert [(e.op, entry_key(e)) for e in seen] == [(Op.DELETE, "demo/x")]


async def test_replace_all_joins_and_emits_one_resync(backend: Backend) -> None:
    writer, reader = backend.writer("a"), backend.reader()
    await writer.publish(service("a", "old"))
    before = (await reader.snapshot("a")).position
    records = [service("a", f"s{i}") for i in range(5)]
    await writer.replace_all(records, cluster_record("a"))
    seen = await read_all(reader, {"a": before})
    assert [(e.op, entry_key(e), e.record) for e in seen] == [(Op.RESYNC, None, None)]
    assert await reader.members() == {"a"}
    snap = await reader.snapshot("a")
    assert snap.position == seen[0].id
    assert set(snap.records) == {f"service/{r.key}" for r in records}


# --- leases -------------------------------------------------------------------


async def test_renew_lease_reports_lost_cluster_record(backend: Backend) -> None:
    writer, reader = backend.writer("a"), backend.reader()
    assert await writer.renew_lease(LONG_TTL_MS, "t1") is False  # never joined
    await writer.join(cluster_record("a"))
    assert await writer.renew_lease(LONG_TTL_MS, "t2") is True
    await backend.flush()
    assert await writer.renew_lease(LONG_TTL_MS, "t3") is False
    # The lease was still renewed: the agent is alive, it must only resync.
    assert await reader.live_leases(["a"]) == {"a"}


async def test_live_leases_follow_ttl_and_release(backend: Backend) -> None:
    a, b, reader = backend.writer("a"), backend.writer("b"), backend.reader()
    assert await reader.live_leases([]) == set()
    assert await reader.live_leases(["a", "b"]) == set()
    await a.renew_lease(LONG_TTL_MS, "ta")
    await b.renew_lease(LONG_TTL_MS, "tb")
    assert await reader.live_leases(["a", "b", "c"]) == {"a", "b"}

    await a.renew_lease(SHORT_TTL_MS, "ta")
    backend.let_time_pass(SHORT_TTL_MS)

    async def a_expired() -> bool:
        return await reader.live_leases(["a", "b"]) == {"b"}

    await eventually(a_expired, "the lease of a to expire")
    await b.release_lease()
    assert await reader.live_leases(["a", "b"]) == set()


# --- stream states ------------------------------------------------------------


async def test_stream_states_detect_trimming(backend: Backend) -> None:
    writer, reader = backend.writer("a"), backend.reader()
    await writer.publish(service("a", "x", 0))
    stale = (await reader.snapshot("a")).position
    for generation in range(1, 10):
        await writer.publish(service("a", "x", generation))
    current = (await reader.snapshot("a")).position
    state = (await reader.stream_states(["a"]))["a"]
    assert state.exists and state.last_id == current
    assert parse_id(state.max_deleted_id) <= parse_id(stale)  # nothing trimmed yet

    await backend.trim("a", 3)
    state = (await reader.stream_states(["a"]))["a"]
    assert state.exists and state.last_id == current
    assert parse_id(state.max_deleted_id) > parse_id(stale), "trimmed past the stale position"
    assert parse_id(state.max_deleted_id) < parse_id(current)
    # The remaining entries are intact, and a reader that kept up is not affected.
    remaining = await read_all(reader, {"a": state.max_deleted_id})
    assert [e.record for e in remaining] == [
        encode_service(service("a", "x", g)) for g in range(7, 10)
    ]


async def test_stream_states_after_flush(backend: Backend) -> None:
    writer, reader = backend.writer("a"), backend.reader()
    await writer.replace_all([service("a", "x")], cluster_record("a"))
    states = await reader.stream_states(["a", "b"])
    assert states["a"].exists and parse_id(states["a"].last_id) > (0, 0)
    assert states["b"].exists is False
    assert await reader.stream_states([]) == {}

    await backend.flush()
    state = (await reader.stream_states(["a"]))["a"]
    assert (state.exists, state.last_id, state.max_deleted_id) == (False, START, START)
    snap = await reader.snapshot("a")
    assert (dict(snap.records), snap.record, snap.position) == ({}, None, START)
    assert await reader.members() == set()
    assert await reader.cluster_records(["a"]) == {"a": None}


# --- bad data -----------------------------------------------------------------


async def test_garbage_record_bytes_are_returned_raw(backend: Backend) -> None:
    reader = backend.reader()
    await backend.writer("a").publish(service("a", "good"))
    before = (await reader.snapshot("a")).position
    garbage = b"\xff\x00{not json"
    await backend.put_raw("a", "service/demo/bad", garbage)
    snap = await reader.snapshot("a")
    assert snap.records["service/demo/bad"] == garbage
    assert snap.records["service/demo/good"] == encode_service(service("a", "good"))
    seen = await read_all(reader, {"a": before})
    assert [(e.op, entry_key(e), e.record) for e in seen] == [(Op.UPSERT, "demo/bad", garbage)]


# --- store-specific -------------------------------------------------------------


async def test_memory_trims_approximately_and_restarts_ids_after_flush() -> None:
    clock = FakeClock()
    registry = MemoryRegistry(maxlen=10, clock=clock)
    writer, reader = registry.writer("a"), registry.reader()
    first = None
    for generation in range(40):
        await writer.publish(service("a", "x", generation))
        first = first or (await reader.snapshot("a")).position
    assert first is not None
    kept = await read_all(reader, {"a": START})
    assert 10 <= len(kept) <= 11  # never below maxlen, at most a tenth above
    state = (await reader.stream_states(["a"]))["a"]
    assert parse_id(state.max_deleted_id) < parse_id(kept[0].id)
    assert parse_id(state.max_deleted_id) > parse_id(first)
    # With a clock that has not moved, a fresh stream's ids are lower than the
    # old ones: the "went backwards" case a watcher must detect.
    registry.flush()
    await writer.publish(service("a", "x"))
    assert parse_id((await reader.stream_states(["a"]))["a"].last_id) < parse_id(kept[-1].id)
    clock.advance(1)
    await writer.publish(service("a", "y"))
    assert parse_id((await reader.stream_states(["a"]))["a"].last_id) > parse_id(kept[-1].id)


async def test_redis_errors_become_registry_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    reader = RedisReader.from_url(url, socket_connect_timeout=2)
    writer = RedisWriter.from_url(url, "a", socket_connect_timeout=2)
    try:
        with pytest.raises(RegistryUnavailableError) as caught:
            await reader.snapshot("a")
        assert caught.value.__cause__ is not None
        with pytest.raises(RegistryUnavailableError):
            await reader.read({"a": START}, block_ms=0)
        with pytest.raises(RegistryUnavailableError):
            await writer.publish(service("a", "x"))
        with pytest.raises(RegistryUnavailableError):
            await writer.withdraw(svc_ref("x"))
    finally:
        await reader.close()
        await writer.close()


async def test_redis_store_needs_a_bytes_client() -> None:
    client = Redis(host="127.0.0.1", port=free_port(), decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisReader(client)
        with pytest.raises(ValueError, match="decode_responses"):
            RedisWriter.from_url("redis://127.0.0.1:1/0", "a", decode_responses=True)
    finally:
        await client.aclose()


async def test_redis_restart_loses_data_and_renewal_reports_it(redis_server: RedisServer) -> None:
    # Restarting the shared server drops its ACL users too; the ACL tests
    # create theirs per test, so this does not leak into them.
    writer = RedisWriter.from_url(redis_server.admin_url, "a")
    reader = RedisReader.from_url(redis_server.admin_url)
    try:
        await writer.replace_all([service("a", "x")], cluster_record("a"))
        assert await writer.renew_lease(LONG_TTL_MS, "t1") is True
        port, pid = redis_server.port, redis_server.process and redis_server.process.pid
        redis_server.restart()
        assert redis_server.port == port
        assert redis_server.process is not None and redis_server.process.pid != pid
        # A pooled connection from before the restart fails once (from_url
        # clients do not retry); callers retry, and then learn the data is gone.
        assert await retried(lambda: writer.renew_lease(LONG_TTL_MS, "t2")) is False
        assert (await retried(lambda: reader.stream_states(["a"])))["a"].exists is False
        assert dict((await reader.snapshot("a")).records) == {}
    finally:
        await writer.close()
        await reader.close()


async def test_a_reply_that_never_comes_is_an_error_not_a_hang() -> None:
    """A server that takes the command and never answers (a reply lost on the way): the
    call fails within the socket timeout, as RegistryUnavailableError, which callers
    retry; clients get a timeout (and a health check of idle connections) by default,
    whatever redis-py's own defaults."""
    from federation.registry import topology

    received = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        received.set()
        await reader.read()  # never answers: until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        writer = RedisWriter.from_url(f"redis://127.0.0.1:{port}/0", "a", socket_timeout=0.3)
        began = time.monotonic()
        with pytest.raises(RegistryUnavailableError):
            await writer.renew_lease(1000, "token")
        assert received.is_set() and time.monotonic() - began < 5
        await writer.close()
    finally:
        server.close()
    client = topology.client_from_url("redis://127.0.0.1:1/0", {})
    kwargs = topology.connection_kwargs(client)
    assert kwargs["socket_timeout"] == topology.SOCKET_TIMEOUT
    assert kwargs["health_check_interval"] == topology.HEALTH_CHECK_INTERVAL
    await client.aclose()


async def test_on_a_redis_cluster_every_change_rings_the_doorbell(
    redis_cluster: RedisClusterServers,
) -> None:
    """Readers of a Redis Cluster wait on the doorbell: each publish, withdraw and
    replace_all appends its cluster's id to it (after its transaction)."""
    backend = RedisBackend("redis-cluster", redis_cluster)
    await backend.flush()
    writer = backend.writer("a")
    try:
        await writer.replace_all([], cluster_record("a"))
        await writer.publish(service("a", "x"))
        assert await writer.withdraw(svc_ref("x")) is not None
        assert await writer.withdraw(svc_ref("x")) is None  # nothing changed: no ring
        rings = await backend.admin.xrange(keys.DOORBELL) or []
        assert [(fields or {}).get(b"c") for _, fields in rings] == [b"a", b"a", b"a"]
    finally:
        await backend.close()
