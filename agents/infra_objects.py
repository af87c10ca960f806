"""The objects of a Gateway's own Envoys, built from the Gateway (pure).

:mod:`agents.infra` applies them. What they are, per Gateway of our class, in its
namespace and owned by it:

* a ServiceAccount (no API token mounted: Envoy needs no Kubernetes access);
* a Deployment of Envoys whose bootstrap comes from ``fedctl bootstrap --gateway``. They
  run non-root, with no capabilities and a read-only root filesystem; a listener port
  below 1024 is bound above it
  (:func:`federation.translate.gateway.listeners.container_port`), and ports 19000
  (admin, loopback) and 19001 (``GET /ready``, the readiness probe, and ``GET
  /stats/prometheus``, which the pods' Prometheus annotations name) are their own;
* a Service exposing exactly the listener ports the Envoy can bind (``LoadBalancer``
  unless the parameters say ``ClusterIP`` or ``NodePort``), whose address becomes the
  Gateway's ``status.addresses`` (:func:`gateway_addresses`);
* a PodDisruptionBudget when there is more than one replica;
* copies of the Secrets the pods mount from other namespaces (a pod mounts Secrets of its
  own namespace only): the cluster's xDS client certificate, and each listener
  certificate of another namespace that a ReferenceGrant allows. Listener certificates
  are mounted where the hub's configuration says Envoy finds them
  (``<secret dir>/<namespace>/<name>``, the original's namespace and name): private keys
  never pass through the registry or xDS.

Names are DNS labels (:func:`object_name`), and parameters come from ConfigMaps
(:func:`parse_parameters`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import yaml

from agents import kinds as k
from agents.kinds import KubeObject, meta
from federation.errors import InvalidInputError
from federation.registry.telemetry import ACCESS_LOG_KEY, ProxyAccessLog, parse_access_log
from federation.translate.gateway.listeners import (
    ADMIN_PORT,
    METRICS_PATH,
    READY_PORT,
    SUPPORTED_PROTOCOLS,
    bindable_ports,
    container_port,
)

MANAGED_BY = "app.kubernetes.io/managed-by"
#: Not the import objects' ``federation-agent``: the import reconciler never sees these.
MANAGER = "federation-gateway"
COMPONENT = "app.kubernetes.io/component"
COMPONENT_VALUE = "gateway-envoy"
#: Names the Gateway an object belongs to (its name, or a hash when longer than a label).
GATEWAY_LABEL = "gateway.federation.io/gateway"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
#: On a Gateway's Deployment: the Secret copies it uses (comma-separated names).
SECRETS_ANNOTATION = "gateway.federation.io/secrets"
#: On its pod template: a digest of the xDS client certificate the pods were started with.
XDS_TLS_CHECKSUM = "gateway.federation.io/xds-tls-checksum"
#: On a copy of a certificate Secret: the Secret it copies.
COPY_OF = "gateway.federation.io/copy-of"
#: Prometheus' conventional pod annotations: it scrapes Envoy's metrics from the ready
#: port, which passes ``GET /stats/prometheus`` to the admin interface (on loopback).
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(READY_PORT),
    "prometheus.io/path": METRICS_PATH,
}
#: Where the Envoys read Secrets: the hub's ``--secret-dir`` default.
SECRET_DIR = "/etc/federation/secrets"
XDS_TLS_DIR = "/etc/federation/xds-tls"
SERVICE_TYPES = ("LoadBalancer", "ClusterIP", "NodePort")
PARAMETER_KEYS = ("replicas", "serviceType", "serviceAnnotations", "resources", ACCESS_LOG_KEY)
DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}

DEPLOYMENTS = k.ApiKind("apps", "v1", "deployments")
SERVICE_ACCOUNTS = k.ApiKind("", "v1", "serviceaccounts")
PDBS = k.ApiKind("policy", "v1", "poddisruptionbudgets")
SECRETS = k.ApiKind("", "v1", "secrets")
CONFIG_MAPS = k.CONFIG_MAPS
SERVICES = k.SERVICES
#: Every kind the infra manager owns, in the order they are applied.
OWNED = (SERVICE_ACCOUNTS, SECRETS, SERVICES, DEPLOYMENTS, PDBS)
#: The kinds the agent watches to repair at once (the others at the next resync).
WATCHED = (SERVICES, DEPLOYMENTS)


class InfraReason(StrEnum):
    """The condition reasons the infra manager adds to a Gateway's computed status."""

    INVALID_PARAMETERS = "InvalidParameters"
    UNSUPPORTED_ADDRESS = "UnsupportedAddress"
    ADDRESS_NOT_ASSIGNED = "AddressNotAssigned"


