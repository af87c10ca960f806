"""A namespace deleted and created again gets its imports back at once.

It needs the namespace controller (kube-controller-manager) to really delete a
namespace, so it runs on the node tier. The agents' periodic resync is 900 s here:
an import that came back did so because the agent saw the namespace return.
"""

from __future__ import annotations

import json

from e2e import pods
from e2e.federation import Federation
from e2e.nodes import NodeCluster, NodeEnvironment
from e2e.processes import wait_until
from e2e.traffic import DEADLINE

NS = "comeback"


def _service_import(cluster: NodeCluster) -> dict[str, object] | None:
    done = cluster.kubectl("get", "serviceimport", "echo", "-n", NS, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def _ready_import_ips(cluster: NodeCluster) -> list[str]:
    obj = _service_import(cluster)
    if obj is None:
        return []
    spec = obj.get("spec")
    return list(spec.get("ips") or []) if isinstance(spec, dict) else []


def test_a_namespace_deleted_and_created_again_gets_its_import_back(
    node_env: NodeEnvironment, node_federation: Federation
) -> None:
    a, b = node_env.cluster("a"), node_env.cluster("b")
    pods.apply(a, pods.namespace(NS), pods.service(NS), pods.service_export(NS))
    pods.apply(b, pods.namespace(NS))
    wait_until(lambda: bool(_ready_import_ips(b)), timeout=DEADLINE, what="the import in b")

    # The namespace controller deletes everything in it, the agent's objects included.
    b.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=120s")
    assert b.kubectl("get", "namespace", NS, check=False).returncode != 0
    assert _service_import(b) is None

    pods.apply(b, pods.namespace(NS))
    wait_until(
        lambda: bool(_ready_import_ips(b)),
        timeout=DEADLINE,
        what="the import back in b after its namespace came back",
    )
    derived = b.kubectl(
        "get", "services", "-n", NS, "-l", "multicluster.kubernetes.io/service-name=echo",
        "-o", "json",
    ).stdout  # fmt: skip
    (service,) = json.loads(derived)["items"]
    assert service["spec"]["clusterIPs"] == _ready_import_ips(b)
