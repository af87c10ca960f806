"""Focused tests of the first stage's rules: hostnames, selectors, durations, regexes,
repeated match names, gRPC precedence, retries, route attachment (listeners whose
references do not resolve, HTTPRoutes and GRPCRoutes on one hostname), misdirected
HTTPS requests, and the values Envoy would refuse (refused first, by field)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from federation.registry.gatewayapi import (
    CORS,
    BackendObjectReference,
    Fraction,
    GatewayRecord,
    GatewaySpec,
    GatewayTLSConfig,
    GRPCMethodMatch,
    GRPCRouteMatch,
    GRPCRouteRecord,
    GRPCRouteRule,
    GRPCRouteSpec,
    HeaderModifier,
    HTTPBackendRef,
    HTTPHeader,
    HTTPPathModifier,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRecord,
    HTTPRouteRetry,
    HTTPRouteRule,
    HTTPRouteSpec,
    LabelSelector,
    LabelSelectorRequirement,
    Listener,
    LocalObjectReference,
    ParentReference,
    PathMatch,
    RequestMirror,
    RequestRedirect,
    SecretObjectReference,
    URLRewrite,
    ValueMatch,
)
from federation.registry.records import LocalService, ServicePort
from federation.translate.gateway import Resolved, resolve, selects
from federation.translate.gateway.filters import (
    FilterError,
    backend_filters,
    duration_ms,
    retry,
    rule_filters,
)
from federation.translate.gateway.hostnames import meet, served
from federation.translate.gateway.inputs import ClusterInputs
from federation.translate.gateway.matches import (
    MatchError,
    check_regex,
    grpc_match,
    grpc_specificity,
    http_match,
)
from federation.translate.ir import FilterChainIR, ListenerIR, RetryIR, ValueMatchIR, VirtualHostIR


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [
        (None, "a.example.com", "a.example.com"),
        ("a.example.com", "a.example.com", "a.example.com"),
        ("a.example.com", "b.example.com", None),
        ("*.example.com", "a.example.com", "a.example.com"),
        ("*.example.com", "a.b.example.com", "a.b.example.com"),
        ("*.example.com", "example.com", None),
        ("a.example.com", "*.example.com", "a.example.com"),
        ("*.example.com", "*.a.example.com", "*.a.example.com"),
        ("example.com", "*.example.com", None),
    ],
)
def test_hostnames_meet(listener: str | None, route: str, expected: str | None) -> None:
    assert meet(listener, route) == expected


def test_served_hostnames() -> None:
    assert served(None, ()) == ("*",)
    assert served("a.example.com", ()) == ("a.example.com",)
    assert served("*.example.com", ("x.example.com", "y.other", "x.example.com")) == (
        "x.example.com",
    )


def test_label_selectors() -> None:
    selector = LabelSelector(
        match_labels=(("team", "a"),),
        match_expressions=(
            LabelSelectorRequirement("env", "In", ("prod", "qa")),
            LabelSelectorRequirement("legacy", "DoesNotExist"),
        ),
    )
    assert selects(selector, {"team": "a", "env": "prod"})
    assert not selects(selector, {"team": "a", "env": "dev"})
    assert not selects(selector, {"team": "a", "env": "prod", "legacy": "1"})
    assert not selects(selector, {"env": "prod"})
    assert selects(LabelSelector(), {})
    odd = LabelSelector(match_expressions=(LabelSelectorRequirement("x", "Bogus"),))
    assert not selects(odd, {"x": "1"})  # an operator we do not know selects nothing


@pytest.mark.parametrize(
    ("value", "ms"),
    [("10s", 10_000), ("1m30s", 90_000), ("250ms", 250), ("1h", 3_600_000), ("0s", 0)],
)
def test_durations(value: str, ms: int) -> None:
    assert duration_ms(value, "t") == ms


@pytest.mark.parametrize("value", ["10", "10 s", "1.5s", "-1s", "1d", "123456s", ""])
def test_bad_durations(value: str) -> None:
    with pytest.raises(FilterError):
        duration_ms(value, "t")


def test_regexes_envoy_cannot_run_are_refused() -> None:
    for ok in ("/api/.*", r"\++", "[a-z]+/v[0-9]", "(?P<n>x)"):
        check_regex(ok, "x")
    for bad in ("(?=a)", "(?!a)", "(?<=a)", "(?<!a)", r"(a)\1", "a++", "(?>a)", "["):
        with pytest.raises(MatchError):
            check_regex(bad, "x")


def test_only_the_first_header_match_of_a_name_counts() -> None:
    # Header names compare without case; a later one is ignored even if it is invalid.
    match = HTTPRouteMatch(
        headers=(
            ValueMatch("X-Env", "prod"),
            ValueMatch("x-team", "a"),
            ValueMatch("x-env", "dev"),
            ValueMatch("X-ENV", "(?=x)", "RegularExpression"),
        )
    )
    assert http_match(match).headers == (ValueMatchIR("X-Env", "prod"), ValueMatchIR("x-team", "a"))
    grpc = GRPCRouteMatch(headers=(ValueMatch("x-env", "prod"), ValueMatch("X-Env", "dev")))
    assert grpc_match(grpc).headers == (ValueMatchIR("x-env", "prod"),)


def test_only_the_first_query_parameter_match_of_a_name_counts() -> None:
    # Query parameter names are case-sensitive: "V" is another parameter than "v".
    match = HTTPRouteMatch(
        query_params=(ValueMatch("v", "1"), ValueMatch("V", "3"), ValueMatch("v", "2"))
    )
    assert http_match(match).query_params == (ValueMatchIR("v", "1"), ValueMatchIR("V", "3"))


def _grpc(
    service: str | None = None, method: str | None = None, *, regex: bool = False, headers: int = 0
) -> GRPCRouteMatch:
    kind = "RegularExpression" if regex else "Exact"
    return GRPCRouteMatch(
        method=GRPCMethodMatch(kind, service, method),
        headers=tuple(ValueMatch(f"h{i}", "x") for i in range(headers)),
    )


def test_grpc_precedence_is_service_then_method_then_headers() -> None:
    """GRPCRoute: the most characters in the matching service win, then in the method,
    then the most header matches; a regular expression ranks by its pattern's length,
    after a plain name as long only when everything else ties."""
    ordered = [
        _grpc("shop.Catalog"),
        _grpc("shop.Cata.*", regex=True),
        _grpc("shop.Cart", "Checkout"),
        _grpc("shop.Cart", "Check.*", regex=True),
        _grpc("shop.Cart", headers=2),
        _grpc("shop.Cart", headers=1),
        _grpc("shop.Cart"),
        _grpc("shop.Cart", regex=True),
        _grpc(method="VeryLongMethodName"),
        _grpc(method="Get"),
        _grpc(headers=1),
        GRPCRouteMatch(),
    ]
    ranked = sorted(ordered[::-1], key=lambda m: grpc_specificity(m, grpc_match(m)))
    assert ranked == ordered


def test_grpc_service_outranks_a_longer_method_only_match() -> None:
    # A request to /a.B/VeryLongMethodName matches both: the service wins.
    service = _grpc("a.B")
    method = _grpc(method="VeryLongMethodName")
    assert grpc_specificity(service, grpc_match(service)) < grpc_specificity(
        method, grpc_match(method)
    )


def test_retry_is_converted_and_checked() -> None:
    assert retry(None) is None
    assert retry(HTTPRouteRetry(codes=(503, 500, 503), attempts=2, backoff="100ms")) == RetryIR(
        (500, 503), 2, 100
    )
    assert retry(HTTPRouteRetry(backoff="0s")) == RetryIR()  # no minimum: the default
    for bad, field in [
        (HTTPRouteRetry(codes=(200,)), "retry.codes"),
        (HTTPRouteRetry(codes=(600,)), "retry.codes"),
        (HTTPRouteRetry(attempts=0), "retry.attempts"),
        (HTTPRouteRetry(backoff="1 second"), "retry.backoff"),
    ]:
        with pytest.raises(FilterError, match=field):
            retry(bad)


def test_filters_this_implementation_lacks_are_refused_by_type() -> None:
    # ExtensionRef (on a rule or a backendRef) and ExternalAuth are not implemented: the
    # rule is refused, naming the type, rather than served without them.
    extension = HTTPRouteFilter(
        "ExtensionRef", extension_ref=LocalObjectReference("example.com", "Plugin", "p")
    )
    for filters in [(extension,), (HTTPRouteFilter("ExternalAuth"),)]:
        with pytest.raises(FilterError, match=filters[0].type):
            rule_filters(filters, None)
    with pytest.raises(FilterError, match="ExtensionRef"):
        backend_filters((extension,))


# --- attachment --------------------------------------------------------------------------------

NS = "infra"


def _gateway(*listeners: Listener) -> GatewayRecord:
    return GatewayRecord("b", NS, "gw", GatewaySpec("ours", listeners), 1, "2026-01-01T00:00:00Z")


def _https(name: str, hostname: str | None = None, cert: str | None = "cert") -> Listener:
    refs = () if cert is None else (SecretObjectReference(cert),)
    return Listener(name, 443, "HTTPS", hostname, GatewayTLSConfig(certificate_refs=refs))


def _http_route(
    name: str, created: str, hostnames: tuple[str, ...] = (), section: str | None = None
) -> HTTPRouteRecord:
    spec = HTTPRouteSpec(
        (ParentReference("gw", section_name=section),), hostnames, (HTTPRouteRule(),)
    )
    return HTTPRouteRecord("b", NS, name, spec, 1, created)


def _grpc_route(name: str, created: str, hostnames: tuple[str, ...] = ()) -> GRPCRouteRecord:
    spec = GRPCRouteSpec((ParentReference("gw"),), hostnames, (GRPCRouteRule(),))
    return GRPCRouteRecord("b", NS, name, spec, 1, created)


def _accepted(resolved: Resolved, kind: str, name: str) -> tuple[str, str]:
    route = next(r for r in resolved.statuses.routes if (r.kind, r.name) == (kind, name))
    accepted = next(c for c in route.parents[0].conditions if c.type == "Accepted")
    return accepted.status, accepted.reason


def _attached(resolved: Resolved) -> dict[str, int]:
    return {s.name: s.attached_routes for s in resolved.statuses.gateways[0].listeners}


def test_a_route_attaches_to_a_listener_whose_certificate_is_invalid() -> None:
    """Gateway API: attachment depends only on allowedRoutes and parentRefs, never on the
    listener's conditions, and attachedRoutes counts it (GatewayWithAttachedRoutes); the
    listener still serves nothing."""
    gateway = _gateway(_https("tls", cert=None), Listener("http", 80, "HTTP"))
    route = _http_route("r", "2026-01-02T00:00:00Z", section="tls")
    resolved = resolve(ClusterInputs("b", gateways=(gateway,), http_routes=(route,)))
    listener = resolved.statuses.gateways[0].listeners[0]
    resolved_refs = next(c for c in listener.conditions if c.type == "ResolvedRefs")
    assert (resolved_refs.status, resolved_refs.reason) == ("False", "InvalidCertificateRef")
    assert _attached(resolved) == {"tls": 1, "http": 0}
    assert _accepted(resolved, "HTTPRoute", "r") == ("True", "Accepted")
    assert [li.port for li in resolved.gateways[0].listeners] == [80]


def _hosts_served(resolved: Resolved) -> dict[str, list[str]]:
    """Route names served under each hostname of the Gateway's port 80."""
    (listener,) = resolved.gateways[0].listeners
    return {
        v.domains[0]: sorted({r.name.split("/rule")[0] for r in v.routes})
        for v in listener.virtual_hosts
    }


