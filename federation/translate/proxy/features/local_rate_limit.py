"""Local rate limits (a BackendTrafficPolicy's ``rateLimit.local``): Envoy's local rate
limit filter, with a per-route configuration on the routes under such a policy.

Each Envoy counts on its own (a Gateway with three replicas lets three times the budget
through, as Envoy Gateway's local limits do). A route's default bucket counts every
request no rule counts; each rule with ``clientSelectors`` has a bucket of its own, for
the requests that match all of its conditions, as a descriptor: its conditions are rate
limit actions (a header, ``:method`` or ``:path`` match, or the client's address masked
to the rule's prefix) whose entries name the rule. Past a budget, Envoy answers 429. The
filter is on every Gateway listener, without a bucket of its own (it limits nothing without a
route's configuration), like CORS: a route that gains a limit changes only its route
configuration.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

import ipaddress
import re
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2

from federation.translate.ir import (
    ListenerIR,
    RateLimitBucketIR,
    RateLimitIR,
    RateLimitMatchIR,
    RouteIR,
)
from federation.translate.proxy.common import duration_ms, http_filter
from federation.translate.proxy.features.base import Feature, serves_policies

LOCAL_RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
STAT_PREFIX = "http_local_rate_limiter"
#: The entry key Envoy gives a masked client address.
MASKED_REMOTE_ADDRESS = "masked_remote_address"


def _http_filter(listener: ListenerIR) -> Any | None:
    if not serves_policies(listener):
        return None
    return http_filter(
        LOCAL_RATE_LIMIT_FILTER, local_rate_limit_pb2.LocalRateLimit(stat_prefix=STAT_PREFIX)
    )


def _bucket(bucket: RateLimitBucketIR) -> Any:
    return token_bucket_pb2.TokenBucket(
        max_tokens=bucket.requests,
        tokens_per_fill={"value": bucket.requests},
        fill_interval=duration_ms(bucket.seconds * 1000),
    )


def _always() -> Any:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
        ),
        runtime_key="local_rate_limit_enabled",
    )


def _string(match: RateLimitMatchIR) -> Any:
    if match.type == "RegularExpression":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    if match.type == "PathPrefix":
        if match.value == "/":
            return string_pb2.StringMatcher(prefix="/")
        # Whole segments, as Gateway API prefixes are: /api, /api/x or /api?q, not /apix.
        prefix = re.escape(match.value.rstrip("/"))
        return string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex=f"{prefix}([/?].*)?")
        )
    return string_pb2.StringMatcher(exact=match.value)


def _action(key: str, match: RateLimitMatchIR) -> tuple[Any, Any]:
    """The action that gives ``match``'s descriptor entry, and that entry."""
    if match.kind == "source":
        network = ipaddress.ip_network(match.value)
        masked = rc.RateLimit.Action.MaskedRemoteAddress()
        if network.version == 4:
            masked.v4_prefix_mask_len.value = network.prefixlen
            masked.v6_prefix_mask_len.value = 128
        else:
            masked.v6_prefix_mask_len.value = network.prefixlen
            masked.v4_prefix_mask_len.value = 32
        action = rc.RateLimit.Action(masked_remote_address=masked)
        entry = ratelimit_pb2.RateLimitDescriptor.Entry(
            key=MASKED_REMOTE_ADDRESS, value=str(network)
        )
        return action, entry
    header = {"header": match.name, "method": ":method", "path": ":path"}[match.kind]
    matcher = rc.HeaderMatcher(name=header, string_match=_string(match))
    action = rc.RateLimit.Action(
        header_value_match=rc.RateLimit.Action.HeaderValueMatch(
            descriptor_key=key,
            descriptor_value=key,
            expect_match={"value": not match.invert},
            headers=[matcher],
        )
    )
    return action, ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=key)


def local_rate_limit(ir: RateLimitIR) -> Any:
    out = local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=STAT_PREFIX,
        filter_enabled=_always(),
        filter_enforced=_always(),
        always_consume_default_token_bucket={"value": False},
    )
    if ir.default is not None:
        out.token_bucket.CopyFrom(_bucket(ir.default))
    else:
        out.token_bucket.CopyFrom(_bucket(RateLimitBucketIR(2**32 - 1, 1)))
    for i, rule in enumerate(ir.rules):
        pairs = [_action(f"rule-{i}-match-{j}", m) for j, m in enumerate(rule.matches)]
        out.rate_limits.add(actions=[a for a, _ in pairs])
        out.descriptors.add(entries=[e for _, e in pairs], token_bucket=_bucket(rule))
    return out


def patch_route(ir: RouteIR, out: Any) -> None:
    if ir.rate_limit is not None and out.HasField("route"):
        config = local_rate_limit(ir.rate_limit)
        out.typed_per_filter_config[LOCAL_RATE_LIMIT_FILTER].Pack(config, deterministic=True)


FEATURE = Feature("local-rate-limit", http_filter=_http_filter, patch_route=patch_route)
