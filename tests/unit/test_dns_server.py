"""The agent's DNS server on loopback: SERVFAIL until loaded, UDP and pipelined TCP
answers, and a close that does not wait for clients holding connections open."""

from __future__ import annotations

import asyncio
import socket
import struct

import dns.asyncquery
import dns.message
import dns.rcode

from agents.dns import DnsServer
from federation.dns.records import DnsPort, ImportedService
from federation.dns.zone import Zone

NAME = "hello.demo.svc.clusterset.local."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _server() -> DnsServer:
    zone = Zone()
    zone.put(
        ImportedService("demo", "hello", False, (DnsPort("http", "TCP", 80),), ips=("10.96.0.9",))
    )
    server = DnsServer(zone, f"127.0.0.1:{_free_port()}")
    await server.start()
    return server


async def test_servfail_until_loaded_then_answers_over_udp() -> None:
    server = await _server()
    try:
        query = dns.message.make_query(NAME, "A")
        early = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2)
        assert early.rcode() == dns.rcode.SERVFAIL
        server.loaded.set()
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2)
        assert [rd.to_text() for rd in reply.answer[0]] == ["10.96.0.9"]
        assert server.counts["udp", "A", "SERVFAIL"] == 1
        assert server.counts["udp", "A", "NOERROR"] == 1
    finally:
        await server.close()


async def test_pipelined_tcp_queries_are_answered_in_order() -> None:
    server = await _server()
    server.loaded.set()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        queries = [dns.message.make_query(NAME, t) for t in ("A", "SRV", "AAAA")]
        writer.write(
            b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
        )
        await writer.drain()
        for query in queries:
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))
            reply = dns.message.from_wire(await asyncio.wait_for(reader.readexactly(length), 2))
            assert reply.id == query.id and reply.rcode() == dns.rcode.NOERROR
        writer.close()
    finally:
        await server.close()


async def test_close_does_not_wait_for_open_connections() -> None:
    server = await _server()
    server.loaded.set()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    # Answered: the server holds the connection, which the client now leaves idle.
    query = dns.message.make_query(NAME, "A").to_wire()
    writer.write(struct.pack("!H", len(query)) + query)
    (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))
    await asyncio.wait_for(reader.readexactly(length), 2)
    assert server.tcp_connections == 1
    await asyncio.wait_for(server.close(), 5)  # the idle client would hold it 10 s
    assert server.tcp_connections == 0
    writer.close()
