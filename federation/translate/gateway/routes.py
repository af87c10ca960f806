"""HTTPRoute and GRPCRoute rules compiled into IR routes, with what went wrong.

Called by :func:`federation.translate.gateway.resolve` once per route. Each match of each
rule becomes one :class:`~federation.translate.ir.RouteIR` with its precedence key; the
route's backend problems become its ``ResolvedRefs`` condition. What answers a request:

* a ``RequestRedirect`` filter: the redirect;
* otherwise the rule's backends, by weight; a backend that cannot be resolved keeps its
  weight and its share of the requests is answered 500 (Gateway API's rule for invalid
  backends; 503 for a GRPCRoute, which gRPC clients read as UNAVAILABLE), and when no
  backend with a weight above zero resolves, every request is;
* a rule without backends answers the same.

Routes inherit the data plane's safe defaults (retries of failures before the request
was sent, no timeout unless the route sets one); ``timeouts.request`` bounds the whole
request, ``timeouts.backendRequest`` each attempt, and an HTTPRoute rule's ``retry``
adds the status codes to retry, the number of retries and the back-off.

A rule setting that is not implemented is refused by name, never ignored: a rule with
``sessionPersistence`` would otherwise silently lose its affinity. So is every value the
data plane would refuse (:mod:`.envoy_limits`), which would make it reject the route
configuration of the whole listener and so freeze every later change to the Gateway;
the reason names the field within the rule (``matches[1].path.value``,
``backendRefs[0].weight``). A route hostname that cannot be a virtual host's domain
refuses every rule, so that the route is not Accepted. See :func:`compile_route` for what
a refused rule answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from federation.registry.gatewayapi import (
    GRPCRouteMatch,
    GRPCRouteRecord,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRecord,
    RequestMirror,
)
from federation.translate.gateway import envoy_limits
from federation.translate.gateway.envoy_limits import shown
from federation.translate.gateway.filters import (
    FilterError,
    RuleFilters,
    backend_filters,
    retry,
    rule_filters,
    timeouts,
)
from federation.translate.gateway.inputs import ClusterInputs
from federation.translate.gateway.matches import (
    MatchError,
    Precedence,
    Specificity,
    grpc_match,
    grpc_specificity,
    http_match,
    http_specificity,
)
from federation.translate.gateway.matches import precedence as precedence_of
from federation.translate.gateway.refs import Backend, resolve_backend
from federation.translate.gateway.status import RouteReason
from federation.translate.ir import (
    BackendIR,
    LocalClusterIR,
    MatchIR,
    MirrorIR,
    RetryIR,
    RouteIR,
)

#: The status answered for a share of requests that has no usable backend, by route kind.
INVALID_BACKEND_STATUS = {"HTTPRoute": 500, "GRPCRoute": 503}


@dataclass
class CompiledRoute:
    """A route's IR routes (unsorted), its backend problems, the local clusters used, and
    the rules that could not be served (index, why)."""

    kind: str
    entries: list[tuple[Precedence, RouteIR]] = field(default_factory=list)
    problems: list[tuple[RouteReason, str]] = field(default_factory=list)
    local_clusters: dict[str, LocalClusterIR] = field(default_factory=dict)
    invalid_rules: list[tuple[int, str]] = field(default_factory=list)
    rules: int = 0
    #: Whether each backend cluster the routes send to speaks HTTP/2 upstream.
    http2: dict[str, bool] = field(default_factory=dict)


def compile_route(inputs: ClusterInputs, route: HTTPRouteRecord | GRPCRouteRecord) -> CompiledRoute:
    """Compile every rule. A rule that uses a value this implementation cannot serve is
    left out when its matches are what is wrong (nothing could be matched), and answers
    every request it matches with the invalid-backend status when a filter, timeout,
    retry or other rule setting is (it must never be skipped silently, and requests it
    claims must not fall through to another rule); it is listed in ``invalid_rules``.
    A hostname that cannot be a domain lists every rule, with the same reason."""
    kind = "HTTPRoute" if isinstance(route, HTTPRouteRecord) else "GRPCRoute"
    out = CompiledRoute(kind)
    rules: tuple[Any, ...] = route.spec.rules
    out.rules = len(rules)
    bad_hostname = _hostnames_problem(route.spec.hostnames)
    if bad_hostname is not None:
        out.invalid_rules.extend((i, bad_hostname) for i in range(len(rules)))
        return out
    for i, rule in enumerate(rules):
        try:
            matches = _matches(route, rule.matches)
        except MatchError as err:
            out.invalid_rules.append((i, str(err)))
            continue
        try:
            _compile_rule(inputs, out, route, i, rule, matches)
        except FilterError as err:
            out.invalid_rules.append((i, str(err)))
            for j, (match, specificity) in enumerate(matches):
                name = f"{kind}/{route.namespace}/{route.name}/rule/{i}/match/{j}"
                status = INVALID_BACKEND_STATUS[kind]
                ir = RouteIR(name=name, match=match, direct_status=status, invalid_status=status)
                out.entries.append((_key(route, kind, specificity, i, j), ir))
    return out


def _hostnames_problem(hostnames: tuple[str, ...]) -> str | None:
    """Why one of a route's hostnames cannot be a virtual host's domain."""
    for i, name in enumerate(hostnames):
        problem = envoy_limits.hostname(name)
        if problem is not None:
            return f"hostnames[{i}] {shown(name)}: {problem}"
    return None


def _key(
    route: HTTPRouteRecord | GRPCRouteRecord,
    kind: str,
    specificity: Specificity,
    rule: int,
    index: int,
) -> Precedence:
    return precedence_of(
        specificity,
        created=route.created,
        kind=kind,
        namespace=route.namespace,
        name=route.name,
        rule=rule,
        index=index,
    )


def _compile_rule(
    inputs: ClusterInputs,
    out: CompiledRoute,
    route: HTTPRouteRecord | GRPCRouteRecord,
    i: int,
    rule: Any,
    matches: list[tuple[MatchIR, Specificity]],
) -> None:
    kind = out.kind
    _refuse_unimplemented(rule)
    http = isinstance(route, HTTPRouteRecord)
    request_ms, backend_ms = timeouts(rule.timeouts) if http else (None, None)
    retry_ir = retry(rule.retry) if http else None
    backends = tuple(
        _backend(inputs, out, route, ref, f"backendRefs[{b}]")
        for b, ref in enumerate(rule.backend_refs)
    )
    _check_weights(backends)
    filters = tuple(_as_http_filter(f) for f in rule.filters)
    entries = []
    for j, (match, specificity) in enumerate(matches):
        prefix = match.path.value if match.path.type == "PathPrefix" else None
        checked = rule_filters(filters, prefix)
        name = f"{kind}/{route.namespace}/{route.name}/rule/{i}/match/{j}"
        ir = _route_ir(
            inputs, out, route, name, match, backends, checked, (request_ms, backend_ms), retry_ir
        )
        entries.append((_key(route, kind, specificity, i, j), ir))
    out.entries.extend(entries)


def _refuse_unimplemented(rule: Any) -> None:
    """Rule settings this implementation does not serve, refused by their field name."""
    if rule.session_persistence is not None:
        raise FilterError("sessionPersistence is not supported")


def _matches(
    route: HTTPRouteRecord | GRPCRouteRecord, matches: tuple[Any, ...]
) -> list[tuple[MatchIR, Specificity]]:
    """Each match's IR and rank (the rank of a gRPC match needs its service and method,
    which its IR folds into a path)."""
    out = []
    if isinstance(route, HTTPRouteRecord):
        for j, m in enumerate(matches or (HTTPRouteMatch(),)):
            ir = _in_match(j, http_match, m)
            out.append((ir, http_specificity(ir)))
    else:
        for j, m in enumerate(matches or (GRPCRouteMatch(),)):
            ir = _in_match(j, grpc_match, m)
            out.append((ir, grpc_specificity(m, ir)))
    return out


def _in_match(j: int, compile_match: Any, match: Any) -> MatchIR:
    """``compile_match(match)``, a refusal naming the match (``matches[j].``)."""
    try:
        ir: MatchIR = compile_match(match)
    except MatchError as err:
        raise MatchError(f"matches[{j}].{err}") from err
    return ir


def _as_http_filter(f: Any) -> HTTPRouteFilter:
    if isinstance(f, HTTPRouteFilter):
        return f
    return HTTPRouteFilter(
        type=f.type,
        request_header_modifier=f.request_header_modifier,
        response_header_modifier=f.response_header_modifier,
        request_mirror=f.request_mirror,
        extension_ref=f.extension_ref,
    )


def _resolve(
    inputs: ClusterInputs, out: CompiledRoute, route: HTTPRouteRecord | GRPCRouteRecord, ref: Any
) -> Backend:
    backend = resolve_backend(
        inputs,
        route_kind=out.kind,
        route_namespace=route.namespace,
        group=ref.group,
        kind=ref.kind,
        namespace=ref.namespace,
        name=ref.name,
        port=ref.port,
    )
    if backend.problem is not None:
        out.problems.append((backend.problem, backend.message))
        return backend
    if backend.cluster is None or backend.port is None:
        return backend
    out.http2[backend.cluster] = backend.http2
    local = backend.local_cluster(inputs.cluster)
    if local is not None:
        out.local_clusters[backend.cluster] = local
    return backend


def _backend(
    inputs: ClusterInputs,
    out: CompiledRoute,
    route: HTTPRouteRecord | GRPCRouteRecord,
    ref: Any,
    field: str,
) -> BackendIR:
    """One backendRef; ``field`` names it (``backendRefs[0]``) in a refusal."""
    backend = _resolve(inputs, out, route, ref)
    try:
        request, response = backend_filters(tuple(_as_http_filter(f) for f in ref.filters))
    except FilterError as err:
        raise FilterError(f"{field}.{err}") from err
    weight = 1 if ref.weight is None else ref.weight
    problem = envoy_limits.in_range(weight, 0, envoy_limits.MAX_WEIGHT)
    if problem is not None:
        raise FilterError(f"{field}.weight {weight}: {problem}")
    return BackendIR(weight, backend.cluster, request, response)


def _check_weights(backends: tuple[BackendIR, ...]) -> None:
    """Envoy refuses weights that add up to more than 32 bits hold."""
    total = sum(b.weight for b in backends)
    if total > envoy_limits.MAX_UINT32:
        raise FilterError(
            f"backendRefs: the weights add up to {total}, more than {envoy_limits.MAX_UINT32}"
        )


def _mirror(
    inputs: ClusterInputs,
    out: CompiledRoute,
    route: HTTPRouteRecord | GRPCRouteRecord,
    mirror: RequestMirror,
) -> MirrorIR | None:
    backend = _resolve(inputs, out, route, mirror.backend_ref)
    if backend.cluster is None:
        return None  # reported in ResolvedRefs; no copies are sent
    if mirror.fraction is not None:
        denominator = 100 if mirror.fraction.denominator is None else mirror.fraction.denominator
        return MirrorIR(backend.cluster, mirror.fraction.numerator, denominator)
    percent = 100 if mirror.percent is None else mirror.percent
    return MirrorIR(backend.cluster, percent, 100)


def _route_ir(
    inputs: ClusterInputs,
    out: CompiledRoute,
    route: HTTPRouteRecord | GRPCRouteRecord,
    name: str,
    match: MatchIR,
    backends: tuple[BackendIR, ...],
    filters: RuleFilters,
    timeouts_ms: tuple[int | None, int | None],
    retry_ir: RetryIR | None,
) -> RouteIR:
    mirrors = tuple(
        m
        for f in filters.mirrors
        if f.request_mirror is not None
        and (m := _mirror(inputs, out, route, f.request_mirror)) is not None
    )
    invalid = INVALID_BACKEND_STATUS[out.kind]
    common: dict[str, Any] = {
        "name": name,
        "match": match,
        "request_headers": filters.request_headers,
        "response_headers": filters.response_headers,
        "cors": filters.cors,
        "invalid_status": invalid,
    }
    if filters.redirect is not None:
        return RouteIR(redirect=filters.redirect, **common)
    weighted = tuple(b for b in backends if b.weight > 0)
    if not any(b.cluster is not None for b in weighted):
        return RouteIR(direct_status=invalid, **common)
    return RouteIR(
        backends=weighted,
        rewrite_hostname=filters.rewrite_hostname,
        rewrite_path=filters.rewrite_path,
        mirrors=mirrors,
        timeout_ms=timeouts_ms[0],
        backend_timeout_ms=timeouts_ms[1],
        retry=retry_ir,
        **common,
    )
