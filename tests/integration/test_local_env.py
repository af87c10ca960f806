"""The local multi-cluster harness: identity, RBAC, Gateway API CRDs, clean teardown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from agents.identity import read_cluster_id
from agents.kube import Kube, load_configuration
from e2e.cluster import LocalCluster, LocalEnvironment
from e2e.fixtures import api_client
from e2e.processes import pid_alive, wait_until
from e2e.toolchain import ENVOY_GATEWAY_CRDS
from federation.errors import ClusterIdentityError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

READ_IMPORTS_RBAC = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "federation-test-read-imports"},
            "rules": [
                {
                    "apiGroups": ["multicluster.x-k8s.io"],
                    "resources": ["serviceimports"],
                    "verbs": ["list"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "federation-test-read-imports"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "federation-test-read-imports",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": "federation:agents",
                }
            ],
        },
    ],
}


def _cluster_id(cluster: LocalCluster) -> str:
    """What the agent reads at start-up, through its own client."""

    async def read() -> str:
        kube = Kube(load_configuration(str(cluster.kubeconfig)))
        try:
            return await read_cluster_id(kube)
        finally:
            await kube.close()

    return asyncio.run(read())


def test_each_cluster_has_its_own_identity(local_env: LocalEnvironment) -> None:
    for cluster_id in ("a", "b"):
        assert _cluster_id(local_env.cluster(cluster_id)) == cluster_id


def test_gateway_api_crds_are_installed(local_env: LocalEnvironment) -> None:
    for cluster in local_env.clusters.values():
        out = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
        for crd in ("gateways", "gatewayclasses", "httproutes", "grpcroutes", "referencegrants"):
            name = f"customresourcedefinition.apiextensions.k8s.io/{crd}.gateway.networking.k8s.io"
            assert name in out


def test_envoy_gateways_policy_crds_are_installed_with_our_printer_columns(
    local_env: LocalEnvironment,
) -> None:
    cluster = local_env.cluster("a")
    for plural in ENVOY_GATEWAY_CRDS:
        crd = json.loads(
            cluster.kubectl("get", "crd", f"{plural}.gateway.envoyproxy.io", "-o", "json").stdout
        )
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1"
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns == ["Accepted", "Reason", "Gateway", "Age"]


def test_minted_identities_get_only_what_rbac_grants(local_env: LocalEnvironment) -> None:
    cluster = local_env.cluster("b")
    agent = cluster.mint_identity("federation-agent-test", ["federation:agents"])
    with api_client(cluster, agent) as client:
        with pytest.raises(ApiException) as denied:
            CustomObjectsApi(client).list_cluster_custom_object(
                "multicluster.x-k8s.io", "v1beta1", "serviceimports"
            )
        assert denied.value.status == 403
        assert "federation-agent-test" in str(denied.value.body)

        cluster.kubectl("apply", "-f", "-", input=json.dumps(READ_IMPORTS_RBAC))
        api = CustomObjectsApi(client)

        def allowed() -> bool:
            try:
                api.list_cluster_custom_object("multicluster.x-k8s.io", "v1beta1", "serviceimports")
            except ApiException as err:
                if err.status != 403:
                    raise
                return False
            return True

        wait_until(allowed, timeout=10, what="the RBAC binding to take effect")
        with pytest.raises(ApiException) as still_denied:  # list only, nothing else
            api.create_namespaced_custom_object(
                "multicluster.x-k8s.io",
                "v1beta1",
                "default",
                "serviceimports",
                {
                    "apiVersion": "multicluster.x-k8s.io/v1beta1",
                    "kind": "ServiceImport",
                    "metadata": {"name": "x"},
                    "spec": {"type": "Headless", "ports": []},
                },
            )
        assert still_denied.value.status == 403


def _port_open(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def test_teardown_leaves_no_process_port_or_directory_behind() -> None:
    env = LocalEnvironment(["solo"], etcd_per_cluster=True)
    with env:
        pids = env.pids()
        cluster = env.cluster("solo")
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        with api_client(cluster) as client:
            assert _cluster_id(cluster) == "solo"
            CustomObjectsApi(client).delete_cluster_custom_object(
                "about.k8s.io", "v1beta1", "clusterproperties", "cluster.clusterset.k8s.io"
            )
            with pytest.raises(ClusterIdentityError, match="not found"):
                _cluster_id(cluster)
        urls = [cluster.server.replace("https://", "")] + [e.url for e in env.etcds]
    assert not any(pid_alive(p) for p in pids)
    assert not any(_port_open(u) for u in urls)
    assert not env.workdir.exists()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_cli_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "env"
    # Started as a shell's background job would be: with SIGINT ignored, which
    # Python would otherwise inherit and never turn into KeyboardInterrupt.
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e", "up", "--clusters", "x", "--workdir", str(workdir)],
        cwd=REPO,
        preexec_fn=_ignore_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output = []
    try:
        for line in proc.stdout:  # ends when the CLI exits, so no separate deadline is needed
            output.append(line)
            if line.startswith("Running."):
                break
        assert any("kubectl --kubeconfig" in line for line in output), "".join(output)
        children = [p for p in _processes_mentioning(str(workdir)) if p != proc.pid]
        assert len(children) == 2, "".join(output)  # etcd and kube-apiserver
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "every process is gone" in rest
    assert _processes_mentioning(str(workdir)) == []
    assert not any(pid_alive(p) for p in children)
