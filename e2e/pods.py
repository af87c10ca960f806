"""Workloads on the node tier: the echo Deployment, an Envoy pod, and pod helpers.

Used by the node-tier e2e tests and benchmarks, on a :class:`e2e.nodes.NodeEnvironment`.
Manifests are built as data here; :func:`apply` sends them with kubectl.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from e2e import images
from e2e.cluster import condition_true
from e2e.envoy import EnvoyClient
from e2e.nodes import ENVOY_LISTENER_PORT, NodeCluster
from e2e.processes import HarnessError, wait_until
from federation.cli.bootstrap import BootstrapOptions, BootstrapTls, bootstrap

ECHO_PORT = 8080
ENVOY_ADMIN_PORT = 9901
#: Where an Envoy pod finds its xDS client certificate (a Secret).
XDS_TLS_MOUNT = "/etc/federation/xds-tls"
ENVOY_NAMESPACE = "federation-system"

Manifest = dict[str, Any]


def as_list(manifests: Sequence[Manifest]) -> str:
    """``manifests`` as one ``v1/List`` document, for ``kubectl apply -f -``."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)})


def apply(cluster: NodeCluster, *manifests: Manifest) -> None:
    cluster.kubectl("apply", "-f", "-", input=as_list(manifests))


def namespace(name: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def echo_deployment(ns: str, cluster_id: str, *, name: str = "echo", replicas: int = 2) -> Manifest:
    """The echo image as a Deployment; each pod answers with its cluster and pod name."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "echo",
                            "image": images.ECHO,
                            "args": [
                                "--listen",
                                f"0.0.0.0:{ECHO_PORT}",
                                "--name",
                                cluster_id,
                                "--pod",
                                "$(POD_NAME)",
                            ],
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                }
                            ],
                            "ports": [{"name": "http", "containerPort": ECHO_PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": ECHO_PORT},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def service(ns: str, name: str = "echo", *, port: int = 80, target: int = ECHO_PORT) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": port, "targetPort": target}],
        },
    }


def service_export(ns: str, name: str = "echo") -> Manifest:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": ns},
    }


def pods(cluster: NodeCluster, ns: str, selector: str) -> list[Manifest]:
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    found: list[Manifest] = json.loads(out)["items"]
    return found


def ready_pod_ips(cluster: NodeCluster, ns: str, selector: str) -> dict[str, str]:
    """Pod name -> pod IP of the Ready pods matching ``selector``."""
    return {
        pod["metadata"]["name"]: pod["status"]["podIP"]
        for pod in pods(cluster, ns, selector)
        if condition_true(pod, "Ready")
    }


def python_in_pod(
    cluster: NodeCluster, ns: str, pod: str, code: str, *, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python3 -c code`` in ``pod`` with ``kubectl exec``."""
    return subprocess.run(
        cluster.kubectl_argv("exec", "-n", ns, pod, "--", "python3", "-c", code),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def http_get_in_pod(cluster: NodeCluster, ns: str, pod: str, url: str) -> Mapping[str, Any]:
    """GET ``url`` from inside ``pod``; the decoded JSON answer of an echo backend."""
    code = (
        "import urllib.request, sys\n"
        f"sys.stdout.write(urllib.request.urlopen({url!r}, timeout=5).read().decode())\n"
    )
    proc = python_in_pod(cluster, ns, pod, code)
    if proc.returncode != 0:
        raise HarnessError(f"GET {url} from {pod} in {cluster.id} failed: {proc.stderr.strip()}")
    answer: Mapping[str, Any] = json.loads(proc.stdout)
    return answer


def resolve_in_pod(cluster: NodeCluster, ns: str, pod: str, name: str) -> str:
    """What ``name`` resolves to inside ``pod`` (its resolv.conf points at CoreDNS): an
    IPv4 address, or ``gaierror: <message>`` when the resolver says there is none."""
    code = (
        "import socket\n"
        f"try: print(socket.gethostbyname({name!r}))\n"
        "except socket.gaierror as err: print(f'gaierror: {err}')\n"
    )
    proc = python_in_pod(cluster, ns, pod, code)
    if proc.returncode != 0:
        raise HarnessError(f"resolving {name} in {pod} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


#: Asks the pod's resolver (its CoreDNS) each question of ``argv[1]`` (a JSON list of
#: [name, type]); prints {"<name> <type>": sorted answers, or NXDOMAIN, NODATA, error}.
_RESOLVE = """
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


def statefulset(ns: str, cluster_id: str, replicas: int, *, name: str = "db") -> Manifest:
    """Echo pods with stable hostnames (``db-0``, ``db-1``, ...) under the headless
    Service ``name`` (:func:`headless_service`)."""
    spec = echo_deployment(ns, cluster_id, name=name, replicas=replicas)["spec"]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {**spec, "serviceName": name, "podManagementPolicy": "Parallel"},
    }


def headless_service(ns: str, name: str = "db") -> Manifest:
    found = service(ns, name)
    found["spec"]["clusterIP"] = "None"
    return found


def client_pod(ns: str, name: str = "client") -> Manifest:
    """A pod of the project's image (Python and dnspython) that only waits, to exec in."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": name, "image": images.FEDERATION, "command": ["sleep", "3600"]}
            ],
        },
    }


