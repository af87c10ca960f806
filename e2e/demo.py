"""The local federation demo behind the README's run command.

Called by ``python -m e2e demo`` once three clusters are up. It starts Redis
and one agent per cluster (``e2e.federation``), creates the example Service
``demo/echo`` with an EndpointSlice and its ServiceExport in cluster ``a``,
waits until every cluster has imported it, and prints what kubectl shows in
each cluster.
"""

from __future__ import annotations

import functools

from kubernetes.client import ApiClient

from e2e import scenario as sc
from e2e.cluster import LocalEnvironment
from e2e.federation import Federation
from e2e.fixtures import api_client
from e2e.processes import wait_until

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
    return fed
