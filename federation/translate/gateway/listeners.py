"""The listeners of one cluster's Gateways: validity, conflicts and what may attach.

Called by :func:`federation.translate.gateway.resolve`. Every Gateway of our class has
Envoys of its own (:mod:`federation.node_groups`), so listeners conflict only with
listeners of the same Gateway; two Gateways on one port never do. When two listeners of a
Gateway are indistinct, both are ``Conflicted``, neither is ``Accepted`` and neither serves
anything (Gateway API names no winner):

* ``ProtocolConflict``: the same port with HTTP on one and HTTPS on the other;
* ``HostnameConflict``: the same port and protocol and the same hostname (or both none).

A listener serves HTTP or HTTPS (TLS terminated with certificates from Secrets, which the
Envoy reads from its own disk, and client certificates checked as the Gateway's
``spec.tls.frontend`` says, :mod:`.frontend_tls`); any other protocol is
``UnsupportedProtocol``.

A Gateway's Envoys run as non-root without capabilities, and cannot bind ports below 1024:
such a listener port is bound :data:`PRIVILEGED_PORT_OFFSET` higher
(:func:`container_port`), and the Gateway's Service maps the listener port onto it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from federation.registry.gatewayapi import (
    GATEWAY_GROUP,
    GatewayRecord,
    Listener,
    RouteGroupKind,
)
from federation.translate.gateway.frontend_tls import client_validation
from federation.translate.gateway.inputs import ClusterInputs
from federation.translate.gateway.refs import gateway_ref_problem
from federation.translate.gateway.status import ListenerReason
from federation.translate.ir import CertificateIR, ClientValidationIR, RouteIR

SUPPORTED_PROTOCOLS = ("HTTP", "HTTPS")
#: Listener ports below 1024 are bound this much higher by the Gateway's Envoys.
PRIVILEGED_PORT_OFFSET = 10000
#: The lowest port an unprivileged process binds.
UNPRIVILEGED_PORT_START = 1024


#: Ports a Gateway's Envoy keeps for itself: its admin interface (loopback) and the
#: readiness listener the kubelet probes.
ADMIN_PORT = 19000
READY_PORT = 19001
#: Where Envoy's admin interface serves its metrics in Prometheus' format (passed on by
#: the ready listener, and named by the Envoys' pods' Prometheus annotations).
METRICS_PATH = "/stats/prometheus"
RESERVED_PORTS = (ADMIN_PORT, READY_PORT)


def container_port(port: int) -> int:
    """The port a Gateway's Envoy binds for listener port ``port`` (its Service's
    ``targetPort``): the port itself, or above 1024 for a privileged one."""
    return port + PRIVILEGED_PORT_OFFSET if port < UNPRIVILEGED_PORT_START else port


#: Route kinds a listener of each protocol accepts, in this order when none are given.
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")


@dataclass(frozen=True)
class Attached:
    """A route attached to a listener: its kind, ``namespace/name``, and the hostnames it
    is served for there (:func:`~federation.translate.gateway.hostnames.served`)."""

    kind: str
    route: str
    hostnames: tuple[str, ...]


@dataclass
class ListenerState:
    """One Gateway listener as the stage sees it; mutable while routes attach."""

    gateway: GatewayRecord
    index: int
    listener: Listener
    supported_kinds: tuple[RouteGroupKind, ...] = ()
    certificates: tuple[CertificateIR, ...] = ()
    #: HTTPS: the client certificate validation its port asks for (:mod:`.frontend_tls`).
    client_validation: ClientValidationIR | None = None
    #: (reason, message) of each failed check; empty lists: the check passed.
    unaccepted: list[tuple[ListenerReason, str]] = field(default_factory=list)
    unresolved: list[tuple[ListenerReason, str]] = field(default_factory=list)
    conflict: tuple[ListenerReason, str] | None = None
    attached_routes: int = 0
    #: The routes attached so far, whether or not the listener is usable.
    attached: list[Attached] = field(default_factory=list)
    #: What attached routes serve here: (hostname served, precedence, route).
    served: list[tuple[str, Any, RouteIR]] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Whether Envoy serves it. Routes attach whether or not it is (Gateway API:
        a listener's conditions never decide attachment)."""
        if self.unaccepted or self.conflict is not None:
            return False
        # An HTTPS listener without a usable certificate cannot terminate TLS.
        return not (self.listener.protocol == "HTTPS" and not self.certificates)

    @property
    def rank(self) -> tuple[bool, str, str, str, int]:
        g = self.gateway
        return (not g.created, g.created, g.namespace, g.name, self.index)


