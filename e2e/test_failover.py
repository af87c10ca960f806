"""Data-plane safety on real Envoys: traffic never goes to endpoints known to be dead or
not ready, fails over between clusters without failed requests, survives config changes,
and long streams and WebSockets pass through the clusterset listener.

The environment is the shared three-cluster one (``data_plane`` in ``e2e/fixtures.py``);
each test works in a namespace of its own with backend host ids of its own (30 and up),
since backends outlive the test that started them. Request loops are bounded in count
and time; their figures are printed (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable

import aiohttp
import grpc
import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.backends import GRPC_METHOD
from e2e.envoy import Envoy
from e2e.federation import Federation, metric
from e2e.processes import wait_until
from e2e.traffic import (
    DEADLINE,
    Loop,
    export_with_backends,
    host,
    kill,
    listener_port_taken,
    served_by,
    wait_served_by,
)
from federation.xds.snapshot import LISTENER

pytestmark = pytest.mark.integration

NO_CLUSTER = r"^http\.clusterset\.no_cluster$"


@pytest.fixture
def fed(data_plane: Federation) -> Federation:
    return data_plane


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "fo")


def cluster_name(ns: str, port: int = 80) -> str:
    return f"clusterset/{ns}/echo/{port}"


def backend_addresses(fed: Federation, cluster_id: str, host_ids: list[int]) -> set[str]:
    cluster = fed.env.cluster(cluster_id)
    return {f"{cluster.backend_ip(h)}:8080" for h in host_ids}


def wait_hosts(
    envoy: Envoy, name: str, addresses: set[str], check: Callable[[str], bool], what: str
) -> None:
    """Wait until ``envoy`` has every host of ``addresses`` in cluster ``name`` and
    ``check(flags)`` holds for each."""

    def done() -> bool:
        health = envoy.host_health(name)
        return addresses <= health.keys() and all(check(health[a]) for a in addresses)

    wait_until(done, timeout=DEADLINE, what=f"{envoy.cluster}'s Envoy: {what}")


def wait_gone(envoy: Envoy, name: str) -> None:
    wait_until(
        lambda: name not in envoy.cluster_names(),
        timeout=DEADLINE,
        what=f"{name} to leave {envoy.cluster}'s Envoy",
    )


def HEALTHY(flags: str) -> bool:
    return flags == "healthy"


def NOT_READY(flags: str) -> bool:
    return "failed_eds_health" in flags


def cluster_stats(envoy: Envoy, name: str, stats: str) -> dict[str, int]:
    """Envoy's counters ``stats`` (a regex alternation) of cluster ``name``, by short name."""
    found = envoy.stats(f"^cluster\\.{re.escape(name)}\\.({stats})$")
    return {key.rsplit(".", 1)[1]: value for key, value in found.items()}


def test_not_ready_endpoints_get_no_traffic_and_none_fails(fed: Federation, ns: str) -> None:
    """a exports 2 endpoints, b 3; c sends traffic. With Envoy's default panic threshold
    (50 %), b's 3 not-ready endpoints out of 5 would still get about 60 % of it."""
    a_hosts, b_hosts = [30, 31], [30, 31, 32]
    export_with_backends(fed, "a", ns, a_hosts, start=True)
    export_with_backends(fed, "b", ns, b_hosts, start=True)
    c = fed.envoys["c"]
    wait_until(
        lambda: {served_by(c, host(ns)) for _ in range(20)} == {"a", "b"},
        timeout=DEADLINE,
        what="c's traffic to reach both a and b",
    )
    b = fed.env.cluster("b")
    b_addresses = backend_addresses(fed, "b", b_hosts)
    with Loop(c, host(ns), count=600, seconds=60) as loop:
        loop.wait_for(20)
        sc.apply(b, sc.endpoint_slice(b, ns, "echo", b_hosts, ready=False))
        wait_hosts(c, cluster_name(ns), b_addresses, NOT_READY, "b not ready")
        applied = time.monotonic()
        loop.wait_for(100, since=applied)
    after = loop.served(since=applied)
    print(f"\nnot ready in b: after Envoy had it {after}; failures {loop.failures()}")
    assert loop.failures() == 0, loop.failed
    assert set(after) == {"a"}, f"requests went to not-ready endpoints: {after}"

    # None healthy anywhere: Envoy answers 503 at once, as a Service without ready
    # endpoints would, instead of trying hosts that are known to be not ready.
    a = fed.env.cluster("a")
    sc.apply(a, sc.endpoint_slice(a, ns, "echo", a_hosts, ready=False))
    wait_hosts(
        c,
        cluster_name(ns),
        backend_addresses(fed, "a", a_hosts),
        NOT_READY,
        "a not ready",
    )
    response = c.request(host(ns), timeout=5)
    assert response.status == 503
    assert b"no healthy upstream" in response.body