def test_of_an_httproute_and_a_grpcroute_sharing_a_hostname_the_older_is_accepted() -> None:
    """GRPCRoute: an HTTPRoute and a GRPCRoute attached to one listener whose hostnames
    intersect: only the oldest (creationTimestamp, then namespace/name) is accepted."""
    gateway = _gateway(Listener("http", 80, "HTTP"))
    inputs = ClusterInputs(
        "b",
        gateways=(gateway,),
        http_routes=(
            _http_route("web", "2026-01-03T00:00:00Z", ("a.example.com",)),
            _http_route("other", "2026-01-03T00:00:00Z", ("b.example.com",)),
        ),
        grpc_routes=(_grpc_route("api", "2026-01-02T00:00:00Z", ("*.example.com",)),),
    )
    resolved = resolve(inputs)
    assert _accepted(resolved, "GRPCRoute", "api") == ("True", "Accepted")
    assert _accepted(resolved, "HTTPRoute", "web") == ("False", "HostnameConflict")
    assert _accepted(resolved, "HTTPRoute", "other") == ("False", "HostnameConflict")
    assert _attached(resolved) == {"http": 1}
    assert _hosts_served(resolved) == {"*.example.com": ["GRPCRoute/infra/api"]}


def test_an_httproute_and_a_grpcroute_on_the_same_timestamp_rank_by_name() -> None:
    gateway = _gateway(Listener("http", 80, "HTTP"))
    same = "2026-01-02T00:00:00Z"
    inputs = ClusterInputs(
        "b",
        gateways=(gateway,),
        http_routes=(
            _http_route("a", same, ("a.example.com",)),
            _http_route("c", same, ("c.example.com",)),
        ),
        grpc_routes=(_grpc_route("b", same, ("a.example.com", "c.example.com")),),
    )
    resolved = resolve(inputs)
    assert _accepted(resolved, "HTTPRoute", "a") == ("True", "Accepted")
    assert _accepted(resolved, "GRPCRoute", "b") == ("False", "HostnameConflict")
    # "b" was rejected, so it holds no hostname against "c".
    assert _accepted(resolved, "HTTPRoute", "c") == ("True", "Accepted")
    assert _hosts_served(resolved) == {
        "a.example.com": ["HTTPRoute/infra/a"],
        "c.example.com": ["HTTPRoute/infra/c"],
    }