def gateway_rank(gateway: GatewayRecord) -> tuple[bool, str, str, str]:
    """Oldest first (by creationTimestamp), then namespace and name."""
    return (not gateway.created, gateway.created, gateway.namespace, gateway.name)


def evaluate(inputs: ClusterInputs) -> list[ListenerState]:
    """Every listener of every Gateway, checked and with conflicts decided, in rank order."""
    states = [
        _check(inputs, gateway, i, listener)
        for gateway in sorted(inputs.gateways, key=gateway_rank)
        for i, listener in enumerate(gateway.spec.listeners)
    ]
    _port_clashes(states)
    _conflicts(states)
    return states


def bind_problem(port: int, bound: dict[int, int]) -> str | None:
    """Why a Gateway's Envoy cannot bind listener ``port``, given ``bound`` (each port it
    binds, to the listener port it binds it for, of the listeners before this one), which
    takes this port when it can: a port the Envoy keeps for itself, or one whose
    unprivileged port another listener has (80 is bound as 10080)."""
    bind = container_port(port)
    if bind in RESERVED_PORTS:
        return (
            f"port {port} is kept by the Gateway's Envoy for itself "
            f"({', '.join(map(str, RESERVED_PORTS))}: admin and readiness)"
        )
    other = bound.setdefault(bind, port)
    if other != port:
        return (
            f"port {port} is bound as {bind} by the Gateway's Envoy, which listener port "
            f"{other} already uses (ports below {UNPRIVILEGED_PORT_START} are bound "
            f"{PRIVILEGED_PORT_OFFSET} higher)"
        )
    return None


def bindable_ports(ports: Iterable[int]) -> list[int]:
    """The distinct listener ports, in spec order, that a Gateway's Envoy can bind (what
    its Service exposes)."""
    bound: dict[int, int] = {}
    return list(dict.fromkeys(p for p in ports if bind_problem(p, bound) is None))


def _port_clashes(states: Iterable[ListenerState]) -> None:
    """A listener whose port the Gateway's Envoy cannot bind is ``PortUnavailable``
    (:func:`bind_problem`; the first listener in spec order keeps a port)."""
    bound: dict[tuple[str, str], dict[int, int]] = {}
    for state in states:
        if state.unaccepted:
            continue
        gateway = state.gateway
        problem = bind_problem(
            state.listener.port, bound.setdefault((gateway.namespace, gateway.name), {})
        )
        if problem is not None:
            state.unaccepted.append((ListenerReason.PORT_UNAVAILABLE, problem))


def _check(
    inputs: ClusterInputs, gateway: GatewayRecord, index: int, listener: Listener
) -> ListenerState:
    state = ListenerState(gateway, index, listener)
    if listener.protocol not in SUPPORTED_PROTOCOLS:
        state.unaccepted.append(
            (
                ListenerReason.UNSUPPORTED_PROTOCOL,
                f"protocol {listener.protocol} is not supported; use HTTP or HTTPS",
            )
        )
        return state
    state.supported_kinds = _kinds(state, listener)
    if listener.protocol == "HTTPS":
        validation, unresolved, unaccepted = client_validation(inputs, gateway, listener.port)
        state.client_validation = validation
        state.unresolved += unresolved
        state.unaccepted += unaccepted
        state.certificates = _certificates(inputs, state, gateway, listener)
    return state


