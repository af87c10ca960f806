"""A Gateway's listeners into IR listeners: virtual hosts by hostname, filter chains by SNI.

Called by :func:`federation.translate.gateway.resolve` once per Gateway, after every route
attached. The usable listeners on one port become one Envoy listener. Its virtual hosts
are the hostnames routes are served for, plus each listener's own hostname (which then
answers 404 without routes, rather than letting a less specific listener's routes serve
it). A hostname belongs to its *owner*, the most specific listener that includes it, and
only the owner's routes serve it (listener isolation), in precedence order.

HTTPS: one filter chain per listener, chosen by SNI. With more than one on the port, each
chain gets a route configuration of its own, because a client may send a request for one
hostname on a connection it opened for another (HTTP/2 reuses a connection for every
hostname its certificate covers): a request whose ``Host`` belongs to another listener
than the one its SNI chose is answered 421 Misdirected Request, so the client opens a new
connection, and one whose ``Host`` no listener includes is answered 404 (Gateway API's
rule for HTTPS listener hostnames; RFC 9110, section 15.5.20).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from federation.translate.gateway.hostnames import ANY, meet
from federation.translate.gateway.listeners import ListenerState, container_port
from federation.translate.gateway.matches import Precedence
from federation.translate.gateway.telemetry import access_loggers
from federation.translate.ir import (
    FilterChainIR,
    ListenerIR,
    MatchIR,
    PathMatchIR,
    RouteIR,
    VirtualHostIR,
)

#: What answers a request whose Host another filter chain's listener serves.
MISDIRECTED_STATUS = 421


def listener_name(port: int) -> str:
    """The Envoy listener (and route configuration) of a Gateway on ``port``, in its own
    Envoys (so the names of two Gateways never meet)."""
    return f"gateway/{port}"


def vhost_name(port: int, hostname: str) -> str:
    """The virtual host of ``hostname`` on ``port``: its dots become ``_`` (no hostname
    has one), since Envoy names a virtual host's statistics ``vhost.<name>.`` and reads
    the name up to the first dot."""
    return f"{listener_name(port)}/{hostname.replace('.', '_')}"


def listeners_ir(states: Iterable[ListenerState]) -> tuple[ListenerIR, ...]:
    """The IR listeners of one Gateway's listener states, by port."""
    by_port: dict[int, list[ListenerState]] = {}
    for state in states:
        if state.usable:
            by_port.setdefault(state.listener.port, []).append(state)
    return tuple(_listener(port, by_port[port]) for port in sorted(by_port))


def _listener(port: int, listeners: Sequence[ListenerState]) -> ListenerIR:
    hostnames = {h for s in listeners for h, _, _ in s.served}
    hostnames |= {s.listener.hostname for s in listeners if s.listener.hostname}
    owners = {h: _owner(listeners, h) for h in sorted(hostnames, key=_host_order)}
    vhosts = {h: _virtual_host(port, h, owner) for h, owner in owners.items()}
    https = sorted((s for s in listeners if s.listener.protocol == "HTTPS"), key=lambda s: s.rank)
    own_routes = len(https) > 1
    tls = tuple(
        _chain(port, s, owners, vhosts, listeners) if own_routes else _shared_chain(s)
        for s in https
    )
    bind = container_port(port)
    gateway = listeners[0].gateway
    return ListenerIR(
        listener_name(port),
        port,
        () if own_routes else tuple(vhosts.values()),
        tls,
        bind_port=bind if bind != port else None,
        access_logs=access_loggers(gateway.access_log, gateway.cluster),
    )


def _shared_chain(state: ListenerState) -> FilterChainIR:
    hostname = state.listener.hostname
    return FilterChainIR(
        server_names=() if hostname is None else (hostname,),
        certificates=state.certificates,
        client_validation=state.client_validation,
    )


def _chain(
    port: int,
    state: ListenerState,
    owners: dict[str, ListenerState],
    vhosts: dict[str, VirtualHostIR],
    listeners: Sequence[ListenerState],
) -> FilterChainIR:
    """The chain of ``state`` with its own routes: its hostnames' virtual hosts, and 421
    for the others'; for any other hostname too when a catch-all listener owns it."""
    hosts = [vhosts[h] if owner is state else _misdirected(port, h) for h, owner in owners.items()]
    catch_all = any(s.listener.hostname is None for s in listeners)
    if catch_all and state.listener.hostname is not None and ANY not in owners:
        hosts.append(_misdirected(port, ANY))
    hostname = state.listener.hostname
    return FilterChainIR(
        server_names=() if hostname is None else (hostname,),
        certificates=state.certificates,
        route_config=f"{listener_name(port)}/{hostname or ANY}",
        virtual_hosts=tuple(hosts),
        client_validation=state.client_validation,
    )


def _misdirected(port: int, hostname: str) -> VirtualHostIR:
    route = RouteIR(
        name=f"{listener_name(port)}/misdirected",
        match=MatchIR(PathMatchIR("PathPrefix", "/")),
        direct_status=MISDIRECTED_STATUS,
    )
    return VirtualHostIR(vhost_name(port, hostname), (hostname,), (route,))


def _specificity(hostname: str | None) -> tuple[int, int]:
    """Sort key, most specific first: an exact name, a longer wildcard, then any."""
    if hostname is None or hostname == ANY:
        return 2, 0
    if hostname.startswith("*."):
        return 1, -len(hostname)
    return 0, -len(hostname)


def _covers(outer: str | None, name: str) -> bool:
    """Whether hostname ``outer`` (None or ``*``: any) includes ``name``."""
    if outer is None or outer in (ANY, name):
        return True
    return outer.startswith("*.") and meet(outer, name) == name


def _owner(listeners: Sequence[ListenerState], hostname: str) -> ListenerState:
    """The most specific listener on the port whose hostname includes ``hostname``:
    only routes attached to it serve that hostname (listener isolation)."""
    covering = [s for s in listeners if _covers(s.listener.hostname, hostname)]
    return min(covering, key=lambda s: (_specificity(s.listener.hostname), s.rank))


def _virtual_host(port: int, hostname: str, owner: ListenerState) -> VirtualHostIR:
    """The routes of ``hostname``: those of its owner's routes served for a hostname that
    includes it, the most specific hostname's first, each in match precedence order."""
    chosen: dict[str, tuple[tuple[int, int], Precedence, RouteIR]] = {}
    for served_for, key, ir in owner.served:
        if not _covers(served_for, hostname):
            continue
        entry = (_specificity(served_for), key, ir)
        if ir.name not in chosen or entry[:2] < chosen[ir.name][:2]:
            chosen[ir.name] = entry
    ordered = sorted(chosen.values(), key=lambda e: (e[0], e[1]))
    return VirtualHostIR(
        name=vhost_name(port, hostname),
        domains=(hostname,),
        routes=tuple(ir for _, _, ir in ordered),
    )


def _host_order(hostname: str) -> tuple[bool, str]:
    return hostname == ANY, hostname
