"""Local member clusters: real etcd and kube-apiserver processes on loopback.

The harness behind the demo, the e2e tests and the integration tests (through
the fixtures in :mod:`e2e.fixtures`). :class:`LocalEnvironment` starts etcd
(one shared by all clusters, each apiserver under its own ``--etcd-prefix``,
or one per cluster) and one kube-apiserver per cluster with TLS, client
certificate authentication and RBAC authorization. It installs the project's
``crds/`` and the upstream Gateway API CRDs, sets the ClusterProperty
``cluster.clusterset.k8s.io`` to the cluster id, writes an admin kubeconfig
per cluster and mints restricted identities on request.

There is no kubelet, scheduler or controller-manager: nothing creates pods,
EndpointSlices for Services, or finalizes deleted namespaces. Tests create
EndpointSlices that point at loopback processes they start themselves.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e import loopback, owners, toolchain
from e2e.pki import CertificateAuthority, KeyPair, service_account_keys
from e2e.processes import (
    HarnessError,
    Process,
    ProcessGroup,
    Supervised,
    check_alive,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "crds"
CLUSTER_PROPERTY_ID = "cluster.clusterset.k8s.io"
ADMIN_USER = "federation-admin"
START_TIMEOUT = 90.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _run_all(commands: Sequence[tuple[str, Sequence[str]]], timeout: float) -> None:
    """Run commands concurrently; raise with the output of the first that fails."""
    running = [
        (label, subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for label, argv in commands
    ]
    failures = []
    for label, popen in running:
        try:
            out, _ = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            out, _ = popen.communicate()
            failures.append(f"{label}: timed out after {timeout:.0f}s\n{out.decode()}")
            continue
        if popen.returncode != 0:
            failures.append(f"{label}: exit {popen.returncode}\n{out.decode()}")
    if failures:
        raise HarnessError("\n".join(failures))


class Etcd:
    """One etcd member on loopback with its data in a temp dir."""

    def __init__(
        self,
        group: ProcessGroup,
        binary: Path,
        directory: Path,
        name: str,
        *,
        in_namespace: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        """``in_namespace`` wraps the command line to run etcd in a node's network
        namespace, where the standard ports are free (the node tier)."""
        self.client_port = 2379 if in_namespace else free_port()
        peer = f"http://127.0.0.1:{2380 if in_namespace else free_port()}"
        self.url = f"http://127.0.0.1:{self.client_port}"
        argv = [
            str(binary),
            f"--name={name}",
            f"--data-dir={directory / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={name}={peer}",
            # Throwaway data: durability is not worth the fsync latency here.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        wrap = in_namespace or list
        self.process: Process = group.start(name, wrap(argv), directory / "etcd.log")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                body: dict[str, str] = json.load(resp)
                return body.get("health") == "true"
        except (OSError, ValueError):
            return False


@dataclass(frozen=True)
class Identity:
    """A user the apiserver authenticates by client certificate."""

    user: str
    groups: tuple[str, ...]
    kubeconfig: Path


class LocalCluster:
    """One member cluster: a kube-apiserver with its own CA, prefix and identity."""

    def __init__(
        self,
        cluster_id: str,
        index: int,
        directory: Path,
        tools: toolchain.Tools,
        group: ProcessGroup,
        loopback_octet: int,
        *,
        dual_stack: bool = False,
    ) -> None:
        self.id = cluster_id
        #: Whether Services may also get IPv6 ClusterIPs here (IPv4 stays primary).
        self.dual_stack = dual_stack
        self.index = index
        #: Second octet of this cluster's loopback range (see :mod:`e2e.loopback`).
        self.loopback_octet = loopback_octet
        self.dir = directory
        self.tools = tools
        self._group = group
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.ca = CertificateAuthority(f"federation-local-{cluster_id}-ca")
        self.ca_file = directory / "pki" / "ca.crt"
        self.admin: Identity | None = None
        self.process: Process | None = None

    # Services get ClusterIPs from a per-cluster range. They are data to store
    # and compare: nothing ever sends traffic to them.
    @property
    def service_cidr(self) -> str:
        ipv4 = f"10.{100 + self.index}.0.0/16"
        return f"{ipv4},fd10:{100 + self.index}::/112" if self.dual_stack else ipv4

    @property
    def pod_cidr(self) -> str:
        """The cluster's pod range.

        In the apiserver-only tier these addresses are data only, like ClusterIPs: the
        apiserver refuses loopback addresses in EndpointSlices, so tests put pod IPs from
        this range there, nothing sends traffic to them, and the hub maps them onto
        :attr:`backend_cidr`. In the node tier (:mod:`e2e.nodes`) real pods get them,
        inside the environment's network namespaces.
        """
        return f"10.{200 + self.index}.0.0/16"

    def pod_ip(self, host: int) -> str:
        return f"10.{200 + self.index}.{host // 256}.{host % 256}"

    # Where traffic really goes: the hub maps pod_cidr onto backend_cidr
    # (--address-map), and test backends listen there. Envoy uses .255.1.
    @property
    def backend_cidr(self) -> str:
        return f"127.{self.loopback_octet}.0.0/16"

    def backend_ip(self, host: int) -> str:
        return f"127.{self.loopback_octet}.{host // 256}.{host % 256}"

    @functools.cached_property
    def envoy_listener(self) -> str:
        host = f"127.{self.loopback_octet}.255.1"
        return f"{host}:{free_port(host)}"

    @functools.cached_property
    def envoy_admin(self) -> str:
        host = f"127.{self.loopback_octet}.255.1"
        return f"{host}:{free_port(host)}"

    def hub_flags(self) -> list[str]:
        """How the hub must treat this cluster: pod IPs are data here, mapped onto the
        loopback range where the test backends listen, and its Envoy listens on loopback."""
        return [
            "--address-map",
            f"{self.id}={self.pod_cidr}={self.backend_cidr}",
            "--listener-address",
            f"{self.id}={self.envoy_listener}",
        ]

    @property
    def kubeconfig(self) -> Path:
        assert self.admin is not None, "cluster not started"
        return self.admin.kubeconfig

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    def write_pki(self) -> None:
        """The CA, the service-account keys and the admin identity."""
        self.pki.mkdir(parents=True, exist_ok=True)
        self.ca_file.write_bytes(self.ca.cert_pem)
        sa_pub, _ = service_account_keys().write(self.pki, "service-account")
        sa_pub.rename(self.pki / "service-account.pub")
        self.admin = self.mint_identity(ADMIN_USER, ("system:masters",))

    def apiserver_argv(self, etcd_url: str) -> list[str]:
        """kube-apiserver's command line; the node tier adds to it."""
        pki = self.pki
        serving_cert, serving_key = self.serving_pair().write(pki, "apiserver")
        issuer = "https://kubernetes.default.svc.cluster.local"
        return [
            str(self.tools.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            f"--etcd-prefix=/federation-local/{self.id}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={serving_cert}",
            f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={self.ca_file}",
            f"--service-account-issuer={issuer}",
            f"--api-audiences={issuer}",
            f"--service-account-key-file={pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={pki / 'service-account.key'}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            *self.apiserver_tier_flags(),
        ]

    def serving_pair(self) -> KeyPair:
        return self.ca.serving("127.0.0.1")

    def apiserver_tier_flags(self) -> list[str]:
        return [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            "--authorization-mode=RBAC",
            # No kubelets: the "kubernetes" Service endpoints would point at loopback.
            "--endpoint-reconciler-type=none",
        ]

    def start_apiserver(self, etcd_url: str) -> None:
        self.write_pki()
        self.process = self._group.start(
            f"kube-apiserver-{self.id}",
            self.apiserver_argv(etcd_url),
            self.dir / "kube-apiserver.log",
        )

    def mint_identity(
        self, user: str, groups: Iterable[str] = (), *, server: str | None = None
    ) -> Identity:
        """A kubeconfig for ``user`` in ``groups``, signed by this cluster's CA.

        Only ``system:masters`` gets rights by itself; bind RBAC roles to the
        user or groups for anything else. ``server`` overrides where the
        kubeconfig points (the node tier's components reach the apiserver
        inside their namespace, not through loopback).
        """
        groups = tuple(groups)
        pair = self.ca.client(user, groups)
        path = self.dir / "identities" / f"{user.replace(':', '_')}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        context = f"{user}@{self.id}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.id,
                    "cluster": {
                        "server": server or self.server,
                        "certificate-authority-data": _b64(self.ca.cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(pair.cert_pem),
                        "client-key-data": _b64(pair.key_pem),
                    },
                }
            ],
            "contexts": [{"name": context, "context": {"cluster": self.id, "user": user}}],
            "current-context": context,
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        if user == ADMIN_USER:
            # A stable, obvious name for people running kubectl by hand.
            shutil.copy(path, self.dir / "kubeconfig")
            path = self.dir / "kubeconfig"
        return Identity(user, groups, path)

    def _admin_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        pki = self.dir / "identities"
        if not (pki / "readyz.crt").exists():
            self.ca.client(ADMIN_USER, ("system:masters",)).write(pki, "readyz")
        ctx.load_cert_chain(pki / "readyz.crt", pki / "readyz.key")
        return ctx

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                self.server + "/readyz", timeout=2, context=self._admin_ssl()
            ) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def check_running(self) -> None:
        if self.process is not None and not self.process.running():
            raise HarnessError(
                f"kube-apiserver of cluster {self.id} exited "
                f"({self.process.popen.returncode}):\n{self.process.log_tail()}"
            )

    def kubectl_argv(self, *args: str, identity: Identity | None = None) -> list[str]:
        kubeconfig = (identity or self.admin or _not_started()).kubeconfig
        return [
            str(self.tools.kubectl),
            f"--kubeconfig={kubeconfig}",
            f"--cache-dir={self.dir / 'kube-cache'}",
            *args,
        ]

    def kubectl(
        self,
        *args: str,
        identity: Identity | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (as admin unless ``identity``)."""
        proc = subprocess.run(
            self.kubectl_argv(*args, identity=identity),
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise HarnessError(
                f"kubectl {' '.join(args)} on {self.id} failed: {proc.stderr.strip()}"
            )
        return proc

    def cluster_property_manifest(self) -> str:
        return json.dumps(
            {
                "apiVersion": "about.k8s.io/v1beta1",
                "kind": "ClusterProperty",
                "metadata": {"name": CLUSTER_PROPERTY_ID},
                "spec": {"value": self.id},
            }
        )


def kubectl_table(text: str) -> list[dict[str, str]]:
    """The rows of one table ``kubectl get`` printed, as header -> cell.

    Cells are cut at the header's column offsets (kubectl left-aligns every column
    under its header), so empty cells and cells with spaces come out right.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [
        {name: line[begin:end].strip() for name, (begin, end) in zip(names, bounds, strict=True)}
        for line in lines[1:]
    ]


