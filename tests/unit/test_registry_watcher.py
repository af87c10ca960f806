"""The registry watcher (federation.registry.watcher) driven over the in-memory store.

The watcher is stepped by hand instead of run: ``load()``, then ``step()`` with
``block_ms=0`` (reads never block) and ``check_interval=0`` (every step runs the
consistency checks: new members, trimming, data loss, leases). One fake clock
drives the registry's leases and stream ids and the watcher's staleness timers,
so lease expiry and withdrawal are tested without waiting. Each test records the
sets of services passed to ``on_change``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import pytest

from federation.registry.kinds import Kind, Record, RecordRef, encode_record, ref_of
from federation.registry.records import (
    ClusterRecord,
    Endpoint,
    EndpointPort,
    EndpointSet,
    ExportedService,
    ServicePort,
    ServiceType,
    encode_service,
)
from federation.registry.store import START, RegistryReader, RegistryUnavailableError
from federation.registry.watcher import (
    READ_COUNT,
    Change,
    RegistryWatcher,
    ServiceName,
    service_names,
)
from tests import samples
from tests.memory_store import FlakyReader, MemoryRegistry, MemoryWriter

NS = "shop"
WEB: ServiceName = (NS, "web")
API: ServiceName = (NS, "api")
DB: ServiceName = (NS, "db")
#: Lease of the clusters whose lease a test lets expire.
SHORT_TTL_MS = 10_000
#: Lease of the clusters that must stay live for the whole test.
LONG_TTL_MS = 10_000_000


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Changes:
    """The ``on_change`` callback: records every set it is given."""

    def __init__(self) -> None:
        #: The services of each call, and every record of each call.
        self.calls: list[set[ServiceName]] = []
        self.ref_calls: list[set[Change]] = []

    async def __call__(self, changed: set[Change]) -> None:
        self.calls.append(service_names(changed))
        self.ref_calls.append(set(changed))

    def take(self) -> set[ServiceName]:
        """The services reported since the last ``take``, then forget every call."""
        seen: set[ServiceName] = set().union(*self.calls)
        self.calls.clear()
        self.ref_calls.clear()
        return seen


@dataclass
class Env:
    clock: FakeClock
    registry: MemoryRegistry
    changes: Changes
    watcher: RegistryWatcher


def make_env(withdraw_stale_after: float | None = None) -> Env:
    clock = FakeClock()
    registry = MemoryRegistry(clock=clock)
    changes = Changes()
    watcher = RegistryWatcher(
        registry.reader(),
        changes,
        block_ms=0,
        check_interval=0,
        withdraw_stale_after=withdraw_stale_after,
        clock=clock,
    )
    return Env(clock, registry, changes, watcher)


@pytest.fixture
def env() -> Env:
    return make_env()


def svc(
    cluster: str,
    name: str = "web",
    *,
    namespace: str = NS,
    port: int = 80,
    address: str = "10.0.0.1",
) -> ExportedService:
    return ExportedService(
        cluster=cluster,
        namespace=namespace,
        name=name,
        type=ServiceType.CLUSTER_SET_IP,
        ports=(ServicePort("http", "TCP", port),),
        created="2025-01-01T00:00:00Z",
        generation=1,
        endpoints=(
            EndpointSet(
                name=f"{name}-abc",
                address_type="IPv4",
                ports=(EndpointPort("http", "TCP", 8080),),
                endpoints=(Endpoint((address,), True, True, False),),
            ),
        ),
    )


def cluster_record(cluster: str, epoch: str, lease_ttl: float = 0.0) -> ClusterRecord:
    return ClusterRecord(cluster, "test", 0.0, epoch, lease_ttl)


async def join(
    registry: MemoryRegistry,
    cluster: str,
    records: Sequence[Record] = (),
    *,
    epoch: str = "epoch-1",
    ttl_ms: int = LONG_TTL_MS,
    lease_ttl: float = 0.0,
) -> MemoryWriter:
    """Publish a cluster's full state the way its agent does on start, lease included."""
    writer = registry.writer(cluster)
    await writer.replace_all(list(records), cluster_record(cluster, epoch, lease_ttl))
    await writer.renew_lease(ttl_ms, f"token-{cluster}")
    return writer


