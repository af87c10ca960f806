"""The project's CRDs on a real kube-apiserver: versions, validation, printer columns."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import (
    ApiClient,
    ApiextensionsV1Api,
    CoreV1Api,
    CustomObjectsApi,
    V1Namespace,
    V1ObjectMeta,
)
from kubernetes.client.exceptions import ApiException

from e2e.cluster import LocalCluster, kubectl_table
from federation.translate.gateway.status import CONTROLLER_NAME

pytestmark = pytest.mark.integration

MCS = "multicluster.x-k8s.io"
PORTS = [
    {"name": "http", "protocol": "TCP", "port": 80},
    {"name": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c", "port": 9090},
]


@pytest.fixture
def namespace(admin_a: ApiClient) -> Iterator[str]:
    """A fresh namespace per test. Never deleted: no controller-manager finalizes it."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    CoreV1Api(admin_a).create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name)))
    yield name


def _message(err: ApiException) -> str:
    """The apiserver's human-readable message from a Status body."""
    return str(json.loads(err.body or "{}").get("message"))


def _import(name: str, spec: dict[str, Any], version: str = "v1beta1") -> dict[str, Any]:
    return {
        "apiVersion": f"{MCS}/{version}",
        "kind": "ServiceImport",
        "metadata": {"name": name},
        "spec": spec,
    }


def _create(api: CustomObjectsApi, ns: str, plural: str, obj: dict[str, Any]) -> Any:
    version = obj["apiVersion"].split("/")[1]
    return api.create_namespaced_custom_object(MCS, version, ns, plural, obj)


def _get(api: CustomObjectsApi, ns: str, plural: str, name: str, version: str) -> Any:
    return api.get_namespaced_custom_object(MCS, version, ns, plural, name)


@pytest.mark.parametrize(("written", "other"), [("v1beta1", "v1alpha1"), ("v1alpha1", "v1beta1")])
def test_service_import_reads_the_same_in_both_versions(
    admin_a: ApiClient, namespace: str, written: str, other: str
) -> None:
    api = CustomObjectsApi(admin_a)
    spec = {
        "type": "ClusterSetIP",
        "ports": PORTS,
        "ips": ["10.101.0.10", "fd00::10"],
        "ipFamilies": ["IPv4", "IPv6"],
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}},
        "internalTrafficPolicy": "Cluster",
        "trafficDistribution": "PreferClose",
    }
    _create(api, namespace, "serviceimports", _import("echo", spec, written))
    status = {"status": {"clusters": [{"cluster": "a"}, {"cluster": "b"}]}}
    api.patch_namespaced_custom_object_status(
        MCS, written, namespace, "serviceimports", "echo", status
    )
    mine = _get(api, namespace, "serviceimports", "echo", written)
    theirs = _get(api, namespace, "serviceimports", "echo", other)
    assert theirs["apiVersion"] == f"{MCS}/{other}"
    assert theirs["spec"] == mine["spec"] == spec
    assert theirs["status"] == mine["status"] == status["status"]


@pytest.mark.parametrize("version", ["v1beta1", "v1alpha1"])
def test_service_export_reads_the_same_in_both_versions(
    admin_a: ApiClient, namespace: str, version: str
) -> None:
    api = CustomObjectsApi(admin_a)
    export = {
        "apiVersion": f"{MCS}/{version}",
        "kind": "ServiceExport",
        "metadata": {"name": "echo"},
        "spec": {"exportedLabels": {"tier": "web"}, "exportedAnnotations": {"owner": "team-a"}},
    }
    _create(api, namespace, "serviceexports", export)
    for read in ("v1beta1", "v1alpha1"):
        assert _get(api, namespace, "serviceexports", "echo", read)["spec"] == export["spec"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "Foo", "ports": PORTS}, 'spec.type: Unsupported value: "Foo"'),
        (
            {"type": "ClusterSetIP", "ports": PORTS, "ips": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]},
            "spec.ips: Too many: 3: must have at most 2 items",
        ),
        ({"type": "ClusterSetIP"}, "spec.ports: Required value"),
        ({"ports": PORTS}, "spec.type: Required value"),
        ({"type": "Headless", "ports": [{"name": "x"}]}, "spec.ports[0].port: Required value"),
        ({"type": "Headless", "ports": [{"port": 70000}]}, "spec.ports[0].port: Invalid value"),
    ],
)
@pytest.mark.parametrize("version", ["v1beta1", "v1alpha1"])
def test_invalid_service_imports_are_rejected_with_the_apiservers_reason(
    admin_a: ApiClient, namespace: str, spec: dict[str, Any], message: str, version: str
) -> None:
    api = CustomObjectsApi(admin_a)
    with pytest.raises(ApiException) as err:
        _create(api, namespace, "serviceimports", _import("bad", spec, version))
    assert err.value.status == 422
    assert message in _message(err.value)
    with pytest.raises(ApiException) as missing:
        _get(api, namespace, "serviceimports", "bad", version)
    assert missing.value.status == 404


