"""Golden-file tests of the second translation stage (federation.translate.proxy), and
focused ones of what Envoy makes of its redirects and retries.

Each case is a pair of files in ``tests/golden/proxy``:

- ``<case>.in.yaml``: ``host`` (the address the listeners bind), optionally
  ``secretDir`` and ``options`` (``addressMaps``, ``ipFamilies``: hub flags), and ``ir``:
  a GatewayIR in the JSON shape of the registry codec. A leading comment says what the
  case shows.
- ``<case>.out.yaml``: the resources :func:`federation.translate.proxy.node_config`
  gives a node group with these Gateways and no clusterset listener (the function the
  hub assembles with), each in protobuf's JSON mapping, by kind and name; ``secrets``
  only for a case that has some (plain HTTP cases read as they did before SDS).

Run ``pytest tests/unit/test_proxy_golden.py --update-golden`` to rewrite outputs, then
review their diff.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from federation.registry.codec import from_json
from federation.translate.inputs import (
    TranslateOptions,
    address_maps_from_flags,
    ip_families_from_flags,
)
from federation.translate.ir import (
    BackendIR,
    ClustersetIR,
    GatewayIR,
    MatchIR,
    NodeGroupIR,
    PathMatchIR,
    RedirectIR,
    RetryIR,
    RouteIR,
    VirtualHostIR,
)
from federation.translate.proxy import DEFAULT_SECRET_DIR, XdsResources, consistent, node_config
from federation.translate.proxy.routes import route, route_configuration
from tests import golden_files

GOLDEN = golden_files.ROOT / "proxy"
CASES = golden_files.cases(GOLDEN)
KINDS = ("clusters", "endpoints", "secrets", "listeners", "routes")


def load_case(case: str) -> tuple[dict[str, Any], GatewayIR, TranslateOptions, str]:
    """The case's raw document, its IR, the translation options and the secret dir."""
    raw = yaml.safe_load((GOLDEN / f"{case}.in.yaml").read_text())
    unknown = set(raw) - {"host", "secretDir", "options", "ir"}
    assert not unknown, f"{case}.in.yaml: unknown keys {sorted(unknown)}"
    opts = raw.get("options") or {}
    families, default_family = ip_families_from_flags(opts.get("ipFamilies", []))
    options = TranslateOptions(
        address_maps=address_maps_from_flags(opts.get("addressMaps", [])),
        ip_families=families,
        default_ip_family=default_family,
    )
    ir = from_json(GatewayIR, raw["ir"], path=f"{case}.in.yaml ir")
    return raw, ir, options, raw.get("secretDir", DEFAULT_SECRET_DIR)


def build(case: str) -> XdsResources[Any]:
    raw, ir, options, secret_dir = load_case(case)
    group = NodeGroupIR(ir.cluster, gateway=ir)
    return node_config(ClustersetIR(), group, raw["host"], options, secret_dir=secret_dir)


def render(resources: XdsResources[Any]) -> str:
    doc: dict[str, Any] = {
        kind: {
            name: golden_files.sorted_maps(
                json.loads(json_format.MessageToJson(msg, preserving_proto_field_name=True))
            )
            for name, msg in sorted(getattr(resources, kind).items())
        }
        for kind in KINDS
        if kind != "secrets" or resources.secrets
    }
    return yaml.safe_dump(doc, sort_keys=False, width=10_000, allow_unicode=True)


def test_there_are_cases() -> None:
    assert len(CASES) >= 3


def test_every_output_has_an_input() -> None:
    assert golden_files.orphan_outputs(GOLDEN) == []


@pytest.mark.parametrize("case", CASES)
def test_proxy_golden(case: str, update_golden: bool) -> None:
    resources = build(case)
    # The cases hold no ServiceImports (the clusterset goldens cover those): routes to
    # them, and policy copies of their clusters, are the only references allowed to
    # dangle here.
    problems = consistent(resources)
    dangling = ("missing cluster clusterset/", "has no ClusterLoadAssignment clusterset/")
    assert [p for p in problems if not any(d in p for d in dangling)] == []
    golden_files.check(GOLDEN, case, render(resources), update_golden)