# --- loading --------------------------------------------------------------------------


async def test_load_sees_every_member_and_sets_loaded(env: Env) -> None:
    await join(env.registry, "a", [svc("a", "web"), svc("a", "api")])
    await join(env.registry, "b", [svc("b", "web", address="10.1.0.1")])
    assert not env.watcher.loaded.is_set()

    await env.watcher.load()

    assert env.watcher.loaded.is_set()
    assert sorted(env.watcher.clusters()) == ["a", "b"]
    assert env.watcher.exports(*WEB) == [svc("a", "web"), svc("b", "web", address="10.1.0.1")]
    assert env.watcher.exports(*API) == [svc("a", "api")]
    assert env.watcher.exports(*DB) == []
    assert env.watcher.service_names() == {WEB, API}
    assert env.watcher.stale_clusters() == set()
    assert env.watcher.stats.bad_records == 0


async def test_step_without_changes_reports_nothing(env: Env) -> None:
    await join(env.registry, "a", [svc("a", "web")])
    await env.watcher.load()

    await env.watcher.step()
    await env.watcher.step()

    assert env.changes.calls == []
    assert env.watcher.exports(*WEB) == [svc("a", "web")]


# --- publish, withdraw, resync --------------------------------------------------------


async def test_publish_update_and_withdraw_are_reported_and_visible(env: Env) -> None:
    writer = await join(env.registry, "a", [svc("a", "web")])
    await env.watcher.load()

    await writer.publish(svc("a", "db"))
    await env.watcher.step()
    assert env.changes.calls == [{DB}]
    assert env.watcher.exports(*DB) == [svc("a", "db")]

    await writer.publish(svc("a", "db", port=5432))
    await env.watcher.step()
    assert env.changes.take() == {DB}
    assert env.watcher.exports(*DB) == [svc("a", "db", port=5432)]

    # Level-triggered: republishing an identical record is not a change.
    await writer.publish(svc("a", "db", port=5432))
    await env.watcher.step()
    assert env.changes.take() == set()

    assert await writer.withdraw(RecordRef(Kind.SERVICE, NS, "db"))
    await env.watcher.step()
    assert env.changes.take() == {DB}
    assert env.watcher.exports(*DB) == []
    assert env.watcher.service_names() == {WEB}
    assert env.watcher.exports(*WEB) == [svc("a", "web")]


async def test_changes_of_several_clusters_in_one_step(env: Env) -> None:
    writer_a = await join(env.registry, "a", [svc("a", "web")])
    writer_b = await join(env.registry, "b")
    await env.watcher.load()

    await writer_a.publish(svc("a", "api"))
    await writer_b.publish(svc("b", "web", address="10.1.0.1"))
    await env.watcher.step()

    assert env.changes.calls == [{API, WEB}]
    assert env.watcher.exports(*WEB) == [svc("a", "web"), svc("b", "web", address="10.1.0.1")]
    assert env.watcher.exports(*API) == [svc("a", "api")]


async def test_resync_reloads_the_cluster_and_reports_removed_and_added(env: Env) -> None:
    writer = await join(env.registry, "a", [svc("a", "web"), svc("a", "api")])
    await join(env.registry, "b", [svc("b", "api", address="10.1.0.1")])
    await env.watcher.load()
    reloads = env.watcher.stats.reloads

    # web unchanged, api dropped, db added. The epoch is kept, so that the RESYNC
    # entry alone has to trigger the reload.
    await writer.replace_all([svc("a", "web"), svc("a", "db")], cluster_record("a", "epoch-1"))
    await env.watcher.step()

    assert env.changes.calls == [{API, DB}]
    assert env.watcher.stats.reloads > reloads
    assert env.watcher.exports(*WEB) == [svc("a", "web")]
    assert env.watcher.exports(*DB) == [svc("a", "db")]
    assert env.watcher.exports(*API) == [svc("b", "api", address="10.1.0.1")]