def _property(name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "about.k8s.io/v1beta1",
        "kind": "ClusterProperty",
        "metadata": {"name": name},
        "spec": {"value": value},
    }


def test_cluster_property_id_must_be_a_dns_subdomain(admin_a: ApiClient) -> None:
    api = CustomObjectsApi(admin_a)
    # The id property already exists (the harness set it); a bad one must not replace it.
    with pytest.raises(ApiException) as err:
        api.replace_cluster_custom_object(
            "about.k8s.io",
            "v1beta1",
            "clusterproperties",
            "cluster.clusterset.k8s.io",
            {
                **_property("cluster.clusterset.k8s.io", "Not_A_Subdomain"),
                "metadata": {"name": "cluster.clusterset.k8s.io", "resourceVersion": _rv(api)},
            },
        )
    assert err.value.status == 422
    assert "must be an RFC-1123 subdomain" in _message(err.value)


def test_cluster_property_id_is_immutable(admin_a: ApiClient) -> None:
    api = CustomObjectsApi(admin_a)
    with pytest.raises(ApiException) as err:
        api.patch_cluster_custom_object(
            "about.k8s.io",
            "v1beta1",
            "clusterproperties",
            "cluster.clusterset.k8s.io",
            {"spec": {"value": "renamed"}},
        )
    assert err.value.status == 422
    assert "is immutable" in _message(err.value)
    assert _cluster_id_property(api)["spec"]["value"] == "a"


def test_other_cluster_properties_take_any_value(admin_a: ApiClient) -> None:
    api = CustomObjectsApi(admin_a)
    name = f"region-{uuid.uuid4().hex[:6]}.example.com"
    api.create_cluster_custom_object(
        "about.k8s.io", "v1beta1", "clusterproperties", _property(name, "Europe / West_1")
    )
    api.patch_cluster_custom_object(
        "about.k8s.io", "v1beta1", "clusterproperties", name, {"spec": {"value": "changed"}}
    )


def test_cluster_property_is_stored_as_v1beta1_and_still_served_as_v1alpha1(
    admin_a: ApiClient,
) -> None:
    """As upstream about-api: clusters with older tooling keep reading v1alpha1."""
    api = CustomObjectsApi(admin_a)
    name = f"zone-{uuid.uuid4().hex[:6]}.example.com"
    old = {**_property(name, "z1"), "apiVersion": "about.k8s.io/v1alpha1"}
    api.create_cluster_custom_object("about.k8s.io", "v1alpha1", "clusterproperties", old)
    newer = api.get_cluster_custom_object("about.k8s.io", "v1beta1", "clusterproperties", name)
    assert isinstance(newer, dict)
    assert (newer["apiVersion"], newer["spec"]["value"]) == ("about.k8s.io/v1beta1", "z1")
    crd = ApiextensionsV1Api(admin_a).read_custom_resource_definition(
        "clusterproperties.about.k8s.io"
    )
    assert {v.name: (v.served, v.storage) for v in crd.spec.versions} == {
        "v1beta1": (True, True),
        "v1alpha1": (True, False),
    }


def _cluster_id_property(api: CustomObjectsApi) -> dict[str, Any]:
    obj = api.get_cluster_custom_object(
        "about.k8s.io", "v1beta1", "clusterproperties", "cluster.clusterset.k8s.io"
    )
    assert isinstance(obj, dict)
    return obj


def _rv(api: CustomObjectsApi) -> str:
    return str(_cluster_id_property(api)["metadata"]["resourceVersion"])


