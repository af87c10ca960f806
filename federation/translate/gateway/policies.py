"""BackendTrafficPolicies: what each one applies to, which one wins, and their statuses.

Called by :func:`federation.translate.gateway.resolve` for one member cluster, with Envoy
Gateway's attachment model, so that a team's policies mean here what they mean there:

* A policy targets (``targetRefs``, or the deprecated ``targetRef``) objects of its own
  namespace: a Gateway of our class, or one of its listeners (``sectionName``), an
  HTTPRoute or GRPCRoute, or one of its named rules; ``targetSelectors`` select whole
  Gateways or routes of its namespace by their labels. A target that does not exist, or is
  not ours, gives the policy no status entry for it (Envoy Gateway does the same).
* The most specific policy wins, whole: a route rule's, then the route's, then the
  listener's, then the Gateway's. Nothing is merged: a route's policy replaces its
  Gateway's for that route (``mergeType`` is not implemented, and refused).
* Two policies on the same target: the older (``creationTimestamp``, then namespace and
  name) applies; the other is ``Accepted=False`` with reason ``Conflicted``.
* A policy that sets a field this project does not implement, or a value it cannot serve,
  is ``Accepted=False`` with reason ``Invalid`` and a message naming the field. A
  BackendTrafficPolicy then applies nowhere: its routes are served as if it did not exist
  (the next less specific policy, or the defaults). A SecurityPolicy fails closed: its
  targets deny every request (403) until it is fixed, since serving them without the
  authentication or authorization it asks for would open them. Every other route is
  untouched either way.
* Status is written per ancestor, as Gateway API's policy status requires: a policy on a
  Gateway or listener reports that Gateway (with the listener as ``sectionName``); a
  policy on a route reports each of the route's parent Gateways that are ours. An accepted
  policy that more specific ones replace somewhere also has ``Overridden=True`` naming
  where. A policy on a ServiceImport reports that ServiceImport
  (:mod:`.service_policies`, which decides whether it applies).

A policy's settings are compiled once (:func:`compile_settings`) and applied to the IR
routes it covers (:meth:`PolicyBook.apply`): retries and timeouts on the route, the
consistent-hash key on the route, and its cluster settings on a copy of each backend's
cluster that only its routes use (:class:`~federation.translate.ir.PolicyClusterIR`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from federation.model.conditions import Condition
from federation.registry.gatewayapi import (
    GATEWAY_GROUP,
    GatewayRecord,
    LabelSelector,
    ParentReference,
)
from federation.registry.policies import (
    BackendTrafficPolicyRecord,
    ClientTrafficPolicyRecord,
    PolicyRecord,
    PolicyTargetReference,
    SecurityPolicyRecord,
)
from federation.translate.gateway.attach import Route, kind_of, selects
from federation.translate.gateway.client_settings import compile_client
from federation.translate.gateway.inputs import ClusterInputs, ObjectName
from federation.translate.gateway.listeners import ROUTE_KINDS
from federation.translate.gateway.policy_settings import (
    PolicyError,
    TrafficSettings,
    compile_settings,
    route_stat_name,
)
from federation.translate.gateway.security_settings import (
    DENY_ALL,
    SecuritySettings,
    apply_security,
    compile_security,
)
from federation.translate.gateway.service_policies import service_policies
from federation.translate.gateway.status import (
    PolicyAncestorStatus,
    PolicyCondition,
    PolicyReason,
    PolicyStatus,
    condition,
)
from federation.translate.ir import (
    ClientIR,
    ListenerIR,
    LocalClusterIR,
    PolicyClusterIR,
    RouteIR,
)

BACKEND_TRAFFIC_POLICY = "BackendTrafficPolicy"
SECURITY_POLICY = "SecurityPolicy"
CLIENT_TRAFFIC_POLICY = "ClientTrafficPolicy"
#: How Envoy Gateway's Overridden messages name ClientTrafficPolicies (they get their own).
CLIENT_LABEL = "clientTrafficPolic"

#: A kind's compiled settings, and its records.
S = TypeVar("S")
P = TypeVar("P", BackendTrafficPolicyRecord, SecurityPolicyRecord, ClientTrafficPolicyRecord)


# --- attachment -----------------------------------------------------------------------------

#: Where a policy attaches: (kind, namespace, name, sectionName or None), kind being
#: ``Gateway``, ``HTTPRoute`` or ``GRPCRoute``.
Scope = tuple[str, str, str, str | None]


def policy_rank(policy: PolicyRecord) -> tuple[bool, str, str, str]:
    """Oldest first (by creationTimestamp; none: last), then namespace and name."""
    return (not policy.created, policy.created, policy.namespace, policy.name)


@dataclass
class _Ancestors:
    """The status entries of one policy being built: ancestor -> conditions."""

    entries: dict[ParentReference, list[Condition]] = field(default_factory=dict)

    def add(self, refs: Iterable[ParentReference], cond: Condition) -> None:
        for ref in refs:
            held = self.entries.setdefault(ref, [])
            if any(c.type == cond.type for c in held):
                if cond.status == "False":  # a failure on one target outweighs success
                    held[:] = [c for c in held if c.type != cond.type] + [cond]
                continue
            held.append(cond)


def _gateway_ref(gateway: ObjectName, section: str | None = None) -> ParentReference:
    return ParentReference(
        name=gateway[1],
        group=GATEWAY_GROUP,
        kind="Gateway",
        namespace=gateway[0],
        section_name=section,
    )


def _accepted(ok: bool, reason: PolicyReason, message: str) -> Condition:
    return condition(PolicyCondition.ACCEPTED, ok, reason, message)


def _most_specific(
    claims: Mapping[Scope, S], gateway: ObjectName, listener: str, route: Route, rule: str | None
) -> S | None:
    """The claim that applies to ``rule`` of ``route`` on ``listener`` of ``gateway``:
    the rule's, the route's, the listener's or the Gateway's, the first there is."""
    kind = kind_of(route)
    scopes: list[Scope] = []
    if rule is not None:
        scopes.append((kind, route.namespace, route.name, rule))
    scopes += [
        (kind, route.namespace, route.name, None),
        ("Gateway", gateway[0], gateway[1], listener),
        ("Gateway", gateway[0], gateway[1], None),
    ]
    return next((claims[s] for s in scopes if s in claims), None)


@dataclass
class PolicyBook:
    """One cluster's policies, resolved: which applies where, their statuses, and the
    policy clusters that the routes BackendTrafficPolicies cover send to."""

    traffic: dict[Scope, TrafficSettings] = field(default_factory=dict)
    security: dict[Scope, SecuritySettings] = field(default_factory=dict)
    client: dict[Scope, ClientIR] = field(default_factory=dict)
    statuses: tuple[PolicyStatus, ...] = ()
    #: Gateway -> policy cluster name -> cluster, filled by :meth:`apply`.
    clusters: dict[ObjectName, dict[str, PolicyClusterIR]] = field(default_factory=dict)
    #: Gateway -> the local clusters of the external authorization services its routes
    #: use, by name; filled by :meth:`apply`.
    local_clusters: dict[ObjectName, dict[str, LocalClusterIR]] = field(default_factory=dict)

    def apply(
        self,
        gateway: ObjectName,
        listener: str,
        route: Route,
        rule: str | None,
        ir: RouteIR,
        http2: Mapping[str, bool],
    ) -> RouteIR:
        """``ir`` (of ``rule`` of ``route``, on ``listener`` of ``gateway``) with the
        policies that cover it; ``http2``: each backend cluster's upstream protocol,
        which its policy cluster keeps."""
        traffic = _most_specific(self.traffic, gateway, listener, route, rule)
        if traffic is not None:
            ir = self._traffic(gateway, traffic, ir, http2)
        security = _most_specific(self.security, gateway, listener, route, rule)
        if security is not None:
            ir = apply_security(security, ir)
            local = security.ext_auth_cluster
            if local is not None:
                self.local_clusters.setdefault(gateway, {})[local.name] = local
        return ir

    def _traffic(
        self,
        gateway: ObjectName,
        settings: TrafficSettings,
        ir: RouteIR,
        http2: Mapping[str, bool],
    ) -> RouteIR:
        """``ir`` with ``settings``; the route's own retry and timeouts stay where it sets
        them (they are more specific)."""
        if not ir.backends:
            return ir  # a redirect or a fixed status: nothing is sent upstream
        changes: dict[str, object] = {}
        if settings.retry is not None and ir.retry is None:
            changes["retry"] = settings.retry
        if settings.request_timeout_ms is not None and ir.timeout_ms is None:
            changes["timeout_ms"] = settings.request_timeout_ms
        if settings.per_try_timeout_ms is not None and ir.backend_timeout_ms is None:
            changes["backend_timeout_ms"] = settings.per_try_timeout_ms
        if settings.hash_policy is not None:
            changes["hash_policy"] = settings.hash_policy
        if settings.fault is not None:
            changes["fault"] = settings.fault
        if settings.rate_limit is not None:
            changes["rate_limit"] = settings.rate_limit
        if settings.route_stat_name is not None:
            kind, namespace, name = ir.name.split("/")[:3]
            changes["stat_name"] = route_stat_name(settings.route_stat_name, kind, namespace, name)
        if settings.cluster is not None:
            own = self.clusters.setdefault(gateway, {})
            backends = []
            for b in ir.backends:
                if b.cluster is None:
                    backends.append(b)
                    continue
                name = f"policy/{settings.policy}/{b.cluster}"
                own[name] = PolicyClusterIR(
                    name, b.cluster, http2.get(b.cluster, False), settings.cluster
                )
                backends.append(dataclasses.replace(b, cluster=name))
            changes["backends"] = tuple(backends)
        return dataclasses.replace(ir, **changes) if changes else ir  # type: ignore[arg-type]

    def with_clients(
        self, gateway: GatewayRecord, listeners: tuple[ListenerIR, ...]
    ) -> tuple[ListenerIR, ...]:
        """``listeners`` (the Envoy listeners of ``gateway``, one per port) with the
        ClientTrafficPolicy of each: its Gateway listener's, when it is the only one on
        the port, else the Gateway's."""
        out = []
        for ir in listeners:
            on_port = [lst.name for lst in gateway.spec.listeners if lst.port == ir.port]
            scopes: list[Scope] = [("Gateway", gateway.namespace, gateway.name, None)]
            if len(on_port) == 1:
                scopes.insert(0, ("Gateway", gateway.namespace, gateway.name, on_port[0]))
            client = next((self.client[s] for s in scopes if s in self.client), None)
            out.append(ir if client is None else dataclasses.replace(ir, client=client))
        return tuple(out)

    def policy_clusters(self, gateway: ObjectName) -> tuple[PolicyClusterIR, ...]:
        own = self.clusters.get(gateway, {})
        return tuple(own[name] for name in sorted(own))


