"""Envoy Gateway's EnvoyPatchPolicy, applied by the hub to a Gateway's real Envoy.

On the shared three-cluster environment (as :mod:`e2e.test_gateway_api`), whose hub runs
with ``--enable-envoy-patch-policy``: a Gateway in ``b`` routing to a ServiceImport
exported by ``a``, and policies written as a team writes them for Envoy Gateway (JSON
patches on the route configuration, ``gateway/<port>`` here). Each test observes real
responses and the status ``kubectl`` shows. Backend host ids are 110 and up; request loops
are bounded in count and time.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.federation import Federation
from e2e.processes import wait_until
from e2e.test_gateway_api import CLUSTER_B, fed, make_gateway
from e2e.traffic import Loop, Outcome, export_with_backends, host, wait_served_by
from federation.translate.gateway.status import CONTROLLER_NAME

pytestmark = pytest.mark.integration

#: The shared environment with our GatewayClass in b (the fixture of the Gateway tests).
__all__ = ["fed"]

ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "epp")


def patch_policy(ns: str, name: str, route_config: str, *operations: dict[str, Any]) -> Any:
    """An EnvoyPatchPolicy on Gateway ``gw`` patching ``route_config``, as Envoy Gateway
    documents it."""
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyPatchPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": {
            "type": "JSONPatch",
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
            "jsonPatches": [
                {"type": ROUTE_TYPE, "name": route_config, "operation": operation}
                for operation in operations
            ],
        },
    }


def policy_conditions(fed: Federation, ns: str, name: str) -> dict[str, tuple[str, str, str]]:
    """type -> (status, reason, message) of our ancestor entry (empty until written)."""
    obj = gw.get_yaml(fed.env.cluster(CLUSTER_B), "envoypatchpolicy", ns, name)
    for ancestor in (obj.get("status") or {}).get("ancestors") or []:
        if ancestor.get("controllerName") == CONTROLLER_NAME:
            return {
                c["type"]: (c["status"], c["reason"], c["message"])
                for c in ancestor.get("conditions") or []
            }
    return {}


def wait_policy(fed: Federation, ns: str, name: str, **expected: tuple[str, str]) -> dict[str, Any]:
    """Poll until the policy's conditions have ``expected`` (type=(status, reason))."""
    seen: list[dict[str, tuple[str, str, str]]] = [{}]

    def done() -> bool:
        seen[0] = policy_conditions(fed, ns, name)
        return all(seen[0].get(t, ("", ""))[:2] == want for t, want in expected.items())

    wait_until(done, timeout=gw.DEADLINE, what=f"EnvoyPatchPolicy {ns}/{name} {expected}")
    return seen[0]


def gateway_to_echo(fed: Federation, ns: str, host_id: int) -> tuple[str, str]:
    """A Gateway ``gw`` in b whose route sends everything to ServiceImport echo (from a);
    its address and the name of its route configuration."""
    export_with_backends(fed, "a", ns, [host_id], start=True)
    address = make_gateway(fed, ns)
    gw.apply(
        fed.env.cluster(CLUSTER_B),
        gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]),
    )
    gw.wait_for_status(address, "/", 200)
    return address, f"gateway/{address.rpartition(':')[2]}"


ADD_HEADER = {
    "op": "add",
    "path": "/response_headers_to_add",
    "value": [{"header": {"key": "x-patched", "value": "by-policy"}}],
}


def header_probe(address: str) -> Outcome:
    """One request: served (by its x-patched header's value, "-" without) or why not."""
    reply = gw.try_request(address, "/")
    if reply is None:
        return Outcome(None, "connection failed")
    if reply.status != 200:
        return Outcome(None, f"status {reply.status}")
    return Outcome(reply.headers.get("x-patched", "-"))


def test_a_patch_adds_a_response_header_to_every_response(fed: Federation, ns: str) -> None:
    address, routes = gateway_to_echo(fed, ns, 110)
    assert gw.request(address, "/").headers.get("x-patched") is None
    gw.apply(fed.env.cluster(CLUSTER_B), patch_policy(ns, "header", routes, ADD_HEADER))
    found = wait_policy(
        fed, ns, "header", Accepted=("True", "Accepted"), Programmed=("True", "Programmed")
    )
    gw.wait_for_status(address, "/", 200)
    with Loop(None, count=50, seconds=30, pause=0, probe=lambda: header_probe(address)) as loop:
        loop.wait_for(50)
    print(f"\npatched responses: {loop.served()}; status {found}")
    assert loop.served() == {"by-policy": 50}


