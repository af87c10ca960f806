"""First translation stage: one cluster's Gateway API objects into IR and statuses.

:func:`resolve` takes :class:`~federation.translate.gateway.inputs.ClusterInputs` (the
cluster's Gateways of our class, its routes and ReferenceGrants, the local Services its
routes name, the clusterset's ServiceImports and the hub's ACK state) and returns the
cluster's :class:`~federation.translate.ir.GatewayIR` and the
:class:`~federation.translate.gateway.status.Statuses` of its objects. Pure and
deterministic: the hub calls it for every node group to build Envoy configuration, and
each agent calls it for its own cluster to write statuses, so both always agree.

How a route reaches Envoy: for each of its parentRefs that names one of our Gateways, the
listeners it selects (``sectionName``, ``port``) must be usable and allow the route's
kind and namespace, and its hostnames must meet the listener's; the route is then served
on each such listener for each hostname they share. Listeners of all Gateways on one port
become one Envoy listener whose virtual hosts are those hostnames, each with its routes in
Gateway API precedence order. The modules: ``listeners`` (validity, conflicts),
``hostnames``, ``routes`` (rules to IR), ``matches`` (and precedence), ``filters``,
``refs`` (backends, ReferenceGrants) and ``status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from federation.model.conditions import Condition
from federation.registry.gatewayapi import (
    GATEWAY_GROUP,
    GatewayRecord,
    GRPCRouteRecord,
    HTTPRouteRecord,
    LabelSelector,
    ParentReference,
)
from federation.translate.gateway.hostnames import ANY, meet, served
from federation.translate.gateway.inputs import ClusterInputs, ProgrammedFact
from federation.translate.gateway.listeners import ListenerState, evaluate
from federation.translate.gateway.matches import Precedence
from federation.translate.gateway.routes import CompiledRoute, compile_route
from federation.translate.gateway.status import (
    GatewayCondition,
    GatewayReason,
    GatewayStatus,
    ListenerCondition,
    ListenerReason,
    ListenerStatus,
    RouteCondition,
    RouteParentStatus,
    RouteReason,
    RouteStatus,
    Statuses,
    condition,
)
from federation.translate.ir import (
    FilterChainIR,
    GatewayIR,
    ListenerIR,
    LocalClusterIR,
    RouteIR,
    VirtualHostIR,
)

__all__ = ["Resolved", "resolve"]


@dataclass(frozen=True)
class Resolved:
    ir: GatewayIR
    statuses: Statuses


def listener_name(port: int) -> str:
    """The Envoy listener (and route configuration) of a cluster's Gateways on ``port``."""
    return f"gateway/{port}"


Route = HTTPRouteRecord | GRPCRouteRecord


def resolve(inputs: ClusterInputs) -> Resolved:
    listeners = evaluate(inputs)
    by_gateway: dict[tuple[str, str], list[ListenerState]] = {}
    for state in listeners:
        by_gateway.setdefault((state.gateway.namespace, state.gateway.name), []).append(state)
    local_clusters: dict[str, LocalClusterIR] = {}
    route_statuses = []
    routes: list[Route] = [*inputs.http_routes, *inputs.grpc_routes]
    for route in sorted(routes, key=_route_key):
        status = _route(inputs, route, by_gateway, local_clusters)
        if status is not None:
            route_statuses.append(status)
    ir = GatewayIR(
        cluster=inputs.cluster,
        listeners=_listeners_ir(listeners),
        local_clusters=tuple(local_clusters[name] for name in sorted(local_clusters)),
    )
    gateway_statuses = tuple(
        _gateway_status(inputs, gateway, by_gateway.get((gateway.namespace, gateway.name), []))
        for gateway in sorted(inputs.gateways, key=lambda g: (g.namespace, g.name))
    )
    return Resolved(ir, Statuses(gateway_statuses, tuple(route_statuses)))


def _route_key(route: Route) -> tuple[str, str, str]:
    kind = "HTTPRoute" if isinstance(route, HTTPRouteRecord) else "GRPCRoute"
    return route.namespace, route.name, kind


# --- routes --------------------------------------------------------------------------------


