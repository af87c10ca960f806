"""The registry across a failover of Redis's own distribution, on real processes.

A Redis Cluster (3 masters, a replica each) and a primary with a replica under 3
sentinels, each started for its test: a master is killed by its pid, in the middle
of a burst of writes. What the agent and every reader rely on:

* writes fail while no master serves the slot, and succeed again once a replica is
  promoted (the clients find it: the cluster's slot map, the sentinels);
* a write the old master acknowledged but never replicated is detected by the
  writer's counter, and ``renew_lease`` reports the loss, so the agent republishes;
* a watcher on the registry ends with exactly the writer's records.

Whether a failover loses a write depends on timing (Redis replicates
asynchronously), so detection is also tested deterministically, on every topology,
by taking the counter back as a replica that missed a write would have it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import TypeVar

import pytest

from e2e.processes import ProcessGroup
from e2e.redis_topologies import RedisClusterServers, RedisSentinelSet
from federation.process import stop_tasks
from federation.registry import keys
from federation.registry.kinds import Kind
from federation.registry.records import ClusterRecord, ExportedService
from federation.registry.redis_store import RedisReader, RedisWriter
from federation.registry.topology import client_from_url
from federation.registry.watcher import Change, RegistryWatcher
from tests import samples
from tests.integration.test_registry_contract import retried

pytestmark = pytest.mark.integration

#: How long a failover may take here: a node timeout (1.5 s) and an election.
FAILOVER_DEADLINE = 60.0
LEASE_MS = 60_000
BURST = 200
SERVICES = 40

Registry = RedisClusterServers | RedisSentinelSet
T = TypeVar("T")


@pytest.fixture(params=["redis-cluster", "redis-sentinel"])
def registry(request: pytest.FixtureRequest) -> Iterator[Registry]:
    """A registry of its own: the test kills one of its masters."""
    group = ProcessGroup()
    made: Registry = (
        RedisClusterServers(group) if request.param == "redis-cluster" else RedisSentinelSet(group)
    )
    try:
        with made:
            yield made
    finally:
        group.stop_all()


def cluster_record(epoch: str) -> ClusterRecord:
    return replace(samples.cluster_record("a"), epoch=epoch)


async def until_served(call: Callable[[], Awaitable[T]]) -> T:
    """``call``'s result, retried while the registry fails over (as the agent does)."""
    return await retried(call, within=FAILOVER_DEADLINE)


async def republish(writer: RedisWriter, records: list[ExportedService], epoch: str) -> None:
    """What the agent does when the registry lost its data: replace everything."""
    await until_served(lambda: writer.replace_all(records, cluster_record(epoch)))


@pytest.fixture
async def stores(registry: Registry) -> AsyncIterator[tuple[RedisWriter, RedisReader]]:
    writer = RedisWriter.from_url(registry.admin_url, "a", socket_timeout=2)
    reader = RedisReader.from_url(registry.admin_url, socket_timeout=2)
    try:
        yield writer, reader
    finally:
        await writer.close()
        await reader.close()


async def test_a_master_killed_mid_burst_ends_with_every_reader_at_the_truth(
    registry: Registry, stores: tuple[RedisWriter, RedisReader]
) -> None:
    writer, reader = stores
    truth: dict[str, ExportedService] = {}
    await until_served(lambda: writer.replace_all([], cluster_record("e0")))

    async def ignore(_: set[Change]) -> None:
        pass

    watcher = RegistryWatcher(reader, ignore, check_interval=0.2)
    watching = asyncio.create_task(watcher.run())
    killed = None
    try:
        for i in range(BURST):
            if i == BURST // 3:
                killed = registry.master_of(keys.stream("a"))
                registry.kill(killed)
            record = samples.service("a", f"svc-{i % SERVICES}", i + 1)
            await until_served(lambda record=record: writer.publish(record))  # type: ignore[misc]
            truth[record.name] = record
        # The agent's lease loop: a renewal that reports lost data is followed by a
        # republish of everything.
        republished = 0
        while not await until_served(lambda: writer.renew_lease(LEASE_MS, "t")):
            republished += 1
            assert republished < 5, "renewal keeps reporting a loss after republishing"
            await republish(writer, list(truth.values()), f"e{republished}")

        def in_view() -> dict[str, object]:
            return {k.split("/", 1)[1]: v for k, v in watcher.records("a", Kind.SERVICE).items()}

        deadline = time.monotonic() + FAILOVER_DEADLINE
        while in_view() != truth:
            assert time.monotonic() < deadline, (
                f"the watcher has {len(in_view())} records, not the writer's {len(truth)}"
            )
            await asyncio.sleep(0.05)
        assert killed is not None and registry.master_of(keys.stream("a")) is not killed
    finally:
        # Asked again each second: on Python 3.11 redis-py can drop one (see stop_tasks).
        (outcome,) = await stop_tasks([watching], within=30)
        assert watching.done(), "the watcher did not stop when cancelled"
        assert isinstance(outcome, asyncio.CancelledError), outcome


async def test_renewal_reports_writes_a_failover_lost(
    registry: Registry, stores: tuple[RedisWriter, RedisReader]
) -> None:
    """A replica promoted without the last write has the counter one behind the
    writer's: the next renewal says the cluster's data was lost."""
    writer, _ = stores
    await until_served(lambda: writer.replace_all([], cluster_record("e0")))
    await writer.publish(samples.service("a", "x", 1))
    assert await writer.renew_lease(LEASE_MS, "t") is True
    admin = client_from_url(registry.admin_url, {})
    try:
        await admin.decr(keys.seq("a"))  # as the promoted replica would have it
    finally:
        await admin.aclose()
    assert await writer.renew_lease(LEASE_MS, "t") is False
    await writer.replace_all([samples.service("a", "x", 1)], cluster_record("e1"))
    assert await writer.renew_lease(LEASE_MS, "t") is True


async def test_a_write_after_a_lost_one_is_noticed_too(
    registry: Registry, stores: tuple[RedisWriter, RedisReader]
) -> None:
    """The writer's next transaction after a loss sees the counter jump back: the
    loss is remembered until everything is republished, whatever is written since."""
    writer, _ = stores
    await until_served(lambda: writer.replace_all([], cluster_record("e0")))
    await writer.publish(samples.service("a", "x", 1))
    admin = client_from_url(registry.admin_url, {})
    try:
        await admin.decr(keys.seq("a"))
    finally:
        await admin.aclose()
    await writer.publish(samples.service("a", "y", 1))  # the counter says 2 again, not 3
    assert await writer.renew_lease(LEASE_MS, "t") is False
    assert await writer.renew_lease(LEASE_MS, "t") is False, "forgotten before a republish"
    await writer.replace_all(
        [samples.service("a", "x", 1), samples.service("a", "y", 1)], cluster_record("e1")
    )
    assert await writer.renew_lease(LEASE_MS, "t") is True
