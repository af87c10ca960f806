"""``gateways``: from a Gateway applied to ``Programmed=True`` with its address.

On node clusters installed with Helm (as ``e2e/node_tier_helm`` installs them: the hub in
``a``, agents with the infra manager everywhere), ``--gateways`` Gateways are applied in
``b`` one after another, each HTTP on port 80 with one HTTPRoute. For each, the time from
``kubectl apply`` until

* its Envoy Deployment is ``Available`` (the ceiling: the kubelet starting a pod, which
  no control plane can beat), and
* the Gateway says ``Programmed=True`` (its own Envoys ACKed its listeners and routes)
  and has ``status.addresses``,

printed as p50/p99 with the difference. Each Gateway is deleted before the next is
applied, so every one starts from the same state. Bounded: each Gateway waits at most
``DEADLINE`` seconds.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes.client import ApiClient, AppsV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from e2e import pods
from e2e.figures import percentile
from e2e.fixtures import api_client
from e2e.gateways import gateway, gateway_class, http_route
from e2e.helm_install import CLUSTERS, install
from e2e.nodes import NodeEnvironment
from e2e.processes import ProcessGroup
from e2e.redis_server import RedisServer

NS = "gwbench"
DEADLINE = 120.0
POLL = 0.05


def _available(client: ApiClient, name: str) -> bool:
    try:
        status = AppsV1Api(client).read_namespaced_deployment_status(name, NS).status
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    conditions = (status.conditions if status is not None else None) or []
    return any(c.type == "Available" and c.status == "True" for c in conditions)


def _programmed(client: ApiClient, name: str) -> bool:
    obj: Any = CustomObjectsApi(client).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NS, "gateways", name
    )
    status = obj.get("status") or {}
    programmed = any(
        c["type"] == "Programmed" and c["status"] == "True" for c in status.get("conditions") or []
    )
    return programmed and bool(status.get("addresses"))


def _one(env: NodeEnvironment, client: ApiClient, i: int) -> tuple[float, float]:
    """(seconds until the Deployment is Available, until the Gateway is Programmed)."""
    b = env.cluster("b")
    name = f"gw{i}"
    route = http_route(NS, f"r{i}", name, [{"backendRefs": [{"name": "echo", "port": 80}]}])
    began = time.monotonic()
    pods.apply(b, gateway(NS, name, 80), route)
    available = programmed = None
    while available is None or programmed is None:
        now = time.monotonic() - began
        if now > DEADLINE:
            raise TimeoutError(f"Gateway {name}: not Programmed and Available in {DEADLINE} s")
        if available is None and _available(client, f"{name}-envoy"):
            available = now
        if programmed is None and _programmed(client, name):
            programmed = now
        time.sleep(POLL)  # the polling period of a measurement, not synchronisation
    b.kubectl("delete", f"gateway/{name}", f"httproute/r{i}", "-n", NS)
    return available, programmed


def bench_gateways(count: int) -> None:
    print(f"gateways: {count} Gateways applied one after another in b, node tier with Helm")
    group = ProcessGroup()
    try:
        with NodeEnvironment(CLUSTERS, federation_crds=False) as env, RedisServer(group) as redis:
            install(env, redis)
            b = env.cluster("b")
            pods.apply(b, pods.namespace(NS), gateway_class())
            pods.apply(b, pods.echo_deployment(NS, "b", replicas=1), pods.service(NS))
            with api_client(b) as client:
                results = [_one(env, client, i) for i in range(count)]
    finally:
        group.stop_all()
    available = [r[0] for r in results]
    programmed = [r[1] for r in results]
    lag = [p - a for a, p in results]
    for label, values in (
        ("Deployment Available (ceiling)", available),
        ("Gateway Programmed + address", programmed),
        ("Programmed after Available", lag),
    ):
        print(
            f"  {label:<32} p50 {percentile(values, 50):6.2f} s   "
            f"p99 {percentile(values, 99):6.2f} s   max {max(values):6.2f} s"
        )