async def test_entries_after_a_resync_in_the_same_read_are_applied(env: Env) -> None:
    writer = await join(env.registry, "a", [svc("a", "web")])
    await env.watcher.load()

    await writer.replace_all([svc("a", "api")], cluster_record("a", "epoch-2"))
    await writer.publish(svc("a", "db"))
    await writer.withdraw(RecordRef(Kind.SERVICE, NS, "api"))
    await env.watcher.step()

    assert env.watcher.service_names() == {DB}
    assert env.watcher.exports(*DB) == [svc("a", "db")]
    assert env.changes.take() == {WEB, DB}
    await env.watcher.step()
    assert env.watcher.service_names() == {DB}


async def test_cluster_record_with_a_new_epoch_reloads_the_cluster(env: Env) -> None:
    writer = await join(env.registry, "a", [svc("a", "web")])
    await env.watcher.load()
    reloads = env.watcher.stats.reloads

    await writer.join(cluster_record("a", "epoch-2"))
    await env.watcher.step()

    assert env.watcher.stats.reloads == reloads + 1
    assert env.watcher.views["a"].record == cluster_record("a", "epoch-2")
    assert env.watcher.exports(*WEB) == [svc("a", "web")]
    assert env.changes.take() == set()


# --- bad records ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff not json",
        b"[]",
        b'{"v": 1}',
        b'{"v": 99, "cluster": "a"}',
        encode_service(svc("a", "web")).replace(b'"port":80,', b'"port":"eighty",'),
    ],
    ids=["bytes", "not-an-object", "missing-fields", "other-schema", "wrong-type"],
)
async def test_malformed_record_is_skipped_counted_and_keeps_last_good(
    env: Env, garbage: bytes
) -> None:
    writer = await join(env.registry, "a", [svc("a", "web"), svc("a", "api")])
    await env.watcher.load()

    env.registry.put_raw("a", "service/shop/web", garbage)
    await env.watcher.step()

    assert env.watcher.stats.bad_records == 1
    assert env.watcher.exports(*WEB) == [svc("a", "web")]
    assert env.changes.take() == set()

    # Other keys are unaffected and still follow the stream.
    await writer.publish(svc("a", "api", port=8443))
    await env.watcher.step()
    assert env.changes.take() == {API}
    assert env.watcher.exports(*API) == [svc("a", "api", port=8443)]
    assert env.watcher.exports(*WEB) == [svc("a", "web")]

    # A reload (new epoch) finds the garbage in the snapshot: skipped again, last good kept.
    await writer.join(cluster_record("a", "epoch-2"))
    await env.watcher.step()
    assert env.watcher.stats.bad_records == 2
    assert env.watcher.exports(*WEB) == [svc("a", "web")]
    assert env.watcher.exports(*API) == [svc("a", "api", port=8443)]
    assert env.changes.take() == set()

    # A good record for the key is accepted again.
    await writer.publish(svc("a", "web", port=81))
    await env.watcher.step()
    assert env.changes.take() == {WEB}
    assert env.watcher.exports(*WEB) == [svc("a", "web", port=81)]


async def test_malformed_record_at_load_is_skipped_without_blocking_the_others(
    env: Env,
) -> None:
    await join(env.registry, "a", [svc("a", "api")])
    env.registry.put_raw("a", "service/shop/web", b"{garbage")
    await join(env.registry, "b", [svc("b", "web", address="10.1.0.1")])

    await env.watcher.load()

    assert env.watcher.loaded.is_set()
    assert env.watcher.stats.bad_records == 1
    assert env.watcher.exports(*API) == [svc("a", "api")]
    assert env.watcher.exports(*WEB) == [svc("b", "web", address="10.1.0.1")]


@pytest.mark.parametrize(
    ("stored_under", "record"),
    [
        ("shop/web", svc("b", "web", address="10.1.0.1")),  # another cluster's record
        ("shop/web", svc("a", "api", port=9999)),  # another key's record
    ],
    ids=["wrong-cluster", "wrong-key"],
)
async def test_record_under_the_wrong_cluster_or_key_is_rejected(
    env: Env, stored_under: str, record: ExportedService
) -> None:
    await join(env.registry, "a", [svc("a", "web"), svc("a", "api")])
    await join(env.registry, "b")
    await env.watcher.load()

    env.registry.put_raw("a", f"service/{stored_under}", encode_service(record))
    await env.watcher.step()

    assert env.watcher.stats.bad_records == 1
    assert env.watcher.exports(*WEB) == [svc("a", "web")]
    assert env.watcher.exports(*API) == [svc("a", "api")]
    assert env.changes.take() == set()


