"""Redis's own distribution, on loopback: a Redis Cluster and a Sentinel-managed set.

The registry runs on one redis-server, a Redis Cluster or a primary with replicas
under Sentinel, chosen by its URL (:mod:`federation.registry.topology`). These
harnesses start the latter two from real ``redis-server`` processes, for the
registry's contract tests, its failover tests and the e2e stories:

* :class:`RedisClusterServers`: ``masters`` masters with ``replicas`` replicas
  each, formed with CLUSTER MEET, ADDSLOTSRANGE and REPLICATE (what ``redis-cli
  --cluster create`` does), a short ``cluster-node-timeout`` so that a killed
  master's replica takes over within seconds;
* :class:`RedisSentinelSet`: a primary, ``replicas`` replicas and ``sentinels``
  sentinels (quorum: a majority of them) watching service :data:`SERVICE`.

Every data node's ``default`` user is the admin, with one password shared by
the set (replicas authenticate to their primary with it). ACL users are
per node in Redis: :func:`federation.registry.acl.apply_users_everywhere`
creates them on every data node, as ``fedctl add-cluster`` does. Sentinels
have no password of their own here; they listen on loopback only.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
import redis.cluster
import redis.sentinel

from e2e.cluster import free_port
from e2e.processes import HarnessError, Process, ProcessGroup, Supervised, wait_until
from e2e.redis_server import HOST, START_TIMEOUT, RedisServer, redis_binary

#: The service name the sentinels watch.
SERVICE = "registry"
#: Milliseconds without an answer before a master is failed: short, for tests.
NODE_TIMEOUT_MS = 1500
SLOTS = 16384
#: How long forming the cluster or the sentinel set may take.
FORM_TIMEOUT = 60.0


def _userinfo(user: str, password: str) -> str:
    return f"{quote(user, safe='')}:{quote(password, safe='')}"


class _DataNodes(Supervised):
    """Data nodes sharing one admin password, in one process group."""

    scheme = ""

    def __init__(self, group: ProcessGroup, name: str, directory: Path | None = None) -> None:
        self._group = group
        self.name = name
        self._own_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix=f"federation-{name}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin_password = secrets.token_urlsafe(24)
        self.nodes: list[RedisServer] = []

    def _node(self, index: int, extra: list[str]) -> RedisServer:
        node = RedisServer(
            self._group,
            self.dir / f"node-{index}",
            admin_password=self.admin_password,
            name=f"{self.name}-{index}",
            # A replica authenticates to its primary as the admin.
            extra_config=["masteruser default", f"masterauth {self.admin_password}", *extra],
        )
        self.nodes.append(node)
        return node

    def node_client(self, node: RedisServer) -> redis.Redis:
        return node.admin_client()

    def running(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.running()]

    def kill(self, node: RedisServer) -> None:
        """Stop ``node``'s process (by its pid); its directory stays, to start again."""
        node.stop_process()

    def master_of(self, key: str) -> RedisServer:
        raise NotImplementedError

    def stop(self) -> None:
        for node in self.nodes:
            node.stop_process()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def tls_env(self) -> dict[str, str]:
        """The FEDERATION_REGISTRY_* TLS variables: none, these run in clear text."""
        return {}

    def client_options(self) -> dict[str, Any]:
        """The admin's redis-py keyword arguments besides its URL: none."""
        return {}

    def _addresses(self, nodes: list[tuple[str, int]]) -> str:
        return ",".join(f"{h}:{p}" for h, p in nodes)

    @property
    def admin_url(self) -> str:
        return self.url()

    def url(self, user: str = "default", password: str | None = None) -> str:
        raise NotImplementedError


