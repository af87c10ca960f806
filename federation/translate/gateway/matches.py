"""Route matches: validation, their IR, and Gateway API's match precedence.

Called by the route stage. HTTPRoute matches keep their meaning: ``PathPrefix`` matches
whole path segments (``/api`` matches ``/api`` and ``/api/x``, never ``/apix``; a
trailing slash is ignored). A GRPCRoute method match becomes a path match on
``/<service>/<method>``: both given is an exact path, a service alone the plain prefix
``/<service>/``, a method alone (or a regular expression) a regular expression. No
method match matches every request.

Regular expressions run in Envoy's RE2, which has no backreferences or lookaround, and
Envoy refuses a compiled program larger than :data:`MAX_PROGRAM_SIZE`. Every expression
is compiled here with RE2 itself and refused (``UnsupportedValue``) when Envoy would
refuse it, since a single one would make Envoy reject the whole route configuration of
the listener.

Precedence, which orders the routes of one virtual host (Envoy takes the first match):
an exact path first, then the longest prefix, then a method match, then more header
matches, then more query parameter matches; ties go to the oldest route, then namespace
and name, then rule and match order. Gateway API leaves regular expressions to the
implementation: here one ranks among the prefixes by the length of its pattern (after a
prefix of the same length), as Contour does, so that a catch-all ``/`` never hides it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import re2

from federation.registry.gatewayapi import GRPCRouteMatch, HTTPRouteMatch, ValueMatch
from federation.translate.ir import MatchIR, PathMatchIR, ValueMatchIR

PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
VALUE_TYPES = ("Exact", "RegularExpression")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
#: A plain string prefix (gRPC service matches); HTTPRoute prefixes are ``PathPrefix``.
PREFIX = "Prefix"

#: Envoy's default ``re2.max_program_size.error_level``: a larger program is a NACK.
MAX_PROGRAM_SIZE = 100
_PATH_RANK = {"Exact": 0, "PathPrefix": 1, PREFIX: 1, "RegularExpression": 1}


class MatchError(ValueError):
    """A match this implementation cannot serve: ``UnsupportedValue``."""


def check_regex(value: str, what: str) -> None:
    """Refuse an expression that Envoy's RE2 would refuse."""
    try:
        program = re2.compile(value)
    except re2.error as err:
        message = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else err
        raise MatchError(f"{what} {value!r} is not a valid RE2 expression: {message}") from err
    if program.programsize > MAX_PROGRAM_SIZE:
        raise MatchError(
            f"{what} {value!r} compiles to an RE2 program of size {program.programsize}, "
            f"more than Envoy's limit of {MAX_PROGRAM_SIZE}: simplify it"
        )


def _values(matches: tuple[ValueMatch, ...], what: str) -> tuple[ValueMatchIR, ...]:
    out = []
    for m in matches:
        if m.type not in VALUE_TYPES:
            raise MatchError(f"{what} match type {m.type} is not supported")
        if m.type == "RegularExpression":
            check_regex(m.value, f"{what} {m.name}")
        out.append(ValueMatchIR(m.name, m.value, m.type))
    return tuple(out)


def http_match(match: HTTPRouteMatch) -> MatchIR:
    path = match.path
    path_type = "PathPrefix" if path is None else path.type
    value = "/" if path is None else path.value
    if path_type not in PATH_TYPES:
        raise MatchError(f"path match type {path_type} is not supported")
    if path_type == "RegularExpression":
        check_regex(value, "path")
    elif not value.startswith("/"):
        raise MatchError(f"path {value!r} must start with /")
    if path_type == "PathPrefix" and len(value) > 1:
        value = value.rstrip("/") or "/"
    if match.method is not None and match.method not in METHODS:
        raise MatchError(f"method {match.method} is not supported")
    return MatchIR(
        path=PathMatchIR(path_type, value),
        headers=_values(match.headers, "header"),
        query_params=_values(match.query_params, "query parameter"),
        method=match.method,
    )


def grpc_match(match: GRPCRouteMatch) -> MatchIR:
    headers = _values(match.headers, "header")
    method = match.method
    if method is None or (method.service is None and method.method is None):
        return MatchIR(PathMatchIR(PREFIX, "/"), headers)
    if method.type not in VALUE_TYPES:
        raise MatchError(f"gRPC method match type {method.type} is not supported")
    service, name = method.service, method.method
    if method.type == "Exact":
        for part in (service, name):
            if part is not None and "/" in part:
                raise MatchError(f"gRPC service or method {part!r} must not contain /")
        if service is not None and name is not None:
            return MatchIR(PathMatchIR("Exact", f"/{service}/{name}"), headers)
        if service is not None:
            return MatchIR(PathMatchIR(PREFIX, f"/{service}/"), headers)
        return MatchIR(PathMatchIR("RegularExpression", f"/[^/]+/{re.escape(name or '')}"), headers)
    for part in (service, name):
        if part is not None:
            check_regex(part, "gRPC method match")
    pattern = f"/(?:{service or '[^/]+'})/(?:{name or '[^/]+'})"
    return MatchIR(PathMatchIR("RegularExpression", pattern), headers)


@dataclass(frozen=True, order=True)
class Precedence:
    """Sort key of a route within a virtual host: smaller goes first."""

    path_rank: int
    path_length: int
    regex: bool
    no_method: bool
    headers: int
    query_params: int
    route_age: tuple[bool, str]
    route: tuple[str, str, str]
    rule: int
    match: int


def precedence(
    match: MatchIR, *, created: str, kind: str, namespace: str, name: str, rule: int, index: int
) -> Precedence:
    return Precedence(
        path_rank=_PATH_RANK[match.path.type],
        path_length=-len(match.path.value),
        regex=match.path.type == "RegularExpression",
        no_method=match.method is None,
        headers=-len(match.headers),
        query_params=-len(match.query_params),
        route_age=(not created, created),
        route=(namespace, name, kind),
        rule=rule,
        match=index,
    )
