"""Loopback ranges for one local environment's data plane, claimed so two can coexist.

Each member cluster's Envoy and echo backends live in their own ``127.O.0.0/16``. The
backends listen on the ports their EndpointSlices name (8080...), so two environments on
one machine (the demo left running while the tests run, two CI jobs) must not share a
range. :func:`claim` finds ``count`` consecutive free second octets and holds, for each, a
socket bound to ``127.O.255.254:CLAIM_PORT``; another environment's bind there fails, so
it moves on. The claim ends when the sockets are closed or the process dies.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field

from e2e.processes import HarnessError

CLAIM_PORT = 47999
#: Octet 0 (127.0.0.0/16) is left to shared services: apiservers, etcd, redis, the hub.
FIRST_OCTET = 1


@dataclass
class LoopbackClaim:
    """Second octets ``first .. first + count - 1``, held until :meth:`release`."""

    first: int
    count: int
    _sockets: list[socket.socket] = field(default_factory=list, repr=False)

    def octet(self, index: int) -> int:
        """The octet of the ``index``-th cluster (1-based, as LocalEnvironment counts)."""
        if not 1 <= index <= self.count:
            raise HarnessError(f"cluster index {index} outside the claimed {self.count}")
        return self.first + index - 1

    def release(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


def _hold(octet: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((f"127.{octet}.255.254", CLAIM_PORT))
    except OSError:
        sock.close()
        return None
    return sock


def claim(count: int) -> LoopbackClaim:
    """Claim ``count`` consecutive octets no other live environment holds."""
    first = FIRST_OCTET
    while first + count <= 256:
        held: list[socket.socket] = []
        for octet in range(first, first + count):
            sock = _hold(octet)
            if sock is None:
                break
            held.append(sock)
        if len(held) == count:
            return LoopbackClaim(first, count, held)
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
        first += len(held) + 1
    raise HarnessError(
        f"no {count} consecutive free loopback ranges 127.O.0.0/16: every candidate's "
        f"127.O.255.254:{CLAIM_PORT} is taken (too many local environments running?)"
    )
