"""The Gateway API story on a Redis Cluster and on a primary under Sentinel, and a
master killed under live traffic.

Like ``e2e/test_distributed_registry_services.py``: tests of ``e2e/test_gateway_api.py``
collected again on ``distributed_plane`` (``e2e/fixtures.py``), whose registry is a
Redis Cluster or a sentinel set. Then the failover itself: a burst of 200 Service
changes in a, with the master that serves a's keys killed (by its pid) a third of
the way in, while a bounded request loop goes through b's Gateway to a's backend. No
request fails (Envoys keep their configuration), and every cluster's imports end
equal to a's Services: writes that failed are retried by the agent, and writes the
old master acknowledged but never replicated are republished once its renewal sees
the registry's counter behind its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e import test_gateway_api as story
from e2e.federation import Federation
from e2e.processes import HarnessError, wait_until
from e2e.redis_server import RedisServer
from e2e.traffic import Loop, export_with_backends, gateway_attempt
from federation.registry import keys
from federation.registry.store import RegistryUnavailableError

pytestmark = pytest.mark.integration

# The story's fixtures and portable tests: pytest collects them again in this module,
# where ``data_plane`` below is the distributed registry's environment.
fed, ns = story.fed, story.ns
globals().update({test.__name__: test for test in story.PORTABLE})

#: Service changes in the burst: ROUNDS applies of SERVICES Services each.
SERVICES = 20
ROUNDS = 10
#: How long the imports may take to settle after the burst (a failover, then renewals).
SETTLE = 60.0


@pytest.fixture
def data_plane(distributed_plane: Federation) -> Federation:
    return distributed_plane


def burst_service(ns: str, index: int, round_: int) -> sc.Obj:
    return sc.service(ns, f"burst-{index}", ports=(("http", 1000 + round_, "TCP"),))


def import_ports(fed: Federation, cluster_id: str, ns: str) -> dict[str, list[int]]:
    """The ports of the burst's ServiceImports in ``cluster_id``, by name."""
    listed = fed.env.cluster(cluster_id).kubectl(
        "get", "serviceimports.multicluster.x-k8s.io", "-n", ns, "-o", "json"
    )
    items = json.loads(listed.stdout)["items"]
    return {
        item["metadata"]["name"]: sorted(p["port"] for p in item["spec"].get("ports", []))
        for item in items
        if item["metadata"]["name"].startswith("burst-")
    }


def _imports_equal(
    fed: Federation, cluster_id: str, ns: str, want: dict[str, list[int]], seen: list[object]
) -> Callable[[], bool]:
    def check() -> bool:
        seen[:] = [import_ports(fed, cluster_id, ns)]
        return seen[0] == want

    return check


def test_a_master_killed_mid_burst_fails_no_request_and_imports_end_at_the_truth(
    fed: Federation, ns: str
) -> None:
    export_with_backends(fed, "a", ns, [64], start=True)
    a = fed.env.cluster("a")
    address = story.make_gateway(fed, ns)
    gw.apply(
        fed.env.cluster(story.CLUSTER_B),
        gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]),
    )
    gw.wait_for_status(address, "/", 200)

    registry = fed.registry
    assert not isinstance(registry, RedisServer), "this test kills a master of a distributed one"
    killed = None
    with Loop(None, probe=lambda: gateway_attempt(address), count=6000, seconds=180) as loop:
        loop.wait_for(20)
        for round_ in range(ROUNDS):
            if round_ == ROUNDS // 3:
                killed = registry.master_of(keys.stream("a"))
                registry.kill(killed)
                killed_at = time.monotonic()
            objects = [burst_service(ns, i, round_) for i in range(SERVICES)]
            if round_ == 0:
                objects += [sc.export(ns, f"burst-{i}") for i in range(SERVICES)]
            sc.apply(a, *objects)
        truth = {f"burst-{i}": [1000 + ROUNDS - 1] for i in range(SERVICES)}
        for cluster_id in ("a", "b", "c"):
            seen: list[object] = []
            try:
                wait_until(
                    _imports_equal(fed, cluster_id, ns, truth, seen),
                    timeout=SETTLE,
                    what=f"{cluster_id}'s imports to equal a's Services after the failover",
                )
            except HarnessError as err:
                raise AssertionError(f"{err}: {cluster_id} imports {seen}") from err
        settled = time.monotonic()
        loop.wait_for(20, since=settled)
    assert killed is not None
    promoted = registry.master_of(keys.stream("a"))
    print(
        f"\nmaster {killed.name} killed mid-burst; {promoted.name} serves a's keys now; "
        f"imports settled {settled - killed_at:.1f} s after the kill; requests {loop.served()}"
    )
    assert promoted is not killed
    assert loop.failures() == 0, loop.failed[:5]
    # The killed node comes back (as a replica) for the tests after this one, without
    # ACL users (no ACL file here): they are created on it again once it is a member.
    killed.start()
    wait_until(lambda: _users_created(fed), timeout=SETTLE, what="the users on every node again")


def _users_created(fed: Federation) -> bool:
    try:
        fed.create_users()
    except RegistryUnavailableError:
        return False  # a node still marked down
    return True
