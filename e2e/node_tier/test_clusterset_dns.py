"""clusterset.local from a pod, through the cluster's CoreDNS and the agent's server.

A ClusterSetIP Service exported from ``a`` and a headless StatefulSet exported from
``a`` and ``b``: a pod in ``b`` resolves the ClusterSetIP, SRV records, every ready
endpoint of both exporters and each StatefulSet pod by ``<hostname>.<clusterid>``; once
the export is deleted the name is NXDOMAIN within the normal propagation time (the
import's removal plus CoreDNS's 5 s cache at most).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from e2e import images, pods
from e2e.federation import Federation
from e2e.nodes import NodeCluster, NodeEnvironment
from e2e.processes import HarnessError, wait_until
from e2e.traffic import DEADLINE

NS = "cdns"
ZONE = f"{NS}.svc.clusterset.local"
#: Asks the pod's resolver (CoreDNS) each question; prints {question: answers or rcode}.
RESOLVE = """
import json, sys
import dns.resolver
out = {}
for name, qtype in json.loads(sys.argv[1]):
    try:
        out[f"{name} {qtype}"] = sorted(r.to_text() for r in dns.resolver.resolve(name, qtype))
    except dns.resolver.NXDOMAIN:
        out[f"{name} {qtype}"] = "NXDOMAIN"
    except dns.resolver.NoAnswer:
        out[f"{name} {qtype}"] = "NODATA"
    except Exception as err:
        out[f"{name} {qtype}"] = f"error: {type(err).__name__}"
print(json.dumps(out))
"""


def statefulset(ns: str, cluster_id: str, replicas: int) -> pods.Manifest:
    """``db``: echo pods with stable hostnames (db-0, db-1, ...) under a headless Service."""
    deployment = pods.echo_deployment(ns, cluster_id, name="db", replicas=replicas)
    spec = deployment["spec"]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {**spec, "serviceName": "db", "podManagementPolicy": "Parallel"},
    }


def headless(ns: str) -> pods.Manifest:
    service = pods.service(ns, "db")
    service["spec"]["clusterIP"] = "None"
    return service


def client_pod(ns: str) -> pods.Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": ns, "labels": {"app": "client"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "client", "image": images.FEDERATION, "command": ["sleep", "3600"]}
            ],
        },
    }


def resolve(cluster: NodeCluster, questions: list[tuple[str, str]]) -> dict[str, Any]:
    argv = cluster.kubectl_argv(
        "exec", "-n", NS, "client", "--", "python3", "-c", RESOLVE, json.dumps(questions)
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"resolving in b's client pod: {proc.stderr.strip()}")
    answers: dict[str, Any] = json.loads(proc.stdout)
    return answers


def test_a_pod_resolves_clusterset_names_through_coredns(
    node_env: NodeEnvironment, node_federation: Federation
) -> None:
    a, b = node_env.cluster("a"), node_env.cluster("b")
    b.load_images([images.FEDERATION])
    pods.apply(
        a,
        pods.namespace(NS),
        pods.echo_deployment(NS, "a"),
        pods.service(NS),
        pods.service_export(NS),
        statefulset(NS, "a", 2),
        headless(NS),
        pods.service_export(NS, "db"),
    )
    pods.apply(
        b,
        pods.namespace(NS),
        statefulset(NS, "b", 1),
        headless(NS),
        pods.service_export(NS, "db"),
        client_pod(NS),
    )
    db_a = pods.wait_ready_pods(a, NS, "app=db", 2)
    db_b = pods.wait_ready_pods(b, NS, "app=db", 1)
    pods.wait_ready_pods(b, NS, "app=client", 1)

    def clusterset_ip() -> str:
        out = b.kubectl("get", "serviceimport", "echo", "-n", NS, "-o", "json", check=False)
        ips = json.loads(out.stdout)["spec"].get("ips") if out.returncode == 0 else None
        return str(ips[0]) if ips else ""

    wait_until(lambda: bool(clusterset_ip()), timeout=DEADLINE, what="echo's ClusterSetIP in b")
    expected = {
        f"echo.{ZONE} A": [clusterset_ip()],
        f"echo.{ZONE} SRV": [f"0 100 80 echo.{ZONE}."],
        f"_http._tcp.echo.{ZONE} SRV": [f"0 100 80 echo.{ZONE}."],
        f"db.{ZONE} A": sorted([*db_a.values(), *db_b.values()]),
        f"db-0.a.db.{ZONE} A": [db_a["db-0"]],
        f"db-1.a.db.{ZONE} A": [db_a["db-1"]],
        f"db-0.b.db.{ZONE} A": [db_b["db-0"]],
        f"db.{ZONE} AAAA": "NODATA",
        f"nothing.{ZONE} A": "NXDOMAIN",
    }
    questions = [(q.rsplit(" ", 1)[0], q.rsplit(" ", 1)[1]) for q in expected]
    last: dict[str, Any] = {}

    def answered() -> bool:
        nonlocal last
        last = resolve(b, questions)
        return last == expected

    try:
        wait_until(answered, timeout=60, interval=1, what="clusterset names in b's pod")
    except HarnessError as err:
        raise AssertionError(f"{err}\nanswers: {last}\nexpected: {expected}") from err
    headless_srv = resolve(b, [(f"db.{ZONE}", "SRV")])[f"db.{ZONE} SRV"]
    assert sorted(r.split()[-1] for r in headless_srv) == [
        f"db-0.a.db.{ZONE}.", f"db-0.b.db.{ZONE}.", f"db-1.a.db.{ZONE}.",
    ]  # fmt: skip

    deleted = time.monotonic()
    a.kubectl("delete", "serviceexport", "echo", "-n", NS)

    def gone() -> bool:
        return bool(resolve(b, [(f"echo.{ZONE}", "A")])[f"echo.{ZONE} A"] == "NXDOMAIN")

    # The import goes at once; CoreDNS may hold the answer for its 5 s cache.
    wait_until(gone, timeout=DEADLINE, interval=0.5, what="echo NXDOMAIN in b's pod")
    print(f"echo NXDOMAIN in b's pod {time.monotonic() - deleted:.1f} s after the delete")