# --- misdirected requests ------------------------------------------------------------------------


def _covers(pattern: str, name: str) -> bool:
    if pattern == name or pattern == "*":
        return True
    return pattern.startswith("*.") and name.endswith(pattern[1:])


def _most_specific(patterns: list[str], name: str) -> str | None:
    """Envoy's choice among SNI server names or virtual host domains: the exact name,
    else the longest matching wildcard, else ``*``."""
    matching = [p for p in patterns if _covers(p, name)]
    return max(matching, key=lambda p: (p == name, p != "*", len(p)), default=None)


def _answer(listener: ListenerIR, sni: str, host: str) -> str | int:
    """What a request with ``host`` on a TLS connection with ``sni`` gets: the route that
    answers it (its name up to the rule), or a status."""
    names = [n for chain in listener.tls for n in chain.server_names]
    chosen = _most_specific(names, sni)
    chain: FilterChainIR = next(
        c for c in listener.tls if (chosen in c.server_names if chosen else not c.server_names)
    )
    hosts: tuple[VirtualHostIR, ...] = listener.virtual_hosts
    if getattr(chain, "route_config", None) is not None:
        hosts = chain.virtual_hosts
    domain = _most_specific([d for v in hosts for d in v.domains], host)
    vhost = next((v for v in hosts if domain in v.domains), None)
    if vhost is None or not vhost.routes:
        return 404
    route = vhost.routes[0]  # every route here matches any path
    return 421 if route.direct_status == 421 else route.name.split("/rule")[0]


