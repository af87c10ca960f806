"""Route attachment: the listeners a route's parentRef attaches it to, and its ``Accepted``.

Called by :func:`federation.translate.gateway.resolve` for every parentRef that names one
of our Gateways. Gateway API decides attachment by the listeners the parentRef selects
(``sectionName``, ``port``), their ``allowedRoutes`` (kinds, namespaces) and hostnames
alone, never by a listener's own conditions: a route attached to a listener whose
certificate does not resolve, or that conflicts with another, is ``Accepted`` and counted
in that listener's ``attachedRoutes``, though the listener serves nothing (its
``Programmed`` says so, and the route's message names it).

One rule more, GRPCRoute's: an HTTPRoute and a GRPCRoute cannot both attach to one
listener with hostnames that intersect, or one hostname would have two protocols' routes.
The older (``creationTimestamp``, then namespace and name; :func:`route_rank`) stays; the
newer does not attach to that listener, and when it attaches to none it is not
``Accepted`` (``HostnameConflict``). ``resolve`` attaches routes oldest first, so the
outcome depends on their age alone, never on the order they were listed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from federation.model.conditions import Condition
from federation.registry.gatewayapi import (
    GRPCRouteRecord,
    HTTPRouteRecord,
    LabelSelector,
    ParentReference,
)
from federation.translate.gateway.hostnames import overlap, served
from federation.translate.gateway.listeners import Attached, ListenerState
from federation.translate.gateway.matches import Precedence
from federation.translate.gateway.routes import CompiledRoute
from federation.translate.gateway.status import RouteCondition, RouteReason, condition
from federation.translate.ir import RouteIR

Route = HTTPRouteRecord | GRPCRouteRecord


def kind_of(route: Route) -> str:
    return "HTTPRoute" if isinstance(route, HTTPRouteRecord) else "GRPCRoute"


def route_rank(route: Route) -> tuple[bool, str, str, str, str]:
    """Oldest first (by creationTimestamp; none: last), then namespace and name."""
    return (not route.created, route.created, route.namespace, route.name, kind_of(route))


@dataclass(frozen=True)
class Attachment:
    """A parentRef's ``Accepted`` condition, and whether a listener that Envoy serves
    serves the route (then its backends are part of the Gateway's configuration)."""

    accepted: Condition
    served: bool


@dataclass(frozen=True)
class _Rival:
    """An older route of the other kind already attached to a listener."""

    listener: str
    other: Attached
    shared: tuple[str, ...]


#: What a route's IR becomes on one listener (its policies applied), given its key.
Adjust = Callable[[ListenerState, Precedence, RouteIR], RouteIR]


def attach(
    route: Route,
    ref: ParentReference,
    states: Sequence[ListenerState],
    compiled: CompiledRoute,
    adjust: Adjust | None = None,
) -> Attachment:
    """Attach the route to the listeners ``ref`` selects (``states``: its Gateway's);
    ``adjust`` makes each IR route what that listener serves."""
    kind = kind_of(route)
    selected = [
        s
        for s in states
        if (ref.section_name is None or s.listener.name == ref.section_name)
        and (ref.port is None or s.listener.port == ref.port)
    ]
    gateway = f"{states[0].gateway.namespace}/{states[0].gateway.name}"
    if not selected:
        return _refused(
            RouteReason.NO_MATCHING_PARENT,
            f"Gateway {gateway} has no listener"
            + (f" named {ref.section_name}" if ref.section_name else "")
            + (f" on port {ref.port}" if ref.port is not None else ""),
        )
    allowed = [s for s in selected if allows(s, kind, route)]
    if not allowed:
        return _refused(
            RouteReason.NOT_ALLOWED_BY_LISTENERS,
            f"no listener of Gateway {gateway} it selects allows {kind}s from namespace "
            f"{route.namespace}",
        )
    attached: list[ListenerState] = []
    rivals: list[_Rival] = []
    for state in allowed:
        hostnames = served(state.listener.hostname, route.spec.hostnames)
        if not hostnames:
            continue
        rival = _rival(state, kind, hostnames)
        if rival is not None:
            rivals.append(rival)
            continue
        attached.append(state)
        state.attached_routes += 1
        state.attached.append(Attached(kind, f"{route.namespace}/{route.name}", hostnames))
        if state.usable:
            entries = [
                (key, ir if adjust is None else adjust(state, key, ir))
                for key, ir in compiled.entries
            ]
            for hostname in hostnames:
                state.served.extend((hostname, key, ir) for key, ir in entries)
    if not attached and rivals:
        return _refused(RouteReason.HOSTNAME_CONFLICT, f"not attached: {_conflicts(rivals)}")
    if not attached:
        return _refused(
            RouteReason.NO_MATCHING_LISTENER_HOSTNAME,
            f"none of the route's hostnames {list(route.spec.hostnames)} matches a listener "
            f"of Gateway {gateway} it selects",
        )
    message = f"attached to {len(attached)} listener(s) of Gateway {gateway}"
    unserved = [s.listener.name for s in attached if not s.usable]
    if unserved:
        message += (
            f"; not served on listener(s) {', '.join(unserved)}, which cannot be served "
            "(see the Gateway's listener conditions)"
        )
    if rivals:
        message += f"; not attached {_conflicts(rivals)}"
    return Attachment(
        condition(RouteCondition.ACCEPTED, True, RouteReason.ACCEPTED, message),
        served=len(unserved) < len(attached),
    )


def _refused(reason: RouteReason, message: str) -> Attachment:
    return Attachment(condition(RouteCondition.ACCEPTED, False, reason, message), served=False)


def _rival(state: ListenerState, kind: str, hostnames: tuple[str, ...]) -> _Rival | None:
    """The first route of the other kind attached to ``state`` with a hostname in common
    (attached earlier, hence older), or None."""
    for other in state.attached:
        if other.kind != kind and (shared := overlap(other.hostnames, hostnames)):
            return _Rival(state.listener.name, other, shared)
    return None


def _conflicts(rivals: Sequence[_Rival]) -> str:
    where = "; ".join(
        f"on listener {r.listener}, the older {r.other.kind} {r.other.route} serves "
        f"{', '.join(r.shared)}"
        for r in rivals
    )
    return f"{where} (an HTTPRoute and a GRPCRoute cannot share a hostname on a listener)"


def allows(state: ListenerState, kind: str, route: Route) -> bool:
    """Whether the listener's ``allowedRoutes`` admit the route's kind and namespace."""
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