def test_printer_columns_make_kubectl_useful(
    cluster_a: LocalCluster, admin_a: ApiClient, namespace: str
) -> None:
    api = CustomObjectsApi(admin_a)
    spec = {"type": "ClusterSetIP", "ports": PORTS, "ips": ["10.101.0.10", "fd00::10"]}
    imported = _import("echo", spec)
    imported["metadata"]["annotations"] = {"federation.dev/clusters": "a,b"}
    _create(api, namespace, "serviceimports", imported)
    api.patch_namespaced_custom_object_status(
        MCS,
        "v1beta1",
        namespace,
        "serviceimports",
        "echo",
        {"status": {"clusters": [{"cluster": "a"}, {"cluster": "b"}]}},
    )
    _create(
        api,
        namespace,
        "serviceexports",
        {
            "apiVersion": f"{MCS}/v1beta1",
            "kind": "ServiceExport",
            "metadata": {"name": "echo"},
        },
    )
    conditions = [
        {
            "type": t,
            "status": s,
            "reason": r,
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        for t, s, r in [
            ("Valid", "True", "Valid"),
            ("Ready", "True", "Exported"),
            ("Conflict", "True", "PortConflict,TypeConflict"),
        ]
    ]
    api.patch_namespaced_custom_object_status(
        MCS, "v1beta1", namespace, "serviceexports", "echo", {"status": {"conditions": conditions}}
    )

    (row,) = kubectl_table(cluster_a.kubectl("get", "svcimport", "-n", namespace).stdout)
    assert list(row) == ["NAME", "TYPE", "IP", "CLUSTERS", "READY", "STALE", "AGE"]
    # Plain values: the first IP, and the agent's comma-separated list of clusters.
    assert [row[k] for k in ("NAME", "TYPE", "IP", "CLUSTERS")] == [
        "echo", "ClusterSetIP", "10.101.0.10", "a,b",
    ]  # fmt: skip
    (wide,) = kubectl_table(
        cluster_a.kubectl("get", "svcimport", "-n", namespace, "-o", "wide").stdout
    )
    assert wide["SECOND-IP"] == "fd00::10"

    (row,) = kubectl_table(cluster_a.kubectl("get", "svcexport", "-n", namespace).stdout)
    assert list(row) == ["NAME", "VALID", "READY", "CONFLICT", "AGE"]
    assert [row[k] for k in ("NAME", "VALID", "READY", "CONFLICT")] == [
        "echo", "True", "True", "True",
    ]  # fmt: skip
    (wide,) = kubectl_table(
        cluster_a.kubectl("get", "svcexport", "-n", namespace, "-o", "wide").stdout
    )
    assert (wide["VALID-REASON"], wide["CONFLICT-REASON"]) == ("Valid", "PortConflict,TypeConflict")


def _failover(name: str, **spec: Any) -> dict[str, Any]:
    target = {"group": MCS, "kind": "ServiceImport", "name": "web"}
    return {
        "apiVersion": "policy.federation.io/v1alpha1",
        "kind": "FailoverPolicy",
        "metadata": {"name": name},
        "spec": {"targetRefs": [target], **spec},
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"order": ["b"], "weights": [{"cluster": "b", "weight": 1}]}, "exactly one of order"),
        ({}, "exactly one of order and weights"),
        ({"order": ["b", "b"]}, "Duplicate value"),
        ({"weights": [{"cluster": "b", "weight": 0}]}, "should be greater than or equal to 1"),
        (
            {"order": ["b"], "targetRefs": [{"group": "", "kind": "Service", "name": "web"}]},
            "a FailoverPolicy targets ServiceImports",
        ),
    ],
)
def test_invalid_failover_policies_are_refused_with_the_apiservers_reason(
    admin_a: ApiClient, namespace: str, spec: dict[str, Any], message: str
) -> None:
    api = CustomObjectsApi(admin_a)
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(
            "policy.federation.io",
            "v1alpha1",
            namespace,
            "failoverpolicies",
            _failover("bad", **spec),
        )
    assert err.value.status == 422
    assert message in _message(err.value)


def test_failover_policies_show_their_target_and_acceptance(
    cluster_a: LocalCluster, admin_a: ApiClient, namespace: str
) -> None:
    api = CustomObjectsApi(admin_a)
    group, version, plural = "policy.federation.io", "v1alpha1", "failoverpolicies"
    api.create_namespaced_custom_object(
        group, version, namespace, plural, _failover("prefer-c", order=["c", "a"])
    )
    ancestor = {
        "ancestorRef": {"group": MCS, "kind": "ServiceImport", "name": "web"},
        "controllerName": CONTROLLER_NAME,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "Policy has been accepted.",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    api.patch_namespaced_custom_object_status(
        group, version, namespace, plural, "prefer-c", {"status": {"ancestors": [ancestor]}}
    )
    (row,) = kubectl_table(cluster_a.kubectl("get", "failoverpolicies", "-n", namespace).stdout)
    assert list(row) == ["NAME", "TARGET", "ACCEPTED", "REASON", "AGE"]
    assert [row[k] for k in ("NAME", "TARGET", "ACCEPTED", "REASON")] == [
        "prefer-c", "web", "True", "Accepted",
    ]  # fmt: skip
    (wide,) = kubectl_table(
        cluster_a.kubectl("get", "failoverpolicies", "-n", namespace, "-o", "wide").stdout
    )
    assert wide["ORDER"] == '["c","a"]'
