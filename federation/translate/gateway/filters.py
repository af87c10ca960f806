"""Route filters, timeouts and retries: their checks and their IR.

Called by the route stage for each rule (and each backendRef's own filters). Supported:
``RequestHeaderModifier``, ``ResponseHeaderModifier``, ``RequestRedirect``,
``URLRewrite``, ``RequestMirror`` and ``CORS`` on rules; the two header modifiers on
backendRefs. ``ExtensionRef`` and unknown types are ``UnsupportedValue``: the filter
cannot be skipped silently, so the route is not served.

Durations follow Gateway API (GEP-2257): one to four ``<number><unit>`` parts with units
``h``, ``m``, ``s`` and ``ms`` (``1m30s``, ``250ms``); ``0s`` turns the timeout off.

An HTTPRoute rule's ``retry`` keeps Gateway API's limits: status codes from 400 to 599,
at least one attempt (and at most what 32 bits hold); a ``backoff`` of ``0s`` asks for
no minimum wait, which the data plane's own back-off already satisfies, so it is the
same as none.

A value the data plane would refuse is refused here (:mod:`.envoy_limits` says which and
why): a header name that is not an HTTP token or that is ``host``, a header value with a
control character or a ``%``, a path or hostname Envoy cannot write into a request, a CORS
origin whose wildcard expression is too large for RE2, a number out of its field's range.
The message names the field within the rule as written, such as
``filters[1].requestHeaderModifier.set[0].value``; the route stage puts
``backendRefs[i].`` in front of a backendRef's own filters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from federation.registry.gatewayapi import (
    CORS,
    HeaderModifier,
    HTTPPathModifier,
    HTTPRouteFilter,
    HTTPRouteRetry,
    HTTPRouteTimeouts,
    RequestMirror,
    RequestRedirect,
)
from federation.translate.gateway import envoy_limits
from federation.translate.gateway.envoy_limits import shown
from federation.translate.ir import (
    CorsIR,
    HeaderIR,
    HeaderModIR,
    PathRewriteIR,
    RedirectIR,
    RetryIR,
)

_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$")
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
REDIRECT_CODES = (301, 302, 303, 307, 308)
_MAX_PORT = 65535


class FilterError(ValueError):
    """A filter, timeout, retry or other rule setting this implementation cannot serve:
    ``UnsupportedValue``."""


def _check(problem: str | None, field: str, value: str | int) -> None:
    """Refuse ``value`` of ``field`` when :mod:`.envoy_limits` found a ``problem``."""
    if problem is not None:
        shown_value = shown(value) if isinstance(value, str) else str(value)
        raise FilterError(f"{field} {shown_value}: {problem}")


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


def retry(r: HTTPRouteRetry | None) -> RetryIR | None:
    """A rule's ``retry``; None when unset (the data plane's default retries apply)."""
    if r is None:
        return None
    bad = [c for c in r.codes if not 400 <= c <= 599]
    if bad:
        raise FilterError(f"retry.codes {bad} are not HTTP status codes from 400 to 599")
    if r.attempts is not None:
        _check(envoy_limits.in_range(r.attempts, 1), "retry.attempts", r.attempts)
    backoff = None if r.backoff is None else duration_ms(r.backoff, "retry.backoff")
    return RetryIR(
        codes=tuple(sorted(set(r.codes))), attempts=r.attempts, backoff_ms=backoff or None
    )


def header_mod(mod: HeaderModifier | None, field: str = "headerModifier") -> HeaderModIR | None:
    """A header modifier, checked name by name and value by value; ``field`` names it
    (``filters[0].requestHeaderModifier``)."""
    if mod is None:
        return None
    for op, headers in (("set", mod.set), ("add", mod.add)):
        for i, h in enumerate(headers):
            _check(envoy_limits.modifiable_header(h.name), f"{field}.{op}[{i}].name", h.name)
            _check(envoy_limits.header_value(h.value), f"{field}.{op}[{i}].value", h.value)
    for i, name in enumerate(mod.remove):
        _check(envoy_limits.modifiable_header(name), f"{field}.remove[{i}]", name)
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


def path_rewrite(
    path: HTTPPathModifier | None, prefix: str | None, field: str = "path"
) -> PathRewriteIR | None:
    """``prefix``: the rule's PathPrefix match, which ``ReplacePrefixMatch`` replaces;
    ``field`` names the modifier (``filters[0].urlRewrite.path``)."""
    if path is None:
        return None
    if path.type == "ReplaceFullPath" and path.replace_full_path is not None:
        value = path.replace_full_path
        _check(envoy_limits.rewrite_path(value), f"{field}.replaceFullPath", value)
        return PathRewriteIR("ReplaceFullPath", value)
    if path.type == "ReplacePrefixMatch" and path.replace_prefix_match is not None:
        value = path.replace_prefix_match
        _check(envoy_limits.rewrite_path(value), f"{field}.replacePrefixMatch", value)
        if prefix is None:
            raise FilterError(
                "ReplacePrefixMatch needs the rule's matches to be PathPrefix matches"
            )
        return PathRewriteIR("ReplacePrefixMatch", path.replace_prefix_match, prefix)
    raise FilterError(f"path modifier type {path.type} (or its value) is not supported")


def redirect(r: RequestRedirect, prefix: str | None, field: str = "requestRedirect") -> RedirectIR:
    code = 302 if r.status_code is None else r.status_code
    if code not in REDIRECT_CODES:
        raise FilterError(f"redirect statusCode {code} is not one of {REDIRECT_CODES}")
    if r.scheme is not None and r.scheme not in ("http", "https"):
        raise FilterError(f"redirect scheme {r.scheme} is not http or https")
    if r.hostname is not None:
        _check(envoy_limits.precise_hostname(r.hostname), f"{field}.hostname", r.hostname)
    if r.port is not None:
        _check(envoy_limits.in_range(r.port, 1, _MAX_PORT), f"{field}.port", r.port)
    return RedirectIR(
        status_code=code,
        scheme=r.scheme,
        hostname=r.hostname,
        port=r.port,
        path=path_rewrite(r.path, prefix, f"{field}.path"),
    )


def cors(c: CORS, field: str = "cors") -> CorsIR:
    """A CORS policy. Its methods and headers are written into response headers, so each
    must be an HTTP token (``*`` is one); an origin with a wildcard becomes a regular
    expression, which must be one RE2 can run within Envoy's limit."""
    for i, origin in enumerate(c.allow_origins):
        what = f"{field}.allowOrigins[{i}]"
        if origin != "*" and "://" not in origin:
            raise FilterError(f"CORS origin {origin!r} must be * or scheme://host[:port]")
        _check(envoy_limits.cors_origin(origin), what, origin)
    for name, values in (
        ("allowMethods", c.allow_methods),
        ("allowHeaders", c.allow_headers),
        ("exposeHeaders", c.expose_headers),
    ):
        for i, value in enumerate(values):
            _check(envoy_limits.header_name(value), f"{field}.{name}[{i}]", value)
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


