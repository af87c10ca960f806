"""User story 1 end to end: a ServiceExport in one cluster becomes a ServiceImport everywhere.

Three real apiservers, a real redis-server and one agent process per cluster
(``e2e.federation``). Each test works in its own namespace, so they share one
federation; the failure tests (agent killed, Redis restarted or flushed) restore
it before they end.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kubernetes.client import ApiClient

from e2e import scenario as sc
from e2e.federation import Federation, metric
from e2e.fixtures import CONTROL_PLANE_LEASE_TTL
from e2e.processes import wait_until
from federation.registry import keys

pytestmark = pytest.mark.integration

DEADLINE = 15.0  # generous: correctness, not speed (the benchmark measures speed)
LEASE_TTL = CONTROL_PLANE_LEASE_TTL


@pytest.fixture
def fed(control_plane: Federation) -> Federation:
    return control_plane


@pytest.fixture
def clients(control_plane_clients: dict[str, ApiClient]) -> dict[str, ApiClient]:
    return control_plane_clients


@pytest.fixture
def ns(fed: Federation) -> str:
    """A namespace that exists in every cluster."""
    return sc.namespace_everywhere(fed.env.clusters.values(), "e2e")


def eventually(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``check`` (an assertion-raising callable) until it passes."""
    last: list[BaseException] = []

    def passes() -> bool:
        try:
            check()
        except (AssertionError, KeyError) as err:
            last[:] = [err]
            return False
        return True

    try:
        wait_until(passes, timeout=timeout, what=what)
    except Exception as err:
        raise AssertionError(f"{err}: last failure: {last[0] if last else '-'}") from err


def export_echo(
    fed: Federation, cluster_id: str, ns: str, hosts: tuple[int, ...] = (10,), **service_args: Any
) -> None:
    cluster = fed.env.cluster(cluster_id)
    sc.apply(
        cluster,
        sc.service(ns, "echo", **service_args),
        sc.endpoint_slice(cluster, ns, "echo", hosts),
        sc.export(ns, "echo"),
    )


