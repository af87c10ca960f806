"""Envoy Gateway's BackendTrafficPolicy, honoured by a Gateway's own real Envoy.

On the shared three-cluster environment (as :mod:`e2e.test_gateway_api`): a Gateway in
``b`` with routes to a ServiceImport exported by ``a`` or to a Service of ``b``, and
policies written as a team would write them for Envoy Gateway. Each test observes what
the policy does on real traffic (a backend that fails on purpose, slow requests beyond a
circuit breaker, one client's requests hashed to one backend) and prints its figures
(``-s``); then the status ``kubectl`` shows. Backend host ids are 80 and up. Request
loops are bounded in count and time.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.federation import Federation
from e2e.processes import wait_until
from e2e.test_gateway_api import CLUSTER_B, fed, local_service, make_gateway
from e2e.traffic import Loop, Outcome, export_with_backends, host, wait_served_by
from federation.translate.gateway.status import CONTROLLER_NAME

pytestmark = pytest.mark.integration

#: The shared environment with our GatewayClass in b (the fixture of the Gateway tests).
__all__ = ["fed"]

GATEWAY_GROUP = "gateway.networking.k8s.io"


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "btp")


def policy(ns: str, name: str, route: str, **spec: Any) -> dict[str, Any]:
    """A BackendTrafficPolicy on HTTPRoute ``route``, as Envoy Gateway documents it."""
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": {
            "targetRefs": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "name": route}],
            **spec,
        },
    }


def ancestor_conditions(
    fed: Federation, ns: str, name: str, cluster: str = CLUSTER_B
) -> dict[str, tuple[str, str]]:
    """Our first ancestor entry's conditions of a policy (empty until written)."""
    obj = gw.get_yaml(fed.env.cluster(cluster), "backendtrafficpolicy", ns, name)
    for ancestor in (obj.get("status") or {}).get("ancestors") or []:
        if ancestor.get("controllerName") == CONTROLLER_NAME:
            return gw.conditions(ancestor.get("conditions"))
    return {}


def wait_accepted(
    fed: Federation, ns: str, name: str, status: str = "True", reason: str = "Accepted"
) -> None:
    gw.wait_conditions(
        lambda: ancestor_conditions(fed, ns, name),
        {"Accepted": (status, reason)},
        f"BackendTrafficPolicy {ns}/{name} Accepted={status}",
    )


def route_to_echo(fed: Federation, ns: str, name: str = "api", **backend: Any) -> str:
    """A Gateway in b whose HTTPRoute ``name`` sends everything to ServiceImport echo."""
    address = make_gateway(fed, ns)
    gw.apply(
        fed.env.cluster(CLUSTER_B),
        gw.http_route(ns, name, "gw", [{"backendRefs": [gw.backend("echo", **backend)]}]),
    )
    gw.wait_for_status(address, "/", 200)
    return address


def test_retries_and_timeouts_on_a_misbehaving_backend(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [80], start=True)
    address = route_to_echo(fed, ns)
    # Without a policy, only failures before the request was sent are retried: a 503
    # reaches the client.
    assert gw.request(address, "/flaky?fail=1&key=before").status == 503
    gw.apply(
        fed.env.cluster(CLUSTER_B),
        policy(
            ns,
            "retries",
            "api",
            retry={
                "numRetries": 3,
                "retryOn": {"triggers": ["retriable-status-codes"], "httpStatusCodes": [503]},
                "perRetry": {"backOff": {"baseInterval": "20ms", "maxInterval": "100ms"}},
            },
            timeout={"http": {"requestTimeout": "1s"}},
        ),
    )
    wait_accepted(fed, ns, "retries")
    gw.wait_for_status(address, "/flaky?fail=1&key=probe", 200)
    began = time.monotonic()
    reply = gw.request(address, "/flaky?fail=3&key=three")
    took = time.monotonic() - began
    print(f"\nretries: 3 failures then {reply.status} after {took * 1000:.0f} ms")
    assert reply.status == 200  # three 503s retried, the fourth attempt answered
    assert gw.request(address, "/flaky?fail=4&key=four").status == 503  # one too many
    began = time.monotonic()
    slow = gw.request(address, "/slow?ms=4000", timeout=10)
    took = time.monotonic() - began
    print(f"request timeout 1s: {slow.status} after {took:.2f} s")
    assert slow.status == 504
    assert took < 3.5  # cut by the policy's timeout, not by the backend answering