def mirror(m: RequestMirror, field: str = "requestMirror") -> None:
    """Refuse a mirror's share that is not a fraction from 0 to 1."""
    if m.percent is not None:
        _check(envoy_limits.in_range(m.percent, 0, 100), f"{field}.percent", m.percent)
    if m.fraction is not None:
        numerator = m.fraction.numerator
        denominator = 100 if m.fraction.denominator is None else m.fraction.denominator
        if not 0 <= numerator <= denominator or denominator < 1:
            raise FilterError(
                f"{field}.fraction {numerator}/{denominator}: the numerator must be from 0 "
                "to the denominator, and the denominator at least 1"
            )


def rule_filters(filters: tuple[HTTPRouteFilter, ...], prefix: str | None) -> RuleFilters:
    out = RuleFilters()
    for k, f in enumerate(filters):
        field = f"filters[{k}]"
        if f.type == "RequestHeaderModifier" and f.request_header_modifier is not None:
            out.request_headers = merge_header_mods(
                out.request_headers,
                header_mod(f.request_header_modifier, f"{field}.requestHeaderModifier"),
            )
        elif f.type == "ResponseHeaderModifier" and f.response_header_modifier is not None:
            out.response_headers = merge_header_mods(
                out.response_headers,
                header_mod(f.response_header_modifier, f"{field}.responseHeaderModifier"),
            )
        elif f.type == "RequestRedirect" and f.request_redirect is not None:
            out.redirect = redirect(f.request_redirect, prefix, f"{field}.requestRedirect")
        elif f.type == "URLRewrite" and f.url_rewrite is not None:
            hostname = f.url_rewrite.hostname
            if hostname is not None:
                problem = envoy_limits.precise_hostname(hostname)
                _check(problem, f"{field}.urlRewrite.hostname", hostname)
            out.rewrite_hostname = hostname
            out.rewrite_path = path_rewrite(f.url_rewrite.path, prefix, f"{field}.urlRewrite.path")
        elif f.type == "RequestMirror" and f.request_mirror is not None:
            mirror(f.request_mirror, f"{field}.requestMirror")
            out.mirrors.append(f)
        elif f.type == "CORS" and f.cors is not None:
            out.cors = cors(f.cors, f"{field}.cors")
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
    for k, f in enumerate(filters):
        field = f"filters[{k}]"
        if f.type == "RequestHeaderModifier" and f.request_header_modifier is not None:
            request = merge_header_mods(
                request, header_mod(f.request_header_modifier, f"{field}.requestHeaderModifier")
            )
        elif f.type == "ResponseHeaderModifier" and f.response_header_modifier is not None:
            response = merge_header_mods(
                response,
                header_mod(f.response_header_modifier, f"{field}.responseHeaderModifier"),
            )
        else:
            raise FilterError(f"backendRef filter type {f.type} is not supported")
    return request, response
