"""Federation installed with Helm, as its users install it, on node clusters a, b and c.

Used by the ``e2e/node_tier_helm`` tests (their package fixture) and the ``gateways``
benchmark.

Everything of ours comes from ``helm install``: the CRDs chart in every cluster, the
hub chart in ``a``, the agent chart (agent and gateway Envoy) in every cluster. The
only thing on the host is Redis, the registry a user brings: each cluster's pods reach
it on their node's address through a forward. Users and Secrets come from
``fedctl add-hub`` and ``fedctl add-cluster``; the xDS certificates (mTLS, the charts'
default) from ``fedctl pki init`` and ``fedctl pki secret``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e import images
from e2e.cluster import REPO_ROOT
from e2e.federation import fedctl
from e2e.nodes import NodeCluster, NodeEnvironment
from e2e.processes import HarnessError
from e2e.redis_server import RedisServer
from e2e.toolchain import locate_helm
from federation.cli.members import ADMIN_URL_ENV

CLUSTERS = ("a", "b", "c")
NS = "federation"
HUB_CLUSTER = "a"
#: Fixed node ports of the hub's Service in a, where every cluster's Envoys reach it.
HUB_XDS_NODE_PORT = 31800
HUB_HTTP_NODE_PORT = 31880
CHARTS = REPO_ROOT / "charts"


def helm(cluster: NodeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(locate_helm()), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"helm {' '.join(args)} in {cluster.id}: {done.stderr}"
    return done


def fedctl_secret(admin_url: str, *args: str) -> str:
    """The Secret manifest ``fedctl`` prints for a new registry user."""
    done = fedctl(*args, "--namespace", NS, env={ADMIN_URL_ENV: admin_url})
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass
class Installed:
    env: NodeEnvironment
    redis: RedisServer

    @property
    def hub_address(self) -> str:
        return f"{self.env.cluster(HUB_CLUSTER).node_ip}:{HUB_XDS_NODE_PORT}"

    @property
    def pki(self) -> Path:
        return self.env.workdir / "pki"

    def xds_secret(self, cluster: NodeCluster, who: str, namespace: str = NS) -> None:
        """Apply ``who``'s (``hub`` or ``clusters/<id>``) xDS certificate Secret, as the
        user would: ``fedctl pki secret ... | kubectl apply -f -`` (the Secret names the
        charts read by default)."""
        done = fedctl("pki", "secret", "--dir", str(self.pki), who, "--namespace", namespace)
        assert done.returncode == 0, done.stderr
        cluster.kubectl("apply", "-f", "-", input=done.stdout)

    def hub_values(self, *extra: str) -> list[str]:
        values = [
            "registry.existingSecret=federation-registry",
            "xds.service.type=NodePort",
            f"xds.service.nodePort={HUB_XDS_NODE_PORT}",
            f"http.nodePort={HUB_HTTP_NODE_PORT}",
            *extra,
        ]
        return [arg for value in values for arg in ("--set", value)]


def install(
    env: NodeEnvironment, redis: RedisServer, clusters: Sequence[str] = CLUSTERS
) -> Installed:
    """Install into ``clusters`` of ``env`` (all three by default; the hub's cluster
    among them)."""
    assert HUB_CLUSTER in clusters, f"the hub's cluster {HUB_CLUSTER} is not in {clusters}"
    installed = Installed(env, redis)
    for cluster_id in clusters:
        cluster = env.cluster(cluster_id)
        extra = [images.REDIS] if cluster_id == HUB_CLUSTER else []  # the bundled registry
        cluster.load_images([images.FEDERATION, images.ENVOY, *extra])
        helm(cluster, "install", "federation-crds", str(CHARTS / "federation-crds"), "--wait")
        cluster.kubectl("create", "namespace", NS)
    # The registry on the host, reached by each cluster's pods on their node's address.
    addresses = {}
    for cluster_id in clusters:
        cluster = env.cluster(cluster_id)
        host, port = cluster.forward(
            (cluster.node_ip, 0), (redis.host, redis.port), name="redis", reverse=True
        )
        addresses[cluster_id] = f"redis://{host}:{port}/0"
    hub = env.cluster(HUB_CLUSTER)
    # The clusterset PKI: the hub's certificate for the address every Envoy dials.
    done = fedctl("pki", "init", "--dir", str(installed.pki), "--hub-ip", hub.node_ip,
                  *(f"--cluster={c}" for c in clusters))  # fmt: skip
    assert done.returncode == 0, done.stderr
    installed.xds_secret(hub, "hub")
    hub.kubectl(
        "apply", "-f", "-",
        input=fedctl_secret(redis.admin_url, "add-hub", "--registry-address", addresses["a"]),
    )  # fmt: skip
    helm(hub, "install", "federation-hub", str(CHARTS / "federation-hub"), "-n", NS,
         *installed.hub_values())  # fmt: skip
    for cluster_id in clusters:
        cluster = env.cluster(cluster_id)
        secret = fedctl_secret(
            redis.admin_url, "add-cluster", cluster_id,
            "--registry-address", addresses[cluster_id],
        )  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=secret)
        installed.xds_secret(cluster, f"clusters/{cluster_id}")
        helm(
            cluster, "install", "federation-agent", str(CHARTS / "federation-agent"), "-n", NS,
            "--set", f"clusterId={cluster_id}",
            "--set", "registry.existingSecret=federation-registry",
            "--set", f"gateway.hubAddress={installed.hub_address}",
            "--set", "gateway.replicas=1",
            # The chart's hooks point CoreDNS's clusterset.local block at the agent's Service.
            "--set", "dns.coreDNS.manage=true",
        )  # fmt: skip
    try:
        env.wait_deployments(NS, "federation-hub", clusters=[HUB_CLUSTER])
        env.wait_deployments(NS, "federation-agent", "federation-agent-gateway", clusters=clusters)
    except HarnessError as err:
        raise HarnessError(f"{err}\n{diagnosis(env, NS, clusters)}") from err
    return installed


def diagnosis(env: NodeEnvironment, namespace: str, clusters: Sequence[str]) -> str:
    """A namespace's pods, events and logs in each cluster: why something is not Ready."""
    parts = []
    for cluster_id in clusters:
        cluster = env.cluster(cluster_id)
        for args in (
            ("get", "pods,pvc", "-n", namespace, "-o", "wide"),
            ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
            ("logs", "-n", namespace, "--all-containers", "--prefix", "--tail=30",
             "-l", "app.kubernetes.io/part-of=federation"),
        ):  # fmt: skip
            done = cluster.kubectl(*args, check=False)
            parts.append(f"--- {cluster_id}: kubectl {' '.join(args)}\n{done.stdout}{done.stderr}")
    return "\n".join(parts)


def json_of(cluster: NodeCluster, *args: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return loaded
