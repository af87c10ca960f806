"""A running federation on the local environment: Redis, ACL users and agents.

Used by the demo, the e2e tests and the benchmarks, on top of
:class:`e2e.cluster.LocalEnvironment`. It starts one real redis-server, creates
one Redis ACL user per agent (and a read-only hub user), gives each cluster a
least-privilege Kubernetes identity for its agent (the agent chart's ClusterRole rules)
and runs ``federation-agent`` as a separate process per cluster, which tests
can kill and restart. With ``hub_replicas=N`` it runs N hubs on the one registry, each
with its own ports, and spreads the Envoys over them: each Envoy lists every replica,
preferring the next one in turn (``fedctl bootstrap --xds IP:PORT,IP:PORT,...``), and
moves to another when its replica goes. With ``registry_tls=True`` the redis-server is
TLS-only and requires client certificates; the hub and agents connect with
``rediss://``, verifying it with its CA and presenting a client certificate (the
``FEDERATION_REGISTRY_*`` files of :attr:`Federation.registry_tls_env`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from e2e.cluster import REPO_ROOT, LocalCluster, LocalEnvironment, free_port
from e2e.envoy import Envoy
from e2e.nodes import NodeCluster
from e2e.processes import HarnessError, Process, check_alive, wait_until
from e2e.redis_server import RedisServer
from e2e.redis_topologies import RedisClusterServers, RedisSentinelSet
from federation.cli import pki
from federation.cli.bootstrap import BootstrapTls
from federation.registry.acl import (
    agent_user,
    agent_user_rules,
    apply_users_everywhere,
    hub_user_rules,
)
from federation.registry.location import REGISTRY_URL_ENV

#: Which Redis an environment's registry is.
RegistryKind = Literal["server", "cluster", "sentinel"]
Registry = RedisServer | RedisClusterServers | RedisSentinelSet

#: The agent chart's ClusterRole rules: the local agents run with exactly what the chart grants.
AGENT_RULES = REPO_ROOT / "charts" / "federation-agent" / "files" / "clusterrole-rules.yaml"
AGENTS_GROUP = "federation:agents"
HUB_USER = "hub"


@dataclass
class HubReplica:
    """One hub process of the federation and its ports (kept across restarts)."""

    index: int
    xds_port: int
    http_port: int
    process: Process | None = None

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.xds_port}"


@dataclass
class AgentHandle:
    cluster: LocalCluster
    password: str
    kubeconfig: Path
    metrics_port: int
    #: Where the agent serves clusterset.local, UDP and TCP, on the host's loopback.
    dns_port: int
    #: Where it serves its Gateways' Envoys their credentials (mTLS), on loopback.
    credentials_port: int = 0
    process: Process | None = None
    #: On the node tier: whether the node's CoreDNS reaches the agent's DNS server yet.
    dns_forwarded: bool = False


def metric(text: str, name: str, default: float | None = None) -> float:
    """The value of the first sample of ``name`` (which may end in its labels, in the
    exposition's order) in a Prometheus text exposition; ``default`` when there is none."""
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    if default is not None:
        return default
    raise AssertionError(f"{name} not in the metrics:\n{text}")


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def prometheus_values(text: str, name: str, labels: Mapping[str, str]) -> list[float]:
    """The values of ``name``'s samples whose labels include ``labels`` (in any order),
    in a Prometheus text exposition."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        have = dict(_LABEL.findall(head[len(name) :]))
        if all(have.get(k) == v for k, v in labels.items()):
            found.append(float(value))
    return found


class Federation:
    """Redis plus one agent per cluster of ``env``; stopped with the environment."""

    def __init__(
        self,
        env: LocalEnvironment,
        *,
        lease_ttl: float = 2.0,
        withdraw_stale_after: float | None = None,
        resync_interval: float = 30.0,
        registry_tls: bool = False,
        check_consistency: bool = True,
        registry: RegistryKind = "server",
        hub_replicas: int = 1,
    ) -> None:
        """``registry``: one redis-server (``server``), a Redis Cluster (``cluster``) or a
        primary and replica under Sentinel (``sentinel``). ``hub_replicas``: how many
        hubs :meth:`start_hub` starts, the Envoys spread over them."""
        self.env = env
        #: Start the hub with ``--check-consistency`` (off for benchmarks: it costs CPU).
        self.check_consistency = check_consistency
        self.lease_ttl = lease_ttl
        self.withdraw_stale_after = withdraw_stale_after
        self.resync_interval = resync_interval
        self.registry: Registry
        if registry == "server":
            # TLS-only with client certificates required: the hub and agents present theirs.
            self.registry = RedisServer(
                env.group, env.workdir / "redis", tls=registry_tls, client_certs="required"
            )
        elif registry_tls:
            raise HarnessError(f"a {registry} registry runs in clear text here")
        elif registry == "cluster":
            self.registry = RedisClusterServers(env.group, env.workdir / "redis-cluster")
        else:
            self.registry = RedisSentinelSet(env.group, env.workdir / "redis-sentinel")
        #: The registry's TLS variables (CA, client certificate) for the hub and agents
        #: started from now on; empty without TLS. Tests may replace it (a wrong CA).
        self.registry_tls_env: dict[str, str] = self.registry.tls_env()
        self.hub_password = secrets.token_urlsafe(18)
        self.agents: dict[str, AgentHandle] = {}
        #: The hub replicas, by index; ports are chosen when one first starts.
        self.hubs = [HubReplica(i, 0, 0) for i in range(hub_replicas)]
        #: Flags every start of the hub gets (the shared environment allows patches).
        self.hub_flags: list[str] = []
        self.hub_tls = True
        #: Envoys started so far: the next one prefers replica ``started % replicas``.
        self._envoys_started = 0
        #: The replica each Envoy prefers, by Envoy name.
        self.preferred_hub: dict[str, int] = {}
        #: The clusterset PKI of the hub's mTLS xDS port (``fedctl pki`` layout):
        #: hub/ and clusters/<id>/, each with tls.crt, tls.key and ca.crt.
        self.pki = env.workdir / "pki"
        #: Where the Envoys read Gateway certificates: <dir>/<namespace>/<name>/tls.{crt,key}.
        self.secret_dir = env.workdir / "secrets"
        self.envoys: dict[str, Envoy] = {}
        #: Gateways' own Envoys, by (cluster, namespace, name).
        self.gateway_envoys: dict[tuple[str, str, str], Envoy] = {}

    @property
    def hub(self) -> Process | None:
        """The process of hub replica 0 (the only one, unless ``hub_replicas`` > 1)."""
        return self.hubs[0].process

    @property
    def hub_xds_port(self) -> int:
        return self.hubs[0].xds_port

    @property
    def hub_http_port(self) -> int:
        return self.hubs[0].http_port

    @property
    def redis(self) -> RedisServer:
        """The registry's one redis-server (tests that restart or inspect it)."""
        if not isinstance(self.registry, RedisServer):
            raise HarnessError(f"this environment's registry is a {type(self.registry).__name__}")
        return self.registry

    def start(self) -> None:
        self.registry.start()
        self.create_users()
        for cluster in self.env.clusters.values():
            cluster.kubectl("apply", "-f", "-", input=json.dumps(agent_rbac()))
            identity = cluster.mint_identity("federation-agent", [AGENTS_GROUP])
            self.agents[cluster.id] = AgentHandle(
                cluster,
                secrets.token_urlsafe(18),
                identity.kubeconfig,
                free_port(),
                free_port(),
                free_port(),
            )
        self.create_users()
        for cluster_id in self.agents:
            self.start_agent(cluster_id)
        for cluster_id in self.agents:
            self.wait_agent_ready(cluster_id)

    def create_users(self) -> None:
        """(Re)create the ACL users; needed again after a Redis restart."""
        rules = [agent_user_rules(c, h.password) for c, h in self.agents.items()]
        rules.append(hub_user_rules(HUB_USER, self.hub_password))

        admin = self.registry
        asyncio.run(apply_users_everywhere(admin.admin_url, admin.client_options(), rules))

    def agent_url(self, cluster_id: str) -> str:
        handle = self.agents[cluster_id]
        return self.registry.url(agent_user(cluster_id), handle.password)

    def hub_url(self) -> str:
        return self.registry.url(HUB_USER, self.hub_password)

    def start_agent(self, cluster_id: str) -> Process:
        handle = self.agents[cluster_id]
        argv = [
            sys.executable,
            "-m",
            "agents.main",
            "--kubeconfig",
            str(handle.kubeconfig),
            "--lease-ttl",
            str(self.lease_ttl),
            "--resync-interval",
            str(self.resync_interval),
            "--metrics-address",
            f"127.0.0.1:{handle.metrics_port}",
            "--dns-address",
            self.agent_dns_address(cluster_id),
        ]
        if self.withdraw_stale_after is not None:
            argv += ["--withdraw-stale-after", str(self.withdraw_stale_after)]
        if not isinstance(handle.cluster, NodeCluster):
            # The infra manager writes each Gateway's Deployment and Service; this tier
            # has no kubelet, so they are checked as objects and tests run the Envoys.
            argv += [
                "--gateway-envoy-image", "federation.local/envoy:test",
                "--gateway-bootstrap-image", "federation.local/federation:test",
                "--gateway-hub-address", "federation-hub.federation-system:18000",
                "--gateway-agent-address", "federation-agent-credentials.federation-system:18443",
                "--namespace", "federation-system",
                # Its Gateways' Envoys (processes of the tests) get their credentials here.
                "--credentials-address", self.agent_credentials_address(cluster_id),
                "--credentials-tls-dir", str(self.agent_tls_dir(cluster_id)),
            ]  # fmt: skip
        env = self._env(self.agent_url(cluster_id))
        handle.process = self.env.group.start(
            f"agent-{cluster_id}", argv, handle.cluster.dir / "agent.log", env=env
        )
        if isinstance(handle.cluster, NodeCluster) and not handle.dns_forwarded:
            # The node's CoreDNS forwards clusterset.local to this address in the node.
            handle.cluster.forward(
                handle.cluster.agent_dns_address,
                ("127.0.0.1", handle.dns_port),
                name="agent-dns",
                reverse=True,
            )
            handle.dns_forwarded = True
        return handle.process

    def agent_credentials_address(self, cluster_id: str) -> str:
        """Where ``cluster_id``'s agent serves its Gateways' Envoys their credentials."""
        return f"127.0.0.1:{self.agents[cluster_id].credentials_port}"

    def agent_tls_dir(self, cluster_id: str) -> Path:
        """The agent's serving certificate (``fedctl pki`` layout: agents/<id>)."""
        self.xds_tls_dir(cluster_id)  # mints the cluster's certificates, its agent's too
        return self.pki / "agents" / cluster_id

    def agent_dns_address(self, cluster_id: str) -> str:
        """Where ``cluster_id``'s agent serves clusterset.local (UDP and TCP)."""
        return f"127.0.0.1:{self.agents[cluster_id].dns_port}"

    def metrics(self, cluster_id: str) -> str:
        port = self.agents[cluster_id].metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text: str = resp.read().decode()
            return text

    def _agent_ready(self, cluster_id: str) -> bool:
        port = self.agents[cluster_id].metrics_port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_agent_ready(self, cluster_id: str, timeout: float = 60) -> None:
        handle = self.agents[cluster_id]

        def check() -> None:
            if handle.process is not None and not handle.process.running():
                raise HarnessError(f"agent of {cluster_id} exited:\n{handle.process.log_tail(40)}")

        wait_until(
            lambda: self._agent_ready(cluster_id),
            timeout=timeout,
            what=f"agent {cluster_id} to be ready",
            check=check,
        )

    def kill_agent(self, cluster_id: str) -> None:
        """SIGKILL: the agent gets no chance to release its lease."""
        handle = self.agents[cluster_id]
        assert handle.process is not None
        os.kill(handle.process.pid, signal.SIGKILL)
        handle.process.popen.wait(timeout=10)

    def stop_agent(self, cluster_id: str) -> None:
        handle = self.agents[cluster_id]
        assert handle.process is not None
        self.env.group.stop(handle.process)

    # --- data plane: hub, Envoys and backends (addresses: see LocalCluster) -----

    def ensure_pki(self) -> Path:
        """Mint the clusterset PKI once (a CA, the hub's and every cluster's certificate)."""
        if not (self.pki / "ca.key").exists():
            pki.init(self.pki, clusters=sorted(self.env.clusters), hub_ips=["127.0.0.1"])
        return self.pki

    def xds_tls_dir(self, cluster_id: str) -> Path:
        """The directory of ``cluster_id``'s client certificate (minted if new)."""
        directory = self.ensure_pki() / "clusters" / cluster_id
        if not directory.exists():
            pki.add_cluster(self.pki, cluster_id)
        return directory

    def xds_tls(self, cluster_id: str) -> BootstrapTls:
        """The client certificate files of ``cluster_id``'s Envoys (minted if new)."""
        directory = self.xds_tls_dir(cluster_id)
        return BootstrapTls(
            str(directory / "tls.crt"), str(directory / "tls.key"), str(directory / "ca.crt")
        )

    def hub_tls_args(self) -> list[str]:
        hub = self.ensure_pki() / "hub"
        return [
            "--xds-tls-cert", str(hub / "tls.crt"),
            "--xds-tls-key", str(hub / "tls.key"),
            "--xds-client-ca", str(hub / "ca.crt"),
        ]  # fmt: skip

    def start_hub(
        self, *, extra_args: Sequence[str] = (), tls: bool = True, replica: int | None = None
    ) -> Process:
        """The hub as a process, reading the registry as the read-only hub user, serving
        mTLS xDS (``tls=False``: plain text, ``--insecure-xds-plaintext``): the one
        ``replica``, or replica 0 and every other replica of ``hub_replicas`` not running
        (returning replica 0's process)."""
        if replica is None:
            for other in self.hubs[1:]:
                if other.process is None or not other.process.running():
                    self.start_hub(extra_args=extra_args, tls=tls, replica=other.index)
            replica = 0
        hub = self.hubs[replica]
        if not hub.xds_port:
            hub.xds_port, hub.http_port = free_port(), free_port()
        self.hub_tls = tls
        argv = [
            sys.executable,
            "-m",
            "federation.cli.hub",
            "--xds-address",
            hub.xds_address,
            "--http-address",
            f"127.0.0.1:{hub.http_port}",
            "--secret-dir",
            str(self.secret_dir),
            *(self.hub_tls_args() if tls else ["--insecure-xds-plaintext"]),
            *(["--check-consistency"] if self.check_consistency else []),
            *self.hub_flags,
            *extra_args,
        ]
        for cluster in self.env.clusters.values():
            argv += cluster.hub_flags()
        env = self._env(self.hub_url())
        name, log = ("hub", "hub.log") if replica == 0 else (f"hub-{replica}", f"hub-{replica}.log")
        hub.process = self.env.group.start(name, argv, self.env.workdir / log, env=env)
        return hub.process

    def hub_http(self, path: str, replica: int = 0) -> str:
        url = f"http://127.0.0.1:{self.hubs[replica].http_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def hub_ready(self, replica: int = 0) -> bool:
        try:
            self.hub_http("/readyz", replica)
        except OSError:
            return False
        return True

    def wait_hub_ready(self, timeout: float = 60, replica: int | None = None) -> None:
        """Until every started replica (or the one ``replica``) answers ``/readyz``."""
        hubs = [h for h in self.hubs if h.process is not None and replica in (None, h.index)]

        def check() -> None:
            for hub in hubs:
                if hub.process is not None and not hub.process.running():
                    raise HarnessError(f"hub {hub.index} exited:\n{hub.process.log_tail(40)}")

        wait_until(
            lambda: all(self.hub_ready(h.index) for h in hubs),
            timeout=timeout,
            what="the hub to be ready",
            check=check,
        )

    def kill_hub(self, replica: int = 0) -> None:
        """SIGKILL hub replica ``replica`` (by its pid) and reap it."""
        process = self.hubs[replica].process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.popen.wait(timeout=10)

    def next_xds_address(self, name: str) -> str:
        """The ``--xds`` of the Envoy ``name``: the one hub, or every replica with the
        next one in turn first (recorded in :attr:`preferred_hub`; an Envoy started
        again under the same name keeps its order)."""
        first = self.preferred_hub.get(name)
        if first is None:
            first = self._envoys_started % len(self.hubs)
            self._envoys_started += 1
            self.preferred_hub[name] = first
        order = self.hubs[first:] + self.hubs[:first]
        return ",".join(h.xds_address for h in order)

    def start_envoy(
        self,
        cluster_id: str,
        *,
        delta: bool = False,
        tls: BootstrapTls | Literal["cluster"] | None = "cluster",
        node_cluster: str | None = None,
        node_id: str | None = None,
    ) -> Envoy:
        """``cluster_id``'s Envoy, presenting its cluster's certificate to a mTLS hub
        (``tls``: other files, or None for none); ``node_cluster`` is what it claims."""
        cluster = self.env.cluster(cluster_id)
        if tls == "cluster":
            tls = self.xds_tls(cluster_id) if self.hub_tls else None
        envoy = Envoy(
            self.env.group,
            cluster.tools.envoy,
            cluster.dir / "envoy",
            cluster=cluster_id,
            xds_address=self.next_xds_address(f"envoy-{cluster_id}"),
            admin_address=cluster.envoy_admin,
            listener_address=cluster.envoy_listener,
            delta=delta,
            tls=tls,
            node_cluster=node_cluster,
            node_id=node_id,
        )
        envoy.start()
        self.envoys[cluster_id] = envoy
        return envoy

    def start_gateway_envoy(
        self,
        cluster_id: str,
        namespace: str,
        name: str,
        *,
        source_cluster_stats: bool = False,
        instance: int = 0,
    ) -> Envoy:
        """The own Envoy of Gateway ``namespace/name`` of ``cluster_id``, as a process on
        the cluster's loopback address (where the hub binds its listeners). In a real
        cluster the agent runs it as the Gateway's Deployment; the apiserver-only tier has
        no kubelet, so tests start it here. Stopped with the environment.
        ``source_cluster_stats``: as ``fedctl bootstrap --source-cluster-stats``.
        ``instance``: another Envoy of the same Gateway (its own directory, admin port and
        node id; it binds the same listeners, with SO_REUSEPORT as Envoy does), which the
        test stops; instance 0 is kept in :attr:`gateway_envoys`."""
        cluster = self.env.cluster(cluster_id)
        host = cluster.envoy_admin.rpartition(":")[0]
        tls = self.xds_tls(cluster_id) if self.hub_tls else None
        suffix = f"-{instance}" if instance else ""
        envoy = Envoy(
            self.env.group,
            cluster.tools.envoy,
            cluster.dir / f"envoy-{namespace}-{name}{suffix}",
            cluster=cluster_id,
            xds_address=self.next_xds_address(f"envoy-{cluster_id}-{namespace}-{name}{suffix}"),
            admin_address=f"{host}:{free_port(host)}",
            listener_address=cluster.envoy_listener,
            tls=tls,
            gateway=f"{namespace}/{name}",
            node_id=f"envoy-{cluster_id}-{namespace}-{name}{suffix}" if instance else None,
            bootstrap_options={
                "agent_address": self.agent_credentials_address(cluster_id),
                "source_cluster_stats": source_cluster_stats,
            },
        )
        envoy.name += suffix
        envoy.start()
        if not instance:
            self.gateway_envoys[cluster_id, namespace, name] = envoy
        return envoy

    def start_backend(
        self, cluster_id: str, host: int, port: int = 8080, *, protocol: str = "http"
    ) -> Process:
        """An echo backend (:mod:`e2e.backends`, ``http`` or ``grpc``) at the loopback
        address its pod IP ``pod_ip(host)`` maps to."""
        cluster = self.env.cluster(cluster_id)
        address = f"{cluster.backend_ip(host)}:{port}"
        env = project_env()
        argv = [sys.executable, "-m", "e2e.backends", "--listen", address, "--name", cluster_id]
        proc = self.env.group.start(
            f"backend-{cluster_id}-{host}-{port}",
            [*argv, "--protocol", protocol],
            cluster.dir / f"backend-{host}-{port}.log",
            env=env,
        )
        wait_until(lambda: _port_open(address), timeout=15, what=f"backend {address}")
        return proc

    def agent_log(self, cluster_id: str) -> str:
        return (self.agents[cluster_id].cluster.dir / "agent.log").read_text(errors="replace")

    def diagnosis(self, lines: int = 25, *, exited_only: bool = False) -> str:
        """Whether the hub and each agent still run, with the tail of their logs: what a
        failed test's report carries (:func:`e2e.fixtures.pytest_runtest_makereport`).
        ``exited_only``: the tails of exited components only, each line cut to 400
        characters (the end-of-run summary, which must stay short)."""
        processes = [(f"hub {h.index}" if h.index else "hub", h.process) for h in self.hubs]
        processes += [(f"agent {c}", h.process) for c, h in sorted(self.agents.items())]
        out = []
        for name, process in processes:
            if process is None:
                out.append(f"--- {name}: not started")
                continue
            running = process.running()
            state = "running" if running else f"exited ({process.popen.returncode})"
            out.append(f"--- {name}: {state}")
            if not (running and exited_only):
                tail = process.log_tail(lines).splitlines()
                out += [line[:400] for line in tail] if exited_only else tail
        return "\n".join(out)

    def start_extension_server(self, port: int, *, delay_ms: float = 0.0) -> Process:
        """The tests' extension server (:mod:`e2e.extension_server`) on 127.0.0.1:``port``,
        once it accepts connections."""
        argv = [sys.executable, "-m", "e2e.extension_server", "--port", str(port)]
        argv += ["--delay-ms", str(delay_ms)]
        log = self.env.workdir / f"extension-server-{port}.log"
        proc = self.env.group.start("extension-server", argv, log, env=project_env())
        address = f"127.0.0.1:{port}"
        wait_until(
            lambda: _port_open(address),
            timeout=30,
            what=f"the extension server on {address}",
            check=lambda: check_alive(proc),
        )
        return proc

    def _env(self, registry_url: str) -> dict[str, str]:
        """A hub's or agent's environment: the registry URL with its credentials, and the
        TLS files, go there, never into argv."""
        return project_env(**{REGISTRY_URL_ENV: registry_url, **self.registry_tls_env})


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def project_env(**extra: str) -> dict[str, str]:
    """The environment of a process run from this checkout, with ``extra`` added."""
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", **extra}


def fedctl(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """This checkout's ``fedctl``, run as an operator runs it (a process of its own),
    with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "federation.cli.fedctl", *args],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT,
        env=project_env(**(env or {})),
    )  # fmt: skip


def agent_rbac() -> dict[str, Any]:
    """The agent chart's ClusterRole, bound to the group of the local agents' identities."""
    rules = yaml.safe_load(AGENT_RULES.read_text())
    ref = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "federation-agent",
    }
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "federation-agent"},
                "rules": rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "federation-agent"},
                "roleRef": ref,
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": AGENTS_GROUP}
                ],
            },
        ],
    }