def test_a_host_another_https_listener_serves_is_misdirected() -> None:
    """Conformance HTTPRouteHTTPSListenerDetectMisdirectedRequests: four HTTPS
    listeners on one port; a request whose Host belongs to another listener than the one
    its SNI chose is answered 421, one no listener serves 404."""
    gateway = _gateway(
        _https("https"),
        _https("https-with-hostname", "second-example.org"),
        _https("https-with-wildcard-hostname", "*.wildcard.org"),
        _https("https-with-hostname-matching-wildcard", "fourth-example.wildcard.org"),
    )
    created = "2026-01-02T00:00:00Z"
    routes = (
        _http_route("test-1", created, ("example.org",), "https"),
        _http_route("test-2", created, section="https-with-hostname"),
        _http_route("test-3", created, section="https-with-wildcard-hostname"),
        _http_route("test-4", created, section="https-with-hostname-matching-wildcard"),
    )
    resolved = resolve(ClusterInputs("b", gateways=(gateway,), http_routes=routes))
    (listener,) = resolved.gateways[0].listeners
    one, two, three, four = (f"HTTPRoute/{NS}/test-{i}" for i in range(1, 5))
    cases = [
        ("example.org", "example.org", one),
        ("example.org", "second-example.org", 421),
        ("example.org", "unknown-example.org", 404),
        ("second-example.org", "second-example.org", two),
        ("second-example.org", "example.org", 421),
        ("second-example.org", "unknown-example.org", 421),
        ("third-example.wildcard.org", "third-example.wildcard.org", three),
        ("third-example.wildcard.org", "fith-example.wildcard.org", three),
        ("third-example.wildcard.org", "fourth-example.wildcard.org", 421),
        ("third-example.wildcard.org", "second-example.org", 421),
        ("third-example.wildcard.org", "unknown-example.org", 421),
        ("fourth-example.wildcard.org", "fourth-example.wildcard.org", four),
        ("fourth-example.wildcard.org", "fith-example.wildcard.org", 421),
        ("unknown-example.org", "example.org", one),
        ("unknown-example.org", "unknown-example.org", 404),
    ]
    answers = [(sni, host, _answer(listener, sni, host)) for sni, host, _ in cases]
    assert answers == cases


