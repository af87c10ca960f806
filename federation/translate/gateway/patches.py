"""EnvoyPatchPolicies: which Gateway each one patches, with what, and its status.

A policy (Envoy Gateway's ``EnvoyPatchPolicy``) targets one Gateway of its own namespace
(``targetRef``: group ``gateway.networking.k8s.io``, kind ``Gateway``). Here its
``jsonPatches`` are checked for what can be checked without the configuration (the
resource types, the operations and the fields each needs) and become the Gateway's
:class:`~federation.translate.ir.PatchPolicyIR`, in the order Envoy Gateway applies
them: ``priority`` (lower first), then the oldest, then by name. The hub applies them to
the Gateway's rendered resources (:mod:`federation.hub.patches`) when it is started with
patches allowed, and publishes its verdict on each
(:class:`~federation.translate.gateway.inputs.PatchFact`); the status folds it in:

* ``Accepted``: False (``Invalid``) for a spec that cannot apply, or whose patches did not
  apply to the Gateway's configuration (with the patch, its JSON path and the error);
  False (``Disabled``) while the hub does not allow patches; True otherwise.
* ``Programmed`` (an accepted policy's): True once every connected Envoy of the Gateway
  ACKed the patched configuration, False (``Invalid``) with an Envoy's NACK message, False
  (``Pending``) until then.

Our extension: a policy whose ``targetRef`` is ``{group: policy.federation.io, kind:
ClusterSetListener, name: <its cluster's id>}`` patches the clusterset listener of its
own cluster (the resources of the cluster's shared Envoys), in the same way.

A policy whose target is not one of our Gateways gets no status from us (it may be
another implementation's), as with the other policies. Envoy Gateway reports a patch
that does not apply as ``Accepted=True`` with ``Programmed=False``; here the policy is
not accepted (``Accepted=False``, naming the patch), and ``Programmed=False`` carries
Envoy Gateway's reason (``Invalid`` or ``ResourceNotFound``) for tools that read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from federation.model.conditions import Condition
from federation.registry.failover import FAILOVER_GROUP
from federation.registry.gatewayapi import GATEWAY_GROUP, ParentReference
from federation.registry.patches import JSON_PATCH, EnvoyPatchPolicyRecord
from federation.translate.gateway.inputs import ClusterInputs, ObjectName, PatchFact
from federation.translate.gateway.status import (
    PolicyAncestorStatus,
    PolicyCondition,
    PolicyReason,
    PolicyStatus,
    condition,
)
from federation.translate.ir import JSONPatchIR, PatchPolicyIR

KIND = "EnvoyPatchPolicy"
_PREFIX = "type.googleapis.com/"
#: The resource types a patch may name (Envoy Gateway's ``EnvoyResourceType``).
PATCH_TYPES = frozenset(
    _PREFIX + t
    for t in (
        "envoy.config.listener.v3.Listener",
        "envoy.config.route.v3.RouteConfiguration",
        "envoy.config.cluster.v3.Cluster",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.extensions.transport_sockets.tls.v3.Secret",
    )
)
OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")
#: The flag that allows patches (Envoy Gateway: ``extensionApis.enableEnvoyPatchPolicy``).
ENABLE_FLAG = "--enable-envoy-patch-policy"


class PatchSpecError(ValueError):
    """Why a policy's spec cannot apply anywhere."""


#: Our extension: a policy on the clusterset listener of its own cluster (the cluster's
#: shared Envoys) names it so, with the cluster's id as the name.
CLUSTERSET_GROUP = FAILOVER_GROUP
CLUSTERSET_KIND = "ClusterSetListener"


@dataclass(frozen=True)
class PatchBook:
    #: Each Gateway's accepted policies, in the order they apply.
    by_gateway: dict[ObjectName, tuple[PatchPolicyIR, ...]] = field(default_factory=dict)
    statuses: tuple[PolicyStatus, ...] = ()
    #: The accepted policies on the cluster's clusterset listener, in order.
    clusterset: tuple[PatchPolicyIR, ...] = ()

    def of(self, gateway: ObjectName) -> tuple[PatchPolicyIR, ...]:
        return self.by_gateway.get(gateway, ())