def test_killed_backends_are_retried_elsewhere(fed: Federation, ns: str) -> None:
    """b's backends die while its slices still say ready: the requests that find them
    are retried on another host (then ejected by outlier detection), and none fails."""
    a_hosts, b_hosts = [35, 36], [35, 36, 37]
    export_with_backends(fed, "a", ns, a_hosts, start=True)
    b_backends = [fed.start_backend("b", h) for h in b_hosts]
    export_with_backends(fed, "b", ns, b_hosts)
    c = fed.envoys["c"]
    wait_until(
        lambda: {served_by(c, host(ns)) for _ in range(20)} == {"a", "b"},
        timeout=DEADLINE,
        what="c's traffic to reach both a and b",
    )
    before = cluster_stats(c, cluster_name(ns), "upstream_rq_retry|upstream_cx_connect_fail")
    with Loop(c, host(ns), count=600, seconds=60) as loop:
        loop.wait_for(20)
        with loop.paused():
            kill(b_backends)
            killed = time.monotonic()
        loop.wait_for(150, since=killed)
    after = cluster_stats(c, cluster_name(ns), "upstream_rq_retry|upstream_cx_connect_fail")
    retries = after.get("upstream_rq_retry", 0) - before.get("upstream_rq_retry", 0)
    refused = after.get("upstream_cx_connect_fail", 0) - before.get("upstream_cx_connect_fail", 0)
    served = loop.served(since=killed)
    print(
        f"\nb's backends killed: {served} after the kill; failures {loop.failures()}; "
        f"connect failures {refused}, retries {retries}"
    )
    # The bound on failed requests: zero. Every failure happens before the backend could
    # have seen the request (the connection is refused), so it is retried elsewhere.
    assert loop.failures() == 0, loop.failed
    assert set(served) == {"a"}
    assert refused > 0 and retries > 0  # the dead hosts were tried, and retried around


def test_local_endpoints_gone_fail_over_to_remote_clusters(fed: Federation, ns: str) -> None:
    """b's Envoy prefers b's own endpoints. They die (slices still ready), then go from
    the slice: traffic moves to a with no failed request."""
    export_with_backends(fed, "a", ns, [40], start=True)
    b_backends = [fed.start_backend("b", h) for h in (40, 41)]
    export_with_backends(fed, "b", ns, [40, 41])
    envoy = fed.envoys["b"]
    wait_served_by(envoy, host(ns), "b")
    with Loop(envoy, host(ns), count=600, seconds=60) as loop:
        loop.wait_for(20)
        with loop.paused():
            kill(b_backends)
            killed = time.monotonic()
        loop.wait_for(60, since=killed)
        b = fed.env.cluster("b")
        sc.apply(b, sc.endpoint_slice(b, ns, "echo", []))
        b_addresses = backend_addresses(fed, "b", [40, 41])
        wait_until(
            lambda: not b_addresses & envoy.host_health(cluster_name(ns)).keys(),
            timeout=DEADLINE,
            what="b's endpoints to leave b's Envoy",
        )
        gone = time.monotonic()
        loop.wait_for(60, since=gone)
    print(
        f"\nlocal endpoints dead, then gone: {loop.served(since=killed)} after the kill; "
        f"failures {loop.failures()}"
    )
    assert loop.failures() == 0, loop.failed
    assert set(loop.served(since=killed)) == {"a"}