def test_a_single_https_listener_shares_its_route_configuration() -> None:
    """Nothing to misdirect with one listener on the port: no per-chain routes."""
    resolved = resolve(
        ClusterInputs(
            "b",
            gateways=(_gateway(_https("https")),),
            http_routes=(_http_route("r", "2026-01-02T00:00:00Z", ("a.example.org",)),),
        )
    )
    (listener,) = resolved.gateways[0].listeners
    assert [v.domains for v in listener.virtual_hosts] == [("a.example.org",)]
    assert all(getattr(c, "route_config", None) is None for c in listener.tls)


# --- values Envoy would refuse -------------------------------------------------------------------
# One value Envoy refuses NACKs the whole route configuration of the Gateway's listener,
# which then freezes every later change to the Gateway: each is refused here first, and
# the message names the field.

_GOOD = HTTPRouteFilter(
    "ResponseHeaderModifier",
    response_header_modifier=HeaderModifier(set=(HTTPHeader("x-good", "a\tb; café"),)),
)


def _request_mod(**fields: Any) -> HTTPRouteFilter:
    return HTTPRouteFilter(
        "RequestHeaderModifier", request_header_modifier=HeaderModifier(**fields)
    )


def _response_mod(**fields: Any) -> HTTPRouteFilter:
    return HTTPRouteFilter(
        "ResponseHeaderModifier",
        response_header_modifier=HeaderModifier(**fields),
    )


@pytest.mark.parametrize(
    ("bad", "field", "why"),
    [
        (
            _request_mod(set=(HTTPHeader("x-ok", "1"), HTTPHeader("x-bad", "one\ntwo"))),
            "filters[1].requestHeaderModifier.set[1].value",
            "line feed",
        ),
        (
            _request_mod(add=(HTTPHeader("x-bad", "a\rb"),)),
            "filters[1].requestHeaderModifier.add[0].value",
            "carriage return",
        ),
        (
            _response_mod(set=(HTTPHeader("x-bad", "a\0b"),)),
            "filters[1].responseHeaderModifier.set[0].value",
            "NUL",
        ),
        (
            _response_mod(add=(HTTPHeader("x-bad", "a\x01b"),)),
            "filters[1].responseHeaderModifier.add[0].value",
            "control character",
        ),
        (
            _request_mod(set=(HTTPHeader("x bad", "v"),)),
            "filters[1].requestHeaderModifier.set[0].name",
            "not an HTTP header name",
        ),
        (
            _request_mod(add=(HTTPHeader("x-bad\n", "v"),)),
            "filters[1].requestHeaderModifier.add[0].name",
            "line feed",
        ),
        (
            _request_mod(remove=("x-fine", ":path")),
            "filters[1].requestHeaderModifier.remove[1]",
            "pseudo-header",
        ),
        (_response_mod(remove=("",)), "filters[1].responseHeaderModifier.remove[0]", "empty"),
        (
            _request_mod(set=(HTTPHeader("Host", "elsewhere"),)),
            "filters[1].requestHeaderModifier.set[0].name",
            "cannot be modified",
        ),
        (
            _response_mod(remove=("host",)),
            "filters[1].responseHeaderModifier.remove[0]",
            "cannot be modified",
        ),
    ],
)
def test_header_modifiers_envoy_would_refuse_are_refused_by_field(
    bad: HTTPRouteFilter, field: str, why: str
) -> None:
    with pytest.raises(FilterError, match=f"^{re.escape(field)} .*{why}"):
        rule_filters((_GOOD, bad), None)
    # A backendRef's own modifiers: the route stage puts backendRefs[i]. in front.
    with pytest.raises(FilterError, match=f"^{re.escape(field)} .*{why}"):
        backend_filters((_GOOD, bad))


def test_header_values_envoy_takes_as_written_are_kept() -> None:
    values = ("a\tb", "café", "text/html; q=0.9", " padded ", "x" * 4096, "50%", "%HOSTNAME%")
    mod = _request_mod(set=tuple(HTTPHeader(f"x-{i}", v) for i, v in enumerate(values)))
    checked = rule_filters((mod,), None).request_headers
    assert checked is not None and [h.value for h in checked.set] == list(values)


def _rewrite(**fields: Any) -> HTTPRouteFilter:
    return HTTPRouteFilter("URLRewrite", url_rewrite=URLRewrite(**fields))


