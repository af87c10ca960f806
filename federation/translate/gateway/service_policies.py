"""BackendTrafficPolicies on ServiceImports: a service owner's settings, in every cluster.

Federation's extension of Envoy Gateway's attachment model: a BackendTrafficPolicy may
target a ServiceImport (``group: multicluster.x-k8s.io``) of its own namespace. Its
cluster settings (circuit breakers, load balancing, health checks, connection timeouts
and keepalive) then apply to that service's clusters in the Envoys of every member
cluster, the shared ones and every Gateway's: the owner's circuit breakers protect the
service from every consumer cluster.

* Only an exporting cluster's policy applies: a policy in a cluster that does not export
  the service is ``Accepted=False/Invalid``.
* Where the exporters' policies disagree, the oldest applies (``creationTimestamp``,
  then cluster, namespace and name), as MCS resolves export conflicts; the others are
  ``Accepted=False/Conflicted``, naming it.
* Settings that belong to routes (retries, request timeouts, consistent hashing, faults,
  rate limits) are refused by name on a ServiceImport: the routes that reach the service
  are the consumers' to configure.
* A policy that names a ServiceImport nobody exports gets no status entry for it, as a
  policy whose Gateway or route does not exist.

:func:`service_policies` is pure and sees the whole clusterset: the hub calls it for the
settings of each service's clusters, each agent for the statuses of its own policies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from federation.model.conditions import Condition
from federation.model.imports import MergedImport
from federation.registry.gatewayapi import ParentReference
from federation.registry.policies import BackendTrafficPolicyRecord
from federation.translate.gateway.inputs import ObjectName
from federation.translate.gateway.policy_settings import (
    PolicyError,
    TrafficSettings,
    compile_settings,
)
from federation.translate.gateway.status import PolicyCondition, PolicyReason, condition
from federation.translate.ir import ClusterPolicyIR

SERVICE_IMPORT_GROUP = "multicluster.x-k8s.io"
SERVICE_IMPORT = "ServiceImport"

#: The route settings a policy on a ServiceImport may not set, by their spec paths.
_ROUTE_SETTINGS = {
    "retry": "spec.retry",
    "request_timeout_ms": "spec.timeout.http.requestTimeout",
    "per_try_timeout_ms": "spec.retry.perRetry.timeout",
    "hash_policy": "spec.loadBalancer.consistentHash",
    "fault": "spec.faultInjection",
    "rate_limit": "spec.rateLimit",
    "route_stat_name": "spec.telemetry.metrics.routeStatName",
}

#: One policy, by cluster, namespace and name.
PolicyKey = tuple[str, str, str]


@dataclass(frozen=True)
class ServicePolicy:
    """The policy that applies to a ServiceImport's clusters, and its cluster settings."""

    cluster: str
    namespace: str
    name: str
    settings: ClusterPolicyIR | None


@dataclass
class ServicePolicies:
    """The result: what applies to each service, and each policy's ``Accepted`` for each
    ServiceImport it targets."""

    applied: dict[ObjectName, ServicePolicy] = field(default_factory=dict)
    verdicts: dict[PolicyKey, dict[ObjectName, Condition]] = field(default_factory=dict)

    def ancestors(self, policy: BackendTrafficPolicyRecord) -> dict[ParentReference, Condition]:
        """The status entries of ``policy`` for the ServiceImports it targets."""
        found = self.verdicts.get((policy.cluster, policy.namespace, policy.name), {})
        return {service_import_ref(service): cond for service, cond in sorted(found.items())}


def service_import_ref(service: ObjectName) -> ParentReference:
    return ParentReference(
        name=service[1], group=SERVICE_IMPORT_GROUP, kind=SERVICE_IMPORT, namespace=service[0]
    )


def targets_service_import(policy: BackendTrafficPolicyRecord) -> bool:
    return any(is_service_import(t.group, t.kind) for t in policy.spec.targets())


def is_service_import(group: str, kind: str) -> bool:
    """Whether a policy target of ``group`` and ``kind`` is a ServiceImport."""
    return (group, kind) == (SERVICE_IMPORT_GROUP, SERVICE_IMPORT)


def _rank(policy: BackendTrafficPolicyRecord) -> tuple[bool, str, str, str, str]:
    return (not policy.created, policy.created, policy.cluster, policy.namespace, policy.name)


def _service_settings(policy: BackendTrafficPolicyRecord) -> ClusterPolicyIR | None:
    """The cluster settings of ``policy``; PolicyError when it sets more."""
    settings: TrafficSettings = compile_settings(policy)
    routes = [path for name, path in _ROUTE_SETTINGS.items() if getattr(settings, name)]
    if routes:
        raise PolicyError(
            f"{', '.join(routes)}: route settings, which a policy on a ServiceImport cannot "
            "set (the routes to a service are their own clusters' to configure); only "
            "cluster settings apply to a ServiceImport"
        )
    return settings.cluster


def _accepted(ok: bool, reason: PolicyReason, message: str) -> Condition:
    return condition(PolicyCondition.ACCEPTED, ok, reason, message)


def service_policies(
    policies: Iterable[BackendTrafficPolicyRecord], imports: Mapping[ObjectName, MergedImport]
) -> ServicePolicies:
    """Resolve every cluster's policies on ServiceImports; see the module docstring."""
    out = ServicePolicies()
    for policy in sorted(policies, key=_rank):
        services = [
            ((policy.namespace, t.name), t.section_name)
            for t in policy.spec.targets()
            if is_service_import(t.group, t.kind)
        ]
        if not services:
            continue
        verdicts = out.verdicts.setdefault((policy.cluster, policy.namespace, policy.name), {})
        try:
            settings = _service_settings(policy)
            invalid = ""
        except PolicyError as err:
            settings, invalid = None, str(err)
        for service, section in services:
            merged = imports.get(service)
            if merged is None:
                continue  # nobody exports it: no ancestor to report on
            shown = f"ServiceImport {service[0]}/{service[1]}"
            if section is not None:
                verdicts[service] = _accepted(
                    False, PolicyReason.INVALID, f"{shown} has no sections (sectionName)"
                )
            elif policy.cluster not in merged.clusters:
                verdicts[service] = _accepted(
                    False,
                    PolicyReason.INVALID,
                    f"cluster {policy.cluster} does not export {shown}: only its exporting "
                    f"clusters ({', '.join(merged.clusters)}) may set its policy",
                )
            elif invalid:
                verdicts[service] = _accepted(False, PolicyReason.INVALID, invalid)
            elif service in out.applied:
                held = out.applied[service]
                verdicts[service] = _accepted(
                    False,
                    PolicyReason.CONFLICTED,
                    f"the older policy {held.namespace}/{held.name} of cluster {held.cluster} "
                    f"applies to {shown}",
                )
            else:
                out.applied[service] = ServicePolicy(
                    policy.cluster, policy.namespace, policy.name, settings
                )
                verdicts[service] = _accepted(
                    True,
                    PolicyReason.ACCEPTED,
                    f"Policy has been accepted: it applies to {shown} in every cluster.",
                )
    return out
