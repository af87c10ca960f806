"""The Kubernetes API kinds the agent reads and writes, in one typed table.

Used by the export and import reconcilers, the status writer and the kopf wiring in
``agents.main``: every REST path the agent builds comes from an :class:`ApiKind`, so the
group, version and plural of a kind are written once.

Objects travel as raw Kubernetes JSON (:data:`KubeObject`); :func:`meta` and
:func:`key_of` are the typed ways in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import quote

from federation.registry.failover import FAILOVER_GROUP
from federation.registry.gatewayapi import GATEWAY_GROUP
from federation.registry.policies import ENVOY_GATEWAY_GROUP

#: A Kubernetes object as the apiserver sends it (raw JSON).
KubeObject = Mapping[str, Any]

MCS_GROUP = "multicluster.x-k8s.io"
MCS_VERSION = "v1beta1"


class ObjectMeta(TypedDict, total=False):
    """The parts of ``metadata`` the agent reads."""

    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]


def meta(obj: KubeObject) -> ObjectMeta:
    found: ObjectMeta = obj.get("metadata") or {}
    return found


def key_of(obj: KubeObject) -> tuple[str, str]:
    """(namespace, name) of a namespaced object."""
    m = meta(obj)
    return m["namespace"], m["name"]


def resource_version(obj: KubeObject) -> str:
    return meta(obj).get("resourceVersion") or ""


@dataclass(frozen=True)
class ApiKind:
    """One resource of the Kubernetes API ("" is the core group)."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection (in ``namespace``) or of one object."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace is not None:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name)}"
        return base

    def path_of(self, obj: KubeObject) -> str:
        m = meta(obj)
        return self.path(m.get("namespace") if self.namespaced else None, m["name"])


SERVICE_EXPORTS = ApiKind(MCS_GROUP, MCS_VERSION, "serviceexports")
SERVICE_IMPORTS = ApiKind(MCS_GROUP, MCS_VERSION, "serviceimports")
SERVICES = ApiKind("", "v1", "services")
ENDPOINT_SLICES = ApiKind("discovery.k8s.io", "v1", "endpointslices")
NAMESPACES = ApiKind("", "v1", "namespaces", namespaced=False)
GATEWAY_CLASSES = ApiKind(GATEWAY_GROUP, "v1", "gatewayclasses", namespaced=False)
GATEWAYS = ApiKind(GATEWAY_GROUP, "v1", "gateways")
HTTP_ROUTES = ApiKind(GATEWAY_GROUP, "v1", "httproutes")
GRPC_ROUTES = ApiKind(GATEWAY_GROUP, "v1", "grpcroutes")
REFERENCE_GRANTS = ApiKind(GATEWAY_GROUP, "v1beta1", "referencegrants")
#: Envoy Gateway's policy API, whose CRDs the federation-crds chart installs.
BACKEND_TRAFFIC_POLICIES = ApiKind(ENVOY_GATEWAY_GROUP, "v1alpha1", "backendtrafficpolicies")
SECURITY_POLICIES = ApiKind(ENVOY_GATEWAY_GROUP, "v1alpha1", "securitypolicies")
CLIENT_TRAFFIC_POLICIES = ApiKind(ENVOY_GATEWAY_GROUP, "v1alpha1", "clienttrafficpolicies")
ENVOY_PATCH_POLICIES = ApiKind(ENVOY_GATEWAY_GROUP, "v1alpha1", "envoypatchpolicies")
#: This project's FailoverPolicy (crds/policy.federation.io_failoverpolicies.yaml).
FAILOVER_POLICIES = ApiKind(FAILOVER_GROUP, "v1alpha1", "failoverpolicies")
#: Read one by one (GET, never list or watch): listener certificates (:mod:`agents.certificates`).
SECRETS = ApiKind("", "v1", "secrets")
CONFIG_MAPS = ApiKind("", "v1", "configmaps")

#: Every kind the agent writes a status to, by plural.
BY_PLURAL = {
    kind.plural: kind
    for kind in (
        SERVICE_EXPORTS,
        SERVICE_IMPORTS,
        GATEWAY_CLASSES,
        GATEWAYS,
        HTTP_ROUTES,
        GRPC_ROUTES,
        BACKEND_TRAFFIC_POLICIES,
        SECURITY_POLICIES,
        CLIENT_TRAFFIC_POLICIES,
        ENVOY_PATCH_POLICIES,
        FAILOVER_POLICIES,
    )
}