def _redirect(**fields: Any) -> HTTPRouteFilter:
    return HTTPRouteFilter("RequestRedirect", request_redirect=RequestRedirect(**fields))


def _mirror(percent: int | None = None, fraction: Fraction | None = None) -> HTTPRouteFilter:
    mirror = RequestMirror(BackendObjectReference("shadow", port=80), percent, fraction)
    return HTTPRouteFilter("RequestMirror", request_mirror=mirror)


#: Its wildcard becomes ^https://.*\.a-rather-long-...$, an RE2 program Envoy sizes 109.
_LONG_ORIGIN = (
    "https://*.a-rather-long-subdomain-name.of-a-department.of-a-very-large-organization"
    ".in-a-faraway-country.example"
)


@pytest.mark.parametrize(
    ("bad", "field", "why"),
    [
        (
            _rewrite(path=HTTPPathModifier("ReplaceFullPath", replace_full_path="/new\npath")),
            "filters[1].urlRewrite.path.replaceFullPath",
            "line feed",
        ),
        (
            _rewrite(path=HTTPPathModifier("ReplacePrefixMatch", replace_prefix_match="/x\r")),
            "filters[1].urlRewrite.path.replacePrefixMatch",
            "carriage return",
        ),
        (
            _redirect(path=HTTPPathModifier("ReplaceFullPath", replace_full_path="/a\\1")),
            "filters[1].requestRedirect.path.replaceFullPath",
            "backslash",
        ),
        (_rewrite(hostname="a\nb.example.com"), "filters[1].urlRewrite.hostname", "hostname"),
        (_redirect(hostname="Shop.Example.com"), "filters[1].requestRedirect.hostname", "lower"),
        (_redirect(port=70000), "filters[1].requestRedirect.port", "from 1 to 65535"),
        (_redirect(port=0), "filters[1].requestRedirect.port", "from 1 to 65535"),
        (
            HTTPRouteFilter("CORS", cors=CORS(allow_origins=("https://a.example", _LONG_ORIGIN))),
            "filters[1].cors.allowOrigins[1]",
            "RE2 program",
        ),
        (
            HTTPRouteFilter("CORS", cors=CORS(allow_origins=("https://a.example\n",))),
            "filters[1].cors.allowOrigins[0]",
            "line feed",
        ),
        (
            HTTPRouteFilter("CORS", cors=CORS(allow_methods=("GET", "GET\r\nX-Injected: 1"))),
            "filters[1].cors.allowMethods[1]",
            "carriage return",
        ),
        (
            HTTPRouteFilter("CORS", cors=CORS(allow_headers=("x-token", "x token"))),
            "filters[1].cors.allowHeaders[1]",
            "not an HTTP header name",
        ),
        (
            HTTPRouteFilter("CORS", cors=CORS(expose_headers=("x\nb",))),
            "filters[1].cors.exposeHeaders[0]",
            "line feed",
        ),
        (_mirror(percent=101), "filters[1].requestMirror.percent", "from 0 to 100"),
        (_mirror(percent=-1), "filters[1].requestMirror.percent", "from 0 to 100"),
        (_mirror(fraction=Fraction(3, 2)), "filters[1].requestMirror.fraction", "denominator"),
        (_mirror(fraction=Fraction(1, 0)), "filters[1].requestMirror.fraction", "denominator"),
        (_mirror(fraction=Fraction(-1, 10)), "filters[1].requestMirror.fraction", "numerator"),
    ],
)
def test_filter_values_envoy_would_refuse_are_refused_by_field(
    bad: HTTPRouteFilter, field: str, why: str
) -> None:
    with pytest.raises(FilterError, match=f"^{re.escape(field)} .*{why}"):
        rule_filters((_GOOD, bad), "/p")


def test_numbers_envoy_takes_as_unsigned_32_bits_are_bounded() -> None:
    with pytest.raises(FilterError, match=r"^retry\.attempts .*4294967295"):
        retry(HTTPRouteRetry(attempts=2**32))
    assert retry(HTTPRouteRetry(attempts=2**32 - 1)) == RetryIR(attempts=2**32 - 1)