def resolve_all_in_pod(
    cluster: NodeCluster, ns: str, questions: list[tuple[str, str]], pod: str = "client"
) -> dict[str, Any]:
    """Each (name, type) asked by ``pod`` (:func:`client_pod`) of its resolver, the
    cluster's CoreDNS: answers by ``"<name> <type>"``."""
    code_argv = ["python3", "-c", _RESOLVE, json.dumps(questions)]
    proc = subprocess.run(
        cluster.kubectl_argv("exec", "-n", ns, pod, "--", *code_argv),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise HarnessError(f"resolving in {pod} of {cluster.id}: {proc.stderr.strip()}")
    answers: dict[str, Any] = json.loads(proc.stdout)
    return answers


def wait_ready_pods(cluster: NodeCluster, ns: str, selector: str, count: int) -> dict[str, str]:
    found: dict[str, str] = {}

    def enough() -> bool:
        nonlocal found
        found = ready_pod_ips(cluster, ns, selector)
        return len(found) >= count

    wait_until(enough, timeout=90, interval=0.5, what=f"{count} Ready pods {selector} in {ns}")
    return found


def envoy_pod(
    cluster: NodeCluster,
    *,
    hub_xds_port: int,
    tls_dir: Path | None,
    delta: bool = False,
    name: str = "envoy",
) -> EnvoyClient:
    """An Envoy Deployment in ``cluster``, fed by the hub on the host.

    ``tls_dir`` holds the cluster's xDS client certificate (``fedctl pki`` layout:
    tls.crt, tls.key, ca.crt); it goes into a Secret the pod mounts. None: plain text.

    The hub's xDS port is forwarded into the node's namespace on the node's address, where
    pods reach it. The returned client talks to the pod's admin interface and listener
    through loopback forwards, so every helper that works on an Envoy process works on the
    pod.
    """
    cluster.load_images([images.ENVOY])
    cluster.forward(
        (cluster.node_ip, hub_xds_port), ("127.0.0.1", hub_xds_port), name="hub-xds",
        reverse=True,
    )  # fmt: skip
    tls = None
    if tls_dir is not None:
        tls = BootstrapTls(*(f"{XDS_TLS_MOUNT}/{f}" for f in ("tls.crt", "tls.key", "ca.crt")))
    config = bootstrap(
        BootstrapOptions(
            cluster=cluster.id,
            xds_address=f"{cluster.node_ip}:{hub_xds_port}",
            # The pod's own namespace: reachable only through the forward below.
            admin_address=f"0.0.0.0:{ENVOY_ADMIN_PORT}",
            delta=delta,
            tls=tls,
            insecure_plaintext=tls is None,
        )
    )
    apply(cluster, namespace(ENVOY_NAMESPACE), *_envoy_manifests(name, config, tls_dir))
    pod_ip = envoy_pod_ip(cluster, name)
    return EnvoyClient(
        cluster=cluster.id,
        admin_address=cluster.forward_to_pod(pod_ip, ENVOY_ADMIN_PORT, name=f"{name}-admin"),
        listener_address=cluster.forward_to_pod(pod_ip, ENVOY_LISTENER_PORT, name=name),
    )


def envoy_pod_ip(cluster: NodeCluster, name: str = "envoy") -> str:
    return next(iter(wait_ready_pods(cluster, ENVOY_NAMESPACE, f"app={name}", 1).values()))


def _envoy_manifests(name: str, config: Mapping[str, Any], tls_dir: Path | None) -> list[Manifest]:
    labels = {"app": name}
    mounts: list[Manifest] = [{"name": "bootstrap", "mountPath": "/etc/envoy"}]
    volumes: list[Manifest] = [{"name": "bootstrap", "configMap": {"name": f"{name}-bootstrap"}}]
    secrets: list[Manifest] = []
    if tls_dir is not None:
        mounts.append({"name": "xds-tls", "mountPath": XDS_TLS_MOUNT, "readOnly": True})
        volumes.append({"name": "xds-tls", "secret": {"secretName": f"{name}-xds-tls"}})
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-xds-tls", "namespace": ENVOY_NAMESPACE},
                "data": {
                    f: base64.b64encode((tls_dir / f).read_bytes()).decode()
                    for f in ("tls.crt", "tls.key", "ca.crt")
                },
            }
        )
    container = {
        "name": "envoy",
        "image": images.ENVOY,
        "args": [
            "-c", "/etc/envoy/bootstrap.json", "--disable-hot-restart",
            "--concurrency", "1", "--log-level", "warn",
        ],
        "ports": [
            {"name": "clusterset", "containerPort": ENVOY_LISTENER_PORT},
            {"name": "admin", "containerPort": ENVOY_ADMIN_PORT},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": ENVOY_ADMIN_PORT},
            "periodSeconds": 1,
        },
        "volumeMounts": mounts,
    }  # fmt: skip
    return [
        *secrets,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-bootstrap", "namespace": ENVOY_NAMESPACE},
            "data": {"bootstrap.json": json.dumps(config, indent=2)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ENVOY_NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [container],
                        "volumes": volumes,
                    },
                },
            },
        },
    ]
