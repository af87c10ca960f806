"""Who is on the other end of an ADS stream, which node group it may read, and its limits.

The xDS server (:mod:`federation.xds.server`) asks a :data:`NodeGroup` function which
node group a stream is served, given the first request's node and the :class:`Peer`
(its address and the URIs of its verified client certificate). Two are provided:

* :func:`claimed_group`: plain text. The group is the ``node.cluster`` the Envoy claims,
  which anybody who reaches the port can claim; only for a trusted network.
* :class:`CertificateGroup`: mTLS. The group is the member cluster named by the client
  certificate (``spiffe://<trust domain>/cluster/<id>``, :mod:`federation.pki`); an
  Envoy whose ``node.cluster`` names another cluster is refused with
  ``PERMISSION_DENIED``, so one cluster's credentials never read another's
  configuration.

Either way, an Envoy that names a Gateway in its node metadata
(:data:`federation.node_groups.GATEWAY_METADATA`) is served that Gateway's own group of
its cluster (:mod:`federation.node_groups`), never another cluster's.

A refusal is a :class:`Refusal`: a gRPC status, a short reason (a metric label) and a
message for the peer. :class:`ServerLimits` holds the bounds that keep one client from
hurting the others, and :class:`PeerSlots` counts each peer's open streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from federation.errors import InvalidInputError
from federation.node_groups import GATEWAY_METADATA, group_for
from federation.pki import cluster_of

#: gRPC auth-context property holding the verified client certificate's URI SANs.
PEER_URI_PROPERTY = "peer_uri"


@dataclass(frozen=True)
class Peer:
    """An ADS client: its transport address and its verified certificate's URIs."""

    #: gRPC's peer string, e.g. ``ipv4:127.0.0.1:50312``.
    address: str
    #: URI SANs of the verified client certificate (empty in plain text).
    uris: tuple[str, ...] = ()

    @classmethod
    def of(cls, context: Any) -> Peer:
        """The peer of a ``grpc.aio.ServicerContext``."""
        auth = context.auth_context() or {}
        uris = tuple(u.decode(errors="replace") for u in auth.get(PEER_URI_PROPERTY, ()))
        return cls(str(context.peer() or "unknown"), uris)

    @property
    def host(self) -> str:
        """The address without its port (``ipv4:127.0.0.1``)."""
        kind, _, rest = self.address.partition(":")
        if kind == "ipv6" and rest.startswith("["):
            return f"{kind}:{rest[: rest.find(']') + 1]}"
        host, _, _ = rest.rpartition(":")
        return f"{kind}:{host}" if host else self.address

    @property
    def key(self) -> str:
        """What limits count per peer: the certificate's identity (all its URIs) when there
        is one (every Envoy of a cluster shares it), else the address without its port."""
        return " ".join(sorted(self.uris)) if self.uris else self.host


class Refusal(Exception):
    """A stream the server refuses: ``code`` and ``message`` go to the peer, ``reason``
    (a short kebab-case word) labels the refusal metric and the log."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


#: ``(node, peer) -> group``: the node group a stream is served, or a Refusal.
NodeGroup = Callable[[Any, Peer], str]


def claimed_gateway(node: Any) -> str | None:
    """The ``NAMESPACE/NAME`` of the Gateway the node's metadata names, if any."""
    value = node.metadata.fields.get(GATEWAY_METADATA) if node.HasField("metadata") else None
    if value is None:
        return None
    if value.WhichOneof("kind") != "string_value":
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad-gateway-metadata",
            f"node metadata {GATEWAY_METADATA} must be a string NAMESPACE/NAME",
        )
    return str(value.string_value)


def _group(cluster: str, node: Any) -> str:
    gateway = claimed_gateway(node)
    if not gateway:
        return cluster
    try:
        return group_for(cluster, gateway)
    except InvalidInputError as err:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad-gateway-metadata",
            f"node metadata {GATEWAY_METADATA}: {err}",
        ) from err


def claimed_group(node: Any, peer: Peer) -> str:
    """Plain text: the group is whatever ``node.cluster`` the Envoy claims."""
    if not node.cluster:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            "no-node-cluster",
            "the first request of an ADS stream must carry node.cluster "
            "(the Envoy's member cluster id, --service-cluster)",
        )
    return _group(str(node.cluster), node)


