"""The local federation demo behind the README's run command.

Called by ``python -m e2e demo`` once three clusters are up. It starts Redis
and one agent per cluster (``e2e.federation``), creates the example Service
``demo/echo`` with an EndpointSlice and its ServiceExport in cluster ``a``,
waits until every cluster has imported it, and prints what kubectl shows in
each cluster. Then it starts the hub, one Envoy per cluster and cluster a's
echo backends, and shows a request through b's Envoy answered by a's backend
and what ``fedctl proxy-status``, ``fedctl config-dump`` and ``fedctl trace`` say.
Last, in cluster b, a Gateway and an HTTPRoute send ``/api`` to the ServiceImport from
a: it shows a request to b's Gateway answered by a's backend, and the route's and
Gateway's statuses.
"""

from __future__ import annotations

import functools
import json

from kubernetes.client import ApiClient

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.cluster import LocalEnvironment, free_port
from e2e.envoy import Envoy
from e2e.federation import Federation, fedctl
from e2e.fixtures import api_client
from e2e.processes import wait_until
from federation.cli.fedctl import render_proxy_status

NAMESPACE, NAME = "demo", "echo"


def _imported_from_a(client: ApiClient) -> bool:
    return sc.clusters(sc.get_custom(client, "serviceimports", NAMESPACE, NAME)) == ["a"]


def run(env: LocalEnvironment) -> Federation:
    print("==> starting redis-server and one federation-agent per cluster", flush=True)
    fed = Federation(env, lease_ttl=5.0)
    fed.start()
    print(
        f"    registry: redis-server on {fed.redis.host}:{fed.redis.port}; "
        "agents log to <state dir>/<cluster>/agent.log"
    )
    exporter = env.cluster("a")
    print(
        f"==> cluster a: Service {NAMESPACE}/{NAME} (http 80/TCP, grpc 9090/TCP), "
        "an EndpointSlice, and its ServiceExport",
        flush=True,
    )
    for cluster in env.clusters.values():
        sc.apply(cluster, sc.namespace(NAMESPACE))
    sc.apply(
        exporter,
        sc.service(NAMESPACE, NAME),
        sc.endpoint_slice(exporter, NAMESPACE, NAME, [10, 11]),
        sc.export(NAMESPACE, NAME),
    )
    for cluster in env.clusters.values():
        with api_client(cluster) as client:
            wait_until(
                functools.partial(_imported_from_a, client),
                timeout=30,
                what=f"the ServiceImport in {cluster.id}",
            )
    for cluster in env.clusters.values():
        print(f"\n--- cluster {cluster.id}: kubectl get serviceexports,serviceimports -A")
        print(cluster.kubectl("get", "serviceexports,serviceimports", "-A").stdout.rstrip())
    print("\n==> starting the hub, one Envoy per cluster, and a's echo backends", flush=True)
    pki = fed.ensure_pki()
    print(f"    fedctl pki init --dir {pki} --hub-ip 127.0.0.1 --cluster a --cluster b --cluster c")
    print("    xDS is mTLS: each Envoy presents its cluster's certificate "
          f"({pki}/clusters/<id>/tls.crt) and gets that cluster's configuration only")  # fmt: skip
    fed.start_hub()
    fed.wait_hub_ready()
    for cluster_id in env.clusters:
        fed.start_envoy(cluster_id)
    for host in (10, 11):
        fed.start_backend("a", host)
    hostname = f"{NAME}.{NAMESPACE}.svc.clusterset.local"
    b = fed.envoys["b"]
    wait_until(lambda: _answered(b, hostname), timeout=30, what="a request through b's Envoy")
    reply = b.request(hostname)
    print(f"    GET http://{b.listener_address}/ Host: {hostname}")
    shown = {k: json.loads(reply.body)[k] for k in ("cluster", "backend", "path")}
    print(f"    -> {reply.status} {json.dumps(shown)}  (served by cluster a's backend)")
    print(f"    fedctl proxy-status --hub http://127.0.0.1:{fed.hub_http_port}")
    print(render_proxy_status(json.loads(fed.hub_http("/debug/proxy-status"))).rstrip())
    _operator_tools(fed, b)
    _gateway_in_b(fed)
    return fed


def _operator_tools(fed: Federation, b: Envoy) -> None:
    """What fedctl config-dump and fedctl trace say (the README's operator section)."""
    hub = f"http://127.0.0.1:{fed.hub_http_port}"
    agents = [
        f"--agent={c}=http://127.0.0.1:{h.metrics_port}" for c, h in sorted(fed.agents.items())
    ]
    commands = [
        ["config-dump", "--hub", hub, "--cluster", "b", "--type", "routes"],
        ["config-dump", "--hub", hub, "--cluster", "b", "--envoy-admin", b.admin_address],
        ["trace", "service", f"{NAMESPACE}/{NAME}", "--hub", hub, *agents],
    ]
    # The trace is complete once every Envoy ACKed and every importer wrote its import.
    wait_until(
        lambda: fedctl(*commands[2]).stdout.rstrip().endswith("\ncomplete"),
        timeout=30,
        what="the trace of demo/echo to complete",
    )
    for args in commands:
        print(f"    fedctl {' '.join(args)}")
        done = fedctl(*args)
        print("\n".join("      " + line for line in done.stdout.rstrip().splitlines()))


def _gateway_in_b(fed: Federation) -> None:
    b = fed.env.cluster("b")
    host = b.envoy_listener.rpartition(":")[0]
    port = free_port(host)
    print(
        f"\n==> cluster b: GatewayClass {gw.CLASS}, Gateway {NAMESPACE}/gw (HTTP on {port}) "
        f"and HTTPRoute {NAMESPACE}/api: /api -> ServiceImport {NAMESPACE}/{NAME}",
        flush=True,
    )
    route = gw.http_route(
        NAMESPACE,
        "api",
        "gw",
        [{"matches": [gw.prefix("/api")], "backendRefs": [gw.backend(NAME)]}],
    )
    gw.apply(b, gw.gateway_class(), gw.gateway(NAMESPACE, "gw", port), route)
    # In a real cluster the agent runs the Gateway's own Envoys as a Deployment; these
    # clusters have no kubelet, so the demo starts one as a process.
    print(f"    the Gateway's own Envoy (node group b/{NAMESPACE}/gw)", flush=True)
    fed.start_gateway_envoy("b", NAMESPACE, "gw")
    address = f"{host}:{port}"
    reply = gw.wait_for_status(address, "/api/hello", 200)
    print(f"    GET http://{address}/api/hello")
    print(f"    -> {reply.status} {json.dumps({k: reply.json()[k] for k in ('cluster', 'path')})}")
    gw.wait_conditions(
        lambda: gw.gateway_conditions(b, NAMESPACE, "gw"),
        {"Programmed": ("True", "Programmed")},
        "the Gateway to be Programmed",
    )
    print(f"\n--- cluster b: kubectl get gateways,httproutes -n {NAMESPACE}")
    print(b.kubectl("get", "gateways,httproutes", "-n", NAMESPACE).stdout.rstrip())
    status = gw.get_yaml(b, "httproute", NAMESPACE, "api")["status"]
    print(f"\n--- cluster b: kubectl get httproute api -n {NAMESPACE} -o yaml (status)")
    for parent in status["parents"]:
        print(f"    parentRef: {parent['parentRef']}  controller: {parent['controllerName']}")
        for c in parent["conditions"]:
            print(f"      {c['type']}={c['status']} ({c['reason']}): {c['message']}")


def _answered(envoy: Envoy, hostname: str) -> bool:
    try:
        return envoy.request(hostname, timeout=2).status == 200
    except OSError:
        return False
