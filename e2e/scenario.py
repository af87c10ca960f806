"""Building blocks for federation scenarios: objects a service owner writes, and reads.

Used by the e2e tests, the demo and the benchmarks. Objects are plain
Kubernetes JSON applied with kubectl (as a person would); reads go through the
kubernetes client for speed, since tests poll them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from e2e.cluster import LocalCluster

Obj = dict[str, Any]
MCS = "multicluster.x-k8s.io"


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(
    ns: str,
    name: str,
    ports: Sequence[tuple[str, int, str]] = (("http", 80, "TCP"), ("grpc", 9090, "TCP")),
    *,
    headless: bool = False,
    service_type: str = "ClusterIP",
) -> Obj:
    spec: Obj = {"type": service_type}
    if service_type == "ExternalName":
        spec["externalName"] = "example.invalid"
    else:
        spec["ports"] = [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]
    if headless:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def export(ns: str, name: str, labels: dict[str, str] | None = None) -> Obj:
    obj: Obj = {
        "apiVersion": f"{MCS}/v1beta1",
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": ns},
    }
    if labels:
        obj["spec"] = {"exportedLabels": labels}
    return obj


def endpoint_slice(
    cluster: LocalCluster,
    ns: str,
    service_name: str,
    hosts: Sequence[int],
    *,
    ready: bool = True,
    port: int = 8080,
    suffix: str = "1",
    ports: Sequence[tuple[str, int]] = (),
) -> Obj:
    """An EndpointSlice of ``service_name`` with pod IPs from the cluster's pod range.

    Its ports are ``ports`` (name, port), or one port ``http`` = ``port``.
    """
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [
            {"name": name, "port": number, "protocol": "TCP"}
            for name, number in (ports or (("http", port),))
        ],
        "endpoints": [
            {"addresses": [cluster.pod_ip(h)], "conditions": {"ready": ready}} for h in hosts
        ],
    }


def apply(cluster: LocalCluster, *objects: Obj) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def delete(cluster: LocalCluster, kind: str, ns: str, name: str) -> None:
    cluster.kubectl("delete", kind, "-n", ns, name, "--ignore-not-found", "--wait=false")


def get_custom(client: ApiClient, plural: str, ns: str, name: str) -> Obj | None:
    try:
        obj = CustomObjectsApi(client).get_namespaced_custom_object(
            MCS, "v1beta1", ns, plural, name
        )
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    assert isinstance(obj, dict)
    return obj


def list_imported_slices(client: ApiClient, ns: str, name: str) -> list[Obj]:
    """The agent's EndpointSlices for the import ``ns/name``."""
    result = CustomObjectsApi(client).list_namespaced_custom_object(
        "discovery.k8s.io",
        "v1",
        ns,
        "endpointslices",
        label_selector=f"multicluster.kubernetes.io/service-name={name}",
    )
    assert isinstance(result, dict)
    items: list[Obj] = result.get("items") or []
    return items


def conditions(obj: Obj | None) -> dict[str, tuple[str, str]]:
    """type -> (status, reason)."""
    if obj is None:
        return {}
    return {
        c["type"]: (c["status"], c["reason"])
        for c in (obj.get("status") or {}).get("conditions") or []
    }


def clusters(obj: Obj | None) -> list[str]:
    if obj is None:
        return []
    return [c["cluster"] for c in (obj.get("status") or {}).get("clusters") or []]


def namespace_everywhere(clusters: Iterable[LocalCluster], prefix: str) -> str:
    """Create a fresh namespace ``<prefix>-<random>`` in every cluster; return its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    for cluster in clusters:
        apply(cluster, namespace(name))
    return name