# --- certificates: SDS Secrets of file paths -------------------------------------------------


def test_a_certificate_is_an_sds_secret_of_file_paths_only() -> None:
    """Envoy reloads a renewed certificate only when it came over SDS: no listener inlines
    one, every chain names its Secret over ADS, and a Secret holds paths, never a key."""
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    resources = build("https-listener")
    named = []
    for item in resources.listeners.values():
        for chain in item.filter_chains:
            context = tls_pb2.DownstreamTlsContext()
            assert chain.transport_socket.typed_config.Unpack(context)
            common = context.common_tls_context
            assert list(common.tls_certificates) == []
            for config in common.tls_certificate_sds_secret_configs:
                assert config.sds_config.HasField("ads")
                named.append(config.name)
    assert (
        sorted(named) == sorted(resources.secrets) == ["cert/certs/wildcard", "cert/edge/shop-cert"]
    )
    secret_dir = load_case("https-listener")[3]
    shop = resources.secrets["cert/edge/shop-cert"].tls_certificate
    assert shop.watched_directory.path == f"{secret_dir}/edge/shop-cert"
    assert shop.certificate_chain.filename == f"{secret_dir}/edge/shop-cert/tls.crt"
    assert shop.private_key.filename == f"{secret_dir}/edge/shop-cert/tls.key"
    for secret in resources.secrets.values():
        for source in (
            secret.tls_certificate.certificate_chain,
            secret.tls_certificate.private_key,
        ):
            assert source.WhichOneof("specifier") == "filename"


def test_a_listener_whose_secret_is_missing_is_inconsistent() -> None:
    resources = build("https-listener")
    del resources.secrets["cert/edge/shop-cert"]
    problems = [p for p in consistent(resources) if "missing cluster clusterset/" not in p]
    assert problems == ["listener gateway/8443 wants missing secret cert/edge/shop-cert"]


# --- redirects: the Location Envoy builds ----------------------------------------------------


def envoy_location(action: Any, scheme: str, host: str, path: str) -> str:
    """The ``Location`` Envoy answers for a RedirectAction, as its ``newUri`` and
    ``processRequestHost`` build it (``source/common/http/utility.cc``): the request's
    ``Host`` keeps its port unless ``port_redirect`` is set or the scheme changes away
    from that port's default; ``host_redirect`` replaces host and port. Path rewrites are
    left out: these tests are about the authority."""
    new_scheme = action.scheme_redirect or ("https" if action.https_redirect else scheme)
    new_port = f":{action.port_redirect}" if action.port_redirect else ""
    final_host = action.host_redirect
    if not final_host:
        final_host = host
        end = host.rfind(":")
        if end != -1:
            remove = bool(new_port)
            if new_scheme != scheme:
                remove |= scheme == "https" and host[end:] == ":443"
                remove |= scheme == "http" and host[end:] == ":80"
            if remove:
                final_host = host[:end]
    return f"{new_scheme}://{final_host}{new_port}{action.path_redirect or path}"


def _location(request: str, domain: str, redirect: RedirectIR) -> str:
    """The Location answered to ``request`` (``scheme://host[:port]``, which came in on
    that port, else on its scheme's default) by a redirect in the virtual host ``domain``."""
    scheme, host = request.split("://")
    https = scheme == "https"
    port = int(host.rsplit(":", 1)[1]) if ":" in host else (443 if https else 80)
    route_ir = RouteIR(name="r", match=MatchIR(PathMatchIR("PathPrefix", "/")), redirect=redirect)
    vhost = VirtualHostIR(name="v", domains=(domain,), routes=(route_ir,))
    config = route_configuration("rc", [vhost], port, https=https)
    return envoy_location(config.virtual_hosts[0].routes[0].redirect, scheme, host, "/x")


EXACT, WILDCARD = "example.com", "*.example.com"


