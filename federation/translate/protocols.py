"""Which application protocol a ServiceImport port speaks, as far as the data path cares.

Called by :mod:`federation.translate.clusterset` to decide which ports get an Envoy
cluster and a virtual host on the clusterset HTTP listener, and whether the cluster
speaks HTTP/2 upstream. Pure: no I/O.

The data path is one HTTP listener that routes by ``Host``, so only HTTP ports can be
served through it: a client of a MySQL or TLS port never sends a ``Host`` header the
listener could route on, and proxying its bytes as HTTP would only break them. The
rules, first match wins:

1. A port whose ``protocol`` is not TCP (UDP, SCTP) is not HTTP.
2. ``appProtocol``, when set, decides (Kubernetes' own values and IANA service names):
   ``http``, ``kubernetes.io/ws`` (WebSocket over HTTP/1.1) and ``grpc-web`` are HTTP/1.1;
   ``kubernetes.io/h2c``, ``h2c``, ``http2`` and ``grpc`` are HTTP/2 in clear text;
   every other value (``https``, ``kubernetes.io/wss``, ``tls``, ``tcp``, ``mysql``, ...)
   is not HTTP.
3. Otherwise the port name's first dash-separated word decides, as in the naming
   convention service meshes use (``http-api``, ``grpc-internal``, ``tcp-db``): ``http``
   and ``ws`` are HTTP/1.1, ``http2``, ``h2c`` and ``grpc`` are HTTP/2, and a word that
   names another protocol (:data:`NON_HTTP_WORDS`) is not HTTP.
4. Anything else (no appProtocol, an unnamed port or a name that says nothing, such as
   ``web`` or ``api``) is HTTP/1.1: an HTTP client is the only kind that can use the
   listener at all, so a port assumed HTTP wrongly costs nothing.
"""

from __future__ import annotations

from enum import StrEnum

from federation.registry.records import ServicePort


class PortProtocol(StrEnum):
    """What the clusterset listener does with a port."""

    #: Routed by ``Host``; HTTP/1.1 upstream (WebSocket upgrades allowed).
    HTTP = "HTTP"
    #: Routed by ``Host``; HTTP/2 in clear text upstream (gRPC, h2c).
    HTTP2 = "HTTP2"
    #: Not HTTP: no Envoy cluster and no virtual host.
    OTHER = "Other"

    @property
    def served(self) -> bool:
        """Whether the clusterset HTTP listener serves the port."""
        return self is not PortProtocol.OTHER


_APP_PROTOCOLS = {
    "http": PortProtocol.HTTP,
    "kubernetes.io/ws": PortProtocol.HTTP,
    "grpc-web": PortProtocol.HTTP,
    "kubernetes.io/h2c": PortProtocol.HTTP2,
    "h2c": PortProtocol.HTTP2,
    "http2": PortProtocol.HTTP2,
    "grpc": PortProtocol.HTTP2,
}

_NAME_WORDS = {
    "http": PortProtocol.HTTP,
    "ws": PortProtocol.HTTP,
    "http2": PortProtocol.HTTP2,
    "h2c": PortProtocol.HTTP2,
    "grpc": PortProtocol.HTTP2,
}

#: First words of port names that say the port speaks something other than HTTP.
NON_HTTP_WORDS = frozenset(
    {
        "amqp",
        "amqps",
        "cassandra",
        "dns",
        "https",
        "kafka",
        "ldap",
        "ldaps",
        "memcache",
        "memcached",
        "mongo",
        "mongodb",
        "mqtt",
        "mysql",
        "nats",
        "postgres",
        "postgresql",
        "redis",
        "smtp",
        "tcp",
        "thrift",
        "tls",
        "udp",
        "wss",
        "zookeeper",
    }
)


def port_protocol(port: ServicePort) -> PortProtocol:
    """The :class:`PortProtocol` of ``port``; see the module docstring for the rules."""
    if port.protocol != "TCP":
        return PortProtocol.OTHER
    if port.app_protocol:
        return _APP_PROTOCOLS.get(port.app_protocol.lower(), PortProtocol.OTHER)
    word = port.name.split("-", 1)[0].lower()
    if word in NON_HTTP_WORDS:
        return PortProtocol.OTHER
    return _NAME_WORDS.get(word, PortProtocol.HTTP)
