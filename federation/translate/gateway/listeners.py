"""The listeners of one cluster's Gateways: validity, conflicts and what may attach.

Called by :func:`federation.translate.gateway.resolve`. Every Gateway of our class in a
cluster is served by all of that cluster's Envoys, so listeners of *different* Gateways
on one port share one Envoy listener and can conflict with each other. Gateways are
ranked oldest first (then by namespace and name), listeners in spec order; when two
conflict, the later one is ``Conflicted`` and serves nothing:

* ``ProtocolConflict``: the same port with HTTP on one and HTTPS on the other;
* ``HostnameConflict``: the same port and protocol and the same hostname (or both none).

A listener serves HTTP or HTTPS (TLS terminated with certificates from Secrets, which the
Envoy reads from its own disk); any other protocol is ``UnsupportedProtocol``.
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
from federation.translate.gateway.inputs import ClusterInputs
from federation.translate.gateway.refs import CORE_GROUP, granted
from federation.translate.gateway.status import ListenerReason
from federation.translate.ir import CertificateIR, RouteIR

SUPPORTED_PROTOCOLS = ("HTTP", "HTTPS")
#: Route kinds a listener of each protocol accepts, in this order when none are given.
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")


@dataclass
class ListenerState:
    """One Gateway listener as the stage sees it; mutable while routes attach."""

    gateway: GatewayRecord
    index: int
    listener: Listener
    supported_kinds: tuple[RouteGroupKind, ...] = ()
    certificates: tuple[CertificateIR, ...] = ()
    #: (reason, message) of each failed check; empty lists: the check passed.
    unaccepted: list[tuple[ListenerReason, str]] = field(default_factory=list)
    unresolved: list[tuple[ListenerReason, str]] = field(default_factory=list)
    conflict: tuple[ListenerReason, str] | None = None
    attached_routes: int = 0
    #: What attached routes serve here: (hostname served, precedence, route).
    served: list[tuple[str, Any, RouteIR]] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Whether routes may attach and Envoy serves it."""
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
    _conflicts(states)
    return states


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
        if _client_validation(gateway, listener.port):
            # Serving HTTPS without the client certificate check the Gateway asks for
            # would let in clients it means to keep out.
            state.unaccepted.append(
                (
                    ListenerReason.INVALID,
                    "client certificate validation (spec.tls.frontend) is not supported; "
                    "the listener is not served rather than served without it",
                )
            )
            return state
        state.certificates = _certificates(inputs, state, gateway, listener)
    return state


def _client_validation(gateway: GatewayRecord, port: int) -> bool:
    tls = gateway.spec.tls
    frontend = None if tls is None else tls.frontend
    if frontend is None:
        return False
    if frontend.default is not None and frontend.default.validation is not None:
        return True
    return any(
        p.port == port and p.tls is not None and p.tls.validation is not None
        for p in frontend.per_port
    )


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
    found = []
    for ref in tls.certificate_refs:
        group = CORE_GROUP if ref.group is None else ref.group
        kind = "Secret" if ref.kind is None else ref.kind
        namespace = ref.namespace or gateway.namespace
        if (group, kind) != (CORE_GROUP, "Secret"):
            state.unresolved.append(
                (
                    ListenerReason.INVALID_CERTIFICATE_REF,
                    f"certificateRef {group or 'core'}/{kind} {ref.name} is not a Secret",
                )
            )
            continue
        if namespace != gateway.namespace and not granted(
            inputs.grants,
            from_kind="Gateway",
            from_namespace=gateway.namespace,
            to_group=CORE_GROUP,
            to_kind="Secret",
            to_namespace=namespace,
            to_name=ref.name,
        ):
            state.unresolved.append(
                (
                    ListenerReason.REF_NOT_PERMITTED,
                    f"Secret {namespace}/{ref.name} is in another namespace and no "
                    f"ReferenceGrant in {namespace} allows Gateways of {gateway.namespace} "
                    "to refer to it",
                )
            )
            continue
        found.append(CertificateIR(namespace, ref.name))
    return tuple(found)


def _conflicts(states: Iterable[ListenerState]) -> None:
    """Mark conflicting listeners. Within one Gateway both sides are conflicted (Gateway
    API names no winner); across Gateways, which share the cluster's Envoys, the older
    Gateway keeps the port, so that a new Gateway cannot take traffic from a working one.
    Listeners that cannot be served (unsupported, HTTPS without a certificate) take part
    in no conflict."""
    by_port: dict[int, list[ListenerState]] = {}
    for state in sorted(states, key=lambda s: s.rank):
        if not state.usable:
            continue
        port = state.listener.port
        earlier = by_port.setdefault(port, [])
        for other in earlier:
            if other.listener.protocol != state.listener.protocol:
                state.conflict = (
                    ListenerReason.PROTOCOL_CONFLICT,
                    f"port {port} already serves {other.listener.protocol} for listener "
                    f"{other.listener.name} of Gateway {other.gateway.namespace}/"
                    f"{other.gateway.name}",
                )
                break
            if other.listener.hostname == state.listener.hostname:
                host = state.listener.hostname or "any hostname"
                state.conflict = (
                    ListenerReason.HOSTNAME_CONFLICT,
                    f"listener {other.listener.name} of Gateway {other.gateway.namespace}/"
                    f"{other.gateway.name} already serves {host} on port {port}",
                )
                break
        if state.conflict is None:
            earlier.append(state)
        elif other.gateway is state.gateway and other.conflict is None:
            reason, _ = state.conflict
            other.conflict = (
                reason,
                f"listener {state.listener.name} of the same Gateway also uses port {port}"
                + (" with another protocol" if reason is ListenerReason.PROTOCOL_CONFLICT else "")
                + (f" for {state.listener.hostname or 'any hostname'}"),
            )