@dataclass
class _Targets:
    """The cluster's Gateways and routes, as policies target them."""

    gateways: dict[ObjectName, GatewayRecord]
    routes: dict[tuple[str, str, str], Route]
    every: list[Route]

    @classmethod
    def of(cls, inputs: ClusterInputs) -> _Targets:
        every: list[Route] = [*inputs.http_routes, *inputs.grpc_routes]
        return cls(
            {(g.namespace, g.name): g for g in inputs.gateways},
            {(kind_of(r), r.namespace, r.name): r for r in every},
            every,
        )


#: One policy being resolved: its record, its status entries, the scopes it claimed.
_Building = tuple[PolicyRecord, "_Ancestors", list[Scope]]


def _attach(
    kind: str,
    policies: Iterable[P],
    compile_policy: Callable[[P], S],
    targets: _Targets,
    claims: dict[Scope, S],
    fail_closed: S | None = None,
    target_kinds: tuple[str, ...] = ("Gateway", *ROUTE_KINDS),
    refuse: Callable[[Scope], str | None] | None = None,
) -> list[_Building]:
    """Attach every policy of one kind (its scopes into ``claims``, oldest first).

    An invalid policy applies nowhere, unless ``fail_closed`` is given: then it claims
    its targets with those settings instead (a security policy that cannot be served
    must not leave its routes open). Only targets of ``target_kinds`` count; ``refuse``
    says why a scope cannot be claimed (``Invalid``), if it cannot."""
    owners: dict[Scope, str] = {}
    building: list[_Building] = []
    for policy in sorted(policies, key=policy_rank):
        ancestors = _Ancestors()
        claimed: list[Scope] = []
        building.append((policy, ancestors, claimed))
        try:
            settings: S | None = compile_policy(policy)
            invalid = ""
        except PolicyError as err:
            settings, invalid = None, str(err)
        for target in _targets(policy, targets.gateways, targets.routes):
            found = _target(policy, target, targets.gateways, targets.routes)
            if found is None:
                continue  # not ours, or not there: no ancestor to report on
            scope, refs, missing = found
            if scope[0] not in target_kinds:
                continue
            refused = None if refuse is None or missing else refuse(scope)
            if refused is not None:
                ancestors.add(refs, _accepted(False, PolicyReason.INVALID, refused))
            elif missing:
                ancestors.add(refs, _accepted(False, PolicyReason.TARGET_NOT_FOUND, missing))
            elif settings is None and (fail_closed is None or scope in owners):
                ancestors.add(refs, _accepted(False, PolicyReason.INVALID, invalid))
            elif settings is None:
                owners[scope] = f"{policy.namespace}/{policy.name}"
                claims[scope] = fail_closed  # type: ignore[assignment]
                claimed.append(scope)
                message = f"{invalid}; until it is fixed, its targets deny every request (403)"
                ancestors.add(refs, _accepted(False, PolicyReason.INVALID, message))
            elif scope in owners:
                message = (
                    f"Unable to target {_scope_name(scope)}, another {kind} "
                    f"({owners[scope]}) has already attached to it"
                )
                ancestors.add(refs, _accepted(False, PolicyReason.CONFLICTED, message))
            else:
                owners[scope] = f"{policy.namespace}/{policy.name}"
                claims[scope] = settings
                claimed.append(scope)
                ancestors.add(
                    refs, _accepted(True, PolicyReason.ACCEPTED, "Policy has been accepted.")
                )
    return building


