"""The second stage's features: one module per HTTP filter or cluster feature, in one table.

Called by the second stage's core builders (:mod:`..listeners`, :mod:`..routes`,
:mod:`..clusters`), which build what every listener, route or cluster has and then let
each feature of :data:`FEATURES`, in that order, contribute its part. A feature is one
module that exports ``FEATURE``, a :class:`Feature` with up to three hooks:

* ``http_filter(listener)``: its HTTP filter in a listener's connection manager (None:
  not on that listener); or ``http_filters(listener)``: its filters, for a feature with
  one per policy. Filters run in the table's order; the router comes last, since it sends
  the request upstream and nothing after it runs.
* ``patch_route(ir, route)``: patches a rendered route with what the feature's IR fields
  say.
* ``patch_cluster(ir, cluster, options)``: patches a rendered cluster.

A new HTTP filter is a new module here, its IR field in :mod:`federation.translate.ir`,
its place in :data:`FEATURES`, and a golden case. Pure: no I/O, no state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from federation.translate.ir import ListenerIR
from federation.translate.proxy.features import (
    authorization,
    cors,
    credential_auth,
    ext_authz,
    fault,
    headers,
    health_check,
    jwt,
    load_balancing,
    local_rate_limit,
    mirror,
    outlier,
    retry,
    router,
    timeout,
    upstream_http,
)
from federation.translate.proxy.features.base import ClusterSource, Feature

__all__ = [
    "CLUSTER_HOOKS",
    "FEATURES",
    "HTTP_FILTER_HOOKS",
    "ROUTE_HOOKS",
    "ClusterSource",
    "Feature",
]

#: Every feature, in the order its hooks run. ``timeout`` follows ``retry``: it sets the
#: per-try timeout of the retry policy that ``retry`` puts on the route;
#: ``health_check`` follows ``load_balancing``, whose panic threshold a policy may replace.
#: ``router`` is last: the HTTP filter chain follows this order and must end with the
#: router. The HTTP filters go in Envoy Gateway's order: faults, CORS, external
#: authorization, API keys, basic auth, JWT authentication, authorization (which reads
#: the verified JWT), then rate limits.
FEATURES: tuple[Feature, ...] = (
    fault.FEATURE,
    cors.FEATURE,
    ext_authz.FEATURE,
    credential_auth.API_KEY_FEATURE,
    credential_auth.BASIC_FEATURE,
    jwt.FEATURE,
    authorization.FEATURE,
    local_rate_limit.FEATURE,
    headers.FEATURE,
    mirror.FEATURE,
    retry.FEATURE,
    timeout.FEATURE,
    load_balancing.FEATURE,
    health_check.FEATURE,
    outlier.FEATURE,
    upstream_http.FEATURE,
    router.FEATURE,
)


def _filters(feature: Feature) -> Callable[[ListenerIR], list[Any]] | None:
    """A feature's HTTP filter hook, as one that returns a list of filters."""
    if feature.http_filters is not None:
        return feature.http_filters
    single = feature.http_filter
    if single is None:
        return None
    return lambda listener: [f] if (f := single(listener)) is not None else []


#: The hooks of :data:`FEATURES` by kind, in table order (looked up once, not per route);
#: each HTTP filter hook returns the feature's filters of a listener, in order.
HTTP_FILTER_HOOKS = tuple(hook for f in FEATURES if (hook := _filters(f)) is not None)
ROUTE_HOOKS = tuple(f.patch_route for f in FEATURES if f.patch_route is not None)
CLUSTER_HOOKS = tuple(f.patch_cluster for f in FEATURES if f.patch_cluster is not None)
