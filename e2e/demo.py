"""The local federation demo behind the README's run command.

Called by ``python -m e2e demo`` once three clusters are up. It creates the
example Service ``demo/echo`` and its ServiceExport in cluster ``a``, then
prints what kubectl shows in every cluster.

Until the agent exists (issue 3), nothing turns the export into imports, so
the demo writes the ServiceImport the agent will maintain itself, labelled
``app.kubernetes.io/managed-by: federation-demo`` so nobody mistakes it for
the agent's work.
"""

from __future__ import annotations

import json

from e2e.cluster import LocalCluster, LocalEnvironment

NAMESPACE, NAME = "demo", "echo"
PORTS = [
    {"name": "http", "protocol": "TCP", "port": 80},
    {"name": "grpc", "protocol": "TCP", "port": 9090},
]


def _apply(cluster: LocalCluster, *objects: dict[str, object]) -> None:
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=federation-demo", "-f", "-", input=manifest
    )


def export_example(cluster: LocalCluster) -> None:
    """The Service ``demo/echo`` and its ServiceExport, as a service owner writes them."""
    meta = {"name": NAME, "namespace": NAMESPACE}
    _apply(
        cluster,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "type": "ClusterIP",
                "selector": {"app": NAME},
                "ports": [{**p, "targetPort": p["port"]} for p in PORTS],
            },
        },
        {"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": meta},
    )


def stand_in_import(cluster: LocalCluster, exporter: str) -> None:
    """The ServiceImport the agent will maintain (see the module docstring)."""
    meta = {
        "name": NAME,
        "namespace": NAMESPACE,
        "labels": {"app.kubernetes.io/managed-by": "federation-demo"},
    }
    _apply(
        cluster,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceImport",
            "metadata": meta,
            "spec": {"type": "ClusterSetIP", "ports": PORTS},
        },
    )
    status = {"status": {"clusters": [{"cluster": exporter}]}}
    cluster.kubectl(
        "patch",
        "serviceimport",
        NAME,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def run(env: LocalEnvironment) -> None:
    exporter = env.cluster("a")
    print(
        f"==> cluster a: Service {NAMESPACE}/{NAME} (http 80/TCP, grpc 9090/TCP) "
        "and its ServiceExport"
    )
    export_example(exporter)
    print(
        "==> no agent yet (issue 3): writing the ServiceImport it will maintain, "
        "labelled managed-by=federation-demo"
    )
    for cluster in env.clusters.values():
        stand_in_import(cluster, exporter.id)
    for cluster in env.clusters.values():
        print(f"\n--- cluster {cluster.id}: kubectl get serviceexports,serviceimports -A")
        print(cluster.kubectl("get", "serviceexports,serviceimports", "-A").stdout.rstrip())