@dataclass(frozen=True)
class CertificateGroup:
    """mTLS: the group is the cluster the client certificate names.

    A ``node.cluster`` that is empty is served the certificate's cluster; one that names
    another cluster is refused.
    """

    trust_domain: str

    def __call__(self, node: Any, peer: Peer) -> str:
        cluster = cluster_of(peer.uris, self.trust_domain)
        if cluster is None:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "no-cluster-identity",
                "the client certificate names no member cluster: it needs a URI "
                f"spiffe://{self.trust_domain}/cluster/<cluster id> "
                f"(it has {', '.join(peer.uris) or 'no URI'})",
            )
        if node.cluster and node.cluster != cluster:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "identity-mismatch",
                f"node.cluster {node.cluster!r} disagrees with the client certificate, "
                f"which is cluster {cluster!r}'s: a cluster's credentials read only its "
                "own configuration",
            )
        return _group(cluster, node)


@dataclass(frozen=True)
class ServerLimits:
    """Bounds that keep one client from lowering the service every other Envoy gets."""

    #: Seconds a new stream may take to send its first request (which names its node).
    first_request_timeout: float = 10.0
    #: Concurrent ADS streams of one peer (:attr:`Peer.key`: a cluster's certificate, or
    #: an address in plain text). Every Envoy replica of a cluster opens one.
    max_streams_per_peer: int = 1024
    #: Concurrent streams on one HTTP/2 connection (an Envoy opens one ADS stream).
    max_streams_per_connection: int = 128
    #: Largest request accepted, in bytes. A delta request lists every resource the Envoy
    #: holds: 8 MiB is ~100,000 names with their versions.
    max_message_bytes: int = 8 * 1024 * 1024
    #: Resource names all streams of one peer may subscribe to together (each stream is
    #: also bound by ``StreamSettings.max_subscribed_names``): with the streams' bound,
    #: what one cluster's credentials can make the hub hold.
    max_names_per_peer: int = 1_000_000
    #: A connection is asked to go away after this long (HTTP/2 GOAWAY), and closed
    #: ``max_connection_age_grace`` later: Envoys reconnect, spreading over hub replicas.
    max_connection_age: float = 3600.0
    max_connection_age_grace: float = 300.0
    #: The server pings an idle connection this often and drops it when a ping is not
    #: answered in ``keepalive_timeout``.
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0
    #: The shortest interval between a client's pings that the server accepts (Envoys
    #: ping every 15 s); a client pinging faster is told to go away after two strikes.
    min_ping_interval: float = 5.0

    def grpc_options(self) -> list[tuple[str, int]]:
        """grpc.aio server options enforcing the transport-level bounds."""
        return [
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_connection_age_ms", int(self.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace * 1000)),
            ("grpc.keepalive_time_ms", int(self.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * 1000)),
            # Accept the Envoys' own keepalive pings (every 15 s, also without data).
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", int(self.min_ping_interval * 1000)),
            ("grpc.http2.max_ping_strikes", 2),
            # A second hub on the same port must fail, not share it.
            ("grpc.so_reuseport", 0),
        ]


@dataclass
class PeerSlots:
    """Open streams per peer key, bounded by ``limit``, and the resource names they
    subscribe to together, bounded by ``names_limit``."""

    limit: int
    names_limit: int = ServerLimits.max_names_per_peer
    _open: dict[str, int] = field(default_factory=dict)
    _names: dict[str, int] = field(default_factory=dict)

    def charge(self, key: str, names: int) -> None:
        """Add ``names`` (negative: give back) to the peer's subscribed names, or raise a
        Refusal when that would pass ``names_limit``."""
        total = self._names.get(key, 0) + names
        if names > 0 and total > self.names_limit:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too-many-names",
                f"this peer's streams would subscribe to {total} resource names together, "
                f"more than the {self.names_limit} the hub allows one peer",
            )
        if total > 0:
            self._names[key] = total
        else:
            self._names.pop(key, None)

    def acquire(self, key: str) -> None:
        """Count a stream of ``key``, or raise a Refusal when it has ``limit`` open."""
        count = self._open.get(key, 0)
        if count >= self.limit:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too-many-streams",
                f"this peer has {count} ADS streams open, the most the hub allows "
                "(--xds-max-streams-per-peer)",
            )
        self._open[key] = count + 1

    def release(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def open(self, key: str) -> int:
        return self._open.get(key, 0)

    def names(self, key: str) -> int:
        return self._names.get(key, 0)
