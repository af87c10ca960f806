"""User stories 1 and 4 on the data plane: the hub serves real Envoys over xDS.

Three real apiservers, redis-server, one agent per cluster, the hub and one
real Envoy per cluster, all as processes; echo backends listen where each
cluster's pod addresses map to (``--address-map``). Request loops are bounded
in count and time; the counts are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from e2e import scenario as sc
from e2e.federation import Federation, metric
from e2e.processes import wait_until
from e2e.traffic import DEADLINE, Loop, export_with_backend, host, served_by, wait_served_by
from federation.registry import keys
from federation.registry.records import (
    ClusterRecord,
    ExportedService,
    ServicePort,
    ServiceType,
)
from federation.registry.redis_store import RedisWriter
from federation.xds.snapshot import CLUSTER

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(data_plane: Federation) -> Federation:
    return data_plane


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "dp")


def test_request_through_b_is_answered_by_a(fed: Federation, ns: str) -> None:
    fed.start_backend("a", 10)
    export_with_backend(fed, "a", ns, 10)
    wait_served_by(fed.envoys["b"], host(ns), "a")
    wait_served_by(fed.envoys["c"], host(ns), "a")  # c speaks delta xDS
    # With the port in the Host header too.
    assert served_by(fed.envoys["b"], host(ns) + ":80") == "a"


def test_local_first_then_failover_without_failed_requests(fed: Federation, ns: str) -> None:
    fed.start_backend("a", 11)
    fed.start_backend("b", 11)
    export_with_backend(fed, "a", ns, 11)
    wait_served_by(fed.envoys["b"], host(ns), "a")
    export_with_backend(fed, "b", ns, 11)
    wait_served_by(fed.envoys["b"], host(ns), "b")
    assert {served_by(fed.envoys["b"], host(ns)) for _ in range(20)} == {"b"}
    assert {served_by(fed.envoys["a"], host(ns)) for _ in range(20)} == {"a"}

    with Loop(fed.envoys["b"], host(ns)) as loop:
        wait_until(lambda: len(loop.results) >= 20, timeout=DEADLINE, what="a steady loop")
        # b's endpoints become not ready; the agent carries it to the registry.
        b = fed.env.cluster("b")
        sc.apply(b, sc.endpoint_slice(b, ns, "echo", [11], ready=False))
        admin = fed.redis.admin_client()

        def b_not_ready_in_registry() -> bool:
            raw = admin.hget(keys.records("b"), f"service/{ns}/echo")
            return raw is not None and b'"ready":false' in raw

        wait_until(b_not_ready_in_registry, timeout=DEADLINE, what="b not ready in the registry")
        reached = time.monotonic()
        wait_until(
            lambda: any(who == "a" for t, who in loop.results if t > reached),
            timeout=DEADLINE,
            what="traffic to move to a",
        )
        moved = min(t for t, who in loop.results if t > reached and who == "a")
        wait_until(
            lambda: len([1 for t, _ in loop.results if t > moved]) >= 50,
            timeout=DEADLINE,
            what="50 requests after the move",
        )
    after = loop.served(since=reached)
    print(
        f"\nfailover: moved {1000 * (moved - reached):.0f} ms after the registry had it; "
        f"requests after the change: {after}; failures: {loop.failures(since=reached)}; "
        f"total {len(loop.results)}"
    )
    assert loop.failures() == 0, loop.failed
    assert loop.served(since=moved + 0.5).keys() == {"a"}


def test_hub_killed_costs_zero_requests_and_envoys_resync(fed: Federation, ns: str) -> None:
    fed.start_backend("a", 12)
    export_with_backend(fed, "a", ns, 12)
    wait_served_by(fed.envoys["b"], host(ns), "a")
    with Loop(fed.envoys["b"], host(ns), count=250) as loop:
        wait_until(lambda: len(loop.results) >= 20, timeout=DEADLINE, what="a steady loop")
        fed.kill_hub()
        killed = time.monotonic()
        wait_until(
            lambda: len([1 for t, _ in loop.results if t > killed]) >= 50,
            timeout=DEADLINE,
            what="50 requests with the hub dead",
        )
        fed.start_hub()
        fed.wait_hub_ready()
        try:
            wait_until(
                lambda: _all_synced(fed),
                timeout=DEADLINE,
                what="every Envoy reconnected and synced",
            )
        except Exception as err:
            raise AssertionError(f"{err}: {json.dumps(_proxies(fed), indent=1)}") from err
    print(f"\nhub killed: {len(loop.results)} requests, {loop.failures()} failed")
    assert loop.failures() == 0, loop.failed
    # The restarted hub's metrics count the streams it serves and their ACKs.
    metrics = fed.hub_http("/metrics")
    assert metric(metrics, "federation_hub_ready") == 1
    assert metric(metrics, "federation_xds_streams_active") >= len(fed.env.clusters)
    assert metric(metrics, "federation_xds_acks_total") > 0
    assert metric(metrics, "federation_xds_nacks_total") == 0
    # A change made after the restart still arrives.
    fed.start_backend("c", 12)
    export_with_backend(fed, "c", ns, 12)
    wait_served_by(fed.envoys["c"], host(ns), "c")


def _proxies(fed: Federation) -> list[dict[str, object]]:
    data: list[dict[str, object]] = json.loads(fed.hub_http("/debug/proxy-status"))
    return data


def _all_synced(fed: Federation) -> bool:
    proxies = _proxies(fed)
    groups = {p.get("group") for p in proxies}
    return groups >= set(fed.env.clusters) and all(p.get("synced") is True for p in proxies)


def test_restarted_envoy_gets_its_full_configuration(fed: Federation, ns: str) -> None:
    fed.start_backend("a", 13)
    export_with_backend(fed, "a", ns, 13)
    wait_served_by(fed.envoys["b"], host(ns), "a")
    fed.envoys["b"].stop()
    fed.start_envoy("b")
    wait_served_by(fed.envoys["b"], host(ns), "a")


def test_each_request_is_logged_with_the_cluster_that_served_it(fed: Federation, ns: str) -> None:
    """b's Envoy, asked for a service only a exports, writes a JSON access-log line on
    its standard output naming a as the source cluster of the endpoint that answered."""
    fed.start_backend("a", 14)
    export_with_backend(fed, "a", ns, 14)
    envoy = fed.envoys["b"]
    wait_served_by(envoy, host(ns), "a")
    path = f"/access-log/{uuid.uuid4().hex}"
    assert envoy.request(host(ns), path).status == 200
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [e for e in envoy.access_log() if e.get("path") == path]
        return bool(found)

    wait_until(logged, timeout=DEADLINE, what=f"b's Envoy to log {path}")
    (entry,) = found
    print(f"\nb's access log for a request served by a: {json.dumps(entry, sort_keys=True)}")
    assert entry["source_cluster"] == "a"
    assert entry["upstream_cluster"] == f"clusterset/{ns}/echo/80"
    assert entry["route"] == f"clusterset/{ns}/echo/80"
    assert (entry["method"], entry["response_code"], entry["response_flags"]) == ("GET", 200, "-")
    assert entry["authority"] == host(ns) and isinstance(entry["duration_ms"], int)
    assert entry["upstream_host"] == f"{fed.env.cluster('a').backend_ip(14)}:8080"


def test_fresh_hub_sends_nothing_until_the_registry_is_loaded(fed: Federation) -> None:
    """A hub started against a large registry answers an early client completely."""
    records = [
        ExportedService(
            cluster="bulk",
            namespace="bulk",
            name=f"s{i}",
            type=ServiceType.CLUSTER_SET_IP,
            ports=(ServicePort("http", "TCP", 80),),
            created="2026-01-01T00:00:00Z",
        )
        for i in range(3000)
    ]

    async def fill() -> None:
        writer = RedisWriter.from_url(fed.redis.url("default", fed.redis.admin_password), "bulk")
        await writer.replace_all(records, ClusterRecord("bulk", "test", time.time(), "e1"))
        await writer.renew_lease(60_000, "t")
        await writer.close()

    asyncio.run(fill())
    second = Federation(fed.env)
    second.registry, second.hub_password = fed.registry, fed.hub_password
    second.start_hub(tls=False)  # readiness is the subject here, not identity

    async def first_cds() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.hub_xds_port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=DEADLINE)
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.StreamAggregatedResources()
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    node=base_pb2.Node(id="early", cluster="a"), type_url=CLUSTER
                )
            )
            response = await asyncio.wait_for(call.read(), timeout=60)
            call.cancel()
            return len(response.resources)

    async def clean() -> None:
        writer = RedisWriter.from_url(fed.redis.url("default", fed.redis.admin_password), "bulk")
        await writer.replace_all([], ClusterRecord("bulk", "test", time.time(), "e2"))
        await writer.close()

    try:
        assert asyncio.run(first_cds()) >= len(records)
    finally:
        assert second.hub is not None
        fed.env.group.stop(second.hub)
        asyncio.run(clean())