class InvalidParameters(ValueError):
    """A Gateway's parameters cannot be used; the message names what is wrong."""


@dataclass(frozen=True)
class InfraSettings:
    """How the agent provisions Gateway Envoys (its flags, from the agent chart)."""

    cluster: str
    envoy_image: str
    #: The agent's own image: its ``fedctl bootstrap`` writes the Envoy's bootstrap.
    bootstrap_image: str
    hub_address: str
    #: The Secret (in ``namespace``) with the cluster's xDS client certificate; None:
    #: plain text to the hub.
    hub_tls_secret: str | None = None
    trust_domain: str = "federation.local"
    tls_server_name: str | None = None
    #: The agent's namespace, where ``hub_tls_secret`` is.
    namespace: str = "federation-system"
    image_pull_policy: str = "IfNotPresent"
    delta: bool = False
    #: HOST:PORT of this agent's credential server as the Envoys reach it (its Service);
    #: None: the agent serves no credentials.
    agent_address: str | None = None
    #: ``fedctl bootstrap --source-cluster-stats`` for the Envoys.
    source_cluster_stats: bool = False


@dataclass(frozen=True)
class Parameters:
    replicas: int = 1
    service_type: str = "LoadBalancer"
    service_annotations: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_RESOURCES)
    #: ``accessLog``: how the Gateway's Envoys log requests (None: the default JSON line
    #: on standard output). The hub renders it, from the Gateway's record.
    access_log: ProxyAccessLog | None = None


def parse_parameters(data: Mapping[str, str], where: str, base: Parameters) -> Parameters:
    """``base`` with the keys a parameters ConfigMap sets; raises InvalidParameters."""
    unknown = sorted(set(data) - set(PARAMETER_KEYS))
    if unknown:
        raise InvalidParameters(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(PARAMETER_KEYS)}"
        )
    out = base
    if "replicas" in data:
        raw = data["replicas"].strip()
        if not raw.isdigit() or not 0 <= int(raw) <= 1000:
            raise InvalidParameters(f"{where}: replicas must be 0 to 1000, got {raw!r}")
        out = _replace(out, replicas=int(raw))
    if "serviceType" in data:
        if data["serviceType"] not in SERVICE_TYPES:
            raise InvalidParameters(
                f"{where}: serviceType must be one of {', '.join(SERVICE_TYPES)}, "
                f"got {data['serviceType']!r}"
            )
        out = _replace(out, service_type=data["serviceType"])
    for key, attr in (("serviceAnnotations", "service_annotations"), ("resources", "resources")):
        if key in data:
            try:
                value = yaml.safe_load(data[key])
            except yaml.YAMLError as err:
                raise InvalidParameters(f"{where}: {key} is not YAML: {err}") from err
            if not isinstance(value, dict):
                raise InvalidParameters(f"{where}: {key} must be a mapping")
            if key == "serviceAnnotations" and not all(isinstance(v, str) for v in value.values()):
                raise InvalidParameters(f"{where}: serviceAnnotations values must be strings")
            if key == "resources" and set(value) - {"requests", "limits"}:
                raise InvalidParameters(f"{where}: resources has only requests and limits")
            out = _replace(out, **{attr: value})
    if ACCESS_LOG_KEY in data:
        try:
            out = _replace(out, access_log=parse_access_log(data[ACCESS_LOG_KEY], where))
        except InvalidInputError as err:
            raise InvalidParameters(str(err)) from err
    return out


def _replace(p: Parameters, **changes: Any) -> Parameters:
    return Parameters(**{**p.__dict__, **changes})


_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _dns_label(stem: str, suffix: str) -> str:
    """``<stem><suffix>`` when that is a DNS label (a Service name must be one), else a
    name made of a readable part of ``stem`` and a hash of it."""
    name = f"{stem}{suffix}"
    if len(name) <= 63 and _DNS_LABEL.match(name):
        return name
    digest = hashlib.sha256(stem.encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9-]", "-", stem.lower())[: 63 - len(suffix) - 15].strip("-")
    return f"gw-{readable}-{digest}{suffix}" if readable else f"gw-{digest}{suffix}"


def object_name(gateway: str) -> str:
    """The name of a Gateway's objects: ``<gateway>-envoy`` when that is a DNS label
    (Gateway names may hold dots or start with a digit; Service names may not)."""
    return _dns_label(gateway, "-envoy")


