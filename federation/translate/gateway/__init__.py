"""First translation stage: one cluster's Gateway API objects into IR and statuses.

:func:`resolve` takes :class:`~federation.translate.gateway.inputs.ClusterInputs` (the
cluster's Gateways of our class, its routes and ReferenceGrants, the local Services its
routes name, the clusterset's ServiceImports and the hub's ACK state) and returns a
:class:`~federation.translate.ir.GatewayIR` per Gateway (what that Gateway's own Envoys
serve) and the :class:`~federation.translate.gateway.status.Statuses` of the cluster's
objects. Pure and deterministic: the hub calls it for every cluster to build its
Gateways' Envoy configuration, and each agent calls it for its own cluster to write
statuses, so both always agree.

How a route reaches Envoy: for each of its parentRefs that names one of our Gateways, it
attaches to the listeners the parentRef selects (``sectionName``, ``port``) that allow
its kind and namespace and whose hostname meets its own (``attach``); those that Envoy
can serve (valid, with their certificates) serve it for each hostname they share. A
Gateway's listeners on one port become one Envoy listener of its own Envoys, whose
virtual hosts are those hostnames, each with its routes in Gateway API precedence order
(``virtual_hosts``). The modules: ``listeners`` (validity, conflicts), ``attach``,
``hostnames``, ``virtual_hosts``, ``routes`` (rules to IR), ``matches`` (and
precedence), ``filters``, ``refs`` (backends, ReferenceGrants), ``policies`` (Envoy
Gateway's BackendTrafficPolicies, applied to the routes on each listener they cover),
``patches`` (EnvoyPatchPolicies, which the hub applies after the second stage) and
``status``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from federation.model.conditions import Condition
from federation.registry.gatewayapi import GATEWAY_GROUP, GatewayRecord
from federation.translate.gateway.attach import (
    Adjust,
    Route,
    attach,
    kind_of,
    route_rank,
    selects,
)
from federation.translate.gateway.frontend_tls import insecure_ports
from federation.translate.gateway.inputs import ClusterInputs, ObjectName, ProgrammedFact
from federation.translate.gateway.listeners import ListenerState, evaluate
from federation.translate.gateway.matches import Precedence
from federation.translate.gateway.patches import resolve_patches
from federation.translate.gateway.policies import PolicyBook, resolve_policies
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
from federation.translate.gateway.virtual_hosts import listener_name, listeners_ir
from federation.translate.ir import GatewayIR, LocalClusterIR, PatchPolicyIR, RouteIR

__all__ = ["Resolved", "listener_name", "resolve", "selects"]


@dataclass(frozen=True)
class Resolved:
    #: One per Gateway of our class, sorted by namespace and name.
    gateways: tuple[GatewayIR, ...]
    statuses: Statuses
    #: The EnvoyPatchPolicies on the cluster's clusterset listener, in order.
    clusterset_patches: tuple[PatchPolicyIR, ...] = ()

    def gateway(self, namespace: str, name: str) -> GatewayIR | None:
        return next((g for g in self.gateways if (g.namespace, g.name) == (namespace, name)), None)


def resolve(inputs: ClusterInputs) -> Resolved:
    listeners = evaluate(inputs)
    policies = resolve_policies(inputs)
    patches = resolve_patches(inputs)
    by_gateway: dict[ObjectName, list[ListenerState]] = {}
    for state in listeners:
        by_gateway.setdefault((state.gateway.namespace, state.gateway.name), []).append(state)
    local_clusters: dict[ObjectName, dict[str, LocalClusterIR]] = {}
    routes: list[Route] = [*inputs.http_routes, *inputs.grpc_routes]
    # Oldest first: of an HTTPRoute and a GRPCRoute sharing a hostname, the older stays.
    route_statuses = sorted(
        (
            _route(inputs, route, by_gateway, local_clusters, policies)
            for route in sorted(routes, key=route_rank)
        ),
        key=lambda r: (r.namespace, r.name, r.kind),
    )
    gateways = sorted(inputs.gateways, key=lambda g: (g.namespace, g.name))
    irs = []
    for gateway in gateways:
        key = (gateway.namespace, gateway.name)
        local = {**policies.local_clusters.get(key, {}), **local_clusters.get(key, {})}
        irs.append(
            GatewayIR(
                cluster=inputs.cluster,
                listeners=policies.with_clients(gateway, listeners_ir(by_gateway.get(key, []))),
                local_clusters=tuple(local[name] for name in sorted(local)),
                namespace=gateway.namespace,
                name=gateway.name,
                policy_clusters=policies.policy_clusters(key),
                patches=patches.of(key),
            )
        )
    gateway_statuses = tuple(
        _gateway_status(inputs, gateway, by_gateway.get((gateway.namespace, gateway.name), []))
        for gateway in gateways
    )
    statuses = Statuses(
        gateway_statuses, tuple(route_statuses), (*policies.statuses, *patches.statuses)
    )
    return Resolved(tuple(irs), statuses, patches.clusterset)


# --- routes --------------------------------------------------------------------------------


def _route(
    inputs: ClusterInputs,
    route: Route,
    by_gateway: dict[ObjectName, list[ListenerState]],
    local_clusters: dict[ObjectName, dict[str, LocalClusterIR]],
    policies: PolicyBook,
) -> RouteStatus:
    """The route's status, attaching it to its parents' listeners. A route that names
    none of our Gateways has a status with no parents: the agent then removes the entries
    it wrote when the route named one (or the Gateway existed)."""
    kind = kind_of(route)
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
            attachment = attach(
                route, ref, states, compiled, _policy_applier(policies, route, compiled)
            )
            accepted = attachment.accepted
            if attachment.served:
                local_clusters.setdefault(gateway_key, {}).update(compiled.local_clusters)
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
    return RouteStatus(kind, route.namespace, route.name, route.generation, tuple(parents))


def _policy_applier(policies: PolicyBook, route: Route, compiled: CompiledRoute) -> Adjust:
    """The route's IR on one listener with the policies that cover it."""
    rule_names = [rule.name for rule in route.spec.rules]

    def adjust(state: ListenerState, key: Precedence, ir: RouteIR) -> RouteIR:
        gateway = (state.gateway.namespace, state.gateway.name)
        rule = rule_names[key.rule] if key.rule < len(rule_names) else None
        return policies.apply(gateway, state.listener.name, route, rule, ir, compiled.http2)

    return adjust