@pytest.mark.parametrize(
    ("match", "field", "why"),
    [
        (HTTPRouteMatch(path=PathMatch("PathPrefix", "/search?q=x")), "path.value", "'?'"),
        (HTTPRouteMatch(path=PathMatch("Exact", "/page#top")), "path.value", "'#'"),
        (HTTPRouteMatch(path=PathMatch("Exact", "/a\nb")), "path.value", "line feed"),
        (HTTPRouteMatch(path=PathMatch("PathPrefix", "api")), "path.value", "start with /"),
        (HTTPRouteMatch(path=PathMatch("RegularExpression", "")), "path.value", "empty"),
        (
            HTTPRouteMatch(
                headers=(ValueMatch("x-a", "1"), ValueMatch("X-A", "2"), ValueMatch("x b", "1"))
            ),
            "headers[2].name",  # the index the user wrote, counting the ignored repeat
            "not an HTTP header name",
        ),
        (HTTPRouteMatch(headers=(ValueMatch("", "1"),)), "headers[0].name", "empty"),
        (HTTPRouteMatch(headers=(ValueMatch("x\n", "1"),)), "headers[0].name", "line feed"),
        (
            HTTPRouteMatch(headers=(ValueMatch("x-a", "", "RegularExpression"),)),
            "headers[0].value",
            "empty",
        ),
        (
            HTTPRouteMatch(headers=(ValueMatch("x-a", "(?=a)", "RegularExpression"),)),
            "headers[0].value",
            "RE2",
        ),
        (HTTPRouteMatch(query_params=(ValueMatch("", "1"),)), "queryParams[0].name", "empty"),
        (
            HTTPRouteMatch(query_params=(ValueMatch("q" * 1025, "1"),)),
            "queryParams[0].name",
            "1024 bytes",
        ),
    ],
)
def test_http_matches_envoy_would_refuse_are_refused_by_field(
    match: HTTPRouteMatch, field: str, why: str
) -> None:
    with pytest.raises(MatchError, match=f"^{re.escape(field)} .*{why}"):
        http_match(match)


def test_grpc_methods_whose_regular_expression_envoy_would_refuse() -> None:
    """A method alone, and a regular expression, become one regular expression, which
    grows with the names: Envoy refuses it past its RE2 program size."""
    grpc_match(_grpc(method="M" * 80))
    with pytest.raises(MatchError, match=r"^method\.method .*RE2 program"):
        grpc_match(_grpc(method="M" * 100))
    service = r"shop\.(Catalog|Cart|Orders|Payments|Shipping|Returns|Reviews|Ratings|Wishlists)"
    method = "(Get|List|Create|Update|Delete|Watch)[A-Z][a-z]+"
    check_regex(service, "x")  # each is fine alone
    check_regex(method, "x")
    with pytest.raises(MatchError, match=r"^method .*RE2 program"):
        grpc_match(_grpc(service, method, regex=True))
    with pytest.raises(MatchError, match=r"^method\.service .*empty"):
        grpc_match(_grpc("", "Get", regex=True))


def _route(name: str, *rules: HTTPRouteRule, hostnames: tuple[str, ...] = ()) -> HTTPRouteRecord:
    spec = HTTPRouteSpec((ParentReference("gw"),), hostnames, rules)
    return HTTPRouteRecord("b", NS, name, spec, 1, "2026-01-02T00:00:00Z")


def _echo(**extra: Any) -> HTTPBackendRef:
    return HTTPBackendRef("echo", port=80, **extra)


def _inputs(*routes: HTTPRouteRecord) -> ClusterInputs:
    """Gateway ``gw`` on port 80 of cluster b, the routes, and the Service echo of b."""
    echo = LocalService("b", NS, "echo", (ServicePort("http", "TCP", 80),))
    gateway = _gateway(Listener("http", 80, "HTTP"))
    return ClusterInputs(
        "b", gateways=(gateway,), http_routes=routes, local_services={(NS, "echo"): echo}
    )


def _conditions(resolved: Resolved, name: str) -> dict[str, tuple[str, str, str]]:
    route = next(r for r in resolved.statuses.routes if r.name == name)
    return {c.type: (c.status, c.reason, c.message) for c in route.parents[0].conditions}


def _served_paths(resolved: Resolved) -> list[str]:
    (listener,) = resolved.gateways[0].listeners
    return sorted(r.match.path.value for v in listener.virtual_hosts for r in v.routes)