class RedisClusterServers(_DataNodes):
    """A Redis Cluster of real redis-server processes on loopback.

    >>> with RedisClusterServers(ProcessGroup()) as cluster:
    ...     cluster.url("agent-a", "secret")  # redis+cluster://agent-a:secret@127.0.0.1:p1,...
    """

    scheme = "redis+cluster"

    def __init__(
        self,
        group: ProcessGroup,
        directory: Path | None = None,
        *,
        masters: int = 3,
        replicas: int = 1,
        name: str = "rcluster",
    ) -> None:
        super().__init__(group, name, directory)
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs a master, and replicas cannot be negative")
        self.masters = masters
        self.replicas = replicas
        #: Each node's cluster bus port (not the default port + 10000, which may be taken).
        self.bus_ports: list[int] = []

    def start(self) -> None:
        for index in range(self.masters * (1 + self.replicas)):
            bus = free_port(HOST)
            self.bus_ports.append(bus)
            self._node(
                index,
                [
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    f"cluster-node-timeout {NODE_TIMEOUT_MS}",
                    f"cluster-port {bus}",
                    # A replica takes over however long it was cut off from its master.
                    "cluster-replica-validity-factor 0",
                ],
            ).start()
        self._form()

    def _form(self) -> None:
        first = self.nodes[0]
        clients = [self.node_client(n) for n in self.nodes]
        try:
            for client in clients[1:]:
                _run(client, "CLUSTER", "MEET", first.host, first.port, self.bus_ports[0])
            per = SLOTS // self.masters
            for index in range(self.masters):
                last = SLOTS - 1 if index == self.masters - 1 else (index + 1) * per - 1
                _run(clients[index], "CLUSTER", "ADDSLOTSRANGE", index * per, last)
            ids = [_text(_run(c, "CLUSTER", "MYID")) for c in clients]
            wait_until(
                lambda: all(_known(c) >= len(clients) for c in clients),
                timeout=FORM_TIMEOUT,
                what=f"{self.name}: every node to know every other",
            )
            for index in range(self.masters, len(clients)):
                master = ids[(index - self.masters) % self.masters]
                _run(clients[index], "CLUSTER", "REPLICATE", master)
            wait_until(
                lambda: all(_cluster_ok(c) for c in clients),
                timeout=FORM_TIMEOUT,
                what=f"{self.name}: cluster_state:ok on every node",
            )
        finally:
            for client in clients:
                client.close()

    def master_of(self, key: str) -> RedisServer:
        """The master that serves ``key``'s slot now, as a running node sees it."""
        with contextlib.closing(self.node_client(self.running()[0])) as client:
            slot = int(_run(client, "CLUSTER", "KEYSLOT", key))
            port = _owner(client, slot)
        return next(n for n in self.nodes if n.port == port)

    def admin_client(self) -> redis.RedisCluster:
        """A synchronous cluster client as the admin (bytes replies); the caller closes it."""
        nodes = [
            redis.cluster.ClusterNode(n.host, n.port)  # type: ignore[no-untyped-call]
            for n in self.running()
        ]
        return redis.RedisCluster(
            startup_nodes=nodes, password=self.admin_password, socket_timeout=10
        )

    def url(self, user: str = "default", password: str | None = None) -> str:
        secret = self.admin_password if password is None else password
        seeds = self._addresses([(n.host, n.port) for n in self.nodes])
        return f"{self.scheme}://{_userinfo(user, secret)}@{seeds}"


