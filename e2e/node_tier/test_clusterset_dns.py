"""clusterset.local from a pod, through the cluster's CoreDNS and the agent's server.

A ClusterSetIP Service exported from ``a`` and a headless StatefulSet exported from
``a`` and ``b``: a pod in ``b`` resolves the ClusterSetIP, SRV records, every ready
endpoint of both exporters and each StatefulSet pod by ``<hostname>.<clusterid>``; once
the export is deleted the name is NXDOMAIN within the normal propagation time (the
import's removal plus CoreDNS's 5 s cache at most).
"""

from __future__ import annotations

import json
import time
from typing import Any

from e2e import images, pods
from e2e.federation import Federation
from e2e.nodes import NodeEnvironment
from e2e.processes import HarnessError, wait_until
from e2e.traffic import DEADLINE

NS = "cdns"
ZONE = f"{NS}.svc.clusterset.local"


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
        pods.statefulset(NS, "a", 2),
        pods.headless_service(NS),
        pods.service_export(NS, "db"),
    )
    pods.apply(
        b,
        pods.namespace(NS),
        pods.statefulset(NS, "b", 1),
        pods.headless_service(NS),
        pods.service_export(NS, "db"),
        pods.client_pod(NS),
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
        last = pods.resolve_all_in_pod(b, NS, questions)
        return last == expected

    try:
        wait_until(answered, timeout=60, interval=1, what="clusterset names in b's pod")
    except HarnessError as err:
        raise AssertionError(f"{err}\nanswers: {last}\nexpected: {expected}") from err
    headless_srv = pods.resolve_all_in_pod(b, NS, [(f"db.{ZONE}", "SRV")])[f"db.{ZONE} SRV"]
    assert sorted(r.split()[-1] for r in headless_srv) == [
        f"db-0.a.db.{ZONE}.", f"db-0.b.db.{ZONE}.", f"db-1.a.db.{ZONE}.",
    ]  # fmt: skip

    deleted = time.monotonic()
    a.kubectl("delete", "serviceexport", "echo", "-n", NS)

    def gone() -> bool:
        answer = pods.resolve_all_in_pod(b, NS, [(f"echo.{ZONE}", "A")])
        return bool(answer[f"echo.{ZONE} A"] == "NXDOMAIN")

    # The import goes at once; CoreDNS may hold the answer for its 5 s cache.
    wait_until(gone, timeout=DEADLINE, interval=0.5, what="echo NXDOMAIN in b's pod")
    print(f"echo NXDOMAIN in b's pod {time.monotonic() - deleted:.1f} s after the delete")