def test_export_becomes_import_in_every_cluster(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_echo(fed, "a", ns)

    def imported_everywhere() -> None:
        for cid, client in clients.items():
            imp = sc.get_custom(client, "serviceimports", ns, "echo")
            assert imp is not None, f"no import in {cid}"
            assert imp["spec"]["type"] == "ClusterSetIP"
            assert {(p["name"], p["port"], p["protocol"]) for p in imp["spec"]["ports"]} == {
                ("http", 80, "TCP"),
                ("grpc", 9090, "TCP"),
            }
            assert sc.clusters(imp) == ["a"]
            assert len(imp["spec"]["ips"]) == 1
            slices = sc.list_imported_slices(client, ns, "echo")
            assert len(slices) == 1
            labels = slices[0]["metadata"]["labels"]
            assert labels["multicluster.kubernetes.io/source-cluster"] == "a"
            assert (
                labels["endpointslice.kubernetes.io/managed-by"]
                == "federation-agent.federation.dev"
            )
            assert slices[0]["endpoints"][0]["addresses"] == [fed.env.cluster("a").pod_ip(10)]
        export = sc.get_custom(clients["a"], "serviceexports", ns, "echo")
        assert sc.conditions(export) == {
            "Valid": ("True", "Valid"),
            "Ready": ("True", "Exported"),
            "Conflict": ("False", "NoConflicts"),
            "ExportedMetadataValid": ("True", "Valid"),
        }

    eventually(imported_everywhere, "the import in a, b and c")
    table = fed.env.cluster("b").kubectl("get", "serviceimports", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "IP", "CLUSTERS", "READY", "STALE", "AGE"]
    assert table[1].split()[:2] == ["echo", "ClusterSetIP"]
    assert table[1].split()[3:6] == ["a", "True", "False"]


def test_second_exporter_adds_its_cluster_and_endpoints(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_echo(fed, "a", ns, hosts=(11,))
    export_echo(fed, "b", ns, hosts=(12,))

    def both() -> None:
        for client in clients.values():
            imp = sc.get_custom(client, "serviceimports", ns, "echo")
            assert sc.clusters(imp) == ["a", "b"]
            sources = {
                s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"]: s[
                    "endpoints"
                ][0]["addresses"][0]
                for s in sc.list_imported_slices(client, ns, "echo")
            }
            assert sources == {
                "a": fed.env.cluster("a").pod_ip(11),
                "b": fed.env.cluster("b").pod_ip(12),
            }

    eventually(both, "clusters [a, b] with both clusters' endpoints")


def test_conflicts_mark_every_exporter_and_the_oldest_wins(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_echo(fed, "a", ns)
    eventually(
        lambda: _assert(
            sc.clusters(sc.get_custom(clients["c"], "serviceimports", ns, "echo")) == ["a"]
        ),
        "a's export first",
    )
    export_echo(fed, "b", ns, ports=(("http", 8080, "TCP"), ("grpc", 9090, "TCP")))
    export_echo(fed, "c", ns, headless=True)

    def conflicts() -> None:
        reasons = {
            cid: sc.conditions(sc.get_custom(clients[cid], "serviceexports", ns, "echo"))
            for cid in ("a", "b", "c")
        }
        # Every exporter of a conflicted Service gets all its reasons (KEP-1645).
        for cid in ("a", "b", "c"):
            assert reasons[cid]["Conflict"] == ("True", "PortConflict,TypeConflict"), cid
        imp = sc.get_custom(clients["b"], "serviceimports", ns, "echo")
        assert imp is not None
        assert imp["spec"]["type"] == "ClusterSetIP"  # a's, the oldest export
        assert {(p["name"], p["port"]) for p in imp["spec"]["ports"]} == {
            ("http", 80),
            ("grpc", 9090),
        }
        assert sc.clusters(imp) == ["a", "b", "c"]

    eventually(conflicts, "Conflict=True on a, b and c with a's definition winning")


def test_headless_export_imports_without_ips(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_echo(fed, "b", ns, headless=True)

    def headless() -> None:
        imp = sc.get_custom(clients["a"], "serviceimports", ns, "echo")
        assert imp is not None
        assert imp["spec"]["type"] == "Headless"
        assert not imp["spec"].get("ips")
        assert "multicluster.kubernetes.io/derived-service" not in (
            imp["metadata"].get("annotations") or {}
        )

    eventually(headless, "a Headless import with no IPs")


def test_invalid_exports_say_why_and_import_nothing(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    a = fed.env.cluster("a")
    sc.apply(a, sc.service(ns, "ext", service_type="ExternalName"), sc.export(ns, "ext"))
    sc.apply(a, sc.export(ns, "ghost"))
    sc.apply(a, sc.service(ns, "fine"), sc.export(ns, "fine"))  # proves the agent got this far

    def invalid() -> None:
        assert sc.get_custom(clients["b"], "serviceimports", ns, "fine") is not None
        ext = sc.conditions(sc.get_custom(clients["a"], "serviceexports", ns, "ext"))
        ghost = sc.conditions(sc.get_custom(clients["a"], "serviceexports", ns, "ghost"))
        assert ext["Valid"] == ("False", "InvalidServiceType")
        assert ghost["Valid"] == ("False", "NoService")
        assert ext["Ready"][0] == ghost["Ready"][0] == "False"
        for client in clients.values():
            assert sc.get_custom(client, "serviceimports", ns, "ext") is None
            assert sc.get_custom(client, "serviceimports", ns, "ghost") is None

    eventually(invalid, "Valid=False on ext and ghost, and no import of either")
    # Creating the missing Service makes the export valid and imported.
    sc.apply(a, sc.service(ns, "ghost"))
    wait_for_import(clients["c"], ns, "ghost")


def _assert(condition: bool) -> None:
    assert condition


def wait_for_import(client: ApiClient, ns: str, name: str) -> None:
    eventually(
        lambda: _assert(sc.get_custom(client, "serviceimports", ns, name) is not None),
        f"the import {ns}/{name}",
    )


def wait_for_clusters(client: ApiClient, ns: str, expected: list[str]) -> None:
    """Until the import ``ns/echo`` lists exactly ``expected`` as its clusters."""
    eventually(
        lambda: _assert(
            sc.clusters(sc.get_custom(client, "serviceimports", ns, "echo")) == expected
        ),
        f"the import to list clusters {expected}",
    )


def test_unexport_removes_the_import_only_with_the_last_exporter(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_echo(fed, "a", ns, hosts=(21,))
    export_echo(fed, "b", ns, hosts=(22,))
    wait_for_clusters(clients["c"], ns, ["a", "b"])
    sc.delete(fed.env.cluster("a"), "serviceexport", ns, "echo")

    def only_b() -> None:
        for client in clients.values():
            imp = sc.get_custom(client, "serviceimports", ns, "echo")
            assert sc.clusters(imp) == ["b"]
            slices = sc.list_imported_slices(client, ns, "echo")
            assert [
                s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"] for s in slices
            ] == ["b"]

    eventually(only_b, "the import to remain with b only")
    sc.delete(fed.env.cluster("b"), "serviceexport", ns, "echo")

    def gone() -> None:
        for client in clients.values():
            assert sc.get_custom(client, "serviceimports", ns, "echo") is None
            assert sc.list_imported_slices(client, ns, "echo") == []

    eventually(gone, "the import and its EndpointSlices to disappear everywhere")


def test_import_waits_for_the_namespace(fed: Federation, clients: dict[str, ApiClient]) -> None:
    name = sc.namespace_everywhere([fed.env.cluster("a"), fed.env.cluster("b")], "late")
    export_echo(fed, "a", name)
    wait_for_import(clients["b"], name, "echo")
    assert sc.get_custom(clients["c"], "serviceimports", name, "echo") is None
    sc.apply(fed.env.cluster("c"), sc.namespace(name))
    wait_for_import(clients["c"], name, "echo")


def test_dead_agent_goes_stale_keeps_endpoints_and_recovers(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_echo(fed, "a", ns, hosts=(31,))
    eventually(
        lambda: _assert(len(sc.list_imported_slices(clients["b"], ns, "echo")) == 1),
        "the import in b",
    )
    fed.kill_agent("a")
    try:

        def stale() -> None:
            imp = sc.get_custom(clients["b"], "serviceimports", ns, "echo")
            assert sc.conditions(imp)["Stale"] == ("True", "ClusterLeaseExpired")
            # a's own TTL, as a's agent published it.
            assert f"the lease of cluster a (TTL {LEASE_TTL:g}s) expired" in next(
                c["message"]
                for c in imp["status"]["conditions"]  # type: ignore[index]
                if c["type"] == "Stale"
            )
            assert sc.clusters(imp) == ["a"]  # fail-static: still imported
            slices = sc.list_imported_slices(clients["b"], ns, "echo")
            assert [s["endpoints"][0]["addresses"][0] for s in slices] == [
                fed.env.cluster("a").pod_ip(31)
            ]

        eventually(stale, "a shown stale in b after the lease TTL, endpoints kept")
    finally:
        fed.start_agent("a")
        fed.wait_agent_ready("a")

    def recovered() -> None:
        imp = sc.get_custom(clients["b"], "serviceimports", ns, "echo")
        assert sc.conditions(imp)["Stale"] == ("False", "AllClustersLive")
        assert sc.clusters(imp) == ["a"]
        assert len(sc.list_imported_slices(clients["b"], ns, "echo")) == 1  # not duplicated

    eventually(recovered, "back to normal after the agent restarts")


def test_an_agent_paused_for_less_than_its_lease_ttl_is_never_stale(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    """--lease-ttl is the tolerance: renewing every TTL/3 with keys that lived only one
    TTL made it about 2/3 TTL, depending on where in its renewal cycle a pause began."""
    export_echo(fed, "a", ns, hosts=(33,))

    def live() -> None:
        imp = sc.get_custom(clients["b"], "serviceimports", ns, "echo")
        assert sc.conditions(imp)["Stale"] == ("False", "AllClustersLive")

    eventually(live, "the import in b, with a live")
    agent = fed.agents["a"].process
    assert agent is not None
    seen: list[str] = []
    for _ in range(3):  # three pauses: each begins somewhere else in the renewal cycle
        os.kill(agent.pid, signal.SIGSTOP)
        resumed = time.monotonic() + LEASE_TTL * 0.9
        try:
            while time.monotonic() < resumed:
                imp = sc.get_custom(clients["b"], "serviceimports", ns, "echo")
                seen.append(sc.conditions(imp).get("Stale", ("missing",))[0])
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        # An expiry during the pause would reach b's import a little later: keep looking.
        while time.monotonic() < resumed + 1.0:
            imp = sc.get_custom(clients["b"], "serviceimports", ns, "echo")
            seen.append(sc.conditions(imp).get("Stale", ("missing",))[0])
    assert seen and set(seen) == {"False"}, f"Stale while a was paused: {seen.count('True')}"


def _admin(fed: Federation) -> redis.Redis | redis.RedisCluster:
    return fed.registry.admin_client()


@pytest.mark.parametrize("loss", ["restart", "flushall"])
def test_registry_data_loss_is_restored_without_touching_kubernetes(
    fed: Federation, clients: dict[str, ApiClient], ns: str, loss: str
) -> None:
    export_echo(fed, "a", ns, hosts=(41,))
    export_echo(fed, "b", ns, hosts=(42,))
    wait_for_clusters(clients["c"], ns, ["a", "b"])
    if loss == "restart":
        fed.redis.restart()  # no persistence: everything is gone, the ACL users too
        fed.create_users()
    else:
        _admin(fed).flushall()
    # Every agent is alive: a lease the registry lost is not an expired one, so no
    # import may say Stale meanwhile (it did for seconds, a false alarm).
    stale_seen: list[str] = []

    def restored() -> None:
        for cid, client in clients.items():
            imp = sc.get_custom(client, "serviceimports", ns, "echo")
            if sc.conditions(imp).get("Stale", ("False", ""))[0] == "True":
                stale_seen.append(cid)
        admin = _admin(fed)
        assert admin.hexists(keys.records("a"), f"service/{ns}/echo")
        assert admin.hexists(keys.records("b"), f"service/{ns}/echo")
        for client in clients.values():
            imp = sc.get_custom(client, "serviceimports", ns, "echo")
            assert sc.clusters(imp) == ["a", "b"]
            assert len(sc.list_imported_slices(client, ns, "echo")) == 2

    eventually(restored, f"the registry and imports restored after {loss}", timeout=30)
    # And for one lease TTL after that: a late false alarm would show up here.
    deadline = time.monotonic() + LEASE_TTL
    while time.monotonic() < deadline:
        restored()
    assert stale_seen == [], f"imports said Stale after {loss} in {sorted(set(stale_seen))}"


def test_garbage_record_is_skipped_logged_counted_and_harms_nothing(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_echo(fed, "a", ns)
    wait_for_import(clients["b"], ns, "echo")
    before = metric(fed.metrics("b"), "federation_registry_bad_records_total")
    admin = _admin(fed)
    garbage_key = f"{ns}/garbage"
    pipe = admin.pipeline(transaction=True)
    pipe.hset(keys.records("a"), f"service/{garbage_key}", b"{not json")
    entry = {"op": "upsert", "kind": "service", "key": garbage_key, "record": b"{not json"}
    pipe.xadd(keys.stream("a"), entry)  # type: ignore[arg-type]
    pipe.execute()
    eventually(
        lambda: _assert(metric(fed.metrics("b"), "federation_registry_bad_records_total") > before),
        "the bad record counted by b's agent",
    )
    assert "skipping bad registry record" in fed.agent_log("b")
    # Everything else keeps working: a new export still arrives.
    sc.apply(fed.env.cluster("a"), sc.service(ns, "after"), sc.export(ns, "after"))
    wait_for_import(clients["b"], ns, "after")
    assert sc.get_custom(clients["b"], "serviceimports", ns, "echo") is not None
    admin.hdel(keys.records("a"), f"service/{garbage_key}")


def test_export_deleted_while_its_agent_was_down_is_withdrawn(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_echo(fed, "a", ns)
    wait_for_import(clients["b"], ns, "echo")
    fed.stop_agent("a")
    try:
        sc.delete(fed.env.cluster("a"), "serviceexport", ns, "echo")
        # Fail-static while a is down: the import stays.
        assert sc.get_custom(clients["b"], "serviceimports", ns, "echo") is not None
    finally:
        fed.start_agent("a")
        fed.wait_agent_ready("a")

    def gone() -> None:
        assert not _admin(fed).hexists(keys.records("a"), f"service/{ns}/echo")
        for client in clients.values():
            assert sc.get_custom(client, "serviceimports", ns, "echo") is None

    eventually(gone, "the record and the imports gone after a's agent restarts")
