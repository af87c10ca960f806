"""Which Gateway generations each cluster's Envoys applied: the hub's side and the format
agents read (federation.hub.programmed, federation.programmed)."""

from __future__ import annotations

import pytest

from federation.hub.programmed import SWEEP_EVERY, ProgrammedPublisher, facts
from federation.programmed import STALE_AFTER, HubFacts, decode, encode, merge, merged_facts
from federation.registry.hub_state import MemoryHubState
from federation.translate.gateway.inputs import PatchFact, ProgrammedFact
from federation.xds.snapshot import LISTENER, ROUTE, SECRET
from federation.xds.status import SyncRegistry

GW = ("shop", "gw")


def registry_with(states: dict[str, str], group: str = "b/shop/gw") -> SyncRegistry:
    """One stream of ``group`` whose LDS and RDS are ``synced``, ``stale`` or ``nacked``."""
    versions = {LISTENER: "l1", ROUTE: "r1", SECRET: "s1"}
    sync = SyncRegistry(lambda g: versions)
    stream = sync.open("envoy-1", group, "sotw")
    for type_url, state in states.items():
        stream.subscribed(type_url)
        stream.sent(type_url, versions[type_url], "1")
        stream.evaluated(type_url, versions[type_url])
        if state == "synced":
            stream.acked(type_url, versions[type_url])
        elif state == "nacked":
            stream.nacked(type_url, versions[type_url], "1", "cannot bind: address in use")
    return sync


def test_a_generation_counts_once_every_envoy_acked_listeners_and_routes() -> None:
    synced = registry_with({LISTENER: "synced", ROUTE: "synced"})
    assert facts({GW: 3}, lambda _: synced.list("b/shop/gw"), {}) == {
        GW: ProgrammedFact(3, None, 1)
    }
    pending = registry_with({LISTENER: "synced", ROUTE: "stale"})
    # Not yet: the generation applied before is kept.
    assert facts({GW: 3}, lambda _: pending.list("b/shop/gw"), {GW: 2}) == {
        GW: ProgrammedFact(2, None, 1)
    }
    nacked = registry_with({LISTENER: "nacked", ROUTE: "synced"})
    (fact,) = facts({GW: 3}, lambda _: nacked.list("b/shop/gw"), {}).values()
    assert fact.generation is None and fact.rejected and "address in use" in fact.rejected
    assert facts({GW: 3}, lambda _: [], {}) == {GW: ProgrammedFact(None, None, 0)}  # no Envoy


def test_a_rejected_certificate_is_a_rejected_gateway_and_none_asked_is_none_missing() -> None:
    """SDS counts once subscribed: a Gateway without HTTPS never asks for a Secret."""
    plain = registry_with({LISTENER: "synced", ROUTE: "synced"})
    assert facts({GW: 3}, lambda _: plain.list("b/shop/gw"), {})[GW].generation == 3
    tls = registry_with({LISTENER: "synced", ROUTE: "synced", SECRET: "stale"})
    assert facts({GW: 3}, lambda _: tls.list("b/shop/gw"), {})[GW].generation is None
    bad = registry_with({LISTENER: "synced", ROUTE: "synced", SECRET: "nacked"})
    (fact,) = facts({GW: 3}, lambda _: bad.list("b/shop/gw"), {}).values()
    assert fact.generation is None and "address in use" in (fact.rejected or "")


def test_the_codec_round_trips_and_refuses_garbage() -> None:
    given = {GW: ProgrammedFact(3, None, 2), ("shop", "other"): ProgrammedFact(None, "x", 1)}
    patches = {("shop", "hdr"): PatchFact(2, invalid="jsonPatches[0]: no", envoys=1)}
    at, got = decode(encode("hub-1", given, 123.5, patches))
    assert (at, got) == (123.5, HubFacts(given, patches))
    # A hub of a version before EnvoyPatchPolicy wrote no "patches".
    older = b'{"at": 1, "gateways": [], "hub": "h"}'
    assert decode(older) == (1.0, HubFacts({}, {}))
    for bad in (b"{", b"{}", b'{"at": 1, "gateways": [{"namespace": "a"}]}'):
        with pytest.raises((ValueError, KeyError)):
            decode(bad)


