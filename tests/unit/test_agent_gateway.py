"""What an agent publishes of its cluster's Gateway API objects (agents.gateway)."""

from __future__ import annotations

from typing import Any

from agents.gateway import GatewayAgent, GatewayObjects, desired_records
from federation.registry import gatewayapi as g
from federation.registry.kinds import Kind, RecordRef
from federation.registry.records import LocalService
from federation.translate.gateway.status import CONTROLLER_NAME

GROUP = "gateway.networking.k8s.io"


def meta(name: str, ns: str | None = "shop", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "generation": 2,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if ns is not None:
        out["namespace"] = ns
    out.update(extra)
    return out


def objects() -> GatewayObjects:
    agent = GatewayAgent("b", None, None, None, None)  # type: ignore[arg-type]
    events = [
        (
            "gatewayclasses",
            {"metadata": meta("ours", None), "spec": {"controllerName": CONTROLLER_NAME}},
        ),
        (
            "gatewayclasses",
            {"metadata": meta("theirs", None), "spec": {"controllerName": "x.io/y"}},
        ),
        (
            "gateways",
            {
                "metadata": meta("gw"),
                "spec": {
                    "gatewayClassName": "ours",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                },
            },
        ),
        (
            "gateways",
            {"metadata": meta("other"), "spec": {"gatewayClassName": "theirs", "listeners": []}},
        ),
        (
            "httproutes",
            {
                "metadata": meta("api"),
                "spec": {
                    "parentRefs": [{"group": GROUP, "kind": "Gateway", "name": "gw"}],
                    "rules": [
                        {
                            "backendRefs": [
                                {
                                    "group": "",
                                    "kind": "Service",
                                    "name": "local",
                                    "port": 80,
                                    "weight": 1,
                                },
                                {
                                    "group": "multicluster.x-k8s.io",
                                    "kind": "ServiceImport",
                                    "name": "echo",
                                    "port": 80,
                                },
                                {"name": "external", "port": 80},
                                {"name": "missing", "port": 80},
                            ],
                            "filters": [
                                {
                                    "type": "RequestMirror",
                                    "requestMirror": {"backendRef": {"name": "shadow", "port": 80}},
                                }
                            ],
                            "sessionPersistence": {"sessionName": "ignored"},
                        }
                    ],
                },
            },
        ),
        (
            "referencegrants",
            {
                "metadata": meta("grant"),
                "spec": {
                    "from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "x"}],
                    "to": [{"group": "", "kind": "Service"}],
                },
            },
        ),
        ("httproutes", {"metadata": meta("broken"), "spec": {"rules": "not a list"}}),
    ]
    for plural, body in events:
        agent.on_event(plural, "ADDED", body)
    return agent.objects


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": meta(name), "spec": {"ports": [{"name": "http", "port": 80}], **spec}}


def test_the_cluster_publishes_its_gateways_routes_grants_and_the_services_routes_use() -> None:
    services = {
        ("shop", "local"): service("local"),
        ("shop", "shadow"): service("shadow"),
        ("shop", "external"): service("external", type="ExternalName"),
        ("shop", "unused"): service("unused"),
    }
    slices = {
        ("shop", "local"): {
            "local-1": {
                "metadata": {"name": "local-1"},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": ["10.202.0.5"], "conditions": {"ready": True}}],
            }
        }
    }
    records = desired_records("b", objects(), services, slices, {"shop": {"team": "a"}})
    assert set(records) == {
        RecordRef(Kind.GATEWAY, "shop", "gw"),  # not "other": its class is not ours
        RecordRef(Kind.HTTP_ROUTE, "shop", "api"),  # not "broken": it cannot be read
        RecordRef(Kind.REFERENCE_GRANT, "shop", "grant"),
        RecordRef(Kind.LOCAL_SERVICE, "shop", "local"),
        RecordRef(Kind.LOCAL_SERVICE, "shop", "shadow"),  # a mirror's backend
    }
    route = records[RecordRef(Kind.HTTP_ROUTE, "shop", "api")]
    assert isinstance(route, g.HTTPRouteRecord)
    assert (route.cluster, route.generation, route.namespace_labels) == ("b", 2, (("team", "a"),))
    assert route.spec.rules[0].backend_refs[0] == g.HTTPBackendRef(
        "local", group="", kind="Service", port=80, weight=1
    )
    local = records[RecordRef(Kind.LOCAL_SERVICE, "shop", "local")]
    assert isinstance(local, LocalService)
    assert [e.addresses for s in local.endpoints for e in s.endpoints] == [("10.202.0.5",)]
