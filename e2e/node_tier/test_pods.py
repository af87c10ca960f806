"""Real pods in each node cluster: Deployments, logs, exec, EndpointSlices, the flat pod
network across clusters, and DNS."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from e2e import pods
from e2e.cluster import free_port
from e2e.nodes import NodeCluster, NodeEnvironment
from e2e.processes import wait_until

NS = "pods-test"
CLUSTERS = ("a", "b")


@pytest.fixture(scope="module")
def echo(node_env: NodeEnvironment) -> dict[str, dict[str, str]]:
    """The echo Deployment and its Service in each cluster: pod name -> pod IP."""
    for cluster_id in CLUSTERS:
        cluster = node_env.cluster(cluster_id)
        pods.apply(
            cluster, pods.namespace(NS), pods.echo_deployment(NS, cluster_id), pods.service(NS)
        )
    node_env.wait_deployments(NS, "echo")
    return {c: pods.wait_ready_pods(node_env.cluster(c), NS, "app=echo", 2) for c in CLUSTERS}


@pytest.mark.parametrize("cluster_id", CLUSTERS)
def test_echo_deployment_becomes_ready(
    node_env: NodeEnvironment, echo: dict[str, dict[str, str]], cluster_id: str
) -> None:
    cluster = node_env.cluster(cluster_id)
    deployment = json.loads(
        cluster.kubectl("get", "deployment", "echo", "-n", NS, "-o", "json").stdout
    )
    assert deployment["status"]["readyReplicas"] == 2
    ips = echo[cluster_id]
    assert all(ip.startswith(f"10.{200 + cluster.index}.0.") for ip in ips.values()), ips
    node = {p["spec"]["nodeName"] for p in pods.pods(cluster, NS, "app=echo")}
    assert node == {cluster.node_name}


@pytest.mark.parametrize("cluster_id", CLUSTERS)
def test_kubectl_logs_and_exec(
    node_env: NodeEnvironment, echo: dict[str, dict[str, str]], cluster_id: str
) -> None:
    cluster = node_env.cluster(cluster_id)
    pod = sorted(echo[cluster_id])[0]
    logs = cluster.kubectl("logs", "-n", NS, pod).stdout
    assert f"for cluster {cluster_id}, pod {pod} on 0.0.0.0:{pods.ECHO_PORT}" in logs
    hostname = pods.python_in_pod(cluster, NS, pod, "import socket; print(socket.gethostname())")
    assert hostname.returncode == 0, hostname.stderr
    assert hostname.stdout.strip() == pod


def test_kubectl_port_forward_reaches_a_pod(
    node_env: NodeEnvironment, echo: dict[str, dict[str, str]]
) -> None:
    a = node_env.cluster("a")
    pod = sorted(echo["a"])[0]
    port = free_port()
    forward = subprocess.Popen(
        a.kubectl_argv("port-forward", "-n", NS, f"pod/{pod}", f"{port}:{pods.ECHO_PORT}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        answers: list[dict[str, str]] = []

        def answered() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/pf", timeout=2) as resp:
                    answers.append(json.load(resp))
                    return True
            except OSError:
                return False

        wait_until(answered, timeout=30, what="kubectl port-forward to answer")
        assert (answers[-1]["cluster"], answers[-1]["pod"]) == ("a", pod)
    finally:
        forward.terminate()
        forward.wait(timeout=10)


@pytest.mark.parametrize("cluster_id", CLUSTERS)
def test_endpointslice_comes_from_the_controller(
    node_env: NodeEnvironment, echo: dict[str, dict[str, str]], cluster_id: str
) -> None:
    cluster = node_env.cluster(cluster_id)
    out = cluster.kubectl(
        "get", "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=echo", "-o", "json"
    ).stdout
    slices = json.loads(out)["items"]
    assert len(slices) == 1
    (eps,) = slices
    assert eps["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == (
        "endpointslice-controller.k8s.io"
    )
    addresses = {a for e in eps["endpoints"] for a in e["addresses"]}
    assert addresses == set(echo[cluster_id].values())
    assert {e["conditions"]["ready"] for e in eps["endpoints"]} == {True}
    assert [p["port"] for p in eps["ports"]] == [pods.ECHO_PORT]


def test_a_pod_in_b_reaches_a_pod_ip_in_a(
    node_env: NodeEnvironment, echo: dict[str, dict[str, str]]
) -> None:
    b = node_env.cluster("b")
    client = sorted(echo["b"])[0]
    for pod, ip in sorted(echo["a"].items()):
        answer = pods.http_get_in_pod(b, NS, client, f"http://{ip}:{pods.ECHO_PORT}/hello")
        assert (answer["cluster"], answer["pod"], answer["path"]) == ("a", pod, "/hello")


def test_without_flat_routing_pods_of_other_clusters_are_unreachable(
    node_env: NodeEnvironment, echo: dict[str, dict[str, str]]
) -> None:
    """The routing is a switch: off, a pod in b no longer reaches a pod IP in a."""
    b = node_env.cluster("b")
    client = sorted(echo["b"])[0]
    target = sorted(echo["a"].values())[0]
    node_env.fabric.set_flat(False)
    try:
        code = (
            "import socket; s = socket.socket(); s.settimeout(2)\n"
            f"print(s.connect_ex(({target!r}, {pods.ECHO_PORT})))"
        )
        proc = pods.python_in_pod(b, NS, client, code)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() != "0"
    finally:
        node_env.fabric.set_flat(True)
    answer = pods.http_get_in_pod(b, NS, client, f"http://{target}:{pods.ECHO_PORT}/")
    assert answer["cluster"] == "a"


@pytest.mark.parametrize("cluster_id", CLUSTERS)
def test_a_pod_resolves_cluster_local_names(
    node_env: NodeEnvironment, echo: dict[str, dict[str, str]], cluster_id: str
) -> None:
    cluster: NodeCluster = node_env.cluster(cluster_id)
    pod = sorted(echo[cluster_id])[0]
    cluster_ip = cluster.kubectl(
        "get", "service", "echo", "-n", NS, "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    assert pods.resolve_in_pod(cluster, NS, pod, f"echo.{NS}.svc.cluster.local") == cluster_ip
    # The Service answers through kube-proxy's rules, by name, from the pod's own search path.
    answer = pods.http_get_in_pod(cluster, NS, pod, f"http://echo.{NS}/via-service")
    assert answer["cluster"] == cluster_id
    assert answer["pod"] in echo[cluster_id]
    missing = pods.resolve_in_pod(cluster, NS, pod, f"missing.{NS}.svc.cluster.local")
    assert missing.startswith("gaierror:"), missing