def _statuses(
    kind: str,
    label: str,
    building: list[_Building],
    claims: Mapping[Scope, object],
    routes: list[Route],
) -> list[PolicyStatus]:
    """The statuses of one kind's policies, ``Overridden`` where more specific ones of
    the same kind (``label``: how Envoy Gateway names them) replace them."""
    out = []
    index = _ClaimIndex.of(claims)
    for policy, ancestors, claimed in building:
        overridden = _overridden(claimed, index, routes, label)
        if overridden:
            cond = condition(PolicyCondition.OVERRIDDEN, True, PolicyReason.OVERRIDDEN, overridden)
            ancestors.add(list(ancestors.entries), cond)
        out.append(
            PolicyStatus(
                kind=kind,
                namespace=policy.namespace,
                name=policy.name,
                generation=policy.generation,
                ancestors=tuple(
                    PolicyAncestorStatus(ref, tuple(conds))
                    for ref, conds in sorted(ancestors.entries.items(), key=_ref_order)
                ),
            )
        )
    return out


def resolve_policies(inputs: ClusterInputs) -> PolicyBook:
    """Attach every BackendTrafficPolicy and SecurityPolicy of the cluster; see the
    module docstring."""
    targets = _Targets.of(inputs)
    book = PolicyBook()
    traffic = _attach(
        BACKEND_TRAFFIC_POLICY, inputs.policies, compile_settings, targets, book.traffic
    )
    on_services = service_policies((*inputs.policies, *inputs.other_policies), inputs.imports)
    for policy, ancestors, _ in traffic:
        if isinstance(policy, BackendTrafficPolicyRecord):
            for ref, cond in on_services.ancestors(policy).items():
                ancestors.add([ref], cond)
    security = _attach(
        SECURITY_POLICY,
        inputs.security_policies,
        lambda policy: compile_security(policy, inputs),
        targets,
        book.security,
        fail_closed=DENY_ALL,
    )
    client = _attach(
        CLIENT_TRAFFIC_POLICY,
        inputs.client_policies,
        compile_client,
        targets,
        book.client,
        target_kinds=("Gateway",),
        refuse=lambda scope: _shared_port(targets.gateways, scope),
    )
    statuses = [
        *_statuses(
            BACKEND_TRAFFIC_POLICY, "backendTrafficPolic", traffic, book.traffic, targets.every
        ),
        *_statuses(SECURITY_POLICY, "securityPolic", security, book.security, targets.every),
        *_statuses(CLIENT_TRAFFIC_POLICY, CLIENT_LABEL, client, book.client, targets.every),
    ]
    book.statuses = tuple(sorted(statuses, key=lambda s: (s.namespace, s.name, s.kind)))
    return book