async def test_stream_entry_with_a_bad_key_is_skipped(env: Env) -> None:
    writer = await join(env.registry, "a", [svc("a", "web")])
    await env.watcher.load()

    env.registry.put_raw("a", "service/no-slash", b"{}")
    await writer.publish(svc("a", "api"))
    await env.watcher.step()

    assert env.watcher.stats.bad_records == 1
    assert env.changes.take() == {API}
    assert env.watcher.service_names() == {WEB, API}


async def test_record_with_an_empty_namespace_does_not_crash_load(env: Env) -> None:
    await join(env.registry, "a", [svc("a", "web")])
    bad = svc("a", "web", namespace="")
    env.registry.put_raw("a", f"service/{bad.key}", encode_service(bad))

    await env.watcher.load()

    assert env.watcher.stats.bad_records == 1
    assert env.watcher.service_names() == {WEB}
    assert env.watcher.exports(*WEB) == [svc("a", "web")]


# --- trimming, data loss, going backwards ---------------------------------------------


@pytest.mark.parametrize(
    "keep",
    [
        0,
        3,
    ],
    ids=["trimmed-to-nothing", "trimmed-to-3"],
)
async def test_trim_past_the_position_reloads_and_converges(env: Env, keep: int) -> None:
    writer = await join(env.registry, "a", [svc("a", "web"), svc("a", "api")])
    await env.watcher.load()
    reloads = env.watcher.stats.reloads

    # The watcher falls behind: changes pile up and the oldest are trimmed away.
    assert await writer.withdraw(RecordRef(Kind.SERVICE, NS, "web"))
    await writer.publish(svc("a", "api", port=8443))
    for i in range(10):
        await writer.publish(svc("a", f"svc-{i}"))
    env.registry.trim("a", keep)
    await env.watcher.step()
    await env.watcher.step()

    assert env.watcher.service_names() == {API} | {(NS, f"svc-{i}") for i in range(10)}
    assert env.watcher.exports(*WEB) == []
    assert env.watcher.exports(*API) == [svc("a", "api", port=8443)]
    assert env.watcher.stats.reloads > reloads
    assert env.changes.take() == {WEB, API} | {(NS, f"svc-{i}") for i in range(10)}


@pytest.mark.parametrize("observe_loss", [True, False], ids=["loss-seen", "loss-unseen"])
async def test_data_loss_keeps_the_last_view_until_the_agent_republishes(
    env: Env, observe_loss: bool
) -> None:
    await join(env.registry, "a", [svc("a", "web"), svc("a", "api")])
    await join(env.registry, "b", [svc("b", "web", address="10.1.0.1")])
    await env.watcher.load()
    web_before = env.watcher.exports(*WEB)

    env.registry.flush()
    if observe_loss:
        await env.watcher.step()
        await env.watcher.step()
        assert env.watcher.views["a"].lost
        assert env.watcher.views["b"].lost
        # The leases were lost too, and these agents did not say their TTL: stale at once.
        assert env.watcher.stale_clusters() == {"a", "b"}
        assert env.watcher.exports(*WEB) == web_before
        assert env.watcher.exports(*API) == [svc("a", "api")]
        assert env.watcher.service_names() == {WEB, API}

    # a's agent republishes a different state; the clock has not moved, so the new
    # stream's ids are lower than the old position (the stream went backwards).
    await join(env.registry, "a", [svc("a", "web", port=81), svc("a", "db")], epoch="epoch-2")
    env.changes.take()
    await env.watcher.step()

    assert not env.watcher.views["a"].lost
    assert env.watcher.views["b"].lost
    assert env.watcher.exports(*WEB) == [
        svc("a", "web", port=81),
        svc("b", "web", address="10.1.0.1"),
    ]
    assert env.watcher.exports(*API) == []
    assert env.watcher.exports(*DB) == [svc("a", "db")]
    assert {WEB, API, DB} <= env.changes.take()

    # And it follows a's new stream from there.
    await env.registry.writer("a").publish(svc("a", "api"))
    await env.watcher.step()
    assert env.changes.take() == {API}
    assert env.watcher.exports(*API) == [svc("a", "api")]


