"""IR routes into Envoy routes: matches, actions, filters, retries and timeouts.

Called by :mod:`federation.translate.proxy` for every route configuration it serves, the
clusterset's and the Gateways' (:func:`route_configuration` and :func:`route`, the only
ones). Pure; the messages are xds-protos' upb classes. The core here builds the match
and what answers (backends, a redirect or a fixed status); retries, timeouts, header
modifiers, mirrors and CORS are features (:mod:`.features`), applied in their table's
order. How each IR element is served:

* ``PathPrefix`` is Envoy's ``path_separated_prefix`` (whole segments only), ``/`` a
  plain prefix; regular expressions use RE2 (``safe_regex``); a method is a ``:method``
  header match.
* Weighted backends are ``weighted_clusters``. An invalid backend keeps its share under
  a cluster name that never exists, and the route answers ``cluster not found`` with 500
  instead of Envoy's default 503: the share Gateway API wants answered 500.
* Every forwarding route has the data plane's retry policy (``features.retry``);
  ``backend_timeout_ms`` bounds each attempt, ``timeout_ms`` the whole request (none when
  unset; ``features.timeout``).
* A redirect's port is the one it sets, else its scheme's well-known port when it sets a
  scheme, else the listener's; a scheme's well-known port is left out of ``Location``.
  Envoy keeps the request's ``Host`` port unless told otherwise, so where that port
  would be wrong (a listener off its scheme's default port), the route names the
  virtual host's own hostname (Envoy then adds no port), or, under a wildcard, the port.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from federation.translate.ir import (
    BackendIR,
    MatchIR,
    PathRewriteIR,
    RedirectIR,
    RouteIR,
    ValueMatchIR,
    VirtualHostIR,
)
from federation.translate.proxy.features import ROUTE_HOOKS

#: Weighted entries of invalid backends name this cluster, which never exists.
INVALID_BACKEND_CLUSTER = "federation/invalid-backend"

#: The port a scheme implies, which a ``Location`` leaves out.
WELL_KNOWN_PORTS = {"http": 80, "https": 443}

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


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


def _redirect(
    r: RedirectIR, listener_port: int, default_port: int, host: str | None
) -> rc.RedirectAction:
    """``listener_port``: where the request came in; ``default_port``: the one its scheme
    implies (80 or 443); ``host``: the virtual host's one exact hostname, if it has one.

    Envoy builds ``Location`` from the request's ``Host``, port included, unless
    ``host_redirect`` is set (then with no port) or ``port_redirect`` is (then always
    with that port); it drops a ``Host`` port only when it is the default port of a
    scheme being changed."""
    out = rc.RedirectAction(response_code=_REDIRECT_CODES[r.status_code])
    if r.scheme is not None:
        out.scheme_redirect = r.scheme
    if r.hostname is not None:
        out.host_redirect = r.hostname
    scheme = r.scheme or ("https" if default_port == 443 else "http")
    if r.port is not None:
        port = r.port
    elif r.scheme is not None:
        port = WELL_KNOWN_PORTS[r.scheme]
    else:
        port = listener_port
    if port != WELL_KNOWN_PORTS[scheme]:
        out.port_redirect = port
    elif r.hostname is None and listener_port != default_port:
        # The Host header carries the listener's port, which must go: naming the host
        # drops it; under a wildcard only an explicit (well-known) port replaces it.
        if host is not None:
            out.host_redirect = host
        else:
            out.port_redirect = port
    if r.path is not None:
        if r.path.type == "ReplaceFullPath":
            out.path_redirect = r.path.value
        else:
            _replace_prefix(out, r.path)
    return out


def _forward(route: RouteIR) -> rc.RouteAction:
    action = rc.RouteAction()
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
    return action


def _weighted(action: rc.RouteAction, backend: BackendIR) -> None:
    entry = action.weighted_clusters.clusters.add(name=backend.cluster or INVALID_BACKEND_CLUSTER)
    entry.weight.value = backend.weight


def route(
    ir: RouteIR, listener_port: int = 80, default_port: int = 80, host: str | None = None
) -> rc.Route:
    """One route: its match and what answers, then every feature's part. ``host``: its
    virtual host's one exact hostname, if it has one."""
    out = rc.Route(name=ir.name, match=route_match(ir.match))
    if ir.stat_name is not None:
        out.stat_prefix = ir.stat_name
    if ir.redirect is not None:
        out.redirect.CopyFrom(_redirect(ir.redirect, listener_port, default_port, host))
    elif ir.direct_status is not None:
        out.direct_response.status = ir.direct_status
    else:
        out.route.CopyFrom(_forward(ir))
    for hook in ROUTE_HOOKS:
        hook(ir, out)
    return out


def route_configuration(
    name: str,
    hosts: Iterable[VirtualHostIR],
    port: int = 80,
    *,
    https: bool = False,
    hosts_by_port: bool = False,
) -> route_pb2.RouteConfiguration:
    """The routes of one listener on ``port``. Virtual hosts are chosen by ``Host``
    without its port (Gateway API hostnames have none) unless ``hosts_by_port``; the
    header itself is passed to the backends unchanged."""
    config = route_pb2.RouteConfiguration(name=name)
    if not hosts_by_port:
        config.ignore_port_in_host_matching = True
    default_port = 443 if https else 80
    for host in hosts:
        vhost = config.virtual_hosts.add(name=host.name, domains=list(host.domains))
        exact = _exact_host(host.domains)
        vhost.routes.extend(route(r, port, default_port, exact) for r in host.routes)
    return config


def _exact_host(domains: tuple[str, ...]) -> str | None:
    """The one hostname a virtual host answers, without wildcard or port; else None."""
    if len(domains) == 1 and "*" not in domains[0] and ":" not in domains[0]:
        return domains[0]
    return None
