"""The node tier: local clusters whose pods really run.

Chosen per test (the ``node_env`` fixture) or per command (``python -m e2e up --nodes``);
the apiserver-only tier of :mod:`e2e.cluster` stays the fast default. Each cluster of a
:class:`NodeEnvironment` gets, inside a network namespace of its own (:mod:`e2e.netns`):

* etcd and kube-apiserver (TLS, Node and RBAC authorization), kube-controller-manager
  and kube-scheduler;
* one node: containerd and runc (Debian's), the CNI ``bridge`` and ``host-local``
  plugins (Debian's), a kubelet, and kube-proxy in iptables mode;
* CoreDNS for ``cluster.local``, from Kubernetes' own addon manifest;
* the images of :mod:`e2e.images`, imported into the node's containerd.

The node's processes share a private mount namespace, in which ``/run``, ``/var/lib``
and ``/var/log`` are overlays: the kubelet writes a few host paths whatever its root
directory says (``/var/log/containers``, ``/var/lib/kubelet/device-plugins``), and
containerd's pod network namespaces and shim sockets land under ``/run``. The node's
processes, and every container process its containerd starts, live in the node's cgroup
subtree (:mod:`e2e.cgroups`), which is how teardown finds and removes all of them.

The host reaches the clusters only through forwarders onto loopback
(:mod:`e2e.netforward`): each apiserver at ``https://127.0.0.1:<port>`` as in the
apiserver-only tier, and whatever a test asks for with :meth:`NodeCluster.forward`.

This needs root (namespaces, cgroups and mounts), and every kubelet changes six
machine-wide sysctls; the last environment to stop puts them back (:mod:`e2e.sysctls`).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import yaml

from e2e import cgroups, images, netns, sysctls, toolchain
from e2e.cluster import REPO_ROOT, Etcd, LocalCluster, LocalEnvironment, condition_true
from e2e.netns import Fabric, NodeNetwork
from e2e.pki import KeyPair
from e2e.processes import HarnessError, Process, ProcessGroup, check_alive, wait_until
from federation.dns import coredns

APISERVER_PORT = 6443
#: Where an Envoy pod's clusterset listener listens, in its own network namespace.
ENVOY_LISTENER_PORT = 10080
#: Where CoreDNS forwards ``clusterset.local`` in each node: the node's own address, on
#: which :class:`e2e.federation.Federation` forwards (over TCP) to the agent's DNS server.
AGENT_DNS_PORT = 10053
KUBELET_PORT = 10250
CLUSTER_DOMAIN = "cluster.local"
NODE_START_TIMEOUT = 120.0
#: Loaded into every node at start; others on demand (:meth:`NodeCluster.load_images`).
DEFAULT_IMAGES = (images.PAUSE, images.COREDNS, images.ECHO)
_NODE_CLUSTER_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,18}[a-z0-9])?$")
MAX_NODE_CLUSTERS = 55
#: containerd plugins that only log errors here (no such filesystems, no tracing).
_UNUSED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)
#: Where a node's containers run: containerd and its shims, and the kubelet's pods
#: (its ``cgroupRoot`` is the node's subtree).
CONTAINER_CGROUPS = ("runtime", "kubepods")
#: Host paths the node's daemons write, each made a private overlay for the node.
PRIVATE_PATHS = ("/run", "/var/lib", "/var/log")


class NodeCluster(LocalCluster):
    """A member cluster with a control plane and one real node, in its own namespaces."""

    def __init__(
        self,
        cluster_id: str,
        index: int,
        directory: Path,
        tools: toolchain.Tools,
        group: ProcessGroup,
        loopback_octet: int,
        *,
        node_tools: toolchain.NodeTools,
        fabric: Fabric,
        built_images: dict[str, images.Image],
    ) -> None:
        super().__init__(cluster_id, index, directory, tools, group, loopback_octet)
        self.node_tools = node_tools
        self.fabric = fabric
        self.images = built_images
        self.node_name = f"{cluster_id}-node"
        self.cgroup = cgroups.NodeCgroup(fabric.name(cluster_id))
        self.node_dir = directory / "node"
        self.holder: Process | None = None
        self.daemons: list[Process] = []
        #: containerd, the kubelet and kube-proxy: what runs in the node's mount namespace.
        self.node_daemons: list[Process] = []
        self.loaded_images: set[str] = set()
        self._forwards = itertools.count(1)

    # --- addresses ------------------------------------------------------------------

    @property
    def network(self) -> NodeNetwork:
        return self.fabric.nodes[self.id]

    @property
    def node_ip(self) -> str:
        return self.network.node_ip

    @property
    def pod_subnet(self) -> str:
        """This node's share of :attr:`pod_cidr` (the cluster has one node)."""
        return f"10.{200 + self.index}.0.0/24"

    @property
    def kubernetes_service_ip(self) -> str:
        return f"10.{100 + self.index}.0.1"

    @property
    def dns_service_ip(self) -> str:
        return f"10.{100 + self.index}.0.10"

    @property
    def netns_path(self) -> Path:
        return self.fabric.netns_path(self.id)

    @property
    def containerd_socket(self) -> Path:
        return self.node_dir / "containerd" / "containerd.sock"

    def hub_flags(self) -> list[str]:
        """Pod IPs are real here (no address map); the Envoy pod listens on every address
        of its own namespace."""
        return ["--listener-address", f"{self.id}=0.0.0.0:{ENVOY_LISTENER_PORT}"]

    # --- running things inside the node --------------------------------------------

    def in_node(
        self, argv: Sequence[str], *, mounts: bool = False, cgroup: str = "system"
    ) -> list[str]:
        """``argv`` in the node's network namespace (and its mount namespace if
        ``mounts``), moved into the node's ``cgroup`` (a child of its subtree) first."""
        prefix = ["nsenter", f"--net={self.netns_path}"]
        if mounts:
            if self.holder is None:
                raise HarnessError(f"node {self.node_name} has no mount namespace yet")
            prefix.append(f"--mount=/proc/{self.holder.pid}/ns/mnt")
        return [*prefix, "--", *self.cgroup.join_argv_prefix(cgroup), *argv]

    def _start(
        self, name: str, argv: Sequence[str], *, mounts: bool = False, cgroup: str = "system"
    ) -> Process:
        proc = self._group.start(
            f"{name}-{self.id}",
            self.in_node(argv, mounts=mounts, cgroup=cgroup),
            self.dir / f"{name}.log",
        )
        self.daemons.append(proc)
        if mounts:
            self.node_daemons.append(proc)
        return proc

    def stop_node(self) -> None:
        """Stop kube-proxy, the kubelet and containerd (by pid), then kill every shim
        and container process their containerd started (by its cgroups)."""
        for proc in reversed(self.node_daemons):
            self._group.stop(proc)
        for child in CONTAINER_CGROUPS:
            self.cgroup.kill_all(child)

    def check_daemons(self) -> None:
        for proc in self.daemons:
            if not proc.running():
                raise HarnessError(
                    f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail(40)}"
                )

    # --- control plane ----------------------------------------------------------------

    def serving_pair(self) -> KeyPair:
        return self.ca.serving("127.0.0.1", self.node_ip, self.kubernetes_service_ip)

    def apiserver_tier_flags(self) -> list[str]:
        client_cert, client_key = self.ca.client(
            "kube-apiserver-kubelet-client", ("system:masters",)
        ).write(self.pki, "apiserver-kubelet-client")
        return [
            "--bind-address=0.0.0.0",
            f"--advertise-address={self.node_ip}",
            f"--secure-port={APISERVER_PORT}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={client_cert}",
            f"--kubelet-client-key={client_key}",
            f"--kubelet-certificate-authority={self.ca_file}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def start_control_plane(self) -> None:
        """etcd and kube-apiserver in the namespace, the apiserver forwarded to loopback."""
        _, self.port = self.forward(
            ("127.0.0.1", 0), (self.node_ip, APISERVER_PORT), name="apiserver"
        )
        self.server = f"https://127.0.0.1:{self.port}"
        self.write_pki()
        etcd = Etcd(
            self._group,
            self.tools.etcd,
            self.dir / "etcd",
            f"etcd-{self.id}",
            in_namespace=lambda argv: self.in_node(argv),
        )
        self.daemons.append(etcd.process)
        self.process = self._start("kube-apiserver", self.apiserver_argv(etcd.url))

    def check_running(self) -> None:
        self.check_daemons()

    def _component_kubeconfig(self, user: str, groups: Iterable[str] = ()) -> Path:
        inside = f"https://127.0.0.1:{APISERVER_PORT}"
        return self.mint_identity(user, groups, server=inside).kubeconfig

    def start_controllers(self) -> None:
        self._start(
            "kube-controller-manager",
            [
                str(self.node_tools.kube_controller_manager),
                *self._controller_flags("system:kube-controller-manager"),
                f"--service-account-private-key-file={self.pki / 'service-account.key'}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=true",
                f"--cluster-name={self.id}",
                f"--service-cluster-ip-range={self.service_cidr}",
            ],
        )
        self._start(
            "kube-scheduler",
            [str(self.node_tools.kube_scheduler), *self._controller_flags("system:kube-scheduler")],
        )

    def _controller_flags(self, user: str) -> list[str]:
        """What kube-controller-manager and kube-scheduler share: one identity for the
        apiserver and for checking who calls their own endpoints, loopback, one replica."""
        kubeconfig = self._component_kubeconfig(user)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--profiling=false",
        ]

    # --- the node ----------------------------------------------------------------------

    def start_mount_namespace(self) -> None:
        """A holder process owning the node's mount namespace, with private overlays."""
        self.holder = self._group.start(
            f"node-mounts-{self.id}",
            ["unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity"],
            self.dir / "node-mounts.log",
        )
        ours = os.readlink("/proc/self/ns/mnt")
        holder = self.holder

        def unshared() -> bool:
            try:
                return os.readlink(f"/proc/{holder.pid}/ns/mnt") != ours
            except FileNotFoundError:
                return False

        wait_until(unshared, timeout=10, what=f"the mount namespace of {self.node_name}")
        for path in PRIVATE_PATHS:
            layer = self.node_dir / "overlay" / path.strip("/").replace("/", "-")
            (layer / "upper").mkdir(parents=True, exist_ok=True)
            (layer / "work").mkdir(parents=True, exist_ok=True)
            options = f"lowerdir={path},upperdir={layer / 'upper'},workdir={layer / 'work'}"
            netns.run(
                ["nsenter", f"--mount=/proc/{holder.pid}/ns/mnt", "--",
                 "mount", "-t", "overlay", "overlay", "-o", options, path],
                what=f"private {path} for {self.node_name}",
            )  # fmt: skip

    def _write_containerd_config(self) -> Path:
        base = self.node_dir / "containerd"
        cni_conf = self.node_dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-federation.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config = base / "config.toml"
        base.mkdir(parents=True, exist_ok=True)
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{base / "root"}"',
                    f'state = "{base / "state"}"',
                    "disabled_plugins = [" + ", ".join(f'"{p}"' for p in _UNUSED_PLUGINS) + "]",
                    "[grpc]",
                    f'  address = "{self.containerd_socket}"',
                    "[ttrpc]",
                    f'  address = "{base / "containerd.ttrpc.sock"}"',
                    f"{cri}]",
                    f'  sandbox_image = "{images.PAUSE}"',
                    # Processes here lack CAP_SYS_RESOURCE: without this every sandbox
                    # fails with "can't get final child's PID from pipe".
                    "  restrict_oom_score_adj = true",
                    f"{cri}.containerd]",
                    '  snapshotter = "overlayfs"',
                    '  default_runtime_name = "runc"',
                    f"{cri}.containerd.runtimes.runc]",
                    '  runtime_type = "io.containerd.runc.v2"',
                    f"{cri}.containerd.runtimes.runc.options]",
                    f'  BinaryName = "{self.node_tools.runc}"',
                    "  SystemdCgroup = false",
                    f"{cri}.cni]",
                    f'  bin_dir = "{self.node_tools.cni_bin_dir}"',
                    f'  conf_dir = "{cni_conf}"',
                    '[plugins."io.containerd.internal.v1.opt"]',
                    f'  path = "{base / "opt"}"',
                    "",
                ]
            )
        )
        return config

    def _cni_config(self) -> dict[str, object]:
        return {
            "cniVersion": "0.4.0",
            "name": "federation-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    # Pod addresses stay visible across the clusterset (flat routing).
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def start_containerd(self) -> None:
        config = self._write_containerd_config()
        proc = self._start(
            "containerd",
            [str(self.node_tools.containerd), "--config", str(config)],
            mounts=True,
            cgroup="runtime",
        )
        wait_until(
            lambda: self._ctr_ok(),
            timeout=30,
            what=f"containerd of {self.node_name}",
            check=functools.partial(check_alive, proc),
        )

    def ctr(self, *args: str) -> list[str]:
        return [
            str(self.node_tools.ctr),
            f"--address={self.containerd_socket}",
            "--namespace=k8s.io",
            *args,
        ]

    def _ctr_ok(self) -> bool:
        if not self.containerd_socket.exists():
            return False
        proc = subprocess.run(self.ctr("version"), capture_output=True, check=False, timeout=10)
        return proc.returncode == 0

    def load_images(self, names: Iterable[str]) -> None:
        """Import images into the node's containerd, where pods find them by name."""
        wanted = [self.images[n] for n in names if n not in self.loaded_images]
        if not wanted:
            return
        ctr = subprocess.Popen(
            self.ctr("images", "import", "--no-unpack=false", "-"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert ctr.stdin is not None
        try:
            images.write_archive(wanted, ctr.stdin)
        except BrokenPipeError:
            pass
        finally:
            ctr.stdin.close()
        out = ctr.stdout.read().decode(errors="replace") if ctr.stdout else ""
        if ctr.wait(timeout=300) != 0:
            raise HarnessError(f"importing images into {self.node_name} failed:\n{out}")
        self.loaded_images.update(image.name for image in wanted)

    def start_kubelet(self) -> None:
        kubeconfig = self._component_kubeconfig(f"system:node:{self.node_name}", ["system:nodes"])
        serving_cert, serving_key = self.ca.server_pair(
            self.node_name, ips=[self.node_ip], names=[self.node_name]
        ).write(self.pki, "kubelet")
        root = self.node_dir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        resolv = self.node_dir / "resolv.conf"
        # Names outside the cluster resolve nowhere: nothing outside is ever a target.
        resolv.write_text(f"nameserver {self.node_ip}\n")
        config = self.node_dir / "kubelet-config.json"
        config.write_text(json.dumps(self._kubelet_config(serving_cert, serving_key, resolv)))
        self._start(
            "kubelet",
            [
                str(self.node_tools.kubelet),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={root}",
                f"--hostname-override={self.node_name}",
                f"--node-ip={self.node_ip}",
                "--v=1",
            ],
            mounts=True,
        )

    def _kubelet_config(self, cert: Path, key: Path, resolv: Path) -> dict[str, object]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This host has cgroup v1 and PID 1 is not systemd.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup.name}",
            # Processes here may not lower their OOM score (no CAP_SYS_RESOURCE).
            "oomScoreAdj": 0,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.node_ip,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "tlsCertFile": str(cert),
            "tlsPrivateKeyFile": str(key),
            "authentication": {
                "x509": {"clientCAFile": str(self.ca_file)},
                "webhook": {"enabled": True},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [self.dns_service_ip],
            "resolvConf": str(resolv),
            "podCIDR": self.pod_subnet,
            "volumePluginDir": str(self.node_dir / "volume-plugins"),
            "failSwapOn": False,
            "serializeImagePulls": False,
            # A shared test machine: evict nothing for disk or memory pressure.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
        }

    def start_kube_proxy(self) -> None:
        # kube-proxy rewrites connections to ClusterIPs (and load balancer addresses) in
        # the node's namespace, but a connection needs a route before that rewrite, and
        # the node has no default route. This one stands in for it, so that what runs in
        # the node (the host's forwards, a conformance suite) reaches Services by their
        # addresses as on any node.
        netns.ip("route", "replace", self.service_cidr, "dev", "eth0", netns=self.network.netns)
        kubeconfig = self._component_kubeconfig("system:kube-proxy")
        config = self.node_dir / "kube-proxy-config.json"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "mode": "iptables",
                    "clientConnection": {"kubeconfig": str(kubeconfig)},
                    "hostnameOverride": self.node_name,
                    "clusterCIDR": self.pod_cidr,
                    "healthzBindAddress": "127.0.0.1:10256",
                    "metricsBindAddress": "127.0.0.1:10249",
                    # Leave conntrack settings alone: some are machine-wide on some kernels.
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                }
            )
        )
        self._start(
            "kube-proxy", [str(self.node_tools.kube_proxy), f"--config={config}"], mounts=True
        )

    def node_ready(self) -> bool:
        proc = self.kubectl("get", "node", self.node_name, "-o", "json", check=False)
        return proc.returncode == 0 and condition_true(json.loads(proc.stdout), "Ready")

    @property
    def agent_dns_address(self) -> tuple[str, int]:
        """Where this cluster's CoreDNS sends ``clusterset.local`` questions."""
        return self.node_ip, AGENT_DNS_PORT

    def coredns_manifest(self) -> str:
        """Kubernetes' CoreDNS addon, with this cluster's domain and service IP, and the
        block that forwards ``clusterset.local`` to the agent (as the README tells users
        to add it), over TCP: the forwarder from the node to the host speaks only TCP."""
        text = self._coredns_addon()
        docs = list(yaml.safe_load_all(text))
        for doc in docs:
            if doc and doc.get("kind") == "ConfigMap" and "Corefile" in doc.get("data", {}):
                host, port = self.agent_dns_address
                doc["data"]["Corefile"] = coredns.with_block(
                    doc["data"]["Corefile"], f"{host}:{port}", force_tcp=True
                )
                return yaml.safe_dump_all(docs, sort_keys=False)
        raise HarnessError("the CoreDNS addon manifest has no Corefile ConfigMap")

    def _coredns_addon(self) -> str:
        text = self.node_tools.coredns_manifest.read_text()
        for placeholder, value in (
            ("__MACHINE_GENERATED_WARNING__", "Kubernetes' CoreDNS addon (coredns.yaml.base)"),
            ("__DNS__DOMAIN__", CLUSTER_DOMAIN),
            ("__DNS__SERVER__", self.dns_service_ip),
            ("__DNS__MEMORY__LIMIT__", "170Mi"),
        ):
            text = text.replace(placeholder, value)
        leftover = [w for w in text.split() if w.startswith("__") and w.endswith("__")]
        if leftover:
            raise HarnessError(f"unexpected placeholders in the CoreDNS manifest: {leftover}")
        return text

    # --- reaching things in the node from the host ----------------------------------

    def forward(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        *,
        name: str,
        reverse: bool = False,
    ) -> tuple[str, int]:
        """Forward ``listen`` on the host's loopback to ``target`` inside the node's
        namespace (or, with ``reverse``, ``listen`` inside the node to ``target`` on the
        host's loopback). Port 0 listens on a free port; returns where it listens."""
        host_side = target if reverse else listen
        if not host_side[0].startswith("127."):
            raise HarnessError(f"the host side of a forward is loopback only, not {host_side[0]}")
        here, there = "-", str(self.netns_path)
        listen_ns, connect_ns = (there, here) if reverse else (here, there)
        directory = self.dir / "forwards"
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{name}-{next(self._forwards)}"
        ready = directory / f"{stem}.ready"
        rule = f"{listen_ns},{listen[0]}:{listen[1]},{connect_ns},{target[0]}:{target[1]}"
        proc = self._group.start(
            f"forward-{stem}-{self.id}",
            [sys.executable, "-m", "e2e.netforward", f"--ready-file={ready}", f"--rule={rule}"],
            directory / f"{stem}.log",
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1"),
        )
        wait_until(
            ready.exists, timeout=15, what=f"forward {name} of {self.id}",
            check=functools.partial(check_alive, proc),
        )  # fmt: skip
        host, _, port = ready.read_text().split()[0].rpartition(":")
        return host, int(port)

    def forward_to_pod(self, pod_ip: str, port: int, *, name: str) -> str:
        """A loopback address on the host that reaches ``pod_ip:port`` in this cluster."""
        host, bound = self.forward(
            (f"127.{self.loopback_octet}.254.1", 0), (pod_ip, port), name=name
        )
        return f"{host}:{bound}"


