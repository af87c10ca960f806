"""FailoverPolicy records: how one member cluster's Envoys fail over between the clusters
that export a ServiceImport (``policy.federation.io/v1alpha1``, this project's own CRD).

Published by each cluster's agent for its own FailoverPolicies, read by the hub, which
orders the localities of the targeted services' endpoints in that cluster's Envoys
(:mod:`federation.translate.failover`). Nothing secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from federation.registry.policies import PolicyTargetReference

#: The CRD's API group and kind.
FAILOVER_GROUP = "policy.federation.io"
FAILOVER_POLICY = "FailoverPolicy"


@dataclass(frozen=True)
class ClusterWeight:
    """``spec.weights[]``: an exporting cluster's share of its priority level."""

    cluster: str
    weight: int


@dataclass(frozen=True)
class FailoverPolicySpec:
    target_refs: tuple[PolicyTargetReference, ...] = ()
    #: Exporting clusters, most preferred first (a priority level each).
    order: tuple[str, ...] = ()
    #: Or: one level of weighted clusters; the exporters not listed fail over after it.
    weights: tuple[ClusterWeight, ...] = ()


@dataclass(frozen=True)
class FailoverPolicyRecord:
    """A FailoverPolicy of ``cluster``: it applies to that cluster's Envoys only (the
    cluster the traffic comes from). ``unsupported``: the paths of fields it sets that
    this version does not know, sorted; a policy with any applies nowhere."""

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = "failoverpolicy"

    cluster: str
    namespace: str
    name: str
    spec: FailoverPolicySpec
    generation: int = 0
    created: str = ""
    unsupported: tuple[str, ...] = ()