async def test_data_loss_marks_the_view_lost_and_rewinds_its_position(env: Env) -> None:
    await join(env.registry, "a", [svc("a", "web")])
    await env.watcher.load()

    env.registry.flush()
    await env.watcher.step()

    assert env.watcher.views["a"].lost
    assert env.watcher.views["a"].position == START
    assert env.watcher.exports(*WEB) == [svc("a", "web")]
    assert env.watcher.stats.bad_records == 0


async def test_a_lost_lease_is_not_an_expired_one_for_the_clusters_own_ttl(env: Env) -> None:
    """After the registry restarts empty, live agents republish within their renewal
    period: no import may show them stale meanwhile. One that does not is stale once
    its own TTL has passed since the loss was seen."""
    await join(env.registry, "a", [svc("a", "web")], lease_ttl=10.0)
    await join(env.registry, "b", [svc("b", "web")], lease_ttl=4.0)
    await env.watcher.load()
    assert env.watcher.lease_ttl("a") == 10.0

    env.registry.flush()
    await env.watcher.step()
    assert env.watcher.views["a"].lost and env.watcher.views["b"].lost
    assert env.watcher.stale_clusters() == set()

    env.clock.advance(3.9)
    await join(env.registry, "a", [svc("a", "web")], epoch="epoch-2", lease_ttl=10.0)
    await env.watcher.step()
    assert env.watcher.stale_clusters() == set()  # a is back; b is within its 4 s

    env.clock.advance(0.2)  # b lost for 4.1 s: longer than its own TTL, never came back
    await env.watcher.step()
    assert env.watcher.stale_clusters() == {"b"}


# --- leases ---------------------------------------------------------------------------


async def test_cluster_without_a_live_lease_is_stale_right_after_load(env: Env) -> None:
    await join(env.registry, "a", [svc("a", "web")])
    await env.registry.writer("b").replace_all([svc("b", "api")], cluster_record("b", "e"))

    await env.watcher.load()

    assert env.watcher.stale_clusters() == {"b"}
    assert env.watcher.exports(*API) == [svc("b", "api")]


