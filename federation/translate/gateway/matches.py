"""Route matches: validation, their IR, and Gateway API's match precedence.

Called by the route stage. HTTPRoute matches keep their meaning: ``PathPrefix`` matches
whole path segments (``/api`` matches ``/api`` and ``/api/x``, never ``/apix``; a
trailing slash is ignored). A GRPCRoute method match becomes a path match on
``/<service>/<method>``: both given is an exact path, a service alone the plain prefix
``/<service>/``, a method alone (or a regular expression) a regular expression. No
method match matches every request.

Regular expressions run in Envoy's RE2, which has no backreferences or lookaround, and
Envoy refuses a compiled program larger than
:data:`~federation.translate.gateway.envoy_limits.MAX_PROGRAM_SIZE`. Every expression is
compiled here with RE2 itself and refused (``UnsupportedValue``) when Envoy would refuse
it, since a single one would make Envoy reject the whole route configuration of the
listener; so are the expressions a gRPC method match becomes, which grow with its names,
and every other value of a match Envoy refuses (:mod:`.envoy_limits`): a path with ``?``
or ``#``, a header or query parameter name that is not an HTTP token. A refusal names the
field within the match (``headers[2].name``), counting the entries as written.

Within one match, only the first header match of a name counts (names compared without
case) and only the first query parameter match of a name (compared exactly): Gateway API
says later entries with an equivalent name must be ignored, so they are dropped before
anything else looks at them, validation and precedence included.

Precedence, which orders the routes of one virtual host (Envoy takes the first match),
is Gateway API's, and differs by kind. HTTPRoute: an exact path first, then the longest
prefix, then a method match, then more header matches, then more query parameter
matches. GRPCRoute: the longest service, then the longest method (an absent one counts
as no characters), then more header matches. Ties go to the oldest route, then
namespace and name, then rule and match order. Gateway API leaves regular expressions to
the implementation: here one ranks by the length of its pattern, after a plain value of
the same length, as Contour does, so that a catch-all ``/`` never hides it (for gRPC,
that tie is broken only after the header matches, which GRPCRoute ranks).

A gRPC match ranks among HTTP paths (which only matters when an HTTPRoute and a
GRPCRoute share a hostname) as the prefix ``/<service>/`` would, or as ``/`` without a
service, so that an HTTPRoute's catch-all does not hide a GRPCRoute's methods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from federation.registry.gatewayapi import (
    GRPCMethodMatch,
    GRPCRouteMatch,
    HTTPRouteMatch,
    ValueMatch,
)
from federation.translate.gateway import envoy_limits
from federation.translate.gateway.envoy_limits import shown
from federation.translate.ir import MatchIR, PathMatchIR, ValueMatchIR

PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
VALUE_TYPES = ("Exact", "RegularExpression")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
#: A plain string prefix (gRPC service matches); HTTPRoute prefixes are ``PathPrefix``.
PREFIX = "Prefix"

_PATH_RANK = {"Exact": 0, "PathPrefix": 1, PREFIX: 1, "RegularExpression": 1}


class MatchError(ValueError):
    """A match this implementation cannot serve: ``UnsupportedValue``."""


def check_regex(value: str, what: str) -> None:
    """Refuse an expression that Envoy's RE2 would refuse; ``what`` names its field."""
    problem = envoy_limits.regex(value)
    if problem is not None:
        raise MatchError(f"{what} {shown(value)}: {problem}")


def _check(problem: str | None, what: str, value: str) -> None:
    if problem is not None:
        raise MatchError(f"{what} {shown(value)}: {problem}")


def _first_of_each_name(
    matches: tuple[ValueMatch, ...], *, ignore_case: bool
) -> list[tuple[int, ValueMatch]]:
    """The first match of each name with its index as written, in order: Gateway API
    ignores later ones."""
    seen: set[str] = set()
    out = []
    for i, m in enumerate(matches):
        key = m.name.lower() if ignore_case else m.name
        if key not in seen:
            seen.add(key)
            out.append((i, m))
    return out


def _headers(matches: tuple[ValueMatch, ...]) -> tuple[ValueMatchIR, ...]:
    kept = _first_of_each_name(matches, ignore_case=True)
    for i, m in kept:
        _check(envoy_limits.header_name(m.name), f"headers[{i}].name", m.name)
    return _values(kept, "headers")


def _query_params(matches: tuple[ValueMatch, ...]) -> tuple[ValueMatchIR, ...]:
    kept = _first_of_each_name(matches, ignore_case=False)
    for i, m in kept:
        _check(envoy_limits.query_name(m.name), f"queryParams[{i}].name", m.name)
    return _values(kept, "queryParams")


def _values(matches: list[tuple[int, ValueMatch]], field: str) -> tuple[ValueMatchIR, ...]:
    out = []
    for i, m in matches:
        if m.type not in VALUE_TYPES:
            raise MatchError(f"{field}[{i}].type {m.type} is not supported")
        if m.type == "RegularExpression":
            check_regex(m.value, f"{field}[{i}].value")
        out.append(ValueMatchIR(m.name, m.value, m.type))
    return tuple(out)