class RedisSentinelSet(_DataNodes):
    """A primary and its replicas under Sentinel, real processes on loopback.

    >>> with RedisSentinelSet(ProcessGroup()) as sentinel:
    ...     sentinel.url("agent-a", "secret")  # redis+sentinel://...@127.0.0.1:s1,.../registry
    """

    scheme = "redis+sentinel"

    def __init__(
        self,
        group: ProcessGroup,
        directory: Path | None = None,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        name: str = "rsentinel",
    ) -> None:
        super().__init__(group, name, directory)
        self.replicas = replicas
        self.sentinel_count = sentinels
        self.sentinels: list[Process] = []
        self.sentinel_ports: list[int] = []

    def start(self) -> None:
        primary = self._node(0, [])
        primary.start()
        for index in range(1, 1 + self.replicas):
            self._node(index, [f"replicaof {primary.host} {primary.port}"]).start()
        quorum = self.sentinel_count // 2 + 1
        for index in range(self.sentinel_count):
            self._start_sentinel(index, primary, quorum)
        wait_until(
            lambda: all(self._sentinel_sees(p) for p in self.sentinel_ports),
            timeout=FORM_TIMEOUT,
            what=f"{self.name}: every sentinel to see the primary, its replicas and the others",
        )

    def _start_sentinel(self, index: int, primary: RedisServer, quorum: int) -> None:
        port = free_port(HOST)
        directory = self.dir / f"sentinel-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"  # Sentinel rewrites it: it must be writable
        config.write_text(
            "\n".join(
                [
                    f"bind {HOST}",
                    f"port {port}",
                    f'dir "{directory}"',
                    'logfile ""',
                    f"sentinel monitor {SERVICE} {primary.host} {primary.port} {quorum}",
                    f"sentinel auth-user {SERVICE} default",
                    f"sentinel auth-pass {SERVICE} {self.admin_password}",
                    f"sentinel down-after-milliseconds {SERVICE} {NODE_TIMEOUT_MS}",
                    f"sentinel failover-timeout {SERVICE} 10000",
                    f"sentinel parallel-syncs {SERVICE} 1",
                ]
            )
            + "\n"
        )
        config.chmod(0o600)
        process = self._group.start(
            f"{self.name}-sentinel-{index}",
            [str(redis_binary()), str(config), "--sentinel"],
            directory / "sentinel.log",
        )
        self.sentinels.append(process)
        self.sentinel_ports.append(port)
        wait_until(
            lambda: _answers(port),
            timeout=START_TIMEOUT,
            what=f"sentinel {index} on {HOST}:{port}",
            check=lambda: _check_alive(process),
        )

    def _sentinel_sees(self, port: int) -> bool:
        with contextlib.closing(_sentinel_client(port)) as client:
            try:
                master = _run(client, "SENTINEL", "MASTER", SERVICE)
            except redis.RedisError:
                return False
        info = {_text(k): v for k, v in master.items()}  # redis-py makes it a dict
        replicas = int(info.get("num-slaves", 0))
        others = int(info.get("num-other-sentinels", 0))
        return replicas >= self.replicas and others >= self.sentinel_count - 1

    def primary(self) -> RedisServer:
        """The data node the sentinels name as primary now."""
        for port in self.sentinel_ports:
            with contextlib.closing(_sentinel_client(port)) as client:
                try:
                    _host, node_port = _run(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                except (redis.RedisError, OSError):
                    continue
            return next(n for n in self.nodes if n.port == int(node_port))
        raise HarnessError(f"{self.name}: no sentinel answers")

    def master_of(self, key: str) -> RedisServer:
        """The data node that serves ``key`` now: the primary, whatever the key."""
        return self.primary()

    def stop(self) -> None:
        for process in self.sentinels:
            self._group.stop(process)
        self.sentinels.clear()
        super().stop()

    def admin_client(self) -> redis.Redis:
        """A synchronous client of the primary as the admin (bytes replies), found
        through the sentinels; the caller closes it."""
        sentinel = redis.sentinel.Sentinel(
            [(HOST, p) for p in self.sentinel_ports], socket_timeout=10
        )
        client: redis.Redis = sentinel.master_for(
            SERVICE, password=self.admin_password, socket_timeout=10
        )
        return client

    def url(self, user: str = "default", password: str | None = None) -> str:
        secret = self.admin_password if password is None else password
        seeds = self._addresses([(HOST, p) for p in self.sentinel_ports])
        return f"{self.scheme}://{_userinfo(user, secret)}@{seeds}/{SERVICE}"


# --- small probes ----------------------------------------------------------------


def _run(client: redis.Redis, *args: Any) -> Any:
    """One command, its reply as redis-py parses it."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _known(client: redis.Redis) -> int:
    return len(_text(_run(client, "CLUSTER", "NODES")).strip().splitlines())


def _cluster_ok(client: redis.Redis, close: bool = False) -> bool:
    try:
        info = _text(_run(client, "CLUSTER", "INFO"))
        return "cluster_state:ok" in info
    except (redis.RedisError, OSError):
        return False
    finally:
        if close:
            client.close()


def _owner(client: redis.Redis, slot: int) -> int:
    for start, end, master, *_ in _run(client, "CLUSTER", "SLOTS"):
        if int(start) <= slot <= int(end):
            return int(master[1])
    raise HarnessError(f"slot {slot} has no master")


def _role(node: RedisServer) -> str:
    try:
        with contextlib.closing(node.admin_client()) as client:
            return _text(_run(client, "ROLE")[0])
    except (redis.RedisError, OSError):
        return "down"


def _sentinel_client(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_connect_timeout=1, socket_timeout=2)


def _answers(port: int) -> bool:
    try:
        with contextlib.closing(_sentinel_client(port)) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _check_alive(process: Process) -> None:
    if not process.running():
        raise HarnessError(f"{process.name} exited:\n{process.log_tail()}")
