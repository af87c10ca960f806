"""Which Redis the registry lives on, from its URL: one server, a Redis Cluster, or a
primary and replicas under Sentinel; and the redis-py client for each.

The registry's code is the same on all three (:mod:`redis_store`); only the client
differs, and on a Redis Cluster how streams are tailed (no command may span slots).

=====================================================  ================================
URL                                                    Redis
=====================================================  ================================
``redis://USER:PASS@HOST:PORT/DB``                     one server (``rediss://``: TLS)
``unix:///path/to/redis.sock``                         one server on a Unix socket
``redis+cluster://USER:PASS@HOST:PORT,HOST:PORT``      a Redis Cluster: any of its nodes
                                                       (``rediss+cluster://``: TLS)
``redis+sentinel://USER:PASS@HOST:PORT,HOST:PORT/      the primary of ``SERVICE``, as the
SERVICE[/DB]``                                         sentinels name it (``rediss+sentinel://``:
                                                       TLS to sentinels and data nodes)
=====================================================  ================================

A Redis Cluster has database 0 only. The user and password are those of the data
nodes; sentinels that have a password of their own take it from the query:
``?sentinel_username=...&sentinel_password=...``. Nothing else may be in the query
(an unknown parameter is refused by name).

Failover is handled by redis-py: a cluster client follows MOVED replies and reloads
the slot map when a node stops answering; a sentinel client asks the sentinels for
the primary again when its connection fails. Either way the calls in between fail,
and the registry's callers retry them as they do for a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

from federation.errors import InvalidInputError

#: What a registry store talks to.
RegistryClient: TypeAlias = Redis | RedisCluster

#: Every error a client raises for a registry it cannot use: redis-py's cluster errors
#: (no node reachable, a slot without a master) are not RedisErrors.
CLIENT_ERRORS = (RedisError, RedisClusterException, OSError)

Mode = Literal["server", "cluster", "sentinel"]

#: URL scheme -> (mode, TLS).
SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "unix": ("server", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}

#: Query parameters of a sentinel URL.
SENTINEL_QUERY = ("sentinel_username", "sentinel_password")

#: Seconds a command may wait for its reply before it fails (and is retried by its
#: caller): without one, a reply lost on the way (a half-open connection) leaves the
#: caller waiting forever. redis-py 8 defaults to 5 s; older releases to none. Far
#: above the longest block of a stream read (``block_ms``, 500 ms).
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
#: A connection idle this long is checked (PING) before it is used again.
HEALTH_CHECK_INTERVAL = 30


@dataclass(frozen=True)
class Topology:
    """A parsed registry URL (it holds a password: kept out of ``repr``)."""

    mode: Mode
    tls: bool
    #: Seed nodes: the data nodes of a cluster, the sentinels of a sentinel set.
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int = 0
    #: The sentinels' service (the primary's name).
    service: str = ""
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        seeds = ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"Topology({self.mode}, tls={self.tls}, {seeds}, service={self.service!r})"


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme


def parse(url: str, variable: str = "the registry URL") -> Topology:
    """The topology of a ``redis+cluster://`` or ``redis+sentinel://`` URL (see the
    module docstring); :class:`InvalidInputError` naming what is wrong. A one-server
    URL is left to redis-py (``mode == "server"``, no nodes)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InvalidInputError(f"{variable}: unknown scheme {parts.scheme + '://'!r}")
    mode, tls = SCHEMES[parts.scheme]
    if mode == "server":
        return Topology(mode, tls, (), None, None)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    nodes = tuple(_address(item, variable) for item in hosts.split(",") if item)
    if not nodes:
        raise InvalidInputError(f"{variable}: a {parts.scheme}:// URL needs HOST:PORT,...")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    allowed = SENTINEL_QUERY if mode == "sentinel" else ()
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise InvalidInputError(
            f"{variable}: {parts.scheme}:// URLs take no {', '.join(unknown)} parameter"
            + (f" (only {', '.join(allowed)})" if allowed else "")
        )
    path = [unquote(p) for p in parts.path.split("/") if p]
    service, db = "", 0
    if mode == "cluster" and path:
        raise InvalidInputError(
            f"{variable}: a Redis Cluster has database 0 only; drop /{'/'.join(path)}"
        )
    if mode == "sentinel":
        if not path or len(path) > 2:
            raise InvalidInputError(
                f"{variable}: a sentinel URL names the service its sentinels watch: "
                f"{parts.scheme}://USER:PASS@HOST:PORT,.../SERVICE[/DB]"
            )
        service = path[0]
        db = _db(path[1], variable) if len(path) == 2 else 0
    return Topology(
        mode,
        tls,
        nodes,
        unquote(user) or None,
        unquote(password) or None,
        db,
        service,
        query.get("sentinel_username") or None,
        query.get("sentinel_password") or None,
    )