def _shared_port(gateways: Mapping[ObjectName, GatewayRecord], scope: Scope) -> str | None:
    """Why a ClientTrafficPolicy cannot claim listener ``scope``: it shares its port (one
    Envoy listener) with other listeners, whose clients it would change too."""
    _, namespace, name, section = scope
    gateway = gateways.get((namespace, name))
    if gateway is None or section is None:
        return None
    port = next((lst.port for lst in gateway.spec.listeners if lst.name == section), None)
    others = [
        lst.name for lst in gateway.spec.listeners if lst.port == port and lst.name != section
    ]
    if not others:
        return None
    return (
        f"ClientTrafficPolicy is being applied to listener {section}, which shares port {port} "
        f"with listeners {', '.join(others)} (one Envoy listener); target the whole Gateway"
    )


def _ref_order(item: tuple[ParentReference, list[Condition]]) -> tuple[str, str, str]:
    ref = item[0]
    return ref.namespace or "", ref.name, ref.section_name or ""


def _scope_name(scope: Scope) -> str:
    kind, namespace, name, section = scope
    if kind == "Gateway":
        if section is not None:
            return f"Listener {namespace}/{name}/{section}"
        return f"Gateway {namespace}/{name}"
    if section is not None:
        return f"RouteRule {namespace}/{name}/{section}"
    return f"{kind} {namespace}/{name}"


