"""The node tier's LoadBalancer controller: its pools and allocation (no I/O)."""

from typing import Any

import pytest

from e2e import load_balancer as lb
from e2e.nodes import MAX_NODE_CLUSTERS


def service(
    name: str = "gw",
    ns: str = "team",
    *,
    type_: str = "LoadBalancer",
    ingress: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": type_, **spec},
    }
    if ingress is not None:
        obj["status"] = {"loadBalancer": {"ingress": ingress}}
    return obj


def test_free_addresses_are_the_fabric_addresses_no_node_takes() -> None:
    free = lb.free_addresses()
    last_node = f"10.250.0.{10 + MAX_NODE_CLUSTERS}"
    assert last_node == "10.250.0.65"
    assert free[0] == "10.250.0.66"
    assert free[-1] == "10.250.0.254"
    assert len(free) == 189
    assert last_node not in free


def test_pools_are_disjoint_equal_shares_in_cluster_order() -> None:
    pools = lb.cluster_pools(["a", "b", "c"])
    assert [len(p) for p in pools.values()] == [63, 63, 63]
    assert pools["a"][0] == "10.250.0.66"
    assert pools["b"][0] == "10.250.0.129"
    assert pools["c"][-1] == "10.250.0.254"
    every = [ip for pool in pools.values() for ip in pool]
    assert len(every) == len(set(every))
    assert lb.cluster_pools(["x"], ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) == {
        "x": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    }
    assert lb.cluster_pools(["x", "y"], ["1.1.1.1", "1.1.1.2", "1.1.1.3"]) == {
        "x": ["1.1.1.1"],
        "y": ["1.1.1.2"],
    }
    with pytest.raises(ValueError, match="distinct"):
        lb.cluster_pools(["a", "a"])
    with pytest.raises(ValueError, match="cannot be shared"):
        lb.cluster_pools(["a", "b"], ["1.1.1.1"])
    assert lb.cluster_pools([]) == {}


def test_pool_gives_the_lowest_free_address_and_keeps_it() -> None:
    pool = lb.AddressPool(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    assert pool.allocate("a/x") == "10.0.0.1"
    assert pool.allocate("a/y") == "10.0.0.2"
    assert pool.allocate("a/x") == "10.0.0.1"
    assert pool.release("a/x") == "10.0.0.1"
    assert pool.release("a/x") is None
    assert pool.allocate("a/z") == "10.0.0.1"
    assert pool.allocate("a/w") == "10.0.0.3"
    with pytest.raises(lb.PoolExhausted):
        pool.allocate("a/v")
    assert pool.owner("10.0.0.3") == "a/w"


def test_pool_prefers_a_free_address_it_is_given_and_honours_a_request() -> None:
    pool = lb.AddressPool(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    assert pool.allocate("a/x", ["10.9.9.9", "10.0.0.3"]) == "10.0.0.3"
    assert pool.allocate("a/y", ["10.0.0.3"]) == "10.0.0.1"  # taken: the lowest free
    assert pool.allocate("a/y", only="10.0.0.2") == "10.0.0.2"  # moved
    assert pool.free() == ["10.0.0.1"]
    with pytest.raises(ValueError, match="taken by a/x"):
        pool.allocate("a/z", only="10.0.0.3")
    with pytest.raises(ValueError, match="not in this cluster's pool"):
        pool.allocate("a/z", only="192.0.2.1")
    with pytest.raises(ValueError):
        lb.AddressPool(["10.0.0.1", "10.0.0.1"])
    with pytest.raises(ValueError):
        lb.AddressPool(["not-an-ip"])


def test_only_load_balancer_services_of_no_class_or_ours_are_served() -> None:
    assert lb.service_view(service()).wants
    assert lb.service_view(service(loadBalancerClass=lb.LOAD_BALANCER_CLASS)).wants
    assert not lb.service_view(service(loadBalancerClass="example.com/other")).wants
    assert not lb.service_view(service(type_="ClusterIP")).wants
    assert not lb.service_view(service(type_="NodePort")).wants
    view = lb.service_view(service(loadBalancerIP="10.0.0.2", ingress=[{"ip": "10.0.0.7"}]))
    assert (view.key, view.requested, view.ingress_ips) == ("team/gw", "10.0.0.2", ("10.0.0.7",))


def test_plan_assigns_patches_once_and_releases() -> None:
    pool = lb.AddressPool(["10.0.0.1", "10.0.0.2"])
    first = lb.plan(pool, lb.service_view(service()))
    assert first == lb.Plan(
        "team/gw",
        address="10.0.0.1",
        patch={"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1", "ipMode": "VIP"}]}}},
    )
    patched = service(ingress=[{"ip": "10.0.0.1", "ipMode": "VIP"}])
    assert lb.plan(pool, lb.service_view(patched)) == lb.Plan("team/gw", address="10.0.0.1")
    # No longer a LoadBalancer: the address is released and the status cleared.
    gone = lb.plan(pool, lb.service_view(service(type_="ClusterIP", ingress=patched["status"]
                                                  ["loadBalancer"]["ingress"])))  # fmt: skip
    assert gone == lb.Plan(
        "team/gw", released="10.0.0.1", patch={"status": {"loadBalancer": {"ingress": []}}}
    )
    assert pool.assigned == {}


def test_plan_adopts_the_address_a_service_already_has() -> None:
    """After a restart of the controller, a Service keeps its address."""
    pool = lb.AddressPool(["10.0.0.1", "10.0.0.2"])
    done = lb.plan(pool, lb.service_view(service(ingress=[{"ip": "10.0.0.2", "ipMode": "VIP"}])))
    assert done == lb.Plan("team/gw", address="10.0.0.2")
    # Someone else's address in the status is replaced by one of the pool.
    other = lb.plan(pool, lb.service_view(service("other", ingress=[{"ip": "192.0.2.9"}])))
    assert other.address == "10.0.0.1" and other.patch is not None


def test_plan_moves_to_a_requested_address_and_refuses_one_it_cannot_give() -> None:
    pool = lb.AddressPool(["10.0.0.1", "10.0.0.2"])
    lb.plan(pool, lb.service_view(service()))
    moved = lb.plan(pool, lb.service_view(service(loadBalancerIP="10.0.0.2")))
    assert (moved.address, moved.released) == ("10.0.0.2", "10.0.0.1")
    refused = lb.plan(pool, lb.service_view(service("x", loadBalancerIP="10.0.0.2")))
    assert refused.address is None and refused.patch is None
    assert refused.error and "taken by team/gw" in refused.error
    outside = lb.plan(pool, lb.service_view(service("y", loadBalancerIP="192.0.2.1")))
    assert outside.error and "not in this cluster's pool" in outside.error


def test_plan_reports_an_exhausted_pool() -> None:
    pool = lb.AddressPool(["10.0.0.1"])
    lb.plan(pool, lb.service_view(service("one")))
    full = lb.plan(pool, lb.service_view(service("two")))
    assert full.address is None and full.error and "taken" in full.error
    assert pool.assigned == {"team/one": "10.0.0.1"}


def test_vanished_services_are_those_no_longer_listed() -> None:
    pool = lb.AddressPool(["10.0.0.1", "10.0.0.2"])
    pool.allocate("a/x")
    pool.allocate("a/y")
    assert lb.vanished(pool, ["a/y", "a/z"]) == ["a/x"]