def _address(item: str, variable: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        # Not quoted: a password with an unencoded "/" or "@" ends up here.
        raise InvalidInputError(
            f"{variable}: a node address is not HOST:PORT (a password's '/', '@' or ':' "
            "must be percent-encoded)"
        )
    return host.strip("[]"), int(port)


def _db(text: str, variable: str) -> int:
    if not text.isdigit():
        raise InvalidInputError(f"{variable}: database {text!r} is not a number")
    return int(text)


def _with_defaults(options: dict[str, Any]) -> dict[str, Any]:
    if options.get("decode_responses"):
        raise ValueError("the registry needs a Redis client with decode_responses=False")
    out = dict(options)
    # TLS is the scheme's to say (rediss…): an ``ssl`` option would contradict it.
    out.pop("ssl", None)
    out["decode_responses"] = False
    out.setdefault("socket_timeout", SOCKET_TIMEOUT)
    out.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
    out.setdefault("health_check_interval", HEALTH_CHECK_INTERVAL)
    return out


def _node_options(topology: Topology, options: dict[str, Any]) -> dict[str, Any]:
    """redis-py keyword arguments for the nodes of a cluster or sentinel ``topology``:
    :func:`_with_defaults`, TLS by its scheme, its credentials (not in a URL here)."""
    out = _with_defaults(options)
    if topology.tls:
        out["ssl"] = True
    out["username"], out["password"] = topology.username, topology.password
    return out


def client_from_url(url: str, options: dict[str, Any]) -> RegistryClient:
    """A bytes client for ``url``, whichever Redis it names; ``options`` are redis-py
    keyword arguments (TLS files: :meth:`location.RegistryLocation.client_options`),
    with :data:`SOCKET_TIMEOUT` and a health check of idle connections unless they
    say otherwise."""
    topology = parse(url)
    if topology.mode == "server":
        return Redis.from_url(url, **_with_defaults(options))
    options = _node_options(topology, options)
    if topology.mode == "cluster":
        nodes = [ClusterNode(host, port) for host, port in topology.nodes]
        return RedisCluster(startup_nodes=nodes, **options)
    client: Redis = sentinel_of(topology, options).master_for(
        topology.service, db=topology.db, **options
    )
    return client


def sentinel_of(topology: Topology, options: dict[str, Any]) -> Sentinel:
    """A Sentinel manager for ``topology``'s sentinels, with the TLS and timeout
    ``options`` of the data nodes and the sentinels' own credentials."""
    sentinel_options = {
        k: v for k, v in options.items() if k.startswith("ssl") or k.startswith("socket_")
    }
    sentinel_options["username"] = topology.sentinel_username
    sentinel_options["password"] = topology.sentinel_password
    return Sentinel(list(topology.nodes), sentinel_kwargs=sentinel_options)


async def data_nodes(url: str, options: dict[str, Any]) -> list[tuple[str, int]]:
    """Every data node behind ``url`` (host, port): a cluster's masters and replicas,
    a sentinel set's primary and replicas; ``[]`` for one server (its URL is the node).

    For what Redis keeps per node, not per dataset: ACL users above all (a replica
    promoted by a failover must know them already).
    """
    topology = parse(url)
    if topology.mode == "server":
        return []
    options = _node_options(topology, options)
    if topology.mode == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.nodes], **options
        )
        try:
            # Its client knows the masters only; CLUSTER NODES lists replicas too.
            listed = await cluster.cluster_nodes()
        finally:
            await cluster.aclose()
        found: list[tuple[str, int]] = []
        down: list[tuple[str, int]] = []
        for address, detail in listed.items():
            flags = str(detail.get("flags", ""))
            if "handshake" in flags:
                continue  # not a member yet
            host, _, port = address.rpartition(":")
            (down if "fail" in flags or "noaddr" in flags else found).append((host, int(port)))
        if down:
            raise NodesDownError(sorted(found), sorted(down))
        return sorted(found)
    sentinel = sentinel_of(topology, options)
    try:
        primary = await sentinel.discover_master(topology.service)
        replicas = await sentinel.discover_slaves(topology.service)
        return [primary, *sorted(replicas)]
    finally:
        for client in sentinel.sentinels:
            await client.aclose()


class NodesDownError(RedisClusterException):
    """Some of a Redis Cluster's nodes are down: what is per node (ACL users) cannot
    reach them now."""

    def __init__(self, up: list[tuple[str, int]], down: list[tuple[str, int]]) -> None:
        self.up, self.down = up, down
        names = ", ".join(f"{h}:{p}" for h, p in down)
        super().__init__(f"the registry's nodes {names} are down")


def node_client(url: str, node: tuple[str, int], options: dict[str, Any]) -> Redis:
    """A client of the one data node ``node`` behind ``url``, with its credentials."""
    topology = parse(url)
    return Redis(host=node[0], port=node[1], db=topology.db, **_node_options(topology, options))


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client: its commands may not span hash slots."""
    return isinstance(client, RedisCluster)


def connection_kwargs(client: RegistryClient) -> dict[str, Any]:
    """The keyword arguments ``client`` opens its connections with (address, TLS files);
    for a cluster or sentinel client also ``address``, what to call it in messages."""
    if isinstance(client, RedisCluster):
        kwargs = dict(client.get_connection_kwargs())
        seeds = list(client.nodes_manager.startup_nodes.values())
        if seeds:
            kwargs["address"] = f"Redis Cluster (via {seeds[0].host}:{seeds[0].port})"
        return kwargs
    kwargs = dict(client.connection_pool.connection_kwargs)
    service = getattr(client.connection_pool, "service_name", None)
    if service:
        kwargs["address"] = f"the primary of sentinel service {service}"
    return kwargs


def uses_tls(client: RegistryClient) -> bool:
    if isinstance(client, RedisCluster):
        connection_class = client.get_connection_kwargs().get("connection_class") or Connection
    else:
        connection_class = client.connection_pool.connection_class
    return issubclass(connection_class, SSLConnection)
