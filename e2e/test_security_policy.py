"""Envoy Gateway's SecurityPolicy (authorization and CORS) and ClientTrafficPolicy,
honoured by a Gateway's own real Envoy.

On the shared three-cluster environment (as :mod:`e2e.test_gateway_api`): a Gateway in
``b`` with routes to a ServiceImport exported by ``a``. Clients here connect from
loopback addresses, so the client ranges are loopback ranges. Backend host ids are 90
and up.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.federation import Federation
from e2e.test_gateway_api import CLUSTER_B, fed, make_gateway
from e2e.traffic import export_with_backends
from federation.translate.gateway.status import CONTROLLER_NAME

pytestmark = pytest.mark.integration

#: The shared environment with our GatewayClass in b (the fixture of the Gateway tests).
__all__ = ["fed"]

GATEWAY_GROUP = "gateway.networking.k8s.io"


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "sp")


def envoy_gateway_policy(
    policy_kind: str, ns: str, name: str, kind: str, target: str, **spec: Any
) -> dict[str, Any]:
    """An Envoy Gateway policy of ``policy_kind`` on ``kind`` ``target``, as documented."""
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": policy_kind,
        "metadata": {"namespace": ns, "name": name},
        "spec": {"targetRefs": [{"group": GATEWAY_GROUP, "kind": kind, "name": target}], **spec},
    }


def security_policy(ns: str, name: str, kind: str, target: str, **spec: Any) -> dict[str, Any]:
    return envoy_gateway_policy("SecurityPolicy", ns, name, kind, target, **spec)


def wait_status(fed: Federation, ns: str, name: str, status: str, reason: str) -> None:
    gw.wait_conditions(
        lambda: _conditions(fed, ns, name),
        {"Accepted": (status, reason)},
        f"SecurityPolicy {ns}/{name} Accepted={status}",
    )


def _conditions(fed: Federation, ns: str, name: str) -> dict[str, tuple[str, str]]:
    return _policy_conditions(fed, "securitypolicy", ns, name)


def _policy_conditions(
    fed: Federation, kind: str, ns: str, name: str
) -> dict[str, tuple[str, str]]:
    """Our first ancestor entry's conditions of a policy of ``kind`` (empty until
    written)."""
    obj = gw.get_yaml(fed.env.cluster(CLUSTER_B), kind, ns, name)
    for ancestor in (obj.get("status") or {}).get("ancestors") or []:
        if ancestor.get("controllerName") == CONTROLLER_NAME:
            return gw.conditions(ancestor.get("conditions"))
    return {}


def test_client_ip_and_header_rules_allow_and_deny(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [90], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    rule = {"backendRefs": [gw.backend("echo")]}
    gw.apply(
        b,
        gw.http_route(ns, "ops", "gw", [{**rule, "matches": [gw.prefix("/ops")]}]),
        gw.http_route(ns, "blocked", "gw", [{**rule, "matches": [gw.prefix("/blocked")]}]),
    )
    gw.wait_for_status(address, "/ops", 200)
    gw.apply(
        b,
        security_policy(
            ns,
            "ops-only",
            "HTTPRoute",
            "ops",
            authorization={
                "defaultAction": "Deny",
                "rules": [
                    {
                        "action": "Deny",
                        "principal": {"clientCIDRs": ["0.0.0.0/0"]},
                        "operation": {"methods": ["DELETE"]},
                    },
                    {
                        "action": "Allow",
                        "principal": {
                            "clientCIDRs": ["127.0.0.0/8"],
                            "headers": [{"name": "x-team", "values": ["ops", "sre"]}],
                        },
                    },
                ],
            },
        ),
        security_policy(
            ns,
            "no-loopback",
            "HTTPRoute",
            "blocked",
            authorization={
                "defaultAction": "Allow",
                "rules": [{"action": "Deny", "principal": {"clientCIDRs": ["127.0.0.0/8"]}}],
            },
        ),
    )
    wait_status(fed, ns, "ops-only", "True", "Accepted")
    gw.wait_for_status(address, "/ops", 403)
    ops = {"x-team": "ops"}
    answers = {
        "no header": gw.request(address, "/ops").status,
        "x-team: ops": gw.request(address, "/ops", headers=ops).status,
        "x-team: dev": gw.request(address, "/ops", headers={"x-team": "dev"}).status,
        "DELETE as ops": gw.request(address, "/ops", method="DELETE", headers=ops).status,
    }
    gw.wait_for_status(address, "/blocked", 403)
    print(f"\nauthorization on /ops: {answers}; /blocked from loopback: 403")
    assert answers == {
        "no header": 403,
        "x-team: ops": 200,
        "x-team: dev": 403,
        "DELETE as ops": 403,
    }


def test_a_gateways_cors_answers_the_preflight(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [91], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    gw.apply(b, gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]))
    gw.wait_for_status(address, "/", 200)
    gw.apply(
        b,
        security_policy(
            ns,
            "cors",
            "Gateway",
            "gw",
            cors={
                "allowOrigins": ["https://app.example.com"],
                "allowMethods": ["GET", "PUT"],
                "allowHeaders": ["x-token"],
                "maxAge": "10m",
            },
        ),
    )
    wait_status(fed, ns, "cors", "True", "Accepted")
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "x-token",
    }
    gw.wait_conditions(
        lambda: {
            "allow-origin": (
                gw.request(address, "/", method="OPTIONS", headers=preflight).headers.get(
                    "access-control-allow-origin", ""
                ),
                "",
            )
        },
        {"allow-origin": ("https://app.example.com", "")},
        "the preflight answered by the Gateway",
    )
    reply = gw.request(address, "/", method="OPTIONS", headers=preflight)
    other = gw.request(
        address, "/", method="OPTIONS", headers={**preflight, "Origin": "https://evil.example"}
    )
    print(f"\nCORS preflight: {reply.status} {dict(reply.headers)}; other origin: {other.status}")
    assert reply.status == 200
    assert reply.headers["access-control-allow-methods"] == "GET, PUT"
    assert reply.headers["access-control-max-age"] == "600"
    assert "access-control-allow-origin" not in other.headers
    # The preflight never reached the backend: it answers with JSON naming its cluster.
    assert b"cluster" not in reply.body


def test_a_security_policy_that_cannot_be_served_fails_closed(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [92], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    rule = {"backendRefs": [gw.backend("echo")]}
    gw.apply(
        b,
        gw.http_route(ns, "guarded", "gw", [{**rule, "matches": [gw.prefix("/guarded")]}]),
        gw.http_route(ns, "other", "gw", [{**rule, "matches": [gw.prefix("/other")]}]),
    )
    gw.wait_for_status(address, "/guarded", 200)
    gw.apply(
        b,
        security_policy(
            ns,
            "basic",
            "HTTPRoute",
            "guarded",
            basicAuth={"users": {"name": "htpasswd"}},
        ),
    )
    wait_status(fed, ns, "basic", "False", "Invalid")
    gw.wait_for_status(address, "/guarded", 403)
    message = gw.get_yaml(b, "securitypolicy", ns, "basic")["status"]["ancestors"][0]
    print(f"\nan unservable SecurityPolicy: /guarded 403, /other 200; {message['conditions']}")
    assert "spec.basicAuth" in message["conditions"][0]["message"]
    assert gw.request(address, "/other").status == 200
    sc.delete(b, "securitypolicy", ns, "basic")
    gw.wait_for_status(address, "/guarded", 200)


def test_a_client_traffic_policy_trusts_x_forwarded_for_for_the_client_ip_rule(
    fed: Federation, ns: str
) -> None:
    """A ClientTrafficPolicy on the Gateway trusts one X-Forwarded-For hop (a load
    balancer in front of it), so a SecurityPolicy's client range sees the real client;
    it also refuses header names with underscores."""
    export_with_backends(fed, "a", ns, [93], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    gw.apply(b, gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]))
    gw.wait_for_status(address, "/", 200)
    client = envoy_gateway_policy(
        "ClientTrafficPolicy",
        ns,
        "edge",
        "Gateway",
        "gw",
        clientIPDetection={"xForwardedFor": {"numTrustedHops": 1}},
        headers={"withUnderscoresAction": "RejectRequest"},
    )
    gw.apply(
        b,
        client,
        security_policy(
            ns,
            "partners",
            "HTTPRoute",
            "api",
            authorization={
                "defaultAction": "Deny",
                "rules": [{"action": "Allow", "principal": {"clientCIDRs": ["203.0.113.0/24"]}}],
            },
        ),
    )
    gw.wait_conditions(
        lambda: _policy_conditions(fed, "clienttrafficpolicy", ns, "edge"),
        {"Accepted": ("True", "Accepted")},
        "the ClientTrafficPolicy accepted",
    )
    partner = {"X-Forwarded-For": "203.0.113.7"}
    gw.wait_for_status(address, "/", 200, headers=partner)
    answers = {
        "partner": gw.request(address, "/", headers=partner).status,
        "other": gw.request(address, "/", headers={"X-Forwarded-For": "198.51.100.1"}).status,
        "direct": gw.request(address, "/").status,
        "underscore": gw.request(address, "/", headers={**partner, "x_token": "1"}).status,
    }
    print(f"\nclient IP from X-Forwarded-For: {answers}")
    assert answers == {"partner": 200, "other": 403, "direct": 403, "underscore": 400}
