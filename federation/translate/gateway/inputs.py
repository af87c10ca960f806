"""What the first translation stage needs to know about one member cluster.

Built by the hub (for every node group) and by each agent (for its own cluster, to write
statuses) from the registry watcher's view, then passed to
:func:`federation.translate.gateway.resolve`. Pure values: the same inputs give the same
IR and statuses in both places.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from federation.model.imports import MergedImport, group_by_service, merge_exports
from federation.registry.gatewayapi import (
    GatewayRecord,
    GRPCRouteRecord,
    HTTPRouteRecord,
    ReferenceGrantRecord,
)
from federation.registry.kinds import Record
from federation.registry.patches import EnvoyPatchPolicyRecord
from federation.registry.policies import (
    BackendTrafficPolicyRecord,
    ClientTrafficPolicyRecord,
    SecurityPolicyRecord,
)
from federation.registry.records import ExportedService, LocalService

ObjectName = tuple[str, str]


@dataclass(frozen=True)
class ProgrammedFact:
    """What the hub saw of one Gateway on the cluster's Envoys (its published ACK state).

    ``generation``: the newest generation of the Gateway whose configuration every
    connected Envoy of the cluster ACKed (None: none yet). ``rejected``: an Envoy's NACK
    message for the configuration now offered, if any. ``envoys``: how many Envoys of the
    cluster are connected.
    """

    generation: int | None = None
    rejected: str | None = None
    envoys: int = 0


@dataclass(frozen=True)
class PatchFact:
    """What the hub did with one EnvoyPatchPolicy (its published verdict).

    ``generation``: the policy's generation the verdict is about. ``disabled``: the hub
    does not allow patches. ``invalid``: why its patches were not applied (None: they
    were). ``rejected``: an Envoy's NACK of the patched configuration now offered.
    ``programmed``: every connected Envoy of its Gateway ACKed it; ``envoys``: how many.
    """

    generation: int
    disabled: bool = False
    invalid: str | None = None
    rejected: str | None = None
    programmed: bool = False
    envoys: int = 0
    #: ``invalid`` because a resource it names is not there.
    missing: bool = False


def _empty() -> Mapping[ObjectName, LocalService]:
    return MappingProxyType({})


def _no_imports() -> Mapping[ObjectName, MergedImport]:
    return MappingProxyType({})


def _no_patch_facts() -> Mapping[ObjectName, PatchFact]:
    return MappingProxyType({})


def _no_facts() -> Mapping[ObjectName, ProgrammedFact]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ClusterInputs:
    """One member cluster's Gateway API objects and what their backends can resolve to.

    ``gateways`` are only those of our GatewayClass (the agent publishes no other);
    ``local_services`` the Services of this cluster that its routes name (keyed by
    namespace and name); ``imports`` every ServiceImport of the clusterset (merged
    exports, keyed the same way); ``programmed`` the hub's ACK state per Gateway;
    ``policies`` and ``security_policies`` the cluster's BackendTrafficPolicies and
    SecurityPolicies.
    """

    cluster: str
    gateways: tuple[GatewayRecord, ...] = ()
    http_routes: tuple[HTTPRouteRecord, ...] = ()
    grpc_routes: tuple[GRPCRouteRecord, ...] = ()
    grants: tuple[ReferenceGrantRecord, ...] = ()
    policies: tuple[BackendTrafficPolicyRecord, ...] = ()
    security_policies: tuple[SecurityPolicyRecord, ...] = ()
    client_policies: tuple[ClientTrafficPolicyRecord, ...] = ()
    #: The other clusters' BackendTrafficPolicies: whether one of this cluster's on a
    #: ServiceImport applies depends on theirs (the agent's statuses need them).
    other_policies: tuple[BackendTrafficPolicyRecord, ...] = ()
    local_services: Mapping[ObjectName, LocalService] = field(default_factory=_empty)
    imports: Mapping[ObjectName, MergedImport] = field(default_factory=_no_imports)
    programmed: Mapping[ObjectName, ProgrammedFact] = field(default_factory=_no_facts)
    patch_policies: tuple[EnvoyPatchPolicyRecord, ...] = ()
    #: The hub's verdict on each EnvoyPatchPolicy (the agent's statuses need them).
    patch_facts: Mapping[ObjectName, PatchFact] = field(default_factory=_no_patch_facts)


def imports_of(exports: Iterable[ExportedService]) -> dict[ObjectName, MergedImport]:
    """Every ServiceImport of the clusterset: the merged exports of each Service."""
    return {key: merge_exports(group) for key, group in group_by_service(exports).items()}


def cluster_inputs(
    cluster: str,
    records: Iterable[Record],
    imports: Mapping[ObjectName, MergedImport],
    programmed: Mapping[ObjectName, ProgrammedFact] | None = None,
    other_policies: Iterable[BackendTrafficPolicyRecord] = (),
    patch_facts: Mapping[ObjectName, PatchFact] | None = None,
) -> ClusterInputs:
    """The inputs of ``cluster`` from its own records (any kinds: Services are ignored),
    the BackendTrafficPolicies of the other clusters (``other_policies``) and what the hub
    says of its Gateways (``programmed``) and EnvoyPatchPolicies (``patch_facts``)."""
    gateways, http_routes, grpc_routes, grants, policies = [], [], [], [], []
    security_policies: list[SecurityPolicyRecord] = []
    client_policies: list[ClientTrafficPolicyRecord] = []
    patch_policies: list[EnvoyPatchPolicyRecord] = []
    local: dict[ObjectName, LocalService] = {}
    for record in records:
        if record.cluster != cluster:
            continue
        if isinstance(record, GatewayRecord):
            gateways.append(record)
        elif isinstance(record, HTTPRouteRecord):
            http_routes.append(record)
        elif isinstance(record, GRPCRouteRecord):
            grpc_routes.append(record)
        elif isinstance(record, ReferenceGrantRecord):
            grants.append(record)
        elif isinstance(record, BackendTrafficPolicyRecord):
            policies.append(record)
        elif isinstance(record, SecurityPolicyRecord):
            security_policies.append(record)
        elif isinstance(record, ClientTrafficPolicyRecord):
            client_policies.append(record)
        elif isinstance(record, EnvoyPatchPolicyRecord):
            patch_policies.append(record)
        elif isinstance(record, LocalService):
            local[record.namespace, record.name] = record
    return ClusterInputs(
        cluster=cluster,
        gateways=tuple(sorted(gateways, key=_name)),
        http_routes=tuple(sorted(http_routes, key=_name)),
        grpc_routes=tuple(sorted(grpc_routes, key=_name)),
        grants=tuple(sorted(grants, key=_name)),
        policies=tuple(sorted(policies, key=_name)),
        security_policies=tuple(sorted(security_policies, key=_name)),
        client_policies=tuple(sorted(client_policies, key=_name)),
        local_services=MappingProxyType(dict(sorted(local.items()))),
        imports=MappingProxyType(dict(imports)),
        programmed=MappingProxyType(dict(programmed or {})),
        patch_policies=tuple(sorted(patch_policies, key=_name)),
        patch_facts=MappingProxyType(dict(patch_facts or {})),
        other_policies=tuple(
            sorted((p for p in other_policies if p.cluster != cluster), key=_policy_key)
        ),
    )


def _policy_key(policy: BackendTrafficPolicyRecord) -> tuple[str, str, str]:
    return policy.cluster, policy.namespace, policy.name


def _name(
    record: GatewayRecord
    | HTTPRouteRecord
    | GRPCRouteRecord
    | ReferenceGrantRecord
    | BackendTrafficPolicyRecord
    | SecurityPolicyRecord
    | ClientTrafficPolicyRecord
    | EnvoyPatchPolicyRecord,
) -> ObjectName:
    return record.namespace, record.name
