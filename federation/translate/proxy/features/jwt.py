"""JWT authentication (a SecurityPolicy's ``jwt``): Envoy's ``jwt_authn`` filter, and the
clusters its remote JWKS are fetched through.

One filter per connection manager holds the providers of every route of the listener
(:class:`~federation.translate.ir.JwtProviderIR`, named apart per policy) and one
requirement per policy: any of its providers, or no token at all when the policy's JWT
is optional. A route under such a policy names its requirement in its per-route config;
other routes have none and pass untouched. The filter is on a listener only while some
route of it needs a JWT, since its providers are part of its configuration: adding or
changing a provider changes the listener anyway.

Every provider leaves the payload it verified in the request's dynamic metadata under
its own name, with the space-delimited ``scope`` claim split into a list, where
authorization rules read claims and scopes (:mod:`.authorization`). A token is forwarded
to the backend as it came. Keys fetched from a URI are cached for the provider's
``cacheDuration`` (5 minutes by default) and fetched as the listener starts (not on the
first request), a failed fetch retried after ``failedRefetchDuration`` (Envoy's default
when unset), through a cluster per scheme, host and port:
a literal IP is reached as it is, a name through DNS, ``https`` with the server's
certificate checked against the system's trust bundle (as Envoy Gateway does) and
its name. Requests without a valid token are answered 401 (403 when it is valid but
meant for another audience: Envoy's answer).
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

import ipaddress
from typing import Any

from envoy.config.core.v3 import base_pb2, http_uri_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import empty_pb2

from federation.translate.ir import JwtIR, JwtProviderIR, ListenerIR, RemoteJwksIR, RouteIR
from federation.translate.proxy.common import duration_ms, host_cluster, http_filter
from federation.translate.proxy.features.base import Feature, listener_routes, serves_policies

JWT_FILTER = "envoy.filters.http.jwt_authn"
#: Where Envoy finds the system's trust bundle (the Envoy image's, and Debian's).
TRUST_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
FETCH_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_MS = 5_000


def listener_jwts(listener: ListenerIR) -> list[JwtIR]:
    """Every distinct JWT requirement of the routes of ``listener``, by name."""
    found = {r.jwt.requirement: r.jwt for r in listener_routes(listener) if r.jwt is not None}
    return [found[name] for name in sorted(found)]


def _provider(ir: JwtProviderIR) -> Any:
    out = jwt_pb2.JwtProvider(
        issuer=ir.issuer,
        audiences=list(ir.audiences),
        forward=True,
        payload_in_metadata=ir.payload_key,
        clear_route_cache=ir.recompute_route,
        from_cookies=list(ir.from_cookies),
        from_params=list(ir.from_params),
    )
    out.normalize_payload_in_metadata.space_delimited_claims.append("scope")
    for header, prefix in ir.from_headers:
        out.from_headers.add(name=header, value_prefix=prefix)
    for header, claim in ir.claim_to_headers:
        out.claim_to_headers.add(header_name=header, claim_name=claim)
    if ir.remote_jwks is not None:
        remote = out.remote_jwks
        remote.http_uri.CopyFrom(
            http_uri_pb2.HttpUri(
                uri=ir.remote_jwks.uri,
                cluster=ir.remote_jwks.cluster,
                timeout=duration_ms(FETCH_TIMEOUT_MS),
            )
        )
        remote.cache_duration.CopyFrom(duration_ms(ir.remote_jwks.cache_ms))
        remote.async_fetch.SetInParent()
        if ir.remote_jwks.refetch_ms is not None:
            remote.async_fetch.failed_refetch_duration.CopyFrom(
                duration_ms(ir.remote_jwks.refetch_ms)
            )
    else:
        out.local_jwks.inline_string = ir.local_jwks
    return out


def authentication(jwts: list[JwtIR]) -> Any:
    """The filter's configuration for ``jwts``: their providers and requirements."""
    config = jwt_pb2.JwtAuthentication(bypass_cors_preflight=True)
    for jwt in jwts:
        requirements = [jwt_pb2.JwtRequirement(provider_name=p.name) for p in jwt.providers]
        for provider in jwt.providers:
            config.providers[provider.name].CopyFrom(_provider(provider))
        if jwt.optional:
            requirements.append(jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))
        requirement = config.requirement_map[jwt.requirement]
        if len(requirements) == 1:
            requirement.CopyFrom(requirements[0])
        else:
            requirement.requires_any.requirements.extend(requirements)
    return config


def _http_filter(listener: ListenerIR) -> Any | None:
    if not serves_policies(listener):
        return None
    jwts = listener_jwts(listener)
    return http_filter(JWT_FILTER, authentication(jwts)) if jwts else None


def patch_route(ir: RouteIR, out: Any) -> None:
    if ir.jwt is not None:
        config = jwt_pb2.PerRouteConfig(requirement_name=ir.jwt.requirement)
        out.typed_per_filter_config[JWT_FILTER].Pack(config, deterministic=True)


def jwks_clusters(listener: ListenerIR) -> dict[str, RemoteJwksIR]:
    """The remote JWKS of the routes of ``listener``, by cluster name."""
    return {
        p.remote_jwks.cluster: p.remote_jwks
        for jwt in listener_jwts(listener)
        for p in jwt.providers
        if p.remote_jwks is not None
    }


def jwks_cluster(ir: RemoteJwksIR) -> Any:
    """The cluster that reaches a remote JWKS's host."""
    out = host_cluster(ir.cluster, ir.host, ir.port, CONNECT_TIMEOUT_MS)
    if ir.tls:
        try:
            ipaddress.ip_address(ir.host)
            san = common_pb2.SubjectAltNameMatcher.IP_ADDRESS
        except ValueError:
            san = common_pb2.SubjectAltNameMatcher.DNS
        context = tls_pb2.UpstreamTlsContext(sni=ir.host)
        validation = context.common_tls_context.validation_context
        validation.trusted_ca.CopyFrom(base_pb2.DataSource(filename=TRUST_BUNDLE))
        validation.match_typed_subject_alt_names.add(
            san_type=san, matcher=string_pb2.StringMatcher(exact=ir.host)
        )
        out.transport_socket.name = "envoy.transport_sockets.tls"
        out.transport_socket.typed_config.Pack(context, deterministic=True)
    return out


FEATURE = Feature("jwt", http_filter=_http_filter, patch_route=patch_route)
