"""FailoverPolicies: how each member cluster's Envoys fail over between a ServiceImport's
exporters, instead of local first.

A FailoverPolicy (``policy.federation.io/v1alpha1``, this project's CRD; a Direct policy
of Gateway API's policy attachment model) targets ServiceImports of its namespace and
applies to the Envoys of **its own cluster only**: the cluster the traffic comes from
decides where its traffic goes, and no cluster can steer another's. Its spec gives
either ``order`` (exporters most preferred first, a priority level each; the exporters
not listed share the level after) or ``weights`` (one level of weighted exporters; the
others after). Envoy moves traffic to the next level as the endpoints of the ones before
become unhealthy or are ejected (:mod:`federation.translate.proxy.clusters`).

* Of one cluster's policies on the same ServiceImport the oldest applies
  (``creationTimestamp``, then namespace and name); the others are
  ``Accepted=False/Conflicted``, naming it.
* A policy with a field this version does not know, no or both of ``order`` and
  ``weights``, a cluster named twice, a cluster id that cannot be one, or a weight out of
  range is ``Accepted=False/Invalid`` naming it, and the cluster keeps local first.
* A cluster listed that does not export the service (yet) is skipped, and the message
  says so.
* A policy that names a ServiceImport nobody exports gets no status entry for it, as a
  BackendTrafficPolicy on a ServiceImport.

:func:`failover_policies` is pure and sees the whole clusterset: the hub calls it for the
localities of each service's endpoints, each agent for the statuses of its own policies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from federation.errors import InvalidInputError
from federation.identity import parse_cluster_id
from federation.model.conditions import Condition
from federation.model.imports import MergedImport
from federation.registry.failover import FAILOVER_POLICY, FailoverPolicyRecord
from federation.translate.gateway.service_policies import (
    is_service_import,
    service_import_ref,
)
from federation.translate.gateway.status import (
    PolicyAncestorStatus,
    PolicyCondition,
    PolicyReason,
    PolicyStatus,
    condition,
)
from federation.translate.inputs import MAX_CLUSTER_WEIGHT
from federation.translate.ir import FailoverIR

ObjectName = tuple[str, str]
#: One policy, by cluster, namespace and name.
PolicyKey = tuple[str, str, str]


class FailoverError(ValueError):
    """A FailoverPolicy field that cannot be served, named by its path."""


@dataclass
class FailoverPolicies:
    """The result: each service's FailoverIRs (one per viewing cluster), and each
    policy's ``Accepted`` for each ServiceImport it targets."""

    applied: dict[ObjectName, tuple[FailoverIR, ...]] = field(default_factory=dict)
    verdicts: dict[PolicyKey, dict[ObjectName, Condition]] = field(default_factory=dict)

    def status(self, policy: FailoverPolicyRecord) -> PolicyStatus:
        """The status of ``policy``: one ancestor entry per targeted ServiceImport that
        someone exports."""
        found = self.verdicts.get((policy.cluster, policy.namespace, policy.name), {})
        ancestors = tuple(
            PolicyAncestorStatus(service_import_ref(service), (cond,))
            for service, cond in sorted(found.items())
        )
        return PolicyStatus(
            FAILOVER_POLICY, policy.namespace, policy.name, policy.generation, ancestors
        )


def _rank(policy: FailoverPolicyRecord) -> tuple[bool, str, str, str, str]:
    return (not policy.created, policy.created, policy.cluster, policy.namespace, policy.name)


def _accepted(ok: bool, reason: PolicyReason, message: str) -> Condition:
    return condition(PolicyCondition.ACCEPTED, ok, reason, message)


def compile_failover(policy: FailoverPolicyRecord) -> FailoverIR:
    """The preference ``policy`` gives its cluster's Envoys; FailoverError names the
    first field it cannot serve."""
    if policy.unsupported:
        raise FailoverError(f"{', '.join(policy.unsupported)}: not supported by this version")
    spec = policy.spec
    if bool(spec.order) == bool(spec.weights):
        raise FailoverError("spec: exactly one of order and weights must be given")
    named = [*spec.order, *(w.cluster for w in spec.weights)]
    path = "spec.order" if spec.order else "spec.weights"
    seen: set[str] = set()
    for i, cluster in enumerate(named):
        where = f"{path}[{i}]" + ("" if spec.order else ".cluster")
        try:
            parse_cluster_id(cluster)
        except InvalidInputError as err:
            raise FailoverError(f"{where}: {err}") from None
        if cluster in seen:
            raise FailoverError(f"{where}: cluster {cluster!r} is named twice")
        seen.add(cluster)
    for i, entry in enumerate(spec.weights):
        if not 1 <= entry.weight <= MAX_CLUSTER_WEIGHT:
            raise FailoverError(
                f"spec.weights[{i}].weight: {entry.weight} is not from 1 to {MAX_CLUSTER_WEIGHT}"
            )
    return FailoverIR(
        policy.cluster, spec.order, tuple((w.cluster, w.weight) for w in spec.weights)
    )


def _message(ir: FailoverIR, merged: MergedImport) -> str:
    named = [*ir.order, *(c for c, _ in ir.weights)]
    absent = [c for c in named if c not in merged.clusters]
    message = "Policy has been accepted."
    if absent:
        message += f" Not exporting the service (skipped until they do): {', '.join(absent)}."
    return message


def failover_policies(
    policies: Iterable[FailoverPolicyRecord], imports: Mapping[ObjectName, MergedImport]
) -> FailoverPolicies:
    """Resolve every cluster's FailoverPolicies; see the module docstring."""
    out = FailoverPolicies()
    winners: dict[tuple[str, ObjectName], FailoverPolicyRecord] = {}
    applied: dict[ObjectName, dict[str, FailoverIR]] = {}
    for policy in sorted(policies, key=_rank):
        verdicts = out.verdicts.setdefault((policy.cluster, policy.namespace, policy.name), {})
        try:
            ir: FailoverIR | None = compile_failover(policy)
            invalid = ""
        except FailoverError as err:
            ir, invalid = None, str(err)
        for service in dict.fromkeys(targets_of(policy)):
            merged = imports.get(service)
            if merged is None:
                continue
            if ir is None:
                verdicts[service] = _accepted(False, PolicyReason.INVALID, invalid)
                continue
            winner = winners.get((policy.cluster, service))
            if winner is not None:
                verdicts[service] = _accepted(
                    False,
                    PolicyReason.CONFLICTED,
                    f"FailoverPolicy {winner.namespace}/{winner.name} of this cluster, which "
                    "is older, already applies to this ServiceImport",
                )
                continue
            winners[(policy.cluster, service)] = policy
            applied.setdefault(service, {})[policy.cluster] = ir
            verdicts[service] = _accepted(True, PolicyReason.ACCEPTED, _message(ir, merged))
    out.applied = {
        service: tuple(by_viewer[v] for v in sorted(by_viewer))
        for service, by_viewer in sorted(applied.items())
    }
    return out


def targets_of(policy: FailoverPolicyRecord) -> list[ObjectName]:
    """The ServiceImports ``policy`` names."""
    return [
        (policy.namespace, t.name)
        for t in policy.spec.target_refs
        if is_service_import(t.group, t.kind)
    ]
