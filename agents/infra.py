"""The infra manager: each Gateway of our class gets Envoys of its own.

For every Gateway of our GatewayClass in its cluster, the agent provisions, in the
Gateway's namespace and owned by it (owner references, so deleting the Gateway deletes
them; server-side apply as the agent's field manager), what
:func:`agents.infra_objects.desired_objects` builds: a ServiceAccount, a Deployment of
Envoys that reach the hub with the cluster's certificate and name the Gateway (the hub
serves them that Gateway only, :mod:`federation.node_groups`), a Service exposing exactly
the Gateway's listener ports, a PodDisruptionBudget above one replica, and copies of the
Secrets the pods mount (a pod mounts Secrets of its own namespace only).

Parameters (replicas, resources, Service type and annotations) come from a ConfigMap:
the GatewayClass's ``parametersRef`` (group ``""``, kind ``ConfigMap``, with a
namespace), overridden key by key by the Gateway's ``spec.infrastructure.parametersRef``
(a ConfigMap of the Gateway's namespace); ``spec.infrastructure.labels`` and
``annotations`` go onto every object and pod. A reference that is not a ConfigMap, a
ConfigMap that is missing, or a value that does not parse gives the Gateway
``Accepted=False/InvalidParameters`` naming the key, and its objects are left as they are.

One Gateway's failure is its own: an object the apiserver refuses, or one of the same
name that is not ours (never taken over), is reported on that Gateway (``Programmed``
False) and the others are synced as usual.

Objects the agent made for a Gateway that is gone (or no longer ours) are deleted: those
listed by our labels whose controller is a Gateway, and the Secret copies a Deployment of
ours names (the agent may not list Secrets). A Deployment or Service that someone edits
or deletes is applied again at once (the agent watches them); the ServiceAccount,
PodDisruptionBudget and Secret copies at the next resync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agents import k8s_objects as objs
from agents import kinds as k
from agents.infra_objects import (
    COMPONENT,
    COMPONENT_VALUE,
    CONFIG_MAPS,
    DEPLOYMENTS,
    GATEWAY_LABEL,
    MANAGED_BY,
    MANAGER,
    OWNED,
    SECRETS,
    SECRETS_ANNOTATION,
    SERVICES,
    InfraReason,
    InfraSettings,
    InvalidParameters,
    Parameters,
    address_problem,
    certificate_secrets,
    desired_objects,
    gateway_addresses,
    gateway_label,
    owned_by_infra,
    parse_parameters,
    requested_address,
)
from agents.kinds import KubeObject, meta
from agents.kube import Kube, KubeError
from federation.model.conditions import Condition
from federation.registry.telemetry import ProxyAccessLog
from federation.translate.gateway.status import GatewayCondition, GatewayReason, condition

log = logging.getLogger(__name__)

#: (plural, namespace, name) of an object.
Ref = tuple[str, str, str]
#: Whether a Gateway of the first namespace may use certificate Secret namespace/name of
#: another (a ReferenceGrant allows it, and the agent found the Secret usable).
Copyable = Callable[[str, str, str], bool]


class ForeignObject(Exception):
    """An object of the name the infra manager needs exists and is not ours."""


@dataclass(frozen=True)
class GatewayInfra:
    """What the infra manager knows of one Gateway after a sync."""

    addresses: tuple[dict[str, str], ...] = ()
    #: Why its parameters cannot be used (its ``Accepted=False/InvalidParameters``).
    invalid_parameters: str | None = None
    #: Why its Envoys could not be provisioned (its ``Programmed=False``).
    problem: str | None = None
    #: Why its ``spec.addresses`` cannot be honoured (``Accepted=False/UnsupportedAddress``).
    unsupported_address: str | None = None
    #: The requested address its Service does not have (``Programmed=False/AddressNotAssigned``).
    unassigned_address: str | None = None

    def conditions(self) -> list[Condition]:
        """The Gateway conditions this state overrides the first stage's with."""
        provisioning = (
            None if self.problem is None else f"its Envoys cannot be provisioned: {self.problem}"
        )
        accepted, programmed = GatewayCondition.ACCEPTED, GatewayCondition.PROGRAMMED
        found = [
            (accepted, InfraReason.INVALID_PARAMETERS, self.invalid_parameters),
            (accepted, InfraReason.UNSUPPORTED_ADDRESS, self.unsupported_address),
            (programmed, InfraReason.ADDRESS_NOT_ASSIGNED, self.unassigned_address),
            (programmed, GatewayReason.INVALID, provisioning),
        ]
        return [condition(kind, False, reason, why) for kind, reason, why in found if why]


def _never(gateway_namespace: str, namespace: str, name: str) -> bool:
    return False