def test_hub_replicas_merge_to_the_oldest_applied_generation_and_any_rejection() -> None:
    one = {GW: ProgrammedFact(3, None, 1)}
    two = {GW: ProgrammedFact(2, None, 1)}
    none = {GW: ProgrammedFact(None, None, 0)}  # this replica has no Envoy of the cluster
    assert merge([one, two, none]) == {GW: ProgrammedFact(2, None, 2)}
    assert merge([none, one]) == one
    rejected = merge([one, {GW: ProgrammedFact(None, "nack", 1)}])
    assert rejected[GW].rejected == "nack" and rejected[GW].generation is None


async def test_one_gateways_nack_is_that_gateways_alone() -> None:
    """Each Gateway's facts come from its own Envoys (node group b/<ns>/<name>)."""
    other = ("shop", "other")
    sync = registry_with({LISTENER: "nacked", ROUTE: "synced"}, group="b/shop/other")
    stream = sync.open("envoy-2", "b/shop/gw", "sotw")
    for type_url, version in ((LISTENER, "l1"), (ROUTE, "r1")):
        stream.subscribed(type_url)
        stream.sent(type_url, version, "1")
        stream.evaluated(type_url, version)
        stream.acked(type_url, version)
    state = MemoryHubState()
    publisher = ProgrammedPublisher(state, sync, lambda: {"b": {GW: 2, other: 5}}, "hub-1")
    await publisher.publish_once()
    got = (await merged_facts(state, "b")).gateways
    assert got[GW] == ProgrammedFact(2, None, 1)
    assert got[other].generation is None and "address in use" in (got[other].rejected or "")


async def test_the_publisher_writes_changes_and_agents_read_them_back() -> None:
    state = MemoryHubState()
    sync = registry_with({LISTENER: "synced", ROUTE: "synced"})
    generations = {"b": {GW: 4}}
    now = [1000.0]
    publisher = ProgrammedPublisher(state, sync, lambda: generations, "hub-1", clock=lambda: now[0])
    await publisher.publish_once()
    got = await merged_facts(state, "b", now=now[0])
    assert got == HubFacts({GW: ProgrammedFact(4, None, 1)}, {})
    await publisher.publish_once()
    assert publisher.writes == 1  # nothing changed, no heartbeat due: no write
    now[0] += 11
    await publisher.publish_once()
    assert publisher.writes == 2  # the heartbeat
    # A replica that stopped writing is ignored once stale, and a cluster that left is
    # dropped.
    assert await merged_facts(state, "b", now=now[0] + 61) == HubFacts()
    generations.clear()
    await publisher.publish_once()
    assert await state.states("b") == {}


async def test_a_stopping_replica_withdraws_and_others_delete_a_killed_ones_reports() -> None:
    """Reports must not outlive their replica: a replica that stops deletes its own, and
    those of one killed are deleted by the others once agents ignore them, so the hash
    does not grow with every hub pod ever started."""
    state = MemoryHubState()
    sync = registry_with({LISTENER: "synced", ROUTE: "synced"})
    now = [1000.0]
    replicas = [
        ProgrammedPublisher(state, sync, lambda: {"b": {GW: 4}}, f"hub-{i}", clock=lambda: now[0])
        for i in range(3)
    ]
    for replica in replicas:
        await replica.publish_once()
    assert sorted(await state.states("b")) == ["hub-0", "hub-1", "hub-2"]
    await replicas[0].withdraw()
    assert sorted(await state.states("b")) == ["hub-1", "hub-2"]
    # hub-2 is killed: it writes no more. Before its report is stale, it stays.
    now[0] += 30
    await replicas[1].publish_once()
    assert await replicas[1].sweep(now[0]) == []
    now[0] += 31
    assert await replicas[1].sweep(now[0]) == [("b", "hub-2")]
    assert sorted(await state.states("b")) == ["hub-1"]
    # Publishing sweeps every SWEEP_EVERY seconds by itself.
    await replicas[2].publish_once()  # hub-2 was only paused, after all
    now[0] += SWEEP_EVERY + STALE_AFTER
    await replicas[1].publish_once()
    assert sorted(await state.states("b")) == ["hub-1"]
    await state.put("b", "hub-9", b"a newer hub's format")
    assert await replicas[1].sweep(now[0] + 3600) == []  # not ours to judge
