"""The infra manager's parameters: a GatewayClass's and a Gateway's ConfigMap.

On the shared three-cluster environment (``data_plane``), in ``b``: a GatewayClass of our
controller whose ``parametersRef`` names a ConfigMap, and Gateways that override it with
``spec.infrastructure.parametersRef``. This tier has no kubelet, so what is checked is the
objects the agent writes and the statuses. Pods run in ``e2e/node_tier_helm``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.federation import Federation
from e2e.processes import wait_until
from federation.translate.gateway.status import CONTROLLER_NAME

pytestmark = pytest.mark.integration

CLASS = "federation-params"


def config_map(ns: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }


def gateway_class(params_ns: str, params: str) -> dict[str, Any]:
    ref = {"group": "", "kind": "ConfigMap", "namespace": params_ns, "name": params}
    return {
        "apiVersion": gw.GATEWAY_API,
        "kind": "GatewayClass",
        "metadata": {"name": CLASS},
        "spec": {"controllerName": CONTROLLER_NAME, "parametersRef": ref},
    }


def gateway(ns: str, name: str, params: str | None = None) -> dict[str, Any]:
    obj = gw.gateway(ns, name, 80)
    obj["spec"]["gatewayClassName"] = CLASS
    if params is not None:
        obj["spec"]["infrastructure"] = {
            "labels": {"team": "shop"},
            "parametersRef": {"group": "", "kind": "ConfigMap", "name": params},
        }
    return obj


@pytest.fixture
def ns(data_plane: Federation) -> Iterator[str]:
    namespace = sc.namespace_everywhere(data_plane.env.clusters.values(), "gwinfra")
    yield namespace
    data_plane.env.cluster("b").kubectl("delete", "gatewayclass", CLASS, "--ignore-not-found")


def _get(fed: Federation, kind: str, ns: str | None, name: str) -> Any:
    args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
    done = fed.env.cluster("b").kubectl(*args, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def _condition(obj: Any, kind: str = "Accepted") -> tuple[str, str, str] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return c["status"], c["reason"], c["message"]
    return None


def test_class_and_gateway_parameters_shape_the_envoys_and_bad_ones_are_named(
    data_plane: Federation, ns: str
) -> None:
    fed, b = data_plane, data_plane.env.cluster("b")
    gw.apply(
        b,
        config_map(ns, "class-params", replicas="2", serviceType="ClusterIP"),
        config_map(ns, "big", replicas="3", resources="limits: {memory: 2Gi}"),
        gateway_class(ns, "class-params"),
        gateway(ns, "plain"),
        gateway(ns, "big", params="big"),
    )

    def shaped() -> bool:
        plain = _get(fed, "deployment", ns, "plain-envoy")
        big = _get(fed, "deployment", ns, "big-envoy")
        service = _get(fed, "service", ns, "plain-envoy")
        return (
            plain is not None
            and big is not None
            and service is not None
            and plain["spec"]["replicas"] == 2  # the class's parameters
            and service["spec"]["type"] == "ClusterIP"
            and big["spec"]["replicas"] == 3  # the Gateway's own, over the class's
            and big["spec"]["template"]["metadata"]["labels"].get("team") == "shop"
        )

    wait_until(shaped, timeout=gw.DEADLINE, what="Deployments shaped by their parameters")
    (envoy,) = _get(fed, "deployment", ns, "big-envoy")["spec"]["template"]["spec"]["containers"]
    assert envoy["resources"] == {"limits": {"memory": "2Gi"}}
    assert _get(fed, "poddisruptionbudget", ns, "big-envoy") is not None  # above one replica
    assert _condition(_get(fed, "gatewayclass", None, CLASS))[:2] == ("True", "Accepted")  # type: ignore[index]

    # A value that does not parse: the Gateway says which, and its objects stay as they were.
    gw.apply(b, config_map(ns, "big", replicas="lots"))
    wait_until(
        lambda: (
            (_condition(_get(fed, "gateway", ns, "big")) or ("", "", ""))[1] == "InvalidParameters"
        ),
        timeout=gw.DEADLINE,
        what="the Gateway's Accepted=False/InvalidParameters",
    )
    status, _, message = _condition(_get(fed, "gateway", ns, "big"))  # type: ignore[misc]
    assert status == "False" and "replicas" in message, message
    assert _get(fed, "deployment", ns, "big-envoy")["spec"]["replicas"] == 3

    # The class's ConfigMap gone: the class says so.
    b.kubectl("delete", "configmap", "class-params", "-n", ns)
    wait_until(
        lambda: (
            (_condition(_get(fed, "gatewayclass", None, CLASS)) or ("", "", ""))[1]
            == "InvalidParameters"
        ),
        timeout=gw.DEADLINE,
        what="the GatewayClass's Accepted=False/InvalidParameters",
    )
    print(f"\n{b.kubectl('get', 'gatewayclass', CLASS, '-o', 'wide').stdout.rstrip()}")