class InfraManager:
    """Applies each Gateway's objects, deletes those of Gateways that are gone."""

    def __init__(self, kube: Kube, settings: InfraSettings) -> None:
        self.kube = kube
        self.settings = settings
        #: What was last applied, by (plural, namespace, name).
        self._applied: dict[Ref, dict[str, Any]] = {}
        #: The load balancer status last seen of each Service of ours.
        self._ingress: dict[Ref, Any] = {}
        self.state: dict[tuple[str, str], GatewayInfra] = {}

    async def sync(
        self,
        gateways: Iterable[KubeObject],
        classes: Mapping[str, KubeObject],
        copyable: Copyable = _never,
    ) -> dict[tuple[str, str], GatewayInfra]:
        """Bring every Gateway's objects in line; the state of each Gateway.
        ``copyable``: which certificate Secrets of other namespaces a Gateway's namespace
        may use (a copy is made next to the Gateway)."""
        xds_tls = await self._xds_tls()
        existing = await self._existing()
        wanted: set[Ref] = set()
        state: dict[tuple[str, str], GatewayInfra] = {}
        for gateway in gateways:
            key = k.key_of(gateway)
            if (gateway.get("metadata") or {}).get("deletionTimestamp"):
                wanted |= _of_gateway(existing, key)  # garbage collection takes them
                continue
            try:
                params = await self._parameters(gateway, classes)
                unsupported = address_problem(gateway, params)
                if unsupported is not None:
                    state[key] = GatewayInfra(unsupported_address=unsupported)
                    wanted |= _of_gateway(existing, key)  # left as they were
                    continue
                certificates = await self._certificates(gateway, copyable)
                objects = desired_objects(gateway, self.settings, params, xds_tls, certificates)
                service = None
                for kind, obj in objects:
                    ref = (kind.plural, key[0], obj["metadata"]["name"])
                    wanted.add(ref)
                    result = await self._apply(kind, ref, obj, known=ref in existing)
                    if kind is SERVICES:
                        service = result
                addresses = tuple(gateway_addresses(service))
                requested = requested_address(gateway)
                unassigned = (
                    None
                    if requested is None or any(a["value"] == requested for a in addresses)
                    else f"{requested} is not assigned to the Gateway's Service (yet)"
                )
                state[key] = GatewayInfra(addresses, unassigned_address=unassigned)
            except InvalidParameters as err:
                state[key] = GatewayInfra(invalid_parameters=str(err))
                wanted |= _of_gateway(existing, key)  # left as they were
            except (KubeError, ForeignObject) as err:
                log.warning("cannot provision the Envoys of Gateway %s/%s: %s", *key, err)
                state[key] = GatewayInfra(problem=str(err))
                wanted |= _of_gateway(existing, key)
        await self._delete_unwanted(existing, wanted)
        self.state = state
        return state

    async def _existing(self) -> dict[Ref, KubeObject]:
        """Our objects in the cluster: listed by our labels (controlled by a Gateway), and
        the Secret copies our Deployments name (known by name only)."""
        selector = f"{MANAGED_BY}={MANAGER},{COMPONENT}={COMPONENT_VALUE}"
        found: dict[Ref, KubeObject] = {}
        for kind in OWNED:
            if kind is SECRETS:
                continue
            for item in await self.kube.list_items(kind.path(), label_selector=selector):
                if _controlled_by_a_gateway(item):
                    found[(kind.plural, *k.key_of(item))] = item
        for ref, obj in list(found.items()):
            if ref[0] != DEPLOYMENTS.plural:
                continue
            names = (meta(obj).get("annotations") or {}).get(SECRETS_ANNOTATION) or ""
            labels = meta(obj).get("labels") or {}
            for name in filter(None, names.split(",")):
                found[(SECRETS.plural, ref[1], name)] = {"metadata": {"labels": labels}}
        for ref, applied in self._applied.items():  # copies applied before their Deployment
            if ref[0] == SECRETS.plural:
                found.setdefault(ref, {"metadata": applied["metadata"]})
        return found

    async def _apply(
        self, kind: k.ApiKind, ref: Ref, obj: dict[str, Any], *, known: bool
    ) -> KubeObject | None:
        """Apply ``obj`` unless it is what was last applied (then only a Service is read
        back, for its addresses). An object of that name that is not ours is not taken
        over: ForeignObject."""
        path = kind.path(ref[1], ref[2])
        if self._applied.get(ref) == obj:
            return await self.kube.get(path) if kind is SERVICES else None
        if not known and kind is not SECRETS:
            current = await self.kube.get(path)
            if current is not None and not owned_by_infra(current):
                raise ForeignObject(
                    f"{kind.plural} {ref[1]}/{ref[2]} exists and is not the agent's: "
                    "rename or delete it"
                )
        # Recorded before the write: an edit whose event arrives meanwhile still counts.
        self._applied[ref] = obj
        try:
            return await self.kube.apply(path, obj)
        except BaseException:
            self._applied.pop(ref, None)
            raise

    def forget_all(self) -> None:
        """Apply everything again at the next sync (the periodic resync: it repairs the
        objects the agent does not watch)."""
        self._applied.clear()

    def on_event(self, plural: str, event: str | None, obj: KubeObject) -> bool:
        """A watch event of an object of ours; True when the next sync must run: it is no
        longer what was applied (deleted, or edited by someone else), or a Service's
        load balancer address changed (the Gateway's ``status.addresses``)."""
        if not owned_by_infra(obj):
            return False
        ref = (plural, *k.key_of(obj))
        if plural == SERVICES.plural:
            ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            if event != "DELETED" and self._ingress.get(ref) != ingress:
                self._ingress[ref] = ingress
                return True
        desired = self._applied.get(ref)
        if desired is None:
            return event != "DELETED"  # not ours (any more), or from before a restart
        if event == "DELETED" or not objs.contains(obj, desired):
            del self._applied[ref]
            return True
        return False

    async def _delete_unwanted(self, existing: Mapping[Ref, KubeObject], wanted: set[Ref]) -> None:
        for ref in sorted(set(existing) - wanted):
            kind = next(kind for kind in OWNED if kind.plural == ref[0])
            log.info("deleting %s %s/%s: its Gateway is gone or no longer ours", *ref)
            try:
                if kind is SECRETS:
                    current = await self.kube.get(kind.path(ref[1], ref[2]))
                    if current is None or not owned_by_infra(current):
                        continue  # gone already, or not a copy of ours
                await self.kube.delete(kind.path(ref[1], ref[2]))
            except KubeError as err:
                if err.status != 404:
                    raise
            self._applied.pop(ref, None)
            self._ingress.pop(ref, None)

    async def _certificates(
        self, gateway: KubeObject, copyable: Copyable
    ) -> dict[tuple[str, str], Mapping[str, str]]:
        """The data of the certificate Secrets of other namespaces that the Gateway names
        and may use (read now: a renewed one is copied again)."""
        ns = meta(gateway)["namespace"]
        out: dict[tuple[str, str], Mapping[str, str]] = {}
        for secret_ns, name in certificate_secrets(gateway):
            if secret_ns == ns or not copyable(ns, secret_ns, name):
                continue
            found = await self.kube.get(SECRETS.path(secret_ns, name))
            data = (found or {}).get("data") or {}
            if data.get("tls.crt") and data.get("tls.key"):
                out[secret_ns, name] = data
        return out

    async def _xds_tls(self) -> dict[str, str] | None:
        name = self.settings.hub_tls_secret
        if name is None:
            return None
        secret = await self.kube.get(SECRETS.path(self.settings.namespace, name))
        data = (secret or {}).get("data") or {}
        missing = [key for key in ("tls.crt", "tls.key", "ca.crt") if key not in data]
        if missing:
            raise KubeError(
                f"Secret {self.settings.namespace}/{name} (the cluster's xDS client "
                f"certificate for Gateway Envoys) lacks {', '.join(missing)}"
            )
        return dict(data)

    async def class_parameters(self, gateway_class: KubeObject) -> Parameters:
        """The parameters a GatewayClass's ``parametersRef`` gives; raises
        InvalidParameters (the class's ``Accepted=False/InvalidParameters``)."""
        ref = (gateway_class.get("spec") or {}).get("parametersRef")
        if not ref:
            return Parameters()
        where = f"GatewayClass parametersRef {ref.get('kind')} {ref.get('name')}"
        return await self._config_map(ref, ref.get("namespace"), where, Parameters())

    async def access_log(
        self, gateway: KubeObject, classes: Mapping[str, KubeObject]
    ) -> ProxyAccessLog | None:
        """The ``accessLog`` of the Gateway's parameters (None: none given); raises
        InvalidParameters or KubeError when they cannot be read."""
        return (await self._parameters(gateway, classes)).access_log

    async def _parameters(
        self, gateway: KubeObject, classes: Mapping[str, KubeObject]
    ) -> Parameters:
        spec = gateway.get("spec") or {}
        gateway_class = classes.get(spec.get("gatewayClassName") or "") or {}
        params = await self.class_parameters(gateway_class)
        local = (spec.get("infrastructure") or {}).get("parametersRef")
        if local:
            ns = meta(gateway)["namespace"]
            where = f"infrastructure.parametersRef {local.get('kind')} {local.get('name')}"
            params = await self._config_map(local, ns, where, params)
        return params

    async def _config_map(
        self, ref: Mapping[str, Any], namespace: str | None, where: str, base: Parameters
    ) -> Parameters:
        if (ref.get("group") or "", ref.get("kind")) != ("", "ConfigMap"):
            raise InvalidParameters(f"{where}: only a core ConfigMap holds parameters")
        if not namespace:
            raise InvalidParameters(f"{where}: a GatewayClass's ConfigMap needs a namespace")
        found = await self.kube.get(CONFIG_MAPS.path(namespace, ref["name"]))
        if found is None:
            raise InvalidParameters(f"{where}: ConfigMap {namespace}/{ref['name']} not found")
        return parse_parameters(found.get("data") or {}, where, base)


def _controlled_by_a_gateway(obj: KubeObject) -> bool:
    return any(
        ref.get("kind") == "Gateway" and ref.get("controller")
        for ref in obj.get("metadata", {}).get("ownerReferences") or []
    )


def _of_gateway(existing: Mapping[Ref, KubeObject], key: tuple[str, str]) -> set[Ref]:
    """What exists of Gateway ``key``'s objects (kept as they are)."""
    label = gateway_label(key[1])
    return {
        ref
        for ref, obj in existing.items()
        if ref[1] == key[0] and (meta(obj).get("labels") or {}).get(GATEWAY_LABEL) == label
    }