def _kinds(state: ListenerState, listener: Listener) -> tuple[RouteGroupKind, ...]:
    asked = () if listener.allowed_routes is None else listener.allowed_routes.kinds
    if not asked:
        return tuple(RouteGroupKind(k, GATEWAY_GROUP) for k in ROUTE_KINDS)
    supported = []
    for k in asked:
        group = GATEWAY_GROUP if k.group is None else k.group
        if group == GATEWAY_GROUP and k.kind in ROUTE_KINDS:
            supported.append(RouteGroupKind(k.kind, GATEWAY_GROUP))
        else:
            state.unresolved.append(
                (
                    ListenerReason.INVALID_ROUTE_KINDS,
                    f"route kind {group or 'core'}/{k.kind} is not supported on "
                    f"{listener.protocol}; supported: {', '.join(ROUTE_KINDS)}",
                )
            )
    return tuple(dict.fromkeys(supported))


def _certificates(
    inputs: ClusterInputs, state: ListenerState, gateway: GatewayRecord, listener: Listener
) -> tuple[CertificateIR, ...]:
    tls = listener.tls
    if tls is None or not tls.certificate_refs:
        state.unresolved.append(
            (ListenerReason.INVALID_CERTIFICATE_REF, "an HTTPS listener needs tls.certificateRefs")
        )
        return ()
    if (tls.mode or "Terminate") != "Terminate":
        state.unaccepted.append(
            (
                ListenerReason.UNSUPPORTED_PROTOCOL,
                f"tls.mode {tls.mode} is not supported on HTTPS; use Terminate",
            )
        )
        return ()
    # The agent's verdicts on the Secrets; one it did not check is taken as usable.
    checks = {(c.namespace, c.name): c for c in gateway.certificate_checks}
    found = []
    for ref in tls.certificate_refs:
        problem = gateway_ref_problem(
            inputs.grants,
            gateway.namespace,
            ref,
            "Secret",
            ListenerReason.INVALID_CERTIFICATE_REF,
            "certificateRef",
        )
        if problem is not None:
            state.unresolved.append(problem)
            continue
        namespace = ref.namespace or gateway.namespace
        check = checks.get((namespace, ref.name))
        if check is not None and not check.usable:
            # The agent found the Secret unusable (missing, malformed, or one the
            # Gateway's Envoys cannot mount): serving it would fail in Envoy.
            state.unresolved.append(
                (
                    ListenerReason.INVALID_CERTIFICATE_REF,
                    check.message or f"Secret {namespace}/{ref.name} is not usable",
                )
            )
            continue
        found.append(CertificateIR(namespace, ref.name))
    return tuple(found)


def _conflicts(states: Iterable[ListenerState]) -> None:
    """Mark indistinct listeners of each Gateway: every side is conflicted. Listeners
    that cannot be served (unsupported, HTTPS without a certificate) take part in no
    conflict."""
    by_port: dict[tuple[str, str, int], list[ListenerState]] = {}
    for state in sorted(states, key=lambda s: s.rank):
        if not state.usable:
            continue
        gateway, port = state.gateway, state.listener.port
        earlier = by_port.setdefault((gateway.namespace, gateway.name, port), [])
        for other in earlier:
            found = _conflict(state, other, port)
            if found is None:
                continue
            reason, why = found
            if state.conflict is None:
                state.conflict = (reason, why)
            if other.conflict is None:
                reverse = _conflict(other, state, port)
                assert reverse is not None
                other.conflict = reverse
        earlier.append(state)


def _conflict(
    state: ListenerState, other: ListenerState, port: int
) -> tuple[ListenerReason, str] | None:
    """How ``state`` conflicts with ``other`` on ``port`` (None: they are distinct)."""
    if other.listener.protocol != state.listener.protocol:
        return (
            ListenerReason.PROTOCOL_CONFLICT,
            f"listener {other.listener.name} serves {other.listener.protocol} on port {port}",
        )
    if other.listener.hostname == state.listener.hostname:
        host = state.listener.hostname or "any hostname"
        return (
            ListenerReason.HOSTNAME_CONFLICT,
            f"listener {other.listener.name} also serves {host} on port {port}",
        )
    return None