def _route(
    inputs: ClusterInputs,
    route: Route,
    by_gateway: dict[tuple[str, str], list[ListenerState]],
    local_clusters: dict[str, LocalClusterIR],
) -> RouteStatus | None:
    kind = "HTTPRoute" if isinstance(route, HTTPRouteRecord) else "GRPCRoute"
    compiled = compile_route(inputs, route)
    invalid = "; ".join(f"rule {i}: {why}" for i, why in compiled.invalid_rules)
    nothing_served = bool(compiled.invalid_rules) and len(compiled.invalid_rules) == compiled.rules
    parents = []
    for ref in route.spec.parent_refs:
        if (ref.group or GATEWAY_GROUP, ref.kind or "Gateway") != (GATEWAY_GROUP, "Gateway"):
            continue  # not a Gateway: not ours to judge
        gateway_key = (ref.namespace or route.namespace, ref.name)
        states = by_gateway.get(gateway_key)
        if states is None:
            continue  # a Gateway of another class (or none): its controller reports
        if nothing_served:
            accepted = condition(
                RouteCondition.ACCEPTED, False, RouteReason.UNSUPPORTED_VALUE, invalid
            )
        else:
            accepted = _attach(route, kind, ref, states, compiled)
            if accepted.status == "True":
                local_clusters.update(compiled.local_clusters)
        conditions = [accepted, _resolved_refs(compiled)]
        if compiled.invalid_rules and not nothing_served:
            conditions.append(
                condition(
                    RouteCondition.PARTIALLY_INVALID,
                    True,
                    RouteReason.UNSUPPORTED_VALUE,
                    f"not served: {invalid}",
                )
            )
        parents.append(RouteParentStatus(ref, tuple(conditions)))
    if not parents:
        return None
    return RouteStatus(kind, route.namespace, route.name, route.generation, tuple(parents))


def _attach(
    route: Route,
    kind: str,
    ref: ParentReference,
    states: Sequence[ListenerState],
    compiled: CompiledRoute,
) -> Condition:
    """Attach the route to the listeners ``ref`` selects; its ``Accepted`` condition."""
    selected = [
        s
        for s in states
        if (ref.section_name is None or s.listener.name == ref.section_name)
        and (ref.port is None or s.listener.port == ref.port)
    ]
    gateway = f"{states[0].gateway.namespace}/{states[0].gateway.name}"
    if not selected:
        return condition(
            RouteCondition.ACCEPTED,
            False,
            RouteReason.NO_MATCHING_PARENT,
            f"Gateway {gateway} has no listener"
            + (f" named {ref.section_name}" if ref.section_name else "")
            + (f" on port {ref.port}" if ref.port is not None else ""),
        )
    allowed = [s for s in selected if s.usable and _allows(s, kind, route)]
    if not allowed:
        return condition(
            RouteCondition.ACCEPTED,
            False,
            RouteReason.NOT_ALLOWED_BY_LISTENERS,
            f"no listener of Gateway {gateway} it selects is ready and allows {kind}s "
            f"from namespace {route.namespace}",
        )
    attached = 0
    for state in allowed:
        hostnames = served(state.listener.hostname, route.spec.hostnames)
        if not hostnames:
            continue
        attached += 1
        state.attached_routes += 1
        for hostname in hostnames:
            state.served.extend((hostname, key, ir) for key, ir in compiled.entries)
    if not attached:
        return condition(
            RouteCondition.ACCEPTED,
            False,
            RouteReason.NO_MATCHING_LISTENER_HOSTNAME,
            f"none of the route's hostnames {list(route.spec.hostnames)} matches a listener "
            f"of Gateway {gateway} it selects",
        )
    return condition(
        RouteCondition.ACCEPTED,
        True,
        RouteReason.ACCEPTED,
        f"attached to {attached} listener(s) of Gateway {gateway}",
    )


def _allows(state: ListenerState, kind: str, route: Route) -> bool:
    if not any(k.kind == kind for k in state.supported_kinds):
        return False
    gateway = state.gateway
    allowed = state.listener.allowed_routes
    namespaces = None if allowed is None else allowed.namespaces
    source = "Same" if namespaces is None else namespaces.from_
    if source == "All":
        return True
    if source == "Selector":
        selector = None if namespaces is None else namespaces.selector
        return selector is not None and selects(selector, dict(route.namespace_labels))
    return route.namespace == gateway.namespace