def test_a_circuit_breaker_trips_with_503_and_the_overflow_flag(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [81], start=True)
    address = route_to_echo(fed, ns)
    gw.apply(
        fed.env.cluster(CLUSTER_B),
        policy(
            ns,
            "breaker",
            "api",
            circuitBreaker={"maxConnections": 1, "maxPendingRequests": 1, "maxParallelRequests": 1},
        ),
    )
    wait_accepted(fed, ns, "breaker")
    envoy = fed.gateway_envoys[CLUSTER_B, ns, "gw"]
    cluster = f"policy/{ns}/breaker/clusterset/{ns}/echo/80"
    wait_until(
        lambda: cluster in envoy.cluster_names(),
        timeout=30,
        what=f"{cluster} on the Gateway's Envoy",
    )

    def slow(_: int) -> gw.Reply | None:
        return gw.try_request(address, "/slow?ms=1500", timeout=10)

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(slow, range(8)))
    statuses = Counter(r.status if r is not None else 0 for r in replies)
    overflowed = [r for r in replies if r is not None and r.headers.get("x-envoy-overloaded")]
    stats = envoy.stats(f"cluster.{cluster}.upstream_rq_pending_overflow")
    print(f"\ncircuit breaker: {dict(statuses)}, overflow flag on {len(overflowed)}, {stats}")
    assert statuses[200] >= 1 and statuses[503] >= 1
    assert len(overflowed) == statuses[503]  # every 503 is the breaker's, flagged
    assert sum(stats.values()) >= len(overflowed)


def test_consistent_hashing_keeps_a_client_on_one_backend(fed: Federation, ns: str) -> None:
    local_service(fed, ns, "pool", [82, 83, 84])
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    gw.apply(
        b,
        gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("pool", imported=False)]}]),
        policy(
            ns,
            "sticky",
            "api",
            loadBalancer={
                "type": "ConsistentHash",
                "consistentHash": {"type": "Header", "header": {"name": "x-user"}},
            },
        ),
    )
    wait_accepted(fed, ns, "sticky")

    def backend_of(user: str) -> str:
        reply = gw.request(address, "/", headers={"x-user": user})
        assert reply.status == 200
        return str(reply.json()["backend"])

    # The policy is in effect once one user's requests stop spreading.
    wait_until(
        lambda: len({backend_of("alice") for _ in range(6)}) == 1,
        timeout=30,
        what="alice's requests on one backend",
    )
    per_user = {
        user: Counter(backend_of(user) for _ in range(10))
        for user in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
    }
    print("\nconsistent hash:", {u: dict(c) for u, c in per_user.items()})
    assert all(len(c) == 1 for c in per_user.values())  # each user on one backend
    assert len({next(iter(c)) for c in per_user.values()}) >= 2  # users spread over backends


def test_an_invalid_policy_is_refused_by_name_and_nothing_stops_serving(
    fed: Federation, ns: str
) -> None:
    export_with_backends(fed, "a", ns, [85], start=True)
    address = route_to_echo(fed, ns)
    b = fed.env.cluster(CLUSTER_B)

    def probe() -> Outcome:
        reply = gw.try_request(address, "/")
        if reply is None:
            return Outcome(None, "connection failed")
        if reply.status != 200:
            return Outcome(None, f"status {reply.status}")
        return Outcome(str(reply.json()["cluster"]))

    with Loop(None, count=600, seconds=60, probe=probe) as loop:
        gw.apply(
            b,
            policy(
                ns,
                "limited",
                "api",
                # Compression is Envoy Gateway's, not ours: refused by name.
                compressor=[{"type": "Gzip"}],
                retry={"numRetries": 1},
            ),
        )
        gw.wait_conditions(
            lambda: ancestor_conditions(fed, ns, "limited"),
            {"Accepted": ("False", "Invalid")},
            "the policy refused",
        )
        listing = b.kubectl("get", "backendtrafficpolicies", "-A").stdout
        sc.delete(b, "backendtrafficpolicy", ns, "limited")
        removed_at = len(loop.results)
        wait_until(
            lambda: len(loop.results) >= removed_at + 20,
            timeout=30,
            what="20 more requests after the policy's removal",
        )
    print(f"\n{listing}")
    print(
        f"invalid policy applied and removed: {len(loop.results)} requests, "
        f"{len(loop.failed)} failed"
    )
    assert loop.failed == []
    row = next(line for line in listing.splitlines() if " limited " in f" {line} ")
    assert row.split()[2:4] == ["False", "Invalid"]  # the Accepted and Reason columns
    refused = gw.get_yaml(b, "gateway", ns, "gw")  # the Gateway itself is untouched
    assert gw.conditions(refused["status"]["conditions"])["Programmed"][0] == "True"


