"""Gateways with Envoys of their own, on node clusters installed with Helm.

In cluster b, two teams each have a Gateway named ``gw`` on port 80 with no hostname,
in their own namespaces. The agent chart's infra manager gives each its own Envoy
Deployment and Service; each serves its own routes at its own address
(``status.addresses``): team one's route sends to a ServiceImport exported by a (a
cross-cluster route through a per-Gateway Envoy), team two's to a Service of b. Then:
deleting one Gateway leaves the other's traffic untouched (no failed request in a
bounded loop), and a deleted Deployment is back at once.

Requests reach a Gateway's Service address inside b's node namespace through a loopback
forward (the node tier has no load balancer: the Service stays ``Pending`` for one and
the address is its ClusterIP).
"""

from __future__ import annotations

import functools
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from e2e import pods
from e2e.gateways import gateway, gateway_class, http_route
from e2e.helm_install import NS, Installed
from e2e.nodes import NodeCluster
from e2e.processes import HarnessError, wait_until
from e2e.traffic import DEADLINE, Loop, Outcome

ONE, TWO = "gw-team-one", "gw-team-two"


def _address(cluster: NodeCluster, ns: str) -> str:
    """The Gateway's ``status.addresses[0]``, once set, forwarded to host loopback."""
    found: list[str] = []

    def addressed() -> bool:
        status = _json(cluster, "get", "gateway", "gw", "-n", ns).get("status") or {}
        addresses = status.get("addresses") or []
        found[:] = [a["value"] for a in addresses]
        return bool(found)

    wait_until(addressed, timeout=DEADLINE, what=f"status.addresses of {ns}/gw")
    host, port = cluster.forward(("127.0.0.1", 0), (found[0], 80), name=f"gw-{ns}")
    return f"{host}:{port}"