def _targets(
    policy: PolicyRecord,
    gateways: Mapping[ObjectName, GatewayRecord],
    routes: Mapping[tuple[str, str, str], Route],
) -> list[PolicyTargetReference]:
    """What the policy targets, as Envoy Gateway composes it: the objects its
    ``targetSelectors`` select in its namespace (oldest first), then its ``targetRefs``
    not among them."""
    selected: list[tuple[tuple[bool, str], PolicyTargetReference]] = []
    candidates: list[tuple[str, GatewayRecord | Route]] = [
        ("Gateway", g) for g in gateways.values()
    ] + [(kind, r) for (kind, _, _), r in routes.items()]
    for selector in policy.spec.target_selectors:
        if (selector.group or GATEWAY_GROUP) != GATEWAY_GROUP:
            continue
        labels = LabelSelector(selector.match_labels, selector.match_expressions)
        for kind, obj in candidates:
            if (
                kind == selector.kind
                and obj.namespace == policy.namespace
                and selects(labels, dict(obj.labels))
            ):
                ref = PolicyTargetReference(GATEWAY_GROUP, kind, obj.name)
                selected.append(((not obj.created, obj.created), ref))
    out = [ref for _, ref in sorted(selected, key=lambda item: (item[0], item[1].name))]
    return list(dict.fromkeys([*out, *policy.spec.targets()]))


