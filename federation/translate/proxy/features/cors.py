"""CORS (HTTPRoute's ``CORS`` filter): Envoy's CORS filter, with a policy per route.

The filter is on every listener: without a route's policy it lets requests through
unchanged, and having it always there means a route that gains CORS changes only its
route configuration, never the listener (a listener change drains its connections).
A route's :class:`~federation.translate.ir.CorsIR` becomes the filter's per-route
config; the filter answers preflight requests itself, those from an origin the policy
does not allow too (without CORS headers, so the browser refuses): Envoy would otherwise
forward them to the backend (``forward_not_matching_preflights`` defaults to true),
which neither expects nor may answer them.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

import re
from typing import Any

from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from federation.translate.ir import CorsIR, ListenerIR, RouteIR
from federation.translate.proxy.common import http_filter
from federation.translate.proxy.features.base import Feature

CORS_FILTER = "envoy.filters.http.cors"


def _http_filter(listener: ListenerIR) -> Any:
    return http_filter(CORS_FILTER, cors_pb2.Cors())


def _origin(origin: str) -> string_pb2.StringMatcher:
    if origin == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))
    if "*" in origin:
        pattern = ".*".join(re.escape(part) for part in origin.split("*"))
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=f"^{pattern}$"))
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
    policy.forward_not_matching_preflights.value = False
    return policy


def patch_route(ir: RouteIR, out: Any) -> None:
    if ir.cors is not None:
        out.typed_per_filter_config[CORS_FILTER].Pack(cors_policy(ir.cors), deterministic=True)


FEATURE = Feature("cors", http_filter=_http_filter, patch_route=patch_route)
