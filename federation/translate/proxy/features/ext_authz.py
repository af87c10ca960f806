"""External authorization (a SecurityPolicy's ``extAuth``): Envoy's ``ext_authz`` filter,
one per policy, asking an HTTP or gRPC service about every request of its routes.

Each policy's service is a filter of its own on the listeners whose routes it covers,
named ``envoy.filters.http.ext_authz/<namespace>/<policy>`` and disabled by default; a
route under the policy turns it on with its per-route config (which also carries the
policy's context extensions), so no other route is ever checked. That is Envoy
Gateway's layout too: a filter's service is part of its configuration, so a policy that
comes or goes changes the listener.

What the service decides is final: an allowing answer lets the request on (an HTTP
service's ``headersToBackend`` copied onto it), a denying one is answered as the service
answered (403 by default). A service that cannot be reached denies (403, or
``statusOnError``) unless the policy says ``failOpen``.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.type.matcher.v3 import string_pb2

from federation.translate.ir import ExtAuthIR, ListenerIR, RouteIR
from federation.translate.proxy.common import duration_ms, http_filter
from federation.translate.proxy.features.base import Feature, listener_routes, serves_policies

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"


def filter_name(ir: ExtAuthIR) -> str:
    """The name of the filter of ``ir``'s policy."""
    return f"{EXT_AUTHZ_FILTER}/{ir.name}"


def _exact(names: tuple[str, ...]) -> Any:
    return [string_pb2.StringMatcher(exact=name) for name in names]


def ext_authz(ir: ExtAuthIR) -> Any:
    """The filter configuration of ``ir``."""
    config = ext_authz_pb2.ExtAuthz(
        transport_api_version=config_source_pb2.V3,
        failure_mode_allow=ir.fail_open,
        clear_route_cache=ir.recompute_route,
    )
    if ir.grpc:
        config.grpc_service.CopyFrom(
            grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                    cluster_name=ir.cluster, authority=ir.authority
                ),
                timeout=duration_ms(ir.timeout_ms),
            )
        )
    else:
        service = config.http_service
        service.server_uri.CopyFrom(
            http_uri_pb2.HttpUri(
                uri=f"http://{ir.authority}{ir.path}",
                cluster=ir.cluster,
                timeout=duration_ms(ir.timeout_ms),
            )
        )
        service.path_prefix = ir.path
        if ir.headers_to_backend:
            allowed = service.authorization_response.allowed_upstream_headers
            allowed.patterns.extend(_exact(ir.headers_to_backend))
    if ir.headers_to_ext_auth:
        config.allowed_headers.patterns.extend(_exact(ir.headers_to_ext_auth))
    if ir.status_on_error is not None:
        config.status_on_error.code = ir.status_on_error
    if ir.max_request_bytes is not None:
        config.with_request_body.max_request_bytes = ir.max_request_bytes
    return config


def _http_filters(listener: ListenerIR) -> list[Any]:
    if not serves_policies(listener):
        return []
    found = {r.ext_auth.name: r.ext_auth for r in listener_routes(listener) if r.ext_auth}
    out = []
    for name in sorted(found):
        made = http_filter(filter_name(found[name]), ext_authz(found[name]))
        made.disabled = True
        out.append(made)
    return out


def patch_route(ir: RouteIR, out: Any) -> None:
    if ir.ext_auth is None:
        return
    per_route = ext_authz_pb2.ExtAuthzPerRoute()
    per_route.check_settings.SetInParent()
    for key, value in ir.ext_auth.context_extensions:
        per_route.check_settings.context_extensions[key] = value
    enable = rc.FilterConfig()
    enable.config.Pack(per_route, deterministic=True)
    out.typed_per_filter_config[filter_name(ir.ext_auth)].Pack(enable, deterministic=True)


FEATURE = Feature("ext_authz", http_filters=_http_filters, patch_route=patch_route)