def _target(
    policy: PolicyRecord,
    target: PolicyTargetReference,
    gateways: Mapping[ObjectName, GatewayRecord],
    routes: Mapping[tuple[str, str, str], Route],
) -> tuple[Scope, list[ParentReference], str] | None:
    """The scope of ``target``, the ancestors to report on, and why its ``sectionName``
    is not found ("" when it is); None when the target is not one of ours."""
    if target.group != GATEWAY_GROUP:
        return None
    key = (policy.namespace, target.name)
    section = target.section_name
    scope: Scope = (target.kind, policy.namespace, target.name, section)
    if target.kind == "Gateway":
        gateway = gateways.get(key)
        if gateway is None:
            return None
        missing = ""
        if section is not None and all(lst.name != section for lst in gateway.spec.listeners):
            missing = f"No section name {section} found for Gateway {key[0]}/{key[1]}"
        return scope, [_gateway_ref(key, section)], missing
    if target.kind not in ROUTE_KINDS:
        return None
    route = routes.get((target.kind, policy.namespace, target.name))
    if route is None:
        return None
    refs = _route_ancestors(route, gateways)
    if not refs:
        return None
    missing = ""
    rules: Sequence[object] = route.spec.rules
    if section is not None and all(getattr(r, "name", None) != section for r in rules):
        missing = f"No section name {section} found for {target.kind} {key[0]}/{key[1]}"
    return scope, refs, missing


def _route_ancestors(
    route: Route, gateways: Mapping[ObjectName, GatewayRecord]
) -> list[ParentReference]:
    """The route's parent Gateways that are ours, as its parentRefs name them."""
    out = []
    for ref in route.spec.parent_refs:
        if (ref.group or GATEWAY_GROUP, ref.kind or "Gateway") != (GATEWAY_GROUP, "Gateway"):
            continue
        key = (ref.namespace or route.namespace, ref.name)
        if key in gateways:
            out.append(_gateway_ref(key, ref.section_name))
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class _ClaimIndex:
    """The claimed scopes, indexed for :func:`_overridden`: the sections claimed of each
    Gateway or route, and which routes have a claim of their own."""

    sections: dict[tuple[str, str, str], set[str]]
    routes: set[tuple[str, str, str]]

    @classmethod
    def of(cls, claims: Iterable[Scope]) -> _ClaimIndex:
        sections: dict[tuple[str, str, str], set[str]] = {}
        routes = set()
        for kind, namespace, name, section in claims:
            if section is not None:
                sections.setdefault((kind, namespace, name), set()).add(section)
            if kind != "Gateway":
                routes.add((kind, namespace, name))
        return cls(sections, routes)


def _overridden(
    claimed: Sequence[Scope], index: _ClaimIndex, routes: Iterable[Route], label: str
) -> str:
    """Where more specific policies replace the policy that claimed ``claimed``, as
    Envoy Gateway words it; "" when nowhere."""
    listeners: set[str] = set()
    route_names: set[str] = set()
    rules: set[str] = set()
    for kind, namespace, name, section in claimed:
        if kind != "Gateway":
            if section is None:
                rules |= index.sections.get((kind, namespace, name), set())
            continue
        if section is None:
            listeners.update(
                f"{namespace}/{name}/{s}"
                for s in index.sections.get(("Gateway", namespace, name), set())
            )
        for route in routes:
            if (kind_of(route), route.namespace, route.name) in index.routes and any(
                (ref.namespace or route.namespace, ref.name) == (namespace, name)
                and (section is None or ref.section_name == section)
                for ref in route.spec.parent_refs
            ):
                route_names.add(f"{route.namespace}/{route.name}")
    if rules:
        return (
            f"This policy is being overridden by other {label}y for these route "
            f"rules: [{' '.join(sorted(rules))}]"
        )
    if label == CLIENT_LABEL:  # Envoy Gateway's own wording: bare listener names
        if not listeners:
            return ""
        sections = sorted({name.rpartition("/")[2] for name in listeners})
        return (
            "There are existing ClientTrafficPolicies that are overriding these sections "
            f"[{' '.join(sections)}]"
        )
    parts = []
    if listeners:
        parts.append(f"these gateway listeners: [{' '.join(sorted(listeners))}]")
    if route_names:
        parts.append(f"these routes: [{' '.join(sorted(route_names))}]")
    if not parts:
        return ""
    prefix = f"This policy is being overridden by other {label}ies for "
    return prefix + " and ".join(parts)