async def test_lease_expiry_marks_stale_keeps_exports_and_renewal_clears(env: Env) -> None:
    writer = await join(env.registry, "a", [svc("a", "web"), svc("a", "api")], ttl_ms=SHORT_TTL_MS)
    await join(env.registry, "b", [svc("b", "web", address="10.1.0.1")])
    await join(env.registry, "c", [svc("c", "db", address="10.2.0.1")])
    await env.watcher.load()
    assert env.watcher.stale_clusters() == set()

    env.clock.advance(SHORT_TTL_MS // 1000 - 1)
    await env.watcher.step()
    assert env.watcher.stale_clusters() == set()
    assert env.changes.take() == set()

    env.clock.advance(1)
    await env.watcher.step()
    assert env.watcher.stale_clusters() == {"a"}
    assert env.changes.take() == {WEB, API}  # a's services only, not c's db
    assert env.watcher.exports(*WEB) == [svc("a", "web"), svc("b", "web", address="10.1.0.1")]
    assert env.watcher.exports(*API) == [svc("a", "api")]
    assert env.watcher.withdrawn_clusters() == set()

    # Fail-static by default: staying stale for a long time withdraws nothing.
    env.clock.advance(1_000)
    await env.watcher.step()
    assert env.changes.take() == set()
    assert env.watcher.exports(*API) == [svc("a", "api")]
    assert env.watcher.withdrawn_clusters() == set()

    assert await writer.renew_lease(SHORT_TTL_MS, "token-a")
    await env.watcher.step()
    assert env.watcher.stale_clusters() == set()
    assert env.changes.take() == {WEB, API}


async def test_stale_cluster_is_withdrawn_after_the_timeout_and_restored_on_renewal() -> None:
    env = make_env(withdraw_stale_after=30)
    writer = await join(env.registry, "a", [svc("a", "web"), svc("a", "api")], ttl_ms=SHORT_TTL_MS)
    await join(env.registry, "b", [svc("b", "web", address="10.1.0.1")])
    await env.watcher.load()

    env.clock.advance(SHORT_TTL_MS // 1000)
    await env.watcher.step()
    assert env.watcher.stale_clusters() == {"a"}
    assert env.watcher.withdrawn_clusters() == set()
    env.changes.take()

    env.clock.advance(29)
    await env.watcher.step()
    assert env.watcher.withdrawn_clusters() == set()
    assert env.watcher.exports(*API) == [svc("a", "api")]
    assert env.changes.take() == set()

    env.clock.advance(1)
    await env.watcher.step()
    assert env.watcher.withdrawn_clusters() == {"a"}
    assert env.watcher.stale_clusters() == {"a"}
    assert env.changes.take() == {WEB, API}
    assert env.watcher.exports(*WEB) == [svc("b", "web", address="10.1.0.1")]
    assert env.watcher.exports(*API) == []
    assert env.watcher.service_names() == {WEB}
    assert env.watcher.withdrawn_exporters(*WEB) == ["a"]
    assert env.watcher.withdrawn_exporters(*API) == ["a"]
    assert env.watcher.withdrawn_exporters(*DB) == []
    # The view itself is kept: withdrawal is a filter, not a deletion.
    assert set(env.watcher.views["a"].services) == {"shop/web", "shop/api"}

    assert await writer.renew_lease(SHORT_TTL_MS, "token-a")
    await env.watcher.step()
    assert env.watcher.withdrawn_clusters() == set()
    assert env.watcher.stale_clusters() == set()
    assert env.changes.take() == {WEB, API}
    assert env.watcher.exports(*WEB) == [svc("a", "web"), svc("b", "web", address="10.1.0.1")]
    assert env.watcher.exports(*API) == [svc("a", "api")]
    assert env.watcher.withdrawn_exporters(*WEB) == []


# --- membership -----------------------------------------------------------------------


async def test_member_joining_after_load_is_discovered(env: Env) -> None:
    await join(env.registry, "a", [svc("a", "web")])
    await env.watcher.load()
    assert list(env.watcher.clusters()) == ["a"]

    writer_b = await join(env.registry, "b", [svc("b", "web", address="10.1.0.1")])
    await env.watcher.step()

    assert list(env.watcher.clusters()) == ["a", "b"]
    assert env.changes.take() == {WEB}
    assert env.watcher.exports(*WEB) == [svc("a", "web"), svc("b", "web", address="10.1.0.1")]
    assert env.watcher.stale_clusters() == set()

    # It is tailed from the position of its snapshot on: no replay, nothing missed.
    await writer_b.publish(svc("b", "api"))
    await env.watcher.step()
    assert env.changes.calls == [{API}]
    assert env.watcher.exports(*API) == [svc("b", "api")]


async def test_member_joining_without_exports_is_reported(env: Env) -> None:
    """A consumer-only cluster changes no service, but whoever keeps something per member
    (the hub's node groups) must hear of it."""
    await join(env.registry, "a", [svc("a", "web")])
    await env.watcher.load()
    await join(env.registry, "c", [])
    await env.watcher.step()
    assert list(env.watcher.clusters()) == ["a", "c"]
    assert env.changes.calls == [set()]
    await env.watcher.step()
    assert env.changes.calls == [set()]  # reported once


# --- kinds of records ------------------------------------------------------------------


async def test_records_of_every_kind_are_followed_and_reported(env: Env) -> None:
    every = samples.every_kind("a")
    writer = await join(env.registry, "a", every[:2])
    await env.watcher.load()
    assert env.watcher.records("a", Kind.LOCAL_SERVICE) == {"demo/local": every[1]}
    for record in every[2:]:
        await writer.publish(record)
    await env.watcher.step()
    assert set().union(*env.changes.ref_calls) == {Change("a", ref_of(r)) for r in every[2:]}
    assert env.changes.take() == set()  # none of them is an exported service
    for record in every:
        ref = ref_of(record)
        assert env.watcher.records("a", ref.kind)[f"{ref.namespace}/{ref.name}"] == record
    route = ref_of(every[3])
    await writer.withdraw(route)
    await env.watcher.step()
    assert env.changes.ref_calls == [{Change("a", route)}]
    assert env.watcher.records("a", Kind.HTTP_ROUTE) == {}
    # A full republish that drops the gateway reports it, and only it.
    env.changes.take()
    await writer.replace_all(
        [r for r in every if r is not every[2] and r is not every[3]],
        cluster_record("a", "epoch-2"),
    )
    await env.watcher.step()
    assert set().union(*env.changes.ref_calls) == {Change("a", ref_of(every[2]))}


async def test_a_bad_record_of_any_kind_is_skipped_and_counted(env: Env) -> None:
    await join(env.registry, "a", [svc("a", "web")])
    await env.watcher.load()
    good = samples.gateway("a")
    env.registry.put_raw("a", "gateway/demo/gw", b'{"v":2,"kind":"gateway"}')
    env.registry.put_raw("a", "nokind/demo/gw", encode_record(good))
    await env.watcher.step()
    assert env.watcher.stats.bad_records >= 2
    assert env.watcher.records("a", Kind.GATEWAY) == {}
    assert set(env.watcher.views["a"].services) == {"shop/web"}


# --- caught up ------------------------------------------------------------------------


async def test_caught_up_waits_for_a_read_that_began_after_the_call() -> None:
    """A read already under way when ``caught_up`` is called may have missed what came
    before the call: only the next one counts, once its changes were applied."""
    clock = FakeClock()
    registry = MemoryRegistry(clock=clock)
    applying, release = asyncio.Event(), asyncio.Event()

    async def slow_callback(changed: set[Change]) -> None:
        applying.set()
        await release.wait()

    watcher = RegistryWatcher(
        registry.reader(), slow_callback, block_ms=0, check_interval=3600, clock=clock
    )
    writer = await join(registry, "a", [svc("a")])
    await watcher.load()
    await writer.publish(svc("a", "api"))
    first = asyncio.create_task(watcher.step())
    await applying.wait()  # the first read is under way, its changes being applied
    waiter = asyncio.create_task(watcher.caught_up())
    release.set()
    await first
    with pytest.raises(TimeoutError):  # negative check: still waiting a while later
        async with asyncio.timeout(0.2):
            await asyncio.shield(waiter)
    await watcher.step()
    async with asyncio.timeout(5):
        await waiter


async def _still_waiting(waiter: asyncio.Task[None]) -> bool:
    """Negative check: ``waiter`` has not returned a while later."""
    try:
        async with asyncio.timeout(0.2):
            await asyncio.shield(waiter)
    except TimeoutError:
        return True
    return False


async def test_caught_up_waits_until_every_stream_was_read_to_its_end(env: Env) -> None:
    writer = await join(env.registry, "a", [svc("a")])
    await env.watcher.load()
    for i in range(READ_COUNT + 1):
        await writer.publish(svc("a", f"s{i}"))
    waiter = asyncio.create_task(env.watcher.caught_up())
    await env.watcher.step()  # READ_COUNT entries: the stream has more
    assert await _still_waiting(waiter)
    await env.watcher.step()
    async with asyncio.timeout(5):
        await waiter
    assert (NS, f"s{READ_COUNT}") in env.watcher.service_names()


async def test_caught_up_runs_the_checks_and_outlasts_a_failed_read() -> None:
    """Between periodic checks a new member would be seen only later: a caller of
    caught_up gets them at once. A read that fails releases nobody; the next one does."""
    clock = FakeClock()
    registry = MemoryRegistry(clock=clock)
    reader = FlakyReader(registry.reader())
    watcher = RegistryWatcher(
        cast(RegistryReader, reader), Changes(), block_ms=0, check_interval=3600, clock=clock
    )
    await join(registry, "a", [svc("a")])
    await watcher.load()
    await watcher.step()  # the first periodic check: none due for an hour now
    await join(registry, "b", [svc("b", "api")])
    waiter = asyncio.create_task(watcher.caught_up())
    reader.failing = True
    with pytest.raises(RegistryUnavailableError):
        await watcher.step()
    assert await _still_waiting(waiter)
    reader.failing = False
    await watcher.step()
    async with asyncio.timeout(5):
        await waiter
    assert "b" in watcher.clusters()