def test_an_active_health_check_ejects_a_live_but_unhealthy_backend(
    fed: Federation, ns: str
) -> None:
    export_with_backends(fed, "a", ns, [86, 87], start=True)
    address = route_to_echo(fed, ns)
    gw.apply(
        fed.env.cluster(CLUSTER_B),
        policy(
            ns,
            "checked",
            "api",
            healthCheck={
                "active": {
                    "type": "HTTP",
                    "timeout": "500ms",
                    "interval": "500ms",
                    "unhealthyThreshold": 1,
                    "healthyThreshold": 1,
                    "http": {"path": "/__healthz", "expectedStatuses": [200]},
                }
            },
        ),
    )
    wait_accepted(fed, ns, "checked")
    a = fed.env.cluster("a")
    sick, well = f"{a.backend_ip(86)}:8080", f"{a.backend_ip(87)}:8080"

    def backends(count: int) -> Counter[str]:
        return Counter(str(gw.request(address, "/").json()["backend"]) for _ in range(count))

    wait_until(lambda: len(backends(10)) == 2, timeout=30, what="both backends serving")
    assert gw.request(sick, "/__health?ok=0").status == 200  # it still serves everything else
    assert gw.request(sick, "/").status == 200
    began = time.monotonic()
    wait_until(lambda: set(backends(10)) == {well}, timeout=30, what="the sick backend ejected")
    ejected = time.monotonic() - began
    after = backends(40)
    print(f"\nactive health check: ejected after {ejected:.2f} s; next 40 requests: {dict(after)}")
    assert set(after) == {well}
    gw.request(sick, "/__health?ok=1")
    wait_until(lambda: len(backends(10)) == 2, timeout=30, what="the backend back once healthy")


def test_a_local_rate_limit_answers_429_past_its_budget(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [88], start=True)
    address = route_to_echo(fed, ns)
    gw.apply(
        fed.env.cluster(CLUSTER_B),
        policy(
            ns,
            "limited",
            "api",
            rateLimit={
                "local": {
                    "rules": [
                        {"limit": {"requests": 3, "unit": "Hour"}},
                        {
                            "clientSelectors": [{"headers": [{"name": "x-tier", "value": "free"}]}],
                            "limit": {"requests": 1, "unit": "Hour"},
                        },
                    ]
                }
            },
        ),
    )
    wait_accepted(fed, ns, "limited")
    free = {"x-tier": "free"}
    # Until the policy reaches the Envoy every request passes; then the free tier's one
    # request an hour goes, and the next is refused.
    wait_until(
        lambda: gw.request(address, "/", headers=free).status == 429,
        timeout=30,
        what="the free tier limited",
    )
    free_again = [gw.request(address, "/", headers=free).status for _ in range(3)]
    others = [gw.request(address, "/").status for _ in range(5)]
    print(f"\nlocal rate limit: free tier {free_again}, default bucket {others}")
    assert free_again == [429, 429, 429]
    assert others == [200, 200, 200, 429, 429]  # the default bucket: 3 an hour


def _max_connections(envoy: Any, cluster: str) -> int | None:
    """``max_connections`` of ``cluster`` as an Envoy's admin ``/clusters`` shows it."""
    prefix = f"{cluster}::default_priority::max_connections::"
    for line in envoy.admin("/clusters").splitlines():
        if line.startswith(prefix):
            return int(line[len(prefix) :])
    return None


def test_a_policy_on_a_serviceimport_is_honoured_by_every_clusters_envoys(
    fed: Federation, ns: str
) -> None:
    """The owner's circuit breaker, set in ``a``, protects the service from ``b`` and
    ``c``: the extension of Envoy Gateway's attachment model that Federation adds."""
    export_with_backends(fed, "a", ns, [89], start=True)
    wait_served_by(fed.envoys["b"], host(ns), "a")
    a = fed.env.cluster("a")
    owner = policy(ns, "owner", "echo", circuitBreaker={"maxConnections": 7})
    owner["spec"]["targetRefs"] = [
        {"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "echo"}
    ]
    gw.apply(a, owner)
    gw.wait_conditions(
        lambda: ancestor_conditions(fed, ns, "owner", "a"),
        {"Accepted": ("True", "Accepted")},
        "the owner's policy accepted",
    )
    obj = gw.get_yaml(a, "backendtrafficpolicy", ns, "owner")
    cluster = f"clusterset/{ns}/echo/80"
    for cluster_id in ("b", "c"):
        envoy = fed.envoys[cluster_id]
        wait_until(
            lambda envoy=envoy: _max_connections(envoy, cluster) == 7,  # type: ignore[misc]
            timeout=30,
            what=f"{cluster_id}'s Envoy limiting {cluster} to 7 connections",
        )
    status = gw.get_yaml(a, "backendtrafficpolicy", ns, "owner")["status"]["ancestors"]
    print(f"\npolicy on a ServiceImport: b and c limit {cluster} to 7 connections; {status}")
    assert status[0]["ancestorRef"]["kind"] == "ServiceImport"
    assert obj["spec"]["targetRefs"][0]["group"] == "multicluster.x-k8s.io"  # the CRD took it
    # Deleted, the defaults come back everywhere (Envoy's 1024).
    sc.delete(a, "backendtrafficpolicy", ns, "owner")
    for cluster_id in ("b", "c"):
        envoy = fed.envoys[cluster_id]
        wait_until(
            lambda envoy=envoy: _max_connections(envoy, cluster) == 1024,  # type: ignore[misc]
            timeout=30,
            what=f"{cluster_id}'s Envoy back to the default",
        )
