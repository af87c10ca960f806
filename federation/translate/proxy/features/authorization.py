"""Authorization (a SecurityPolicy's ``authorization``): Envoy's RBAC filter, with a
per-route configuration on the routes under such a policy; denied requests get 403.

Envoy Gateway's rules are ordered, the first a request matches deciding; Envoy's RBAC
is a set of policies that allow (or deny) when any matches. So each rule that decides
like the policy's default is dropped, and each other rule becomes an RBAC policy that
matches its own conditions *and none of the rules before it*: with a default of Deny, an
ALLOW set of the Allow rules; with a default of Allow, a DENY set of the Deny rules.
A rule's conditions: the client's address (``remote_ip``, Envoy's view of the client)
in one of its ranges, each header with one of its values, the method one of its own,
and each JWT claim and scope it names in the payload its provider verified (the
``jwt_authn`` filter, which runs before this one, leaves it in the request's metadata).

The filter is on every Gateway listener, without rules of its own (it lets everything
through without a route's configuration), like CORS: a route that gains a policy
changes only its route configuration.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

import ipaddress
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2

from federation.translate.ir import AuthorizationIR, AuthorizationRuleIR, ListenerIR, RouteIR
from federation.translate.proxy.common import http_filter
from federation.translate.proxy.features.base import Feature, serves_policies
from federation.translate.proxy.features.jwt import JWT_FILTER

RBAC_FILTER = "envoy.filters.http.rbac"


def _http_filter(listener: ListenerIR) -> Any | None:
    if not serves_policies(listener):
        return None
    return http_filter(RBAC_FILTER, rbac_pb2.RBAC())


def _any_of(principals: list[Any]) -> Any:
    if len(principals) == 1:
        return principals[0]
    return rbac_config.Principal(or_ids=rbac_config.Principal.Set(ids=principals))


def _header(name: str, value: str) -> Any:
    matcher = rc.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(exact=value))
    return rbac_config.Principal(header=matcher)


def _claim(provider: str, path: tuple[str, ...], values: tuple[str, ...], array: bool) -> Any:
    """A principal whose JWT, as ``provider`` left it in the request's metadata, has
    claim ``path`` equal to one of ``values`` (``array``: a list holding one of them)."""
    options = []
    for value in values:
        exact = value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=value))
        if array:
            exact = value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=exact))
        matcher = metadata_pb2.MetadataMatcher(filter=JWT_FILTER, value=exact)
        for key in (provider, *path):
            matcher.path.add(key=key)
        options.append(rbac_config.Principal(metadata=matcher))
    return _any_of(options)


def _matches(rule: AuthorizationRuleIR) -> Any:
    """A principal that matches the requests ``rule`` matches."""
    parts = []
    if rule.cidrs:
        ranges = []
        for cidr in rule.cidrs:
            network = ipaddress.ip_network(cidr)
            ranges.append(
                rbac_config.Principal(
                    remote_ip={
                        "address_prefix": str(network.network_address),
                        "prefix_len": {"value": network.prefixlen},
                    }
                )
            )
        parts.append(_any_of(ranges))
    for header in rule.headers:
        parts.append(_any_of([_header(header.name, v) for v in header.values]))
    if rule.methods:
        parts.append(_any_of([_header(":method", m) for m in rule.methods]))
    if rule.jwt_provider is not None:
        for claim in rule.jwt_claims:
            parts.append(_claim(rule.jwt_provider, claim.path, claim.values, claim.array))
        for scope in rule.jwt_scopes:
            parts.append(_claim(rule.jwt_provider, ("scope",), (scope,), array=True))
    if not parts:
        return rbac_config.Principal(any=True)
    if len(parts) == 1:
        return parts[0]
    return rbac_config.Principal(and_ids=rbac_config.Principal.Set(ids=parts))


def rbac(ir: AuthorizationIR) -> Any:
    """The per-route RBAC of ``ir``; see the module docstring."""
    action = rbac_config.RBAC.DENY if ir.default_allow else rbac_config.RBAC.ALLOW
    rules = rbac_config.RBAC(action=action)
    for i, rule in enumerate(ir.rules):
        if rule.allow == ir.default_allow:
            continue  # decides as the default does: only what it hides from later rules
        own = _matches(rule)
        earlier = [_matches(r) for r in ir.rules[:i]]
        if earlier:
            first = rbac_config.Principal(not_id=_any_of(earlier))
            own = rbac_config.Principal(and_ids=rbac_config.Principal.Set(ids=[own, first]))
        policy = rules.policies[f"rule-{i}"]
        policy.permissions.add(any=True)
        policy.principals.append(own)
    return rbac_pb2.RBACPerRoute(rbac=rbac_pb2.RBAC(rules=rules))


def patch_route(ir: RouteIR, out: Any) -> None:
    if ir.authorization is not None:
        out.typed_per_filter_config[RBAC_FILTER].Pack(rbac(ir.authorization), deterministic=True)


FEATURE = Feature("authorization", http_filter=_http_filter, patch_route=patch_route)
