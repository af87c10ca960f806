"""The agent's DNS server: this cluster's ``clusterset.local``, over UDP and TCP.

The cluster's CoreDNS forwards the zone here (README, *clusterset.local DNS*). The
server runs in the agent's event loop and answers from the zone the import reconciler
keeps (:class:`federation.dns.zone.Zone`), so an import written or deleted is answered
at once. The wire format and every answer are :func:`federation.dns.wire.respond`'s.

Bounds, so that no client can take the server from others: a TCP connection may stay
idle :data:`TCP_IDLE` seconds between queries (and a client has as long to read an
answer), at most :data:`MAX_TCP_CONNECTIONS` are open at once (more are closed at
once), and a query is at most
:data:`federation.dns.wire.MAX_QUERY` bytes (FORMERR beyond). Messages that are not
queries are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import Counter
from typing import cast

from federation.dns.wire import CachedResponder, Reply
from federation.dns.zone import Zone
from federation.process import split_host_port

#: Seconds a TCP connection may wait for its next query.
TCP_IDLE = 10.0
MAX_TCP_CONNECTIONS = 256
#: Query types counted by name in the metrics; any other is counted as ``other``.
COUNTED_TYPES = frozenset(
    {"A", "AAAA", "SRV", "SOA", "NS", "PTR", "TXT", "CNAME", "ANY", "HTTPS", "none"}
)
log = logging.getLogger(__name__)


class DnsServer:
    """UDP and TCP on one ``host:port``, answering from ``zone``."""

    def __init__(self, zone: Zone, address: str) -> None:
        self.zone = zone
        self.responder = CachedResponder(zone)
        self.host, self.port = split_host_port(address, "--dns-address")
        #: Messages answered or dropped, by (transport, query type, rcode or "dropped").
        self.counts: Counter[tuple[str, str, str]] = Counter()
        #: Until set, questions get SERVFAIL (the agent sets it once its imports are written).
        self.loaded = asyncio.Event()
        self.tcp_refused = 0
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.port)
        )
        log.info("serving clusterset.local DNS", extra={"address": f"{self.host}:{self.port}"})

    @property
    def tcp_connections(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        """Stop answering: the sockets close, and so does every open TCP connection (a
        client such as CoreDNS keeps them open, which would hold the shutdown)."""
        self._closing = True
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._tcp.wait_closed()

    def answer(self, data: bytes, *, tcp: bool) -> bytes | None:
        reply: Reply = self.responder.respond(data, tcp=tcp, loaded=self.loaded.is_set())
        qtype = reply.qtype if reply.qtype in COUNTED_TYPES else "other"
        self.counts["tcp" if tcp else "udp", qtype, reply.rcode] += 1
        return reply.wire

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self.tcp_connections >= MAX_TCP_CONNECTIONS or task is None or self._closing:
            self.tcp_refused += 1
            writer.close()
            return
        self._connections.add(task)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                (length,) = struct.unpack("!H", head)
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
                wire = self.answer(data, tcp=True)
                if wire is None:
                    break
                writer.write(struct.pack("!H", len(wire)) + wire)
                # A client that asks and never reads is dropped, not waited for.
                await asyncio.wait_for(writer.drain(), TCP_IDLE)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client is done, idle or not reading too long, or gone
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Closing: the connection goes with the server (asyncio's stream callback
            # would log a cancelled handler as an error).
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's UDP transport implements DatagramTransport without subclassing it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        wire = self.server.answer(data, tcp=False)
        if wire is not None and self.transport is not None:
            self.transport.sendto(wire, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier answer (the client went away): nothing to do.
        log.debug("DNS over UDP: %s", exc)