def _resolved_refs(compiled: CompiledRoute) -> Condition:
    if not compiled.problems:
        return condition(
            RouteCondition.RESOLVED_REFS, True, RouteReason.RESOLVED_REFS, "all references resolved"
        )
    problems = list(dict.fromkeys(compiled.problems))
    reason = problems[0][0]
    return condition(RouteCondition.RESOLVED_REFS, False, reason, "; ".join(m for _, m in problems))


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
    conditions = [accepted, condition(GatewayCondition.PROGRAMMED, programmed, reason, message)]
    insecure = insecure_ports(gateway)
    if insecure:
        conditions.append(
            condition(
                GatewayCondition.INSECURE_FRONTEND_VALIDATION_MODE,
                True,
                GatewayReason.CONFIGURATION_CHANGED,
                "client certificate validation lets clients without a valid certificate in "
                f"(AllowInsecureFallback) on {insecure}",
            )
        )
    return GatewayStatus(
        namespace=gateway.namespace,
        name=gateway.name,
        generation=gateway.generation,
        conditions=tuple(conditions),
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
            f"an Envoy of the Gateway in cluster {cluster} rejected it: {fact.rejected}",
        )
    if fact.generation == gateway.generation:
        return (
            True,
            GatewayReason.PROGRAMMED,
            f"every Envoy of the Gateway in cluster {cluster} serves it",
        )
    if fact.envoys == 0:
        return (
            False,
            GatewayReason.PENDING,
            f"no Envoy of the Gateway in cluster {cluster} is connected to the hub",
        )
    return (
        False,
        GatewayReason.PENDING,
        f"waiting for {fact.envoys} Envoy(s) of the Gateway in cluster {cluster} to apply "
        f"generation "
        f"{gateway.generation}",
    )


def _listener_status(state: ListenerState, programmed: bool) -> ListenerStatus:
    if state.unaccepted:
        reason, message = state.unaccepted[0]
        accepted = condition(ListenerCondition.ACCEPTED, False, reason, message)
    elif state.conflict is not None:
        # Gateway API: no indistinct listener is accepted, neither side wins.
        reason, message = state.conflict
        accepted = condition(ListenerCondition.ACCEPTED, False, reason, f"conflicted: {message}")
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
            "waiting for the Gateway's Envoys",
        )
    return ListenerStatus(
        name=state.listener.name,
        attached_routes=state.attached_routes,
        supported_kinds=state.supported_kinds,
        conditions=(accepted, resolved, conflicted, listener_programmed),
    )