def condition_true(obj: Mapping[str, Any], kind: str) -> bool:
    """Whether ``obj`` (Kubernetes JSON) has a condition ``kind`` with status True."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _not_started() -> Identity:
    raise HarnessError("cluster not started")


class LocalEnvironment(Supervised):
    """N member clusters on loopback; a context manager that always cleans up.

    >>> with LocalEnvironment(["a", "b"]) as env:
    ...     env.cluster("a").kubectl("get", "ns")
    """

    def __init__(
        self,
        cluster_ids: Sequence[str] = ("a", "b", "c"),
        *,
        etcd_per_cluster: bool = False,
        workdir: Path | None = None,
        keep_workdir: bool = False,
        dual_stack: Sequence[str] = (),
        federation_crds: bool = True,
    ) -> None:
        if len(set(cluster_ids)) != len(cluster_ids) or not cluster_ids:
            raise ValueError(f"cluster ids must be distinct and non-empty: {cluster_ids}")
        self.cluster_ids = tuple(cluster_ids)
        #: Clusters whose Services may be IPv6 or dual-stack (ClusterIPs are only data:
        #: nothing sends traffic to them).
        self.dual_stack = frozenset(dual_stack)
        #: Install this repository's CRDs and set each ClusterProperty (off: the test
        #: installs them itself, with the Helm charts).
        self.federation_crds = federation_crds
        self.etcd_per_cluster = etcd_per_cluster
        self._own_workdir = workdir is None
        self.workdir = workdir or owners.temp_dir()
        self.keep_workdir = keep_workdir
        self.group = ProcessGroup()
        self.clusters: dict[str, LocalCluster] = {}
        self.etcds: list[Etcd] = []
        self.loopback: loopback.LoopbackClaim | None = None
        self.startup_seconds = 0.0

    def cluster(self, cluster_id: str) -> LocalCluster:
        return self.clusters[cluster_id]

    def start(self) -> None:
        began = time.monotonic()
        owners.sweep_temp_dirs()  # of environments killed before they could clean up
        tools = toolchain.locate()
        self.loopback = loopback.claim(len(self.cluster_ids))
        for index, cluster_id in enumerate(self.cluster_ids, start=1):
            directory = self.workdir / cluster_id
            directory.mkdir(parents=True, exist_ok=True)
            self.clusters[cluster_id] = self._new_cluster(
                cluster_id, index, directory, tools, self.loopback.octet(index)
            )
        self._start_control_planes(tools)
        self._wait_apiservers()
        self._install_crds(tools.gateway_api_crds, tools.envoy_gateway_crds)
        self._start_nodes()
        self.startup_seconds = time.monotonic() - began

    def _new_cluster(
        self, cluster_id: str, index: int, directory: Path, tools: toolchain.Tools, octet: int
    ) -> LocalCluster:
        return LocalCluster(
            cluster_id,
            index,
            directory,
            tools,
            self.group,
            octet,
            dual_stack=cluster_id in self.dual_stack,
        )

    def _start_control_planes(self, tools: toolchain.Tools) -> None:
        if self.etcd_per_cluster:
            self.etcds = [
                Etcd(self.group, tools.etcd, self.workdir / c / "etcd", f"etcd-{c}")
                for c in self.cluster_ids
            ]
        else:
            self.etcds = [Etcd(self.group, tools.etcd, self.workdir / "etcd", "etcd")]
        for etcd in self.etcds:
            wait_until(
                etcd.healthy,
                timeout=START_TIMEOUT,
                what=f"{etcd.process.name} health",
                check=functools.partial(check_alive, etcd.process),
            )
        for i, cluster in enumerate(self.clusters.values()):
            cluster.start_apiserver(self.etcds[i if self.etcd_per_cluster else 0].url)

    def _wait_apiservers(self) -> None:
        clusters = list(self.clusters.values())

        def check() -> None:
            for c in clusters:
                c.check_running()

        wait_until(
            lambda: all(c.ready() for c in clusters),
            timeout=START_TIMEOUT,
            what="every kube-apiserver to be ready",
            check=check,
        )

    def _start_nodes(self) -> None:
        """Nothing here: the apiserver-only tier has no nodes (see :mod:`e2e.nodes`)."""

    def _install_crds(
        self, gateway_api_crds: Path, envoy_gateway_crds: tuple[Path, ...] = ()
    ) -> None:
        """Our CRDs and Envoy Gateway's policy CRDs (unless the tier installs them with
        the CRD chart, ``federation_crds=False``), and Gateway API's standard ones."""
        clusters = list(self.clusters.values())
        ours = (CRD_DIR, *envoy_gateway_crds) if self.federation_crds else ()
        _run_all(
            [
                (
                    f"install CRDs in {c.id}",
                    c.kubectl_argv(
                        "apply",
                        "--server-side",
                        "--field-manager=federation-local",
                        *(arg for path in ours for arg in ("-f", str(path))),
                        "-f",
                        str(gateway_api_crds),
                    ),
                )
                for c in clusters
            ],
            timeout=120,
        )
        _run_all(
            [
                (
                    f"wait for CRDs in {c.id}",
                    c.kubectl_argv(
                        "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"
                    ),
                )
                for c in clusters
            ],
            timeout=90,
        )
        for c in clusters if self.federation_crds else ():
            c.kubectl("apply", "--server-side", "-f", "-", input=c.cluster_property_manifest())

    def peak_rss_kib(self) -> int:
        return self.group.peak_rss_kib()

    def pids(self) -> list[int]:
        return self.group.pids()

    def _stop_processes(self) -> None:
        self.group.stop_all()

    def stop(self) -> None:
        """Stop every process (by pid) and remove the temp dir unless asked to keep it.

        A second Ctrl-C during teardown is ignored rather than leaving half the
        processes running; teardown is bounded by the stop grace period.
        """
        try:
            with _interrupts_deferred():
                self._stop_processes()
        finally:
            if self.loopback is not None:
                self.loopback.release()
            if self._own_workdir and not self.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