def patch_rank(policy: EnvoyPatchPolicyRecord) -> tuple[int, bool, str, str]:
    """Envoy Gateway's order: priority, then oldest (none: last), then name."""
    return (policy.spec.priority, not policy.created, policy.created, policy.name)


def resolve_patches(inputs: ClusterInputs) -> PatchBook:
    """Every EnvoyPatchPolicy of the cluster: the Gateways' patches, those of the
    cluster's clusterset listener, and the statuses."""
    ours = {(g.namespace, g.name) for g in inputs.gateways}
    by_gateway: dict[ObjectName, list[PatchPolicyIR]] = {}
    clusterset: list[PatchPolicyIR] = []
    statuses = []
    for policy in sorted(inputs.patch_policies, key=patch_rank):
        ref = policy.spec.target_ref
        gateway = (policy.namespace, ref.name)
        on_clusterset = (ref.group, ref.kind) == (CLUSTERSET_GROUP, CLUSTERSET_KIND)
        if not on_clusterset and gateway not in ours:
            # Not ours (another implementation's, a GatewayClass of Envoy Gateway's merged
            # Gateways), or not there (any more): no ancestor of ours to report on, and
            # entries we wrote before are removed.
            statuses.append(
                PolicyStatus(KIND, policy.namespace, policy.name, policy.generation, ())
            )
            continue
        what = (
            f"Envoy of cluster {inputs.cluster}'s clusterset listener"
            if on_clusterset
            else f"Envoy of the Gateway in cluster {inputs.cluster}"
        )
        try:
            ir = compile_patches(policy)
            if on_clusterset and ref.name != inputs.cluster:
                raise PatchSpecError(
                    f"spec.targetRef: {CLUSTERSET_KIND} {ref.name!r} is not this cluster's "
                    f"({inputs.cluster!r}): a policy patches its own cluster's listener only"
                )
        except PatchSpecError as err:
            conditions: tuple[Condition, ...] = (_accepted(False, PolicyReason.INVALID, str(err)),)
        else:
            fact = inputs.patch_facts.get((policy.namespace, policy.name))
            if fact is not None and fact.generation != policy.generation:
                fact = None  # about an older generation
            conditions = _conditions(policy, fact, what)
            if on_clusterset:
                clusterset.append(ir)
            else:
                by_gateway.setdefault(gateway, []).append(ir)
        group, kind = (
            (CLUSTERSET_GROUP, CLUSTERSET_KIND) if on_clusterset else (GATEWAY_GROUP, "Gateway")
        )
        ancestor = ParentReference(
            name=ref.name, group=group, kind=kind, namespace=policy.namespace
        )
        statuses.append(
            PolicyStatus(
                KIND,
                policy.namespace,
                policy.name,
                policy.generation,
                (PolicyAncestorStatus(ancestor, conditions),),
            )
        )
    return PatchBook(
        {k: tuple(v) for k, v in by_gateway.items()}, tuple(statuses), tuple(clusterset)
    )