def test_port_changes_cost_no_request(fed: Federation, ns: str) -> None:
    """Each port change replaces the Service's Envoy cluster: the new one must have its
    endpoints before any route names it, or Envoy answers 503 (no_cluster)."""
    export_with_backends(fed, "a", ns, [45], start=True)
    a = fed.env.cluster("a")
    envoys = [fed.envoys["b"], fed.envoys["c"]]  # state of the world and delta
    for envoy in envoys:
        wait_served_by(envoy, host(ns), "a")
    no_cluster = {e.cluster: e.stats(NO_CLUSTER) for e in envoys}
    address = backend_addresses(fed, "a", [45])
    with contextlib.ExitStack() as stack:
        # Under load: the window in which a route could name a warming cluster is short.
        loops = [
            stack.enter_context(Loop(e, host(ns), count=6000, seconds=90, pause=0.0))
            for e in envoys
            for _ in range(2)
        ]
        for loop in loops:
            loop.wait_for(10)
        previous = 80
        for port in (81, 80, 81, 80, 81, 80):
            sc.apply(a, sc.service(ns, "echo", ports=(("http", port, "TCP"),)))
            for envoy in envoys:
                wait_hosts(envoy, cluster_name(ns, port), address, HEALTHY, f"port {port}")
                wait_gone(envoy, cluster_name(ns, previous))
            previous = port
            for loop in loops:
                loop.wait_for(10, since=time.monotonic())
    for envoy in envoys:
        after = envoy.stats(NO_CLUSTER)
        served = [loop.served() for loop in loops if loop.envoy is envoy]
        print(
            f"\nport flips through {envoy.cluster}'s Envoy: {served}, "
            f"no_cluster {no_cluster[envoy.cluster]} -> {after}"
        )
        assert after == no_cluster[envoy.cluster]
    assert sum(loop.failures() for loop in loops) == 0, [loop.served() for loop in loops]


def test_a_nacked_listener_arrives_once_its_port_is_free(fed: Federation, ns: str) -> None:
    """Another process holds the port of b's listener when b's Envoy starts: Envoy NACKs
    the listener. Once the port is free, the hub's re-offer brings it, with no change to
    the configuration in between."""
    export_with_backends(fed, "a", ns, [50], start=True)
    wait_served_by(fed.envoys["c"], host(ns), "a")
    with listener_port_taken(fed, "b") as envoy:

        def listener_nacked() -> bool:
            for proxy in json.loads(fed.hub_http("/debug/proxy-status")):
                types = proxy.get("types", {})
                if proxy.get("group") == "b" and types.get(LISTENER, {}).get("state") == "nacked":
                    return True
            return False

        wait_until(listener_nacked, timeout=DEADLINE, what="b's Envoy to NACK its listener")
        nacked = json.loads(fed.hub_http("/debug/proxy-status"))
        print(
            f"\nNACKed: {[p['types'][LISTENER]['last_nack'] for p in nacked if p['group'] == 'b']}"
        )
    wait_served_by(envoy, host(ns), "a")
    assert metric(fed.hub_http("/metrics"), "federation_xds_nack_reoffers_total") >= 1