class NodeEnvironment(LocalEnvironment):
    """N node clusters; a context manager that always leaves the machine as it found it.

    >>> with NodeEnvironment(["a", "b"]) as env:
    ...     env.cluster("a").kubectl("get", "nodes")
    """

    def __init__(
        self,
        cluster_ids: Sequence[str] = ("a", "b"),
        *,
        flat_pod_routing: bool = True,
        workdir: Path | None = None,
        keep_workdir: bool = False,
        federation_crds: bool = True,
    ) -> None:
        for cluster_id in cluster_ids:
            if not _NODE_CLUSTER_ID.match(cluster_id):
                raise ValueError(
                    f"cluster id {cluster_id!r}: the node tier names namespaces, cgroups and "
                    "nodes after it, so it must be a DNS label of at most 20 characters"
                )
        if len(cluster_ids) > MAX_NODE_CLUSTERS:
            raise ValueError(
                f"{len(cluster_ids)} clusters: each gets 10.(100+i) and 10.(200+i) ranges, "
                f"so at most {MAX_NODE_CLUSTERS}"
            )
        super().__init__(
            cluster_ids,
            etcd_per_cluster=True,
            workdir=workdir,
            keep_workdir=keep_workdir,
            federation_crds=federation_crds,
        )
        self.fabric = Fabric(flat=flat_pod_routing)
        self.node_tools: toolchain.NodeTools | None = None
        self.built_images: dict[str, images.Image] = {}
        self._sysctls_acquired = False
        self.node_seconds = 0.0

    def cluster(self, cluster_id: str) -> NodeCluster:
        found = self.clusters[cluster_id]
        assert isinstance(found, NodeCluster)
        return found

    def node_clusters(self) -> list[NodeCluster]:
        return [self.cluster(c) for c in self.cluster_ids]

    def start(self) -> None:
        if os.geteuid() != 0:
            raise HarnessError("the node tier needs root: network namespaces, cgroups, mounts")
        for name in netns.sweep_stale() + cgroups.sweep_stale():
            print(f"[nodes] removed {name}, left by an environment that is gone", flush=True)
        self.node_tools = toolchain.locate_nodes()
        self.built_images = images.build_all()
        super().start()

    def _new_cluster(
        self, cluster_id: str, index: int, directory: Path, tools: toolchain.Tools, octet: int
    ) -> LocalCluster:
        assert self.node_tools is not None
        return NodeCluster(
            cluster_id, index, directory, tools, self.group, octet,
            node_tools=self.node_tools, fabric=self.fabric, built_images=self.built_images,
        )  # fmt: skip

    def _start_control_planes(self, tools: toolchain.Tools) -> None:
        clusters = self.node_clusters()
        self.fabric.create([(c.id, c.index, c.pod_cidr, c.pod_subnet) for c in clusters])
        for cluster in clusters:
            cluster.cgroup.create("system", *CONTAINER_CGROUPS)
            cluster.start_control_plane()

    def _start_nodes(self) -> None:
        began = time.monotonic()
        clusters = self.node_clusters()
        sysctls.acquire(self.fabric.token)
        self._sysctls_acquired = True
        for cluster in clusters:
            cluster.start_controllers()
            cluster.start_mount_namespace()
            cluster.start_containerd()
        for cluster in clusters:
            cluster.load_images(DEFAULT_IMAGES)
            cluster.start_kubelet()
            cluster.start_kube_proxy()
        self._wait(lambda: all(c.node_ready() for c in clusters), "every node to be Ready")
        for cluster in clusters:
            cluster.kubectl("apply", "-f", "-", input=cluster.coredns_manifest())
        self.wait_deployments("kube-system", "coredns")
        self.node_seconds = time.monotonic() - began

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        def check() -> None:
            for cluster in self.node_clusters():
                cluster.check_daemons()

        wait_until(condition, timeout=NODE_START_TIMEOUT, what=what, check=check, interval=0.2)

    def wait_deployments(self, namespace: str, *names: str, clusters: Iterable[str] = ()) -> None:
        """Wait until each named Deployment is Available in each cluster (all by default)."""
        targets = [self.cluster(c) for c in clusters] or self.node_clusters()
        for cluster in targets:
            for name in names:
                self._wait(
                    functools.partial(_deployment_available, cluster, namespace, name),
                    f"Deployment {namespace}/{name} in {cluster.id} to be Available",
                )

    def _stop_processes(self) -> None:
        """Stop every process by pid, kill what the nodes' containerd started (found in
        their cgroups), remove the cgroups and namespaces and restore the sysctls: each
        step is tried whatever failed before it."""
        clusters = [c for c in self.clusters.values() if isinstance(c, NodeCluster)]
        steps: list[tuple[str, Callable[[], object]]] = [
            (f"stop the node of {c.id}", c.stop_node) for c in clusters
        ]
        steps.append(("stop processes", self.group.stop_all))
        steps += [(f"kill what is left of {c.id}", c.cgroup.kill_all) for c in clusters]
        steps += [(f"remove cgroups of {c.id}", c.cgroup.remove) for c in clusters]
        steps.append(("remove network namespaces", self.fabric.destroy))
        steps.append(("restore sysctls", self._restore_sysctls))
        errors: list[str] = []
        for label, step in steps:
            try:
                step()
            except (HarnessError, OSError) as err:
                errors.append(f"{label}: {err}")
        if errors:
            raise HarnessError("teardown: " + "; ".join(errors))

    def _restore_sysctls(self) -> None:
        if self._sysctls_acquired:
            sysctls.release(self.fabric.token)
            self._sysctls_acquired = False


# ---- helpers ---------------------------------------------------------------------------


def _deployment_available(cluster: LocalCluster, namespace: str, name: str) -> bool:
    proc = cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "json", check=False)
    return proc.returncode == 0 and condition_true(json.loads(proc.stdout), "Available")