def compile_patches(policy: EnvoyPatchPolicyRecord) -> PatchPolicyIR:
    """The policy's patches as IR; PatchSpecError naming what cannot apply."""
    spec = policy.spec
    if policy.unsupported:
        raise PatchSpecError(f"not supported: {', '.join(policy.unsupported)}")
    if spec.type != JSON_PATCH:
        raise PatchSpecError(f"spec.type: {spec.type!r} is not supported (only {JSON_PATCH})")
    ref = spec.target_ref
    if (ref.group, ref.kind) not in (
        (GATEWAY_GROUP, "Gateway"),
        (CLUSTERSET_GROUP, CLUSTERSET_KIND),
    ):
        raise PatchSpecError(
            f"spec.targetRef: {ref.kind} of group {ref.group!r} cannot be patched (only a "
            f"Gateway of {GATEWAY_GROUP}, or the {CLUSTERSET_KIND} of {CLUSTERSET_GROUP})"
        )
    patches = []
    for i, patch in enumerate(spec.json_patches):
        where = f"spec.jsonPatches[{i}]"
        operation = patch.operation
        if patch.type not in PATCH_TYPES:
            raise PatchSpecError(
                f"{where}.type: {patch.type!r} is not one of {', '.join(sorted(PATCH_TYPES))}"
            )
        if operation.op not in OPERATIONS:
            raise PatchSpecError(
                f"{where}.operation.op: {operation.op!r} is not one of {', '.join(OPERATIONS)}"
            )
        if operation.json_path is not None:
            raise PatchSpecError(f"{where}.operation.jsonPath is not supported: use path")
        whole = operation.op == "add" and not operation.path
        if not whole and not (operation.path or "").startswith("/"):
            raise PatchSpecError(
                f"{where}.operation.path: a JSON pointer starting with '/' is required "
                f"for {operation.op} (got {operation.path!r})"
            )
        if operation.op in ("move", "copy") and not operation.from_:
            raise PatchSpecError(f"{where}.operation.from is required for {operation.op}")
        if operation.op in ("add", "replace", "test") and operation.value is None:
            raise PatchSpecError(f"{where}.operation.value is required for {operation.op}")
        patches.append(
            JSONPatchIR(
                patch.type,
                patch.name,
                operation.op,
                operation.path or None,
                operation.from_,
                operation.value,
            )
        )
    return PatchPolicyIR(policy.namespace, policy.name, policy.generation, tuple(patches))


def _accepted(ok: bool, reason: PolicyReason, message: str) -> Condition:
    return condition(PolicyCondition.ACCEPTED, ok, reason, message)


def _programmed(ok: bool, reason: PolicyReason, message: str) -> Condition:
    return condition(PolicyCondition.PROGRAMMED, ok, reason, message)


def _conditions(
    policy: EnvoyPatchPolicyRecord, fact: PatchFact | None, envoys: str
) -> tuple[Condition, ...]:
    """An applicable policy's conditions, from the hub's verdict on its generation;
    ``envoys`` says whose (``Envoy of the Gateway in cluster b``)."""
    if fact is not None and fact.disabled:
        return (
            _accepted(
                False,
                PolicyReason.DISABLED,
                f"EnvoyPatchPolicy is disabled: the hub runs without {ENABLE_FLAG}",
            ),
        )
    if fact is not None and fact.invalid is not None:
        # Refused as the issue of its patches, and (for tools that read Envoy Gateway's
        # contract) not programmed, with its reason.
        reason = PolicyReason.RESOURCE_NOT_FOUND if fact.missing else PolicyReason.INVALID
        return (
            _accepted(False, PolicyReason.INVALID, fact.invalid),
            _programmed(False, reason, "its patches were not applied: see Accepted"),
        )
    accepted = _accepted(True, PolicyReason.ACCEPTED, "Policy has been accepted.")
    if fact is None:
        message = f"waiting for the hub to apply generation {policy.generation}"
        return accepted, _programmed(False, PolicyReason.PENDING, message)
    if fact.rejected is not None:
        message = f"an {envoys} rejected the patched configuration: {fact.rejected}"
        return accepted, _programmed(False, PolicyReason.INVALID, message)
    if fact.programmed:
        message = f"every {envoys} serves the patched configuration"
        return accepted, _programmed(True, PolicyReason.PROGRAMMED, message)
    if fact.envoys == 0:
        return accepted, _programmed(False, PolicyReason.PENDING, f"no {envoys} is connected")
    message = f"waiting for {fact.envoys} {envoys}(s) to apply the patched configuration"
    return accepted, _programmed(False, PolicyReason.PENDING, message)
