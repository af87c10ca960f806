"""A TCP forwarder between network namespaces: how the host reaches a node tier.

The node tier keeps every cluster's node, pod and service addresses inside network
namespaces the harness creates; the host only ever uses loopback. This process bridges
the two: each rule listens on an address in one namespace and connects, per accepted
connection, to an address in another. ``-`` names the forwarder's own namespace, the
host's, where only loopback addresses are accepted. Addresses are IPv4 literals.

    python -m e2e.netforward --ready-file F \\
        --rule -,127.0.0.1:40123,/run/netns/fed-1-a,10.250.0.11:6443

A socket belongs to the namespace that was current when it was created, whichever the
process is in later, so the forwarder switches namespace (``setns``) only around socket
creation. Started and stopped by :mod:`e2e.nodes` through the process group (by pid).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Namespaces:
    """Open handles on network namespaces, and a way to create sockets inside them."""

    def __init__(self) -> None:
        self._own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._fds: dict[str, int] = {}

    def fd(self, path: str) -> int | None:
        if path == "-":
            return None
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    @contextlib.contextmanager
    def inside(self, path: str) -> Iterator[None]:
        fd = self.fd(path)
        if fd is None:
            yield
            return
        _setns(fd)
        try:
            yield
        finally:
            _setns(self._own)


@dataclass(frozen=True)
class Rule:
    listen_ns: str
    listen: tuple[str, int]
    connect_ns: str
    connect: tuple[str, int]

    @classmethod
    def parse(cls, text: str) -> Rule:
        try:
            listen_ns, listen, connect_ns, connect = text.split(",")
            rule = cls(listen_ns, _address(listen), connect_ns, _address(connect))
        except ValueError as err:
            raise argparse.ArgumentTypeError(
                f"bad rule {text!r}: want LISTEN_NS,HOST:PORT,CONNECT_NS,HOST:PORT ({err})"
            ) from None
        for namespace, (host, _) in (
            (rule.listen_ns, rule.listen),
            (rule.connect_ns, rule.connect),
        ):
            # In the forwarder's own namespace (the host's), loopback only.
            if namespace == "-" and not ipaddress.ip_address(host).is_loopback:
                raise argparse.ArgumentTypeError(
                    f"bad rule {text!r}: {host} is not a loopback address, and '-' is the "
                    "host's own namespace"
                )
        return rule


def _address(text: str) -> tuple[str, int]:
    """An IPv4 literal and a port (0 to listen on any free one)."""
    host, _, port = text.rpartition(":")
    # A literal only: a name would be resolved in a thread outside the target namespace.
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv4 address") from None
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} out of range")
    return host, number


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close. An error aborts (resets) the other side:
    a reset must not look like a clean end, or a cut-off answer would look complete."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()


async def _serve_connection(
    namespaces: Namespaces,
    rule: Rule,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
) -> None:
    upstream_writer: asyncio.StreamWriter | None = None
    try:
        with namespaces.inside(rule.connect_ns):
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(upstream, rule.connect), 10
            )
        except (OSError, TimeoutError):
            upstream.close()
            client_writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(sock=upstream)
        await asyncio.gather(
            _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer)
        )
    except OSError as err:  # e.g. the target namespace is gone during teardown
        print(f"connection for {rule.listen} failed: {err}", file=sys.stderr, flush=True)
        client_writer.transport.abort()
    finally:
        for writer in (client_writer, upstream_writer):
            if writer is not None:
                writer.close()


async def serve(rules: Sequence[Rule], ready_file: Path | None) -> None:
    """Listen on every rule, then write the listening addresses (one ``HOST:PORT`` per
    rule, in order) to ``ready_file``: a rule asking for port 0 gets a free port."""
    namespaces = Namespaces()
    servers = []
    bound = []
    for rule in rules:
        with namespaces.inside(rule.listen_ns):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(rule.listen)
        listener.listen(128)
        host, port = listener.getsockname()

        async def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rule: Rule = rule
        ) -> None:
            await _serve_connection(namespaces, rule, reader, writer)

        servers.append(await asyncio.start_server(handler, sock=listener))
        bound.append(f"{host}:{port}")
        print(f"forwarding {host}:{port} ({rule.listen_ns}) -> {rule.connect} "
              f"({rule.connect_ns})", flush=True)  # fmt: skip
    if ready_file is not None:
        partial = ready_file.with_suffix(".partial")
        partial.write_text("\n".join(bound) + "\n")
        partial.replace(ready_file)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.netforward", description=__doc__)
    parser.add_argument("--rule", type=Rule.parse, action="append", required=True)
    parser.add_argument(
        "--ready-file", type=Path, help="written once every rule listens: HOST:PORT per rule"
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.rule, args.ready_file))
    except OSError as err:
        print(f"netforward: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
