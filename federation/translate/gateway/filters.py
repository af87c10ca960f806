"""Route filters and timeouts: their checks and their IR.

Called by the route stage for each rule (and each backendRef's own filters). Supported:
``RequestHeaderModifier``, ``ResponseHeaderModifier``, ``RequestRedirect``,
``URLRewrite``, ``RequestMirror`` and ``CORS`` on rules; the two header modifiers on
backendRefs. ``ExtensionRef`` and unknown types are ``UnsupportedValue``: the filter
cannot be skipped silently, so the route is not served.

Durations follow Gateway API (GEP-2257): one to four ``<number><unit>`` parts with units
``h``, ``m``, ``s`` and ``ms`` (``1m30s``, ``250ms``); ``0s`` turns the timeout off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from federation.registry.gatewayapi import (
    CORS,
    HeaderModifier,
    HTTPPathModifier,
    HTTPRouteFilter,
    HTTPRouteTimeouts,
    RequestRedirect,
)
from federation.translate.ir import (
    CorsIR,
    HeaderIR,
    HeaderModIR,
    PathRewriteIR,
    RedirectIR,
)

_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$")
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
REDIRECT_CODES = (301, 302, 303, 307, 308)


class FilterError(ValueError):
    """A filter or timeout this implementation cannot serve: ``UnsupportedValue``."""


def duration_ms(value: str, what: str) -> int:
    """Milliseconds of a Gateway API duration; 0 means "no timeout"."""
    if not _DURATION.match(value):
        raise FilterError(f"{what} {value!r} is not a duration such as 10s, 1m30s or 500ms")
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _PART.findall(value))


def timeouts(t: HTTPRouteTimeouts | None) -> tuple[int | None, int | None]:
    """(request, backendRequest) in milliseconds; None when unset."""
    if t is None:
        return None, None
    request = None if t.request is None else duration_ms(t.request, "timeouts.request")
    backend = (
        None
        if t.backend_request is None
        else duration_ms(t.backend_request, "timeouts.backendRequest")
    )
    if request and backend and backend > request:
        raise FilterError("timeouts.backendRequest must not be longer than timeouts.request")
    return request, backend


def header_mod(mod: HeaderModifier | None) -> HeaderModIR | None:
    if mod is None:
        return None
    for name in [h.name for h in (*mod.set, *mod.add)] + list(mod.remove):
        if name.lower() == "host" or name.startswith(":"):
            # Envoy refuses the whole route configuration if one route modifies these.
            raise FilterError(
                f"header {name} cannot be modified by a header modifier; "
                "URLRewrite sets the hostname"
            )
    return HeaderModIR(
        set=tuple(HeaderIR(h.name, h.value) for h in mod.set),
        add=tuple(HeaderIR(h.name, h.value) for h in mod.add),
        remove=mod.remove,
    )


def merge_header_mods(a: HeaderModIR | None, b: HeaderModIR | None) -> HeaderModIR | None:
    """Two modifiers of one rule applied as one (Gateway API allows one of each type per
    rule; a backendRef's own filter adds to the rule's)."""
    if a is None or b is None:
        return a or b
    return HeaderModIR(a.set + b.set, a.add + b.add, a.remove + b.remove)


def path_rewrite(path: HTTPPathModifier | None, prefix: str | None) -> PathRewriteIR | None:
    """``prefix``: the rule's PathPrefix match, which ``ReplacePrefixMatch`` replaces."""
    if path is None:
        return None
    if path.type == "ReplaceFullPath" and path.replace_full_path is not None:
        return PathRewriteIR("ReplaceFullPath", path.replace_full_path)
    if path.type == "ReplacePrefixMatch" and path.replace_prefix_match is not None:
        if prefix is None:
            raise FilterError(
                "ReplacePrefixMatch needs the rule's matches to be PathPrefix matches"
            )
        return PathRewriteIR("ReplacePrefixMatch", path.replace_prefix_match, prefix)
    raise FilterError(f"path modifier type {path.type} (or its value) is not supported")


def redirect(r: RequestRedirect, prefix: str | None) -> RedirectIR:
    code = 302 if r.status_code is None else r.status_code
    if code not in REDIRECT_CODES:
        raise FilterError(f"redirect statusCode {code} is not one of {REDIRECT_CODES}")
    if r.scheme is not None and r.scheme not in ("http", "https"):
        raise FilterError(f"redirect scheme {r.scheme} is not http or https")
    return RedirectIR(
        status_code=code,
        scheme=r.scheme,
        hostname=r.hostname,
        port=r.port,
        path=path_rewrite(r.path, prefix),
    )


def cors(c: CORS) -> CorsIR:
    for origin in c.allow_origins:
        if origin != "*" and "://" not in origin:
            raise FilterError(f"CORS origin {origin!r} must be * or scheme://host[:port]")
    return CorsIR(
        allow_origins=c.allow_origins,
        allow_credentials=bool(c.allow_credentials),
        allow_methods=c.allow_methods,
        allow_headers=c.allow_headers,
        expose_headers=c.expose_headers,
        max_age_seconds=c.max_age,
    )


@dataclass
class RuleFilters:
    """A rule's filters, checked and converted (mirrors are resolved by the caller)."""

    request_headers: HeaderModIR | None = None
    response_headers: HeaderModIR | None = None
    redirect: RedirectIR | None = None
    rewrite_hostname: str | None = None
    rewrite_path: PathRewriteIR | None = None
    cors: CorsIR | None = None
    mirrors: list[HTTPRouteFilter] = field(default_factory=list)


def rule_filters(filters: tuple[HTTPRouteFilter, ...], prefix: str | None) -> RuleFilters:
    out = RuleFilters()
    for f in filters:
        if f.type == "RequestHeaderModifier" and f.request_header_modifier is not None:
            out.request_headers = merge_header_mods(
                out.request_headers, header_mod(f.request_header_modifier)
            )
        elif f.type == "ResponseHeaderModifier" and f.response_header_modifier is not None:
            out.response_headers = merge_header_mods(
                out.response_headers, header_mod(f.response_header_modifier)
            )
        elif f.type == "RequestRedirect" and f.request_redirect is not None:
            out.redirect = redirect(f.request_redirect, prefix)
        elif f.type == "URLRewrite" and f.url_rewrite is not None:
            out.rewrite_hostname = f.url_rewrite.hostname
            out.rewrite_path = path_rewrite(f.url_rewrite.path, prefix)
        elif f.type == "RequestMirror" and f.request_mirror is not None:
            out.mirrors.append(f)
        elif f.type == "CORS" and f.cors is not None:
            out.cors = cors(f.cors)
        else:
            raise FilterError(f"filter type {f.type} is not supported (or has no settings)")
    if out.redirect is not None and (out.rewrite_hostname or out.rewrite_path):
        raise FilterError("RequestRedirect and URLRewrite cannot be used together")
    return out


def backend_filters(
    filters: tuple[HTTPRouteFilter, ...],
) -> tuple[HeaderModIR | None, HeaderModIR | None]:
    """(request, response) header modifiers of one backendRef."""
    request = response = None
    for f in filters:
        if f.type == "RequestHeaderModifier" and f.request_header_modifier is not None:
            request = merge_header_mods(request, header_mod(f.request_header_modifier))
        elif f.type == "ResponseHeaderModifier" and f.response_header_modifier is not None:
            response = merge_header_mods(response, header_mod(f.response_header_modifier))
        else:
            raise FilterError(f"backendRef filter type {f.type} is not supported")
    return request, response
