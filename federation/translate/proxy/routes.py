"""IR routes into Envoy routes: matches, actions, filters, retries and timeouts.

Called by :func:`federation.translate.proxy.build_gateway`. Pure; the messages are
xds-protos' upb classes. How each IR element is served:

* ``PathPrefix`` is Envoy's ``path_separated_prefix`` (whole segments only), ``/`` a
  plain prefix; regular expressions use RE2 (``safe_regex``); a method is a ``:method``
  header match.
* Weighted backends are ``weighted_clusters``. An invalid backend keeps its share under
  a cluster name that never exists, and the route answers ``cluster not found`` with 500
  instead of Envoy's default 503: the share Gateway API wants answered 500.
* Every route has the data plane's retry policy; ``backend_timeout_ms`` bounds each
  attempt (``per_try_timeout``), ``timeout_ms`` the whole request (none when unset).
* Header modifiers: ``set`` overwrites, ``add`` appends. Mirrors go to the mirror
  cluster for their fraction of requests, and CORS is a per-route policy of Envoy's CORS
  filter, which answers preflight requests itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from federation.translate.ir import (
    BackendIR,
    CorsIR,
    HeaderModIR,
    MatchIR,
    PathRewriteIR,
    RedirectIR,
    RouteIR,
    ValueMatchIR,
    VirtualHostIR,
)
from federation.translate.resources import duration_ms, retry_policy

#: Weighted entries of invalid backends name this cluster, which never exists.
INVALID_BACKEND_CLUSTER = "federation/invalid-backend"
CORS_FILTER = "envoy.filters.http.cors"

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=pattern)


def _string_match(m: ValueMatchIR) -> string_pb2.StringMatcher:
    if m.type == "RegularExpression":
        return string_pb2.StringMatcher(safe_regex=_regex(m.value))
    return string_pb2.StringMatcher(exact=m.value)


def route_match(match: MatchIR) -> rc.RouteMatch:
    out = rc.RouteMatch()
    path = match.path
    if path.type == "Exact":
        out.path = path.value
    elif path.type == "RegularExpression":
        out.safe_regex.CopyFrom(_regex(path.value))
    elif path.type == "PathPrefix" and path.value != "/":
        out.path_separated_prefix = path.value
    else:
        out.prefix = path.value
    for h in match.headers:
        out.headers.add(name=h.name, string_match=_string_match(h))
    if match.method is not None:
        out.headers.add(name=":method", string_match=string_pb2.StringMatcher(exact=match.method))
    for q in match.query_params:
        out.query_parameters.add(name=q.name, string_match=_string_match(q))
    return out


def _headers_to_add(mod: HeaderModIR) -> list[base_pb2.HeaderValueOption]:
    options = [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=h.name, value=h.value), append_action=_OVERWRITE
        )
        for h in mod.set
    ]
    options += [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=h.name, value=h.value), append_action=_APPEND
        )
        for h in mod.add
    ]
    return options


def _apply_headers(target: Any, request: HeaderModIR | None, response: HeaderModIR | None) -> None:
    """Header modifiers onto a Route or a ClusterWeight (same field names)."""
    if request is not None:
        target.request_headers_to_add.extend(_headers_to_add(request))
        target.request_headers_to_remove.extend(request.remove)
    if response is not None:
        target.response_headers_to_add.extend(_headers_to_add(response))
        target.response_headers_to_remove.extend(response.remove)


def _replace_prefix(target: Any, path: PathRewriteIR) -> None:
    """``ReplacePrefixMatch`` onto a RouteAction or a RedirectAction (same fields)."""
    prefix = path.prefix or "/"
    value = path.value or "/"  # an empty replacement leaves "/" (and an empty string
    # in a protobuf field would mean "no rewrite")
    if value.endswith("/"):
        # "/api" -> "/" must give "/x" for "/api/x", not "//x".
        target.regex_rewrite.pattern.CopyFrom(_regex(f"^{re.escape(prefix)}/*"))
        target.regex_rewrite.substitution = value
    elif prefix == "/":
        target.regex_rewrite.pattern.CopyFrom(_regex("^/"))
        target.regex_rewrite.substitution = value + "/"
    else:
        target.prefix_rewrite = value


def _rewrite(action: rc.RouteAction, path: PathRewriteIR) -> None:
    if path.type == "ReplaceFullPath":
        action.regex_rewrite.pattern.CopyFrom(_regex("^/.*$"))
        action.regex_rewrite.substitution = path.value
    else:
        _replace_prefix(action, path)


def _redirect(r: RedirectIR, listener_port: int, default_port: int) -> rc.RedirectAction:
    """``listener_port``: where the request came in; ``default_port``: the one its scheme
    implies (80 or 443)."""
    out = rc.RedirectAction(response_code=_REDIRECT_CODES[r.status_code])
    if r.scheme is not None:
        out.scheme_redirect = r.scheme
    if r.hostname is not None:
        out.host_redirect = r.hostname
    if r.port is not None:
        out.port_redirect = r.port
    elif r.scheme is None and listener_port != default_port:
        # Gateway API: without a scheme or port, the redirect keeps the listener's port,
        # which a Host header without a port would otherwise lose.
        out.port_redirect = listener_port
    if r.path is not None:
        if r.path.type == "ReplaceFullPath":
            out.path_redirect = r.path.value
        else:
            _replace_prefix(out, r.path)
    return out


def _fraction(numerator: int, denominator: int) -> Any:
    if denominator <= 0:
        numerator, denominator = 0, 1
    per_million = min(1_000_000, numerator * 1_000_000 // denominator)
    return percent_pb2.FractionalPercent(
        numerator=per_million, denominator=percent_pb2.FractionalPercent.MILLION
    )


def _origin(origin: str) -> string_pb2.StringMatcher:
    if origin == "*":
        return string_pb2.StringMatcher(safe_regex=_regex(".*"))
    if "*" in origin:
        pattern = ".*".join(re.escape(part) for part in origin.split("*"))
        return string_pb2.StringMatcher(safe_regex=_regex(f"^{pattern}$"))
    return string_pb2.StringMatcher(exact=origin)


def cors_policy(cors: CorsIR) -> cors_pb2.CorsPolicy:
    policy = cors_pb2.CorsPolicy(
        allow_origin_string_match=[_origin(o) for o in cors.allow_origins],
        allow_methods=", ".join(cors.allow_methods),
        allow_headers=", ".join(cors.allow_headers),
        expose_headers=", ".join(cors.expose_headers),
    )
    if cors.max_age_seconds is not None:
        policy.max_age = str(cors.max_age_seconds)
    policy.allow_credentials.value = cors.allow_credentials
    return policy


def _forward(route: RouteIR) -> rc.RouteAction:
    action = rc.RouteAction(timeout=duration_ms(route.timeout_ms or 0), retry_policy=retry_policy())
    if route.backend_timeout_ms:
        action.retry_policy.per_try_timeout.CopyFrom(duration_ms(route.backend_timeout_ms))
    backends = route.backends
    simple = len(backends) == 1 and backends[0].cluster is not None
    if simple and backends[0].request_headers is None and backends[0].response_headers is None:
        action.cluster = backends[0].cluster or ""
    else:
        for b in backends:
            _weighted(action, b)
        if any(b.cluster is None for b in backends) and route.invalid_status == 500:
            # Envoy's default for a missing cluster is 503, which gRPC routes keep.
            action.cluster_not_found_response_code = rc.RouteAction.INTERNAL_SERVER_ERROR
    if route.rewrite_hostname is not None:
        action.host_rewrite_literal = route.rewrite_hostname
    if route.rewrite_path is not None:
        _rewrite(action, route.rewrite_path)
    for m in route.mirrors:
        policy = action.request_mirror_policies.add(cluster=m.cluster)
        policy.runtime_fraction.default_value.CopyFrom(_fraction(m.numerator, m.denominator))
    return action


def _weighted(action: rc.RouteAction, backend: BackendIR) -> None:
    entry = action.weighted_clusters.clusters.add(name=backend.cluster or INVALID_BACKEND_CLUSTER)
    entry.weight.value = backend.weight
    _apply_headers(entry, backend.request_headers, backend.response_headers)


def route(ir: RouteIR, listener_port: int = 80, default_port: int = 80) -> rc.Route:
    out = rc.Route(name=ir.name, match=route_match(ir.match))
    if ir.redirect is not None:
        out.redirect.CopyFrom(_redirect(ir.redirect, listener_port, default_port))
    elif ir.direct_status is not None:
        out.direct_response.status = ir.direct_status
    else:
        out.route.CopyFrom(_forward(ir))
    _apply_headers(out, ir.request_headers, ir.response_headers)
    if ir.cors is not None:
        out.typed_per_filter_config[CORS_FILTER].Pack(cors_policy(ir.cors), deterministic=True)
    return out


def route_configuration(
    name: str, hosts: Iterable[VirtualHostIR], port: int = 80, *, https: bool = False
) -> route_pb2.RouteConfiguration:
    """The routes of one listener on ``port``. Virtual hosts are chosen by ``Host``
    without its port (Gateway API hostnames have none); the header itself is passed to
    the backends unchanged."""
    config = route_pb2.RouteConfiguration(name=name, ignore_port_in_host_matching=True)
    default_port = 443 if https else 80
    for host in hosts:
        vhost = config.virtual_hosts.add(name=host.name, domains=list(host.domains))
        vhost.routes.extend(route(r, port, default_port) for r in host.routes)
    return config