def test_a_route_envoy_would_refuse_leaves_every_other_route_served() -> None:
    """The issue's case: a header value with a newline. Envoy would NACK the listener's
    routes and freeze the Gateway; instead the bad route is not Accepted, naming the
    field, and a valid route added beside it is served."""
    bad = _route(
        "bad",
        HTTPRouteRule(
            matches=(HTTPRouteMatch(path=PathMatch("PathPrefix", "/bad")),),
            filters=(_request_mod(set=(HTTPHeader("x-bad", "one\ntwo"),)),),
            backend_refs=(_echo(),),
        ),
    )
    good = _route(
        "good",
        HTTPRouteRule(
            matches=(HTTPRouteMatch(path=PathMatch("PathPrefix", "/good")),),
            backend_refs=(_echo(),),
        ),
    )
    resolved = resolve(_inputs(bad, good))
    status, reason, message = _conditions(resolved, "bad")["Accepted"]
    assert (status, reason) == ("False", "UnsupportedValue")
    assert message.startswith(
        "rule 0: filters[0].requestHeaderModifier.set[0].value 'one\\ntwo': contains a line feed"
    )
    assert _conditions(resolved, "good")["Accepted"][:2] == ("True", "Accepted")
    assert _served_paths(resolved) == ["/good"]
    (listener,) = resolved.gateways[0].listeners
    assert [
        r.backends[0].cluster is not None for v in listener.virtual_hosts for r in v.routes
    ] == [True]


def test_rules_envoy_would_refuse_are_named_and_the_others_served() -> None:
    """The field path goes down from the rule: its matches, its backendRefs (and their
    filters and weights); the rule with a bad match is left out, one with a bad filter or
    weight answers 500 for what it matches."""
    route = _route(
        "mixed",
        HTTPRouteRule(
            matches=(HTTPRouteMatch(path=PathMatch("PathPrefix", "/ok")),), backend_refs=(_echo(),)
        ),
        HTTPRouteRule(
            matches=(
                HTTPRouteMatch(path=PathMatch("PathPrefix", "/fine")),
                HTTPRouteMatch(path=PathMatch("PathPrefix", "/q?x")),
            ),
            backend_refs=(_echo(),),
        ),
        HTTPRouteRule(
            matches=(HTTPRouteMatch(path=PathMatch("PathPrefix", "/backend")),),
            backend_refs=(
                _echo(),
                _echo(filters=(_response_mod(add=(HTTPHeader("x-b", "a\rb"),)),)),
            ),
        ),
        HTTPRouteRule(
            matches=(HTTPRouteMatch(path=PathMatch("PathPrefix", "/weight")),),
            backend_refs=(_echo(weight=2_000_000),),
        ),
    )
    resolved = resolve(_inputs(route))
    conditions = _conditions(resolved, "mixed")
    assert conditions["Accepted"][:2] == ("True", "Accepted")
    status, reason, message = conditions["PartiallyInvalid"]
    assert (status, reason) == ("True", "UnsupportedValue")
    assert "rule 1: matches[1].path.value '/q?x': contains '?'" in message
    assert "rule 2: backendRefs[1].filters[0].responseHeaderModifier.add[0].value" in message
    assert "rule 3: backendRefs[0].weight 2000000: must be from 0 to 1000000" in message
    assert _served_paths(resolved) == ["/backend", "/ok", "/weight"]
    (listener,) = resolved.gateways[0].listeners
    refused = [r for v in listener.virtual_hosts for r in v.routes if r.direct_status == 500]
    assert sorted(r.match.path.value for r in refused) == ["/backend", "/weight"]
    assert conditions["ResolvedRefs"][:2] == ("True", "ResolvedRefs")


@pytest.mark.parametrize("hostname", ["Shop.example.com", "shop.example.com\n", "a b.example.com"])
def test_a_route_hostname_envoy_would_refuse_is_not_accepted(hostname: str) -> None:
    """Envoy refuses a domain with a newline, and two virtual hosts whose domains differ
    only by case (an older route's ``shop.example.com`` beside this one)."""
    older = _route("older", HTTPRouteRule(backend_refs=(_echo(),)), hostnames=("shop.example.com",))
    route = _route(
        "bad", HTTPRouteRule(backend_refs=(_echo(),)), hostnames=("ok.example.com", hostname)
    )
    resolved = resolve(_inputs(older, route))
    status, reason, message = _conditions(resolved, "bad")["Accepted"]
    assert (status, reason) == ("False", "UnsupportedValue")
    assert message.startswith(f"rule 0: hostnames[1] {hostname!r}: is not a hostname")
    (listener,) = resolved.gateways[0].listeners
    assert [v.domains for v in listener.virtual_hosts] == [("shop.example.com",)]