def test_a_grpc_stream_longer_than_20_seconds_completes(fed: Federation, ns: str) -> None:
    """No route timeout cuts a long stream (Envoy's default would end it at 15 s)."""
    a = fed.env.cluster("a")
    fed.start_backend("a", 55, 9091, protocol="grpc")
    sc.apply(
        a,
        sc.service(ns, "echo"),  # http 80 and grpc 9090
        sc.endpoint_slice(a, ns, "echo", [55], ports=(("http", 8080), ("grpc", 9091))),
        sc.export(ns, "echo"),
    )
    envoy = fed.envoys["b"]
    grpc_backend = {f"{a.backend_ip(55)}:9091"}
    wait_hosts(envoy, cluster_name(ns, 9090), grpc_backend, HEALTHY, "gRPC")
    options = [("grpc.default_authority", f"{host(ns)}:9090")]
    with grpc.insecure_channel(envoy.listener_address, options=options) as channel:
        call = channel.unary_stream(GRPC_METHOD)
        started = time.monotonic()
        messages = list(call(b"22,1000", timeout=60))
        elapsed = time.monotonic() - started
    print(f"\ngRPC stream through b's Envoy: {len(messages)} messages in {elapsed:.1f} s")
    assert messages == [f"a {i}".encode() for i in range(22)]
    assert elapsed > 20  # the stream really outlived Envoy's default route timeout


def test_a_websocket_echo_works_through_the_listener(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [56], start=True)
    envoy = fed.envoys["b"]
    wait_served_by(envoy, host(ns), "a")

    async def echo() -> list[str]:
        url = f"http://{envoy.listener_address}/ws"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers={"Host": host(ns)}) as ws,
        ):
            replies = []
            for text in ("hello", "again"):
                await ws.send_str(text)
                message = await ws.receive(timeout=DEADLINE)
                replies.append(message.data)
            return replies

    assert asyncio.run(echo()) == ["a: hello", "a: again"]


def test_a_failover_policy_orders_the_clusters_its_own_envoys_prefer(
    fed: Federation, ns: str
) -> None:
    """echo is exported by a, b and c. b's Envoy prefers b's own endpoints (local first)
    until a FailoverPolicy of b says c, then a: it sends to c, and when c's endpoints go
    not ready, to a, never to b. a's Envoy, which no policy of a's covers, keeps local
    first."""
    for cluster_id in ("a", "b", "c"):
        export_with_backends(fed, cluster_id, ns, [57], start=True)
    b, a = fed.envoys["b"], fed.envoys["a"]
    wait_served_by(b, host(ns), "b")
    target = {"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "echo"}
    policy = {
        "apiVersion": "policy.federation.io/v1alpha1",
        "kind": "FailoverPolicy",
        "metadata": {"namespace": ns, "name": "prefer-c"},
        "spec": {"targetRefs": [target], "order": ["c", "a"]},
    }
    sc.apply(fed.env.cluster("b"), policy)
    wait_served_by(b, host(ns), "c")

    def accepted() -> str | None:
        obj = gw.get_yaml(fed.env.cluster("b"), "failoverpolicy", ns, "prefer-c")
        for ancestor in (obj.get("status") or {}).get("ancestors") or []:
            return gw.conditions(ancestor.get("conditions")).get("Accepted", ("", ""))[0]
        return None

    wait_until(lambda: accepted() == "True", timeout=DEADLINE, what="prefer-c Accepted")
    with Loop(b, host(ns), count=100, seconds=30) as preferred:
        preferred.wait_for(40)
    c = fed.env.cluster("c")
    sc.apply(c, sc.endpoint_slice(c, ns, "echo", [57], ready=False))
    wait_served_by(b, host(ns), "a")
    with Loop(b, host(ns), count=100, seconds=30) as next_level:
        next_level.wait_for(40)
    with Loop(a, host(ns), count=100, seconds=30) as elsewhere:
        elsewhere.wait_for(40)
    print(
        f"\nb's FailoverPolicy (c, then a): b's Envoy served by {preferred.served()}, "
        f"with c not ready by {next_level.served()}; a's Envoy by {elsewhere.served()}; "
        f"failures {preferred.failures() + next_level.failures() + elsewhere.failures()}"
    )
    assert set(preferred.served()) == {"c"}
    assert set(next_level.served()) == {"a"}
    assert set(elsewhere.served()) == {"a"}
    assert preferred.failures() == next_level.failures() == elsewhere.failures() == 0