def selects(selector: LabelSelector, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels and matchExpressions, ANDed)."""
    if any(labels.get(k) != v for k, v in selector.match_labels):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        value = labels.get(req.key)
        if req.operator == "In" and value not in req.values:
            return False
        if req.operator == "NotIn" and present and value in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
        if req.operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def _resolved_refs(compiled: CompiledRoute) -> Condition:
    if not compiled.problems:
        return condition(
            RouteCondition.RESOLVED_REFS, True, RouteReason.RESOLVED_REFS, "all references resolved"
        )
    problems = list(dict.fromkeys(compiled.problems))
    reason = problems[0][0]
    return condition(RouteCondition.RESOLVED_REFS, False, reason, "; ".join(m for _, m in problems))


# --- listeners -----------------------------------------------------------------------------


def _listeners_ir(states: Iterable[ListenerState]) -> tuple[ListenerIR, ...]:
    by_port: dict[int, list[ListenerState]] = {}
    for state in states:
        if state.usable:
            by_port.setdefault(state.listener.port, []).append(state)
    out = []
    for port in sorted(by_port):
        listeners = by_port[port]
        hostnames = {h for s in listeners for h, _, _ in s.served}
        # A listener of its own hostname answers it even without routes (404), so that
        # a less specific listener's routes never serve it.
        hostnames |= {s.listener.hostname for s in listeners if s.listener.hostname}
        vhosts = tuple(
            _virtual_host(port, hostname, _owner(listeners, hostname))
            for hostname in sorted(hostnames, key=_host_order)
        )
        tls = tuple(
            FilterChainIR(
                server_names=() if s.listener.hostname is None else (s.listener.hostname,),
                certificates=s.certificates,
            )
            for s in sorted(listeners, key=lambda s: s.rank)
            if s.listener.protocol == "HTTPS"
        )
        out.append(ListenerIR(listener_name(port), port, vhosts, tls))
    return tuple(out)


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
        name=f"{listener_name(port)}/{hostname}",
        domains=(hostname,),
        routes=tuple(ir for _, _, ir in ordered),
    )


def _host_order(hostname: str) -> tuple[bool, str]:
    return hostname == ANY, hostname


# --- gateways ------------------------------------------------------------------------------


def _gateway_status(
    inputs: ClusterInputs, gateway: GatewayRecord, states: Sequence[ListenerState]
) -> GatewayStatus:
    fact = inputs.programmed.get((gateway.namespace, gateway.name), ProgrammedFact())
    usable = [s for s in states if s.usable]
    programmed, reason, message = _programmed(inputs.cluster, gateway, fact, bool(usable))
    if len(usable) == len(states):
        accepted = condition(
            GatewayCondition.ACCEPTED, True, GatewayReason.ACCEPTED, "all listeners are valid"
        )
    else:
        bad = ", ".join(s.listener.name for s in states if not s.usable)
        accepted = condition(
            GatewayCondition.ACCEPTED,
            bool(usable),
            GatewayReason.LISTENERS_NOT_VALID,
            f"listeners not served: {bad}",
        )
    return GatewayStatus(
        namespace=gateway.namespace,
        name=gateway.name,
        generation=gateway.generation,
        conditions=(
            accepted,
            condition(GatewayCondition.PROGRAMMED, programmed, reason, message),
        ),
        listeners=tuple(_listener_status(s, programmed) for s in states),
    )


def _programmed(
    cluster: str, gateway: GatewayRecord, fact: ProgrammedFact, any_usable: bool
) -> tuple[bool, GatewayReason, str]:
    if not any_usable:
        return False, GatewayReason.INVALID, "no listener of the Gateway can be served"
    if fact.rejected:
        return (
            False,
            GatewayReason.INVALID,
            f"an Envoy of cluster {cluster} rejected it: {fact.rejected}",
        )
    if fact.generation == gateway.generation:
        return True, GatewayReason.PROGRAMMED, f"every Envoy of cluster {cluster} serves it"
    if fact.envoys == 0:
        return (
            False,
            GatewayReason.PENDING,
            f"no Envoy of cluster {cluster} is connected to the hub",
        )
    return (
        False,
        GatewayReason.PENDING,
        f"waiting for {fact.envoys} Envoy(s) of cluster {cluster} to apply generation "
        f"{gateway.generation}",
    )


def _listener_status(state: ListenerState, programmed: bool) -> ListenerStatus:
    if state.unaccepted:
        reason, message = state.unaccepted[0]
        accepted = condition(ListenerCondition.ACCEPTED, False, reason, message)
    else:
        accepted = condition(
            ListenerCondition.ACCEPTED, True, ListenerReason.ACCEPTED, "listener is valid"
        )
    if state.unresolved:
        reason, _ = state.unresolved[0]
        message = "; ".join(m for _, m in state.unresolved)
        resolved = condition(ListenerCondition.RESOLVED_REFS, False, reason, message)
    else:
        resolved = condition(
            ListenerCondition.RESOLVED_REFS,
            True,
            ListenerReason.RESOLVED_REFS,
            "all references resolved",
        )
    if state.conflict is not None:
        conflicted = condition(ListenerCondition.CONFLICTED, True, *state.conflict)
    else:
        conflicted = condition(
            ListenerCondition.CONFLICTED, False, ListenerReason.NO_CONFLICTS, "no conflicts"
        )
    if not state.usable:
        listener_programmed = condition(
            ListenerCondition.PROGRAMMED, False, ListenerReason.INVALID, "listener is not served"
        )
    elif programmed:
        listener_programmed = condition(
            ListenerCondition.PROGRAMMED, True, ListenerReason.PROGRAMMED, "listener is served"
        )
    else:
        listener_programmed = condition(
            ListenerCondition.PROGRAMMED,
            False,
            ListenerReason.PENDING,
            "waiting for the cluster's Envoys",
        )
    return ListenerStatus(
        name=state.listener.name,
        attached_routes=state.attached_routes,
        supported_kinds=state.supported_kinds,
        conditions=(accepted, resolved, conflicted, listener_programmed),
    )