@pytest.mark.parametrize(
    ("request_url", "domain", "redirect", "expected"),
    [
        # A scheme without a port: the scheme's well-known port, left out of Location.
        ("http://example.com:8080", EXACT, RedirectIR(scheme="https"), "https://example.com/x"),
        ("http://example.com", EXACT, RedirectIR(scheme="https"), "https://example.com/x"),
        (
            "http://a.example.com:80",
            WILDCARD,
            RedirectIR(scheme="https"),
            "https://a.example.com/x",
        ),
        ("https://example.com:443", EXACT, RedirectIR(scheme="http"), "http://example.com/x"),
        # Under a wildcard the host is not known: the well-known port, said explicitly.
        (
            "http://a.example.com:8080",
            WILDCARD,
            RedirectIR(scheme="https"),
            "https://a.example.com:443/x",
        ),
        (
            "http://example.com:8080",
            EXACT,
            RedirectIR(scheme="https", hostname="new.example"),
            "https://new.example/x",
        ),
        # A port equal to the scheme's well-known one is left out too; any other is said.
        ("http://example.com:8080", EXACT, RedirectIR(port=80), "http://example.com/x"),
        (
            "http://example.com:8080",
            EXACT,
            RedirectIR(scheme="https", port=443),
            "https://example.com/x",
        ),
        (
            "http://example.com:8080",
            EXACT,
            RedirectIR(scheme="https", port=8443),
            "https://example.com:8443/x",
        ),
        # Neither scheme nor port: the listener's port.
        ("http://example.com:8080", EXACT, RedirectIR(), "http://example.com:8080/x"),
        (
            "http://example.com:8080",
            EXACT,
            RedirectIR(hostname="new.example"),
            "http://new.example:8080/x",
        ),
        ("http://example.com", EXACT, RedirectIR(hostname="new.example"), "http://new.example/x"),
    ],
)
def test_redirect_location_port_follows_gateway_api(
    request_url: str, domain: str, redirect: RedirectIR, expected: str
) -> None:
    assert _location(request_url, domain, redirect) == expected


# --- retries -----------------------------------------------------------------------------------


def _retry_policy(retry: RetryIR | None) -> Any:
    ir = RouteIR(
        name="r",
        match=MatchIR(PathMatchIR("PathPrefix", "/")),
        backends=(BackendIR(1, "c"),),
        retry=retry,
    )
    return route(ir).route.retry_policy


def test_a_rules_retry_adds_to_the_default_retries() -> None:
    default = _retry_policy(None)
    assert default.retry_on == "connect-failure,refused-stream,reset-before-request"
    assert list(default.retriable_status_codes) == []
    own = _retry_policy(RetryIR(codes=(502, 503), attempts=5, backoff_ms=250))
    assert own.retry_on == f"{default.retry_on},retriable-status-codes"
    assert list(own.retriable_status_codes) == [502, 503]
    assert own.num_retries.value == 5
    assert own.retry_back_off.base_interval.ToMilliseconds() == 250
    assert own.retry_back_off.max_interval.ToMilliseconds() == 2500
    # Host predicates and priorities stay: a retry still avoids the hosts it tried.
    assert own.retry_host_predicate == default.retry_host_predicate
    assert own.retry_priority == default.retry_priority
    # Only attempts: the same conditions, that many retries, the default back-off.
    few = _retry_policy(RetryIR(attempts=1))
    assert few.retry_on == default.retry_on and few.num_retries.value == 1
    assert few.retry_back_off == default.retry_back_off


# --- CORS ---------------------------------------------------------------------------------------


def test_a_preflight_from_an_origin_not_allowed_is_answered_not_forwarded() -> None:
    """Envoy forwards a preflight whose Origin its policy does not allow to the backend
    unless ``forward_not_matching_preflights`` is false; the gateway must answer it."""
    from envoy.extensions.filters.http.cors.v3 import cors_pb2

    from federation.translate.ir import CorsIR
    from federation.translate.proxy.features.cors import CORS_FILTER

    ir = RouteIR(
        name="r",
        match=MatchIR(PathMatchIR("PathPrefix", "/")),
        backends=(BackendIR(1, "c"),),
        cors=CorsIR(allow_origins=("https://app.example.com",), allow_methods=("GET",)),
    )
    policy = cors_pb2.CorsPolicy()
    assert route(ir).typed_per_filter_config[CORS_FILTER].Unpack(policy)
    assert policy.HasField("forward_not_matching_preflights")
    assert policy.forward_not_matching_preflights.value is False