def _json(cluster: NodeCluster, *args: str) -> Any:
    """``kubectl get ... -o json``, parsed."""
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _get(address: str) -> Outcome:
    req = urllib.request.Request(f"http://{address}/", headers={"Host": "shop.example.com"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return Outcome(str(json.loads(resp.read())["cluster"]))
    except (OSError, ValueError, KeyError) as err:
        return Outcome(None, f"{type(err).__name__}: {err}")


def _served_by(address: str, cluster: str) -> bool:
    return _get(address).served_by == cluster


def _wait_served(cluster: NodeCluster, ns: str, address: str, by: str) -> None:
    """Wait until ``address`` (the Gateway of ``ns``) answers from cluster ``by``; on a
    timeout, say what the Gateway, its pods and the agent show."""
    try:
        wait_until(
            functools.partial(_served_by, address, by),
            timeout=DEADLINE * 3,
            what=f"{ns}/gw to answer from cluster {by}",
        )
    except HarnessError as err:
        raise HarnessError(
            f"{err}: last answer {_get(address)}\n{_diagnosis(cluster, ns)}"
        ) from err


def _diagnosis(cluster: NodeCluster, ns: str) -> str:
    parts = []
    for args in (
        ("get", "gateway,httproute,deploy,svc,pods", "-n", ns, "-o", "wide"),
        ("get", "gateway", "gw", "-n", ns, "-o", "yaml"),
        ("get", "events", "-n", ns, "--sort-by=.lastTimestamp"),
        ("logs", "-n", ns, "-l", "app.kubernetes.io/component=gateway-envoy",
         "--all-containers", "--prefix", "--tail=40"),
        ("logs", "-n", NS, "-l", "app.kubernetes.io/component=agent", "--tail=40"),
    ):  # fmt: skip
        done = cluster.kubectl(*args, check=False)
        parts.append(f"--- kubectl {' '.join(args)}\n{done.stdout}{done.stderr}")
    return "\n".join(parts)


def _route(ns: str, backend: dict[str, Any]) -> dict[str, Any]:
    return http_route(ns, "web", "gw", [{"backendRefs": [backend]}])


@pytest.fixture(scope="module")
def teams(installed: Installed) -> Iterator[dict[str, str]]:
    """Both teams' Gateways serving; their addresses. Namespaces removed afterwards."""
    env = installed.env
    a, b = env.cluster("a"), env.cluster("b")
    pods.apply(a, pods.namespace(ONE), pods.echo_deployment(ONE, "a", replicas=1),
               pods.service(ONE), pods.service_export(ONE))  # fmt: skip
    pods.apply(b, pods.namespace(ONE), pods.namespace(TWO), gateway_class())
    pods.apply(b, pods.echo_deployment(TWO, "b", replicas=1), pods.service(TWO))
    imported = {"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "echo",
                "port": 80}  # fmt: skip
    pods.apply(
        b,
        gateway(ONE, "gw", 80),
        gateway(TWO, "gw", 80),
        _route(ONE, imported),
        _route(TWO, {"name": "echo", "port": 80}),
    )
    addresses = {ns: _address(b, ns) for ns in (ONE, TWO)}
    try:
        yield addresses
    finally:
        for cluster in (a, b):
            cluster.kubectl("delete", "namespace", ONE, TWO, "--ignore-not-found", "--wait=false")


def test_two_gateways_on_port_80_serve_their_own_routes_at_their_own_addresses(
    installed: Installed, teams: dict[str, str]
) -> None:
    b = installed.env.cluster("b")
    assert teams[ONE] != teams[TWO]
    for ns, cluster in ((ONE, "a"), (TWO, "b")):
        _wait_served(b, ns, teams[ns], cluster)
        obj = _json(b, "get", "gateway", "gw", "-n", ns)
        conditions = {c["type"]: c for c in obj["status"]["conditions"]}
        assert conditions["Accepted"]["status"] == "True", conditions
        (listener,) = obj["status"]["listeners"]
        assert {c["type"]: c["status"] for c in listener["conditions"]}["Conflicted"] == "False"
        deployment = _json(b, "get", "deployment", "gw-envoy", "-n", ns)
        (owner,) = deployment["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"]) == ("Gateway", "gw")
    print(f"\n{b.kubectl('get', 'gateways', '-A').stdout.rstrip()}")
    wait_until(
        lambda: all(_programmed(b, ns) for ns in (ONE, TWO)),
        timeout=DEADLINE,
        what="both Gateways Programmed by their own Envoys",
    )


def test_a_deleted_deployment_is_back_at_once(installed: Installed, teams: dict[str, str]) -> None:
    b = installed.env.cluster("b")
    before = _json(b, "get", "deployment", "gw-envoy", "-n", TWO)["metadata"]["uid"]
    deleted = time.monotonic()
    b.kubectl("delete", "deployment", "gw-envoy", "-n", TWO, "--wait=false")

    def back() -> bool:
        done = b.kubectl("get", "deployment", "gw-envoy", "-n", TWO, "-o", "json", check=False)
        return done.returncode == 0 and json.loads(done.stdout)["metadata"]["uid"] != before

    wait_until(back, timeout=DEADLINE, what="the Gateway's Deployment applied again")
    print(f"\nDeployment applied again {time.monotonic() - deleted:.2f} s after the delete")
    wait_until(
        lambda: _get(teams[TWO]).served_by == "b",
        timeout=DEADLINE * 3,
        what="the restored Envoys to serve team two",
    )
    # The deleted Deployment's pod goes in the background: until it has, it may still
    # answer, and then close its connections.
    _wait_settled(b, TWO)


def test_deleting_one_gateway_leaves_the_others_traffic_untouched(
    installed: Installed, teams: dict[str, str]
) -> None:
    b = installed.env.cluster("b")
    _wait_settled(b, TWO)  # one Ready pod, none terminating: only the deletion varies
    wait_until(
        lambda: _get(teams[TWO]).served_by == "b", timeout=DEADLINE * 3, what="team two served"
    )
    with Loop(None, count=600, seconds=60, probe=lambda: _get(teams[TWO])) as loop:
        loop.wait_for(20)
        b.kubectl("delete", "gateway", "gw", "-n", ONE)
        wait_until(
            lambda: not b.kubectl("get", "deployments", "-n", ONE, "-o", "name").stdout.strip(),
            timeout=DEADLINE * 3,
            what="team one's Envoys gone with their Gateway",
        )
        loop.wait_for(40, since=time.monotonic())
    assert loop.results, "no request was made"
    print(f"\nteam two while team one's Gateway went: {loop.served()}")
    assert not loop.failed, loop.failed[:5]
    assert set(loop.served()) == {"b"}


def _wait_settled(cluster: NodeCluster, ns: str) -> None:
    """Wait until the Gateway's Envoys are exactly one Ready pod, none terminating."""

    def settled() -> bool:
        found = _json(cluster, "get", "pods", "-n", ns, "-l", "gateway.federation.io/gateway=gw")
        pods_ = found["items"]
        return len(pods_) == 1 and all(
            not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
            for p in pods_
        )

    wait_until(settled, timeout=DEADLINE * 3, what=f"{ns}/gw's Envoys to settle on one pod")


def _programmed(cluster: NodeCluster, ns: str) -> bool:
    obj = _json(cluster, "get", "gateway", "gw", "-n", ns)
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Programmed" and c["status"] == "True" for c in conditions)