def http_match(match: HTTPRouteMatch) -> MatchIR:
    """One HTTPRoute match; a refusal names its field within the match (``path.value``)."""
    path = match.path
    path_type = "PathPrefix" if path is None else path.type
    value = "/" if path is None else path.value
    if path_type not in PATH_TYPES:
        raise MatchError(f"path.type {path_type} is not supported")
    if path_type == "RegularExpression":
        check_regex(value, "path.value")
    else:
        _check(envoy_limits.match_path(value), "path.value", value)
    if path_type == "PathPrefix" and len(value) > 1:
        value = value.rstrip("/") or "/"
    if match.method is not None and match.method not in METHODS:
        raise MatchError(f"method {match.method} is not supported")
    return MatchIR(
        path=PathMatchIR(path_type, value),
        headers=_headers(match.headers),
        query_params=_query_params(match.query_params),
        method=match.method,
    )


def grpc_match(match: GRPCRouteMatch) -> MatchIR:
    """One GRPCRoute match; a refusal names its field within the match
    (``method.method``, or ``method`` for the expression service and method make)."""
    headers = _headers(match.headers)
    method = match.method
    if method is None or (method.service is None and method.method is None):
        return MatchIR(PathMatchIR(PREFIX, "/"), headers)
    if method.type not in VALUE_TYPES:
        raise MatchError(f"method.type {method.type} is not supported")
    service, name = method.service, method.method
    if method.type == "Exact":
        for field, part in (("service", service), ("method", name)):
            if part is not None and (bad := _grpc_name(part)) is not None:
                raise MatchError(f"method.{field} {shown(part)}: {bad}")
        if service is not None and name is not None:
            return MatchIR(PathMatchIR("Exact", f"/{service}/{name}"), headers)
        if service is not None:
            return MatchIR(PathMatchIR(PREFIX, f"/{service}/"), headers)
        pattern = f"/[^/]+/{re.escape(name or '')}"
        _check_derived(pattern, f"method.method {shown(name or '')}", "shorten the name")
        return MatchIR(PathMatchIR("RegularExpression", pattern), headers)
    for field, part in (("service", service), ("method", name)):
        if part is not None:
            check_regex(part, f"method.{field}")
    pattern = f"/(?:{service or '[^/]+'})/(?:{name or '[^/]+'})"
    _check_derived(
        pattern,
        f"method (service {shown(service or '')}, method {shown(name or '')})",
        "simplify them",
    )
    return MatchIR(PathMatchIR("RegularExpression", pattern), headers)


def _check_derived(pattern: str, what: str, advice: str) -> None:
    """Refuse the expression a gRPC method match becomes, which Envoy compiles too."""
    problem = envoy_limits.regex(pattern, advice)
    if problem is not None:
        raise MatchError(
            f"{what}: becomes the regular expression {shown(pattern)}, which {problem}"
        )


def _grpc_name(part: str) -> str | None:
    """Why an exact gRPC service or method name cannot be part of a path."""
    if "/" in part:
        return "must not contain /"
    return envoy_limits.match_path("/" + part)


@dataclass(frozen=True, order=True)
class Specificity:
    """How specific a match is, by its kind's rules: smaller goes first, lengths and
    counts are negated. ``method_length`` is a gRPC method's (an HTTP match has none) and
    ``grpc_regex`` whether a gRPC service and method are regular expressions; ``regex``
    and ``no_method`` are an HTTP path's and method's."""

    path_rank: int
    path_length: int
    method_length: int
    regex: bool
    no_method: bool
    headers: int
    query_params: int
    grpc_regex: tuple[bool, bool]


def http_specificity(match: MatchIR) -> Specificity:
    return Specificity(
        path_rank=_PATH_RANK[match.path.type],
        path_length=-len(match.path.value),
        method_length=0,
        regex=match.path.type == "RegularExpression",
        no_method=match.method is None,
        headers=-len(match.headers),
        query_params=-len(match.query_params),
        grpc_regex=(False, False),
    )


def grpc_specificity(match: GRPCRouteMatch, ir: MatchIR) -> Specificity:
    """GRPCRoute's order: service characters, then method characters, then headers, and
    only then a plain value before a regular expression as long. Every gRPC match ranks
    as a prefix, an exact service and method included, so that a longer service (or a
    regular expression for one) goes first as GRPCRoute requires."""
    method = match.method or GRPCMethodMatch()
    regex = method.type == "RegularExpression"
    return Specificity(
        path_rank=_PATH_RANK[PREFIX],
        path_length=-(len(method.service) + 2) if method.service else -1,
        method_length=-len(method.method or ""),
        regex=False,
        no_method=True,
        headers=-len(ir.headers),
        query_params=0,
        grpc_regex=(regex and method.service is not None, regex and method.method is not None),
    )


@dataclass(frozen=True, order=True)
class Precedence:
    """Sort key of a route within a virtual host: smaller goes first."""

    specificity: Specificity
    route_age: tuple[bool, str]
    route: tuple[str, str, str]
    rule: int
    match: int


def precedence(
    specificity: Specificity,
    *,
    created: str,
    kind: str,
    namespace: str,
    name: str,
    rule: int,
    index: int,
) -> Precedence:
    return Precedence(
        specificity=specificity,
        route_age=(not created, created),
        route=(namespace, name, kind),
        rule=rule,
        match=index,
    )