def gateway_label(gateway: str) -> str:
    """A label value naming the Gateway (a hash when the name is too long for one)."""
    if len(gateway) <= 63 and "." not in gateway:
        return gateway
    return hashlib.sha256(gateway.encode()).hexdigest()[:40]


def listener_ports(gateway: KubeObject) -> list[int]:
    """The listener ports the Gateway's Envoy can bind, sorted: exactly those the first
    translation stage serves (a port it keeps for itself, or one whose unprivileged port
    another listener has, is ``PortUnavailable`` there and not exposed here)."""
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    ports = [int(li["port"]) for li in listeners if li.get("protocol") in SUPPORTED_PROTOCOLS]
    return sorted(bindable_ports(ports))


def certificate_secrets(gateway: KubeObject) -> list[tuple[str, str]]:
    """(namespace, name) of the Secrets the Gateway's HTTPS listeners refer to, sorted."""
    ns = meta(gateway)["namespace"]
    found = set()
    for li in (gateway.get("spec") or {}).get("listeners") or []:
        if li.get("protocol") != "HTTPS":
            continue
        for ref in (li.get("tls") or {}).get("certificateRefs") or []:
            if (ref.get("group") or "", ref.get("kind") or "Secret") == ("", "Secret"):
                found.add((ref.get("namespace") or ns, ref["name"]))
    return sorted(found)


def copy_name(gateway: str, namespace: str, name: str) -> str:
    """The name of the copy, next to the Gateway, of certificate Secret namespace/name."""
    return _dns_label(f"{gateway}-{namespace}-{name}", "-cert")


def _labels(gateway: KubeObject) -> dict[str, str]:
    name = gateway_label(meta(gateway)["name"])
    return {
        MANAGED_BY: MANAGER,
        COMPONENT: COMPONENT_VALUE,
        GATEWAY_LABEL: name,
        # Gateway API's own label for what an implementation makes for a Gateway.
        GATEWAY_NAME_LABEL: name,
    }


def _infrastructure(gateway: KubeObject) -> tuple[dict[str, str], dict[str, str]]:
    infra = (gateway.get("spec") or {}).get("infrastructure") or {}
    return dict(infra.get("labels") or {}), dict(infra.get("annotations") or {})