def test_an_invalid_patch_is_refused_with_its_path_while_traffic_continues(
    fed: Federation, ns: str
) -> None:
    address, routes = gateway_to_echo(fed, ns, 111)
    b = fed.env.cluster(CLUSTER_B)
    gw.apply(b, patch_policy(ns, "header", routes, ADD_HEADER))
    wait_policy(fed, ns, "header", Programmed=("True", "Programmed"))
    with Loop(None, count=600, seconds=60, probe=lambda: header_probe(address)) as loop:
        loop.wait_for(10)
        broken = {"op": "replace", "path": "/virtual_hosts/0/no_such_field", "value": 1}
        gw.apply(b, patch_policy(ns, "broken", routes, ADD_HEADER, broken))
        found = wait_policy(fed, ns, "broken", Accepted=("False", "Invalid"))
        refused = len(loop.results)
        loop.wait_for(refused + 20)
    message = found["Accepted"][2]
    print(f"\nrefused: {message}\nduring it: {loop.served()}, failed {loop.failed[:3]}")
    assert "jsonPatches[1]" in message and "/virtual_hosts/0/no_such_field" in message
    assert loop.failures() == 0
    assert set(loop.served()) == {"by-policy"}  # the valid policy kept serving
    listing = b.kubectl("get", "envoypatchpolicies", "-n", ns).stdout
    print(listing)
    assert "broken" in listing


def test_a_patch_envoy_rejects_shows_programmed_false_with_the_nack(
    fed: Federation, ns: str
) -> None:
    """A route whose regular expression RE2 cannot compile parses as a RouteConfiguration,
    so the hub serves it; the Gateway's Envoy rejects it, keeps the configuration it had,
    and the policy says so with Envoy's message."""
    address, routes = gateway_to_echo(fed, ns, 112)
    bad_route = {
        "op": "add",
        "path": "/virtual_hosts/0/routes/0",
        "value": {
            "match": {"safe_regex": {"regex": "(unclosed"}},
            "direct_response": {"status": 418},
        },
    }
    gw.apply(fed.env.cluster(CLUSTER_B), patch_policy(ns, "nacked", routes, bad_route))
    found = wait_policy(
        fed, ns, "nacked", Accepted=("True", "Accepted"), Programmed=("False", "Invalid")
    )
    message = found["Programmed"][2]
    print(f"\nNACK: {message}")
    assert "rejected the patched configuration" in message
    assert f"envoy-{CLUSTER_B}-{ns}-gw" in message and "unclosed" in message
    assert gw.request(address, "/").status == 200  # the Envoy serves what it had


def test_our_extension_patches_the_clusterset_listener_of_its_own_cluster(
    fed: Federation, ns: str
) -> None:
    """A policy on ``ClusterSetListener`` ``b`` (policy.federation.io): b's shared Envoy
    adds the header to what it serves from the clusterset; a's does not."""
    export_with_backends(fed, "a", ns, [113], start=True)
    wait_served_by(fed.envoys["b"], host(ns), "a")
    shared = patch_policy(
        ns,
        "shared",
        "clusterset",
        {
            "op": "add",
            "path": "/response_headers_to_add/-",
            "value": {"header": {"key": "x-clusterset-patch", "value": "b"}},
        },
    )
    shared["spec"]["targetRef"] = {
        "group": "policy.federation.io",
        "kind": "ClusterSetListener",
        "name": "b",
    }
    b = fed.env.cluster(CLUSTER_B)
    gw.apply(b, shared)
    try:
        wait_policy(
            fed, ns, "shared", Accepted=("True", "Accepted"), Programmed=("True", "Programmed")
        )
        replies = [fed.envoys[c].request(host(ns), timeout=2) for c in ("b", "a")]
        print(f"\nclusterset patch: b {replies[0].headers.get('x-clusterset-patch')}")
        assert replies[0].status == 200 and replies[0].headers.get("x-clusterset-patch") == "b"
        assert replies[1].status == 200 and "x-clusterset-patch" not in replies[1].headers
    finally:
        sc.delete(b, "envoypatchpolicy", ns, "shared")  # b's shared Envoy serves every test
    wait_until(
        lambda: "x-clusterset-patch" not in fed.envoys["b"].request(host(ns), timeout=2).headers,
        timeout=gw.DEADLINE,
        what="b's shared Envoy without the patch",
    )