def _metadata(gateway: KubeObject, name: str, **extra_annotations: str) -> dict[str, Any]:
    m = meta(gateway)
    labels, annotations = _infrastructure(gateway)
    return {
        "name": name,
        "namespace": m["namespace"],
        "labels": {**labels, **_labels(gateway)},
        # No empty map: the apiserver leaves it out, and the applied object would then
        # never look like what is read back.
        **({"annotations": merged} if (merged := {**annotations, **extra_annotations}) else {}),
        "ownerReferences": [
            {
                "apiVersion": k.GATEWAYS.api_version,
                "kind": "Gateway",
                "name": m["name"],
                "uid": m["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def desired_objects(
    gateway: KubeObject,
    settings: InfraSettings,
    params: Parameters,
    xds_tls: Mapping[str, str] | None = None,
    certificates: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
) -> list[tuple[k.ApiKind, dict[str, Any]]]:
    """Every object the Gateway's Envoys need, in apply order (pure).

    ``xds_tls``: the data of the cluster's xDS client certificate Secret to copy (None:
    plain text to the hub). ``certificates``: the data of certificate Secrets of other
    namespaces that a ReferenceGrant lets the Gateway use, by (namespace, name), copied
    next to it (a pod mounts Secrets of its own namespace only).
    """
    certificates = certificates or {}
    m = meta(gateway)
    name = object_name(m["name"])
    selector = _labels(gateway)
    ports = listener_ports(gateway)
    out: list[tuple[k.ApiKind, dict[str, Any]]] = [
        (
            SERVICE_ACCOUNTS,
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": _metadata(gateway, name),
                "automountServiceAccountToken": False,
            },
        )
    ]
    tls_secret = None
    if settings.hub_tls_secret is not None and xds_tls is not None:
        tls_secret = f"{name}-xds-tls"
        out.append(
            (
                SECRETS,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": _metadata(gateway, tls_secret),
                    "type": "kubernetes.io/tls",
                    "data": {key: xds_tls[key] for key in ("tls.crt", "tls.key", "ca.crt")},
                },
            )
        )
    copies = {}
    for (ns, secret), data in sorted(certificates.items()):
        copy = copy_name(m["name"], ns, secret)
        copies[ns, secret] = copy
        out.append(
            (
                SECRETS,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": _metadata(gateway, copy, **{COPY_OF: f"{ns}/{secret}"}),
                    "type": "kubernetes.io/tls",
                    "data": {key: data[key] for key in ("tls.crt", "tls.key")},
                },
            )
        )
    out.append(
        (
            SERVICES,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _metadata(gateway, name, **params.service_annotations),
                "spec": {
                    "type": params.service_type,
                    **(
                        {"loadBalancerIP": requested}
                        if (requested := requested_address(gateway))
                        else {}
                    ),
                    "selector": selector,
                    "ports": [
                        {
                            "name": f"port-{port}",
                            "port": port,
                            "targetPort": container_port(port),
                            "protocol": "TCP",
                        }
                        for port in ports
                    ],
                },
            },
        )
    )
    deployment = _deployment(gateway, name, settings, params, ports, tls_secret, copies)
    secrets = sorted([*([tls_secret] if tls_secret else []), *copies.values()])
    if secrets:
        # The Secret copies it needs, where a later sync finds them to delete the ones no
        # longer needed (the agent may not list Secrets).
        deployment["metadata"].setdefault("annotations", {})[SECRETS_ANNOTATION] = ",".join(secrets)
    if xds_tls is not None:
        # A renewed xDS certificate rolls the Envoys (they read it at start only).
        digest = hashlib.sha256(json.dumps(dict(xds_tls), sort_keys=True).encode()).hexdigest()
        template = deployment["spec"]["template"]["metadata"]
        template.setdefault("annotations", {})[XDS_TLS_CHECKSUM] = digest[:16]
    out.append((DEPLOYMENTS, deployment))
    if params.replicas > 1:
        out.append(
            (
                PDBS,
                {
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": _metadata(gateway, name),
                    "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
                },
            )
        )
    return out


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _bootstrap_args(
    gateway: KubeObject, settings: InfraSettings, tls_secret: str | None
) -> list[str]:
    m = meta(gateway)
    args = [
        "bootstrap",
        f"--cluster={settings.cluster}",
        f"--gateway={m['namespace']}/{m['name']}",
        f"--xds={settings.hub_address}",
        f"--admin=127.0.0.1:{ADMIN_PORT}",
        f"--ready=0.0.0.0:{READY_PORT}",
        "--node-id=$(POD_NAME)",
    ]
    if tls_secret is None:
        args.append("--insecure-plaintext")
    else:
        args += [
            f"--tls-cert={XDS_TLS_DIR}/tls.crt",
            f"--tls-key={XDS_TLS_DIR}/tls.key",
            f"--tls-ca={XDS_TLS_DIR}/ca.crt",
            f"--trust-domain={settings.trust_domain}",
        ]
        if settings.tls_server_name:
            args.append(f"--tls-server-name={settings.tls_server_name}")
    if settings.delta:
        args.append("--delta")
    if settings.agent_address:
        args.append(f"--agent-address={settings.agent_address}")
    if settings.source_cluster_stats:
        args.append("--source-cluster-stats")
    return [*args, "--output=json", "--file=/etc/envoy/bootstrap.json"]


def _deployment(
    gateway: KubeObject,
    name: str,
    settings: InfraSettings,
    params: Parameters,
    ports: list[int],
    tls_secret: str | None,
    copies: Mapping[tuple[str, str], str],
) -> dict[str, Any]:
    ns = meta(gateway)["namespace"]
    selector = _labels(gateway)
    labels, annotations = _infrastructure(gateway)
    mounts: list[dict[str, Any]] = [{"name": "bootstrap", "mountPath": "/etc/envoy"}]
    volumes: list[dict[str, Any]] = [{"name": "bootstrap", "emptyDir": {}}]
    envoy_mounts = [{"name": "bootstrap", "mountPath": "/etc/envoy", "readOnly": True}]
    if tls_secret is not None:
        xds = {"name": "xds-tls", "mountPath": XDS_TLS_DIR, "readOnly": True}
        mounts.append(xds)
        envoy_mounts.append(xds)
        volumes.append(
            {"name": "xds-tls", "secret": {"secretName": tls_secret, "defaultMode": 0o440}}
        )
    for i, (secret_ns, secret) in enumerate(certificate_secrets(gateway)):
        volume = f"cert-{i}"
        if secret_ns != ns:
            if (secret_ns, secret) not in copies:
                continue  # not granted or not usable: its listener is not served
            source = copies[secret_ns, secret]
        else:
            source = secret
        # optional: a missing Secret is the Gateway's InvalidCertificateRef, not a pod that
        # cannot start (and so keeps serving its other listeners).
        secret_volume = {"secretName": source, "defaultMode": 0o440, "optional": True}
        volumes.append({"name": volume, "secret": secret_volume})
        # Where the hub's configuration says the certificate is: its own namespace and name.
        envoy_mounts.append(
            {"name": volume, "mountPath": f"{SECRET_DIR}/{secret_ns}/{secret}", "readOnly": True}
        )
    envoy: dict[str, Any] = {
        "name": "envoy",
        "image": settings.envoy_image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["-c", "/etc/envoy/bootstrap.json", "--disable-hot-restart", "--log-level", "warn"],
        "ports": [
            {"name": "ready", "containerPort": READY_PORT, "protocol": "TCP"},
            *(
                {"name": f"port-{port}", "containerPort": container_port(port), "protocol": "TCP"}
                for port in ports
                if container_port(port) not in (ADMIN_PORT, READY_PORT)
            ),
        ],
        "resources": dict(params.resources),
        "securityContext": _security_context(),
        "volumeMounts": envoy_mounts,
    }
    # Ready once Envoy has the hub's first configuration for the Gateway, whether or not
    # any of its listeners can be served (a Gateway with one bad certificate still has
    # Envoys that are up).
    envoy["readinessProbe"] = {
        "httpGet": {"path": "/ready", "port": READY_PORT},
        "periodSeconds": 2,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(gateway, name),
        "spec": {
            "replicas": params.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": {**labels, **selector},
                    # The Gateway's own infrastructure annotations win over ours.
                    "annotations": {**SCRAPE_ANNOTATIONS, **annotations},
                },
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [
                        {
                            "name": "bootstrap",
                            "image": settings.bootstrap_image,
                            "imagePullPolicy": settings.image_pull_policy,
                            "command": ["python3", "-m", "federation.cli.fedctl"],
                            "args": _bootstrap_args(gateway, settings, tls_secret),
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                            ],
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "64Mi"},
                                "limits": {"memory": "128Mi"},
                            },
                            "securityContext": _security_context(),
                            "volumeMounts": mounts,
                        }
                    ],
                    "containers": [envoy],
                    "volumes": volumes,
                },
            },
        },
    }


def address_problem(gateway: KubeObject, params: Parameters) -> str | None:
    """Why the Gateway's ``spec.addresses`` cannot be honoured (``UnsupportedAddress``),
    None when it can: at most one IP address, on a Service of type LoadBalancer (its
    ``loadBalancerIP``, which the load balancer assigns)."""
    addresses = (gateway.get("spec") or {}).get("addresses") or []
    if not addresses:
        return None
    for i, entry in enumerate(addresses):
        kind = entry.get("type") or "IPAddress"
        if kind != "IPAddress":
            return f"spec.addresses[{i}]: type {kind} is not supported; give an IPAddress"
        try:
            ipaddress.ip_address(entry.get("value") or "")
        except ValueError:
            return f"spec.addresses[{i}]: {entry.get('value')!r} is not an IP address"
    if len(addresses) > 1:
        return "spec.addresses: one address at most (its Service has one load balancer IP)"
    if params.service_type != "LoadBalancer":
        return (
            f"spec.addresses: the Gateway's Service is of type {params.service_type}; only a "
            "LoadBalancer Service takes a requested address"
        )
    return None


def requested_address(gateway: KubeObject) -> str | None:
    """The IP address the Gateway asks for (its first ``spec.addresses`` entry)."""
    addresses = (gateway.get("spec") or {}).get("addresses") or []
    return str(addresses[0].get("value")) if addresses else None


def gateway_addresses(service: KubeObject | None) -> list[dict[str, str]]:
    """``status.addresses`` of a Gateway from its Service: the load balancer's ingress,
    else the ClusterIPs."""
    if service is None:
        return []
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    out = []
    for entry in ingress:
        if entry.get("ip"):
            out.append({"type": "IPAddress", "value": entry["ip"]})
        elif entry.get("hostname"):
            out.append({"type": "Hostname", "value": entry["hostname"]})
    if out:
        return out
    spec = service.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [{"type": "IPAddress", "value": ip} for ip in ips if ip and ip != "None"]


def owned_by_infra(obj: KubeObject) -> bool:
    labels = meta(obj).get("labels") or {}
    return labels.get(MANAGED_BY) == MANAGER and labels.get(COMPONENT) == COMPONENT_VALUE
