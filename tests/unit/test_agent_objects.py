"""The agent's pure Kubernetes conversions (agents.k8s_objects) and slice ownership.

Export side: ServiceExport + Service + EndpointSlices (raw JSON) -> registry
record, or the ValidityProblem that becomes ``Valid=False``. Import side: the
merged import (federation.model.imports.merge_exports) -> ServiceImport and the
imported EndpointSlices with their MCS labels. Also ``agents.exports.slice_owner``,
which must never feed our own import slices back into an export.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from agents import k8s_objects as objs
from agents.exports import slice_owner
from federation.identity import subdomain_errors
from federation.model.conditions import ValidityProblem, ValidReason
from federation.model.imports import merge_exports
from federation.registry.records import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    ExportedService,
    ServicePort,
    ServiceType,
    decode_service,
    encode_service,
)

NS = "shop"
CREATED = "2025-01-02T03:04:05Z"
#: A DNS-1035 label: what a Service name must be.
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

Obj = dict[str, Any]


# --- raw Kubernetes JSON --------------------------------------------------------------


def export_obj(
    name: str = "web",
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    created: str | None = CREATED,
    generation: int | None = 3,
) -> Obj:
    meta: Obj = {"name": name, "namespace": NS}
    if created is not None:
        meta["creationTimestamp"] = created
    if generation is not None:
        meta["generation"] = generation
    spec: Obj = {}
    if labels is not None:
        spec["exportedLabels"] = dict(labels)
    if annotations is not None:
        spec["exportedAnnotations"] = dict(annotations)
    return {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceExport",
        "metadata": meta,
        "spec": spec,
    }


def service_obj(name: str = "web", **spec: Any) -> Obj:
    full: Obj = {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": HTTP_PORTS, **spec}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": full,
    }


HTTP_PORTS: list[Obj] = [
    {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "appProtocol": "http"},
    {"name": "grpc", "port": 9090, "targetPort": 9090},
]


def slice_obj(
    name: str,
    endpoints: Sequence[Obj],
    *,
    ports: Sequence[Obj] = ({"name": "http", "port": 8080, "protocol": "TCP"},),
    address_type: str | None = "IPv4",
    service: str = "web",
) -> Obj:
    obj: Obj = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {objs.K8S_SERVICE_NAME_LABEL: service},
        },
        "ports": [dict(p) for p in ports],
        "endpoints": [dict(e) for e in endpoints],
    }
    if address_type is not None:
        obj["addressType"] = address_type
    return obj


def ep(address: str, **conditions: bool | None) -> Obj:
    return {"addresses": [address], "conditions": conditions}


def only_endpoint(record: ExportedService | ValidityProblem) -> Endpoint:
    assert isinstance(record, ExportedService)
    assert len(record.endpoints) == 1
    assert len(record.endpoints[0].endpoints) == 1
    return record.endpoints[0].endpoints[0]


# --- build_record: the Service ----------------------------------------------------------


def test_cluster_ip_service_record() -> None:
    record = objs.build_record(
        "cluster-a",
        export_obj(labels={"tier": "web", "app": "shop"}, annotations={"owner": "team-x"}),
        service_obj(),
        [slice_obj("web-abc", [ep("10.0.0.1", ready=True)])],
    )

    assert isinstance(record, ExportedService)
    assert record.cluster == "cluster-a"
    assert (record.namespace, record.name) == (NS, "web")
    assert record.type is ServiceType.CLUSTER_SET_IP
    # Service ports, not target ports; protocol defaults to TCP; sorted.
    assert record.ports == (
        ServicePort("grpc", "TCP", 9090),
        ServicePort("http", "TCP", 80, "http"),
    )
    assert record.session_affinity == "None"
    assert record.session_affinity_timeout is None
    assert record.exported_labels == (("app", "shop"), ("tier", "web"))
    assert record.exported_annotations == (("owner", "team-x"),)
    assert record.created == CREATED
    assert record.generation == 3
    assert record.endpoints == (
        EndpointSet(
            name="web-abc",
            address_type="IPv4",
            ports=(EndpointPort("http", "TCP", 8080),),
            endpoints=(Endpoint(("10.0.0.1",), True, True, False),),
        ),
    )


def test_record_without_export_spec_timestamp_or_generation() -> None:
    export = export_obj(created=None, generation=None)
    del export["spec"]

    record = objs.build_record("a", export, service_obj(), [])

    assert isinstance(record, ExportedService)
    assert record.exported_labels == ()
    assert record.exported_annotations == ()
    assert record.created == ""
    assert record.generation == 0
    assert record.endpoints == ()


@pytest.mark.parametrize(
    ("config", "timeout"),
    [
        (None, 10800),
        ({}, 10800),
        ({"clientIP": {}}, 10800),
        ({"clientIP": {"timeoutSeconds": 600}}, 600),
    ],
    ids=["no-config", "empty-config", "no-timeout", "explicit"],
)
def test_client_ip_session_affinity_timeout(config: Obj | None, timeout: int) -> None:
    spec: Obj = {"sessionAffinity": "ClientIP"}
    if config is not None:
        spec["sessionAffinityConfig"] = config

    record = objs.build_record("a", export_obj(), service_obj(**spec), [])

    assert isinstance(record, ExportedService)
    assert record.session_affinity == "ClientIP"
    assert record.session_affinity_timeout == timeout


def test_timeout_is_ignored_without_client_ip_affinity() -> None:
    service = service_obj(
        sessionAffinity="None", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}}
    )

    record = objs.build_record("a", export_obj(), service, [])

    assert isinstance(record, ExportedService)
    assert record.session_affinity == "None"
    assert record.session_affinity_timeout is None


def test_headless_service_is_exported_as_headless() -> None:
    record = objs.build_record("a", export_obj(), service_obj(clusterIP="None"), [])

    assert isinstance(record, ExportedService)
    assert record.type is ServiceType.HEADLESS


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_node_port_and_load_balancer_services_are_cluster_set_ip(service_type: str) -> None:
    record = objs.build_record("a", export_obj(), service_obj(type=service_type), [])

    assert isinstance(record, ExportedService)
    assert record.type is ServiceType.CLUSTER_SET_IP


def test_external_name_service_is_invalid() -> None:
    service = service_obj(type="ExternalName", externalName="db.example.com")
    del service["spec"]["clusterIP"]

    result = objs.build_record("a", export_obj(), service, [])

    assert isinstance(result, ValidityProblem)
    assert result.reason is ValidReason.INVALID_SERVICE_TYPE
    assert "ExternalName" in result.message


def test_missing_service_is_no_service() -> None:
    result = objs.build_record("a", export_obj("gone"), None, [])

    assert isinstance(result, ValidityProblem)
    assert result.reason is ValidReason.NO_SERVICE
    assert "shop/gone" in result.message


# --- build_record: EndpointSlices -------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({}, (True, True, False)),
        ({"ready": None, "serving": None, "terminating": None}, (True, True, False)),
        ({"ready": True}, (True, True, False)),
        ({"ready": False}, (False, False, False)),
        ({"serving": False}, (True, False, False)),
        ({"ready": True, "serving": False}, (True, False, False)),
        ({"ready": False, "serving": True, "terminating": True}, (False, True, True)),
        ({"ready": False, "terminating": True}, (False, False, True)),
    ],
    ids=[
        "all-nil",
        "explicit-nulls",
        "ready",
        "not-ready-serving-follows",
        "not-serving",
        "ready-not-serving",
        "terminating-serving",
        "terminating-not-serving",
    ],
)
def test_endpoint_condition_semantics(conditions: Obj, expected: tuple[bool, bool, bool]) -> None:
    record = objs.build_record(
        "a", export_obj(), service_obj(), [slice_obj("s", [ep("10.0.0.1", **conditions)])]
    )

    e = only_endpoint(record)
    assert (e.ready, e.serving, e.terminating) == expected


def test_endpoint_without_conditions_is_ready_and_serving() -> None:
    record = objs.build_record(
        "a", export_obj(), service_obj(), [slice_obj("s", [{"addresses": ["10.0.0.1"]}])]
    )

    e = only_endpoint(record)
    assert (e.ready, e.serving, e.terminating) == (True, True, False)


def test_endpoints_without_addresses_and_ports_without_port_are_dropped() -> None:
    slice_ = slice_obj(
        "s",
        [
            {"addresses": [], "conditions": {"ready": True}},
            {"conditions": {"ready": True}},
            {
                "addresses": ["10.0.0.2"],
                "conditions": {"ready": True},
                "zone": "zone-a",
                "hostname": "web-0",
            },
        ],
        ports=[
            {"name": "all"},  # a nil port: "all ports", which an import cannot express
            {"name": "http", "port": 8080, "appProtocol": "http"},
            {"name": "udp", "port": 53, "protocol": "UDP"},
        ],
        address_type=None,
    )

    record = objs.build_record("a", export_obj(), service_obj(), [slice_])

    assert isinstance(record, ExportedService)
    (endpoint_set,) = record.endpoints
    assert endpoint_set.address_type == "IPv4"
    assert endpoint_set.ports == (
        EndpointPort("http", "TCP", 8080, "http"),
        EndpointPort("udp", "UDP", 53),
    )
    assert endpoint_set.endpoints == (
        Endpoint(("10.0.0.2",), True, True, False, zone="zone-a", hostname="web-0"),
    )


def test_record_is_deterministic() -> None:
    endpoints = [
        ep("10.0.0.3", ready=False),
        {"addresses": ["10.0.0.1"], "zone": "z1"},
        ep("10.0.0.2", ready=True, terminating=True),
    ]
    slice_ports: list[Obj] = [
        {"name": "http", "port": 8080},
        {"name": "metrics", "port": 9100},
    ]
    slices = [
        slice_obj("web-one", endpoints, ports=slice_ports),
        slice_obj("web-two", [ep("10.0.1.1")], address_type="IPv6"),
    ]
    labels = {"a": "1", "b": "2", "c": "3"}
    annotations = {"x": "1", "y": "2"}

    first = objs.build_record(
        "a",
        export_obj(labels=labels, annotations=annotations),
        service_obj(),
        slices,
    )
    second = objs.build_record(
        "a",
        export_obj(
            labels=dict(reversed(labels.items())),
            annotations=dict(reversed(annotations.items())),
        ),
        service_obj(ports=list(reversed(HTTP_PORTS))),
        [
            slice_obj("web-two", [ep("10.0.1.1")], address_type="IPv6"),
            slice_obj("web-one", list(reversed(endpoints)), ports=list(reversed(slice_ports))),
        ],
    )

    assert isinstance(first, ExportedService)
    assert first == second
    assert [s.name for s in first.endpoints] == ["web-one", "web-two"]


def test_duplicate_addresses_differing_only_by_zone_do_not_crash() -> None:
    slice_ = slice_obj(
        "s", [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.1"], "zone": "zone-a"}]
    )

    record = objs.build_record("a", export_obj(), service_obj(), [slice_])

    assert isinstance(record, ExportedService)
    assert len(record.endpoints[0].endpoints) == 2


# --- import side ------------------------------------------------------------------------


def record(
    cluster: str,
    *,
    type: ServiceType = ServiceType.CLUSTER_SET_IP,
    slices: Sequence[str] = ("web-abc",),
    affinity: str = "None",
    timeout: int | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> ExportedService:
    return ExportedService(
        cluster=cluster,
        namespace=NS,
        name="web",
        type=type,
        ports=(ServicePort("http", "TCP", 80), ServicePort("grpc", "TCP", 9090, "grpc")),
        session_affinity=affinity,
        session_affinity_timeout=timeout,
        exported_labels=tuple(sorted((labels or {}).items())),
        exported_annotations=tuple(sorted((annotations or {}).items())),
        created=CREATED,
        endpoints=tuple(
            EndpointSet(
                name=name,
                address_type="IPv4",
                ports=(
                    EndpointPort("http", "TCP", 8080, "http"),
                    EndpointPort("grpc", "TCP", 9091),
                ),
                endpoints=(
                    Endpoint((f"10.{i}.0.1",), True, True, False, zone="zone-a", hostname="h0"),
                    Endpoint((f"10.{i}.0.2", f"10.{i}.0.3"), False, True, True),
                ),
            )
            for i, name in enumerate(slices)
        ),
    )


def test_derived_service_name_is_a_short_stable_dns_label() -> None:
    long_name = "x" * 63
    for name in ("web", long_name, "a-b-c"):
        derived = objs.derived_service_name(name)
        assert len(derived) <= 63
        assert DNS_LABEL.match(derived), derived
        assert objs.derived_service_name(name) == derived
    assert objs.derived_service_name("web") != objs.derived_service_name("web2")


def test_service_import_for_cluster_set_ip() -> None:
    merged = merge_exports(
        [
            record("a", labels={"tier": "web"}, annotations={"owner": "team-x"}),
            record("b", labels={"tier": "web"}),
        ]
    )

    obj = objs.service_import(merged, ["10.96.0.10"])

    assert obj["apiVersion"] == "multicluster.x-k8s.io/v1beta1"
    assert obj["kind"] == "ServiceImport"
    meta = obj["metadata"]
    assert (meta["namespace"], meta["name"]) == (NS, "web")
    assert meta["labels"] == {"tier": "web", objs.OWNER_LABEL: objs.OWNER}
    assert meta["annotations"] == {
        "owner": "team-x",
        objs.DERIVED_SERVICE_ANNOTATION: objs.derived_service_name("web"),
        # Plain cluster names for kubectl's Clusters column.
        objs.CLUSTERS_ANNOTATION: "a,b",
    }
    assert obj["spec"] == {
        "type": "ClusterSetIP",
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80},
            {"name": "grpc", "protocol": "TCP", "port": 9090, "appProtocol": "grpc"},
        ],
        "sessionAffinity": "None",
        "ips": ["10.96.0.10"],
    }


def test_service_import_session_affinity_config_only_for_client_ip() -> None:
    client_ip = objs.service_import(
        merge_exports([record("a", affinity="ClientIP", timeout=600)]), []
    )
    none = objs.service_import(merge_exports([record("a")]), [])

    assert client_ip["spec"]["sessionAffinity"] == "ClientIP"
    assert client_ip["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 600}}
    assert none["spec"]["sessionAffinity"] == "None"
    assert "sessionAffinityConfig" not in none["spec"]


def test_service_import_for_headless_has_no_ips_and_no_derived_service() -> None:
    merged = merge_exports([record("a", type=ServiceType.HEADLESS, annotations={"owner": "x"})])

    obj = objs.service_import(merged, ["10.96.0.10"])

    assert obj["spec"]["type"] == "Headless"
    assert "ips" not in obj["spec"]
    assert obj["metadata"]["annotations"] == {"owner": "x", objs.CLUSTERS_ANNOTATION: "a"}
    assert objs.DERIVED_SERVICE_ANNOTATION not in obj["metadata"]["annotations"]


def _assert_valid_slice_name(name: str) -> None:
    assert len(name) <= 253
    assert name == name.lower()
    assert subdomain_errors(name) == [], name


def test_import_slices_one_per_source_cluster_and_slice() -> None:
    exports = [record("a", slices=("web-abc", "web-def")), record("b", slices=("web-abc",))]
    merged = merge_exports(exports)

    slices = objs.import_slices(merged, exports)

    assert len(slices) == 3
    names = [s["metadata"]["name"] for s in slices]
    assert len(set(names)) == 3  # b's web-abc does not collide with a's
    for name in names:
        _assert_valid_slice_name(name)
    assert sorted(s["metadata"]["labels"][objs.SOURCE_CLUSTER_LABEL] for s in slices) == [
        "a",
        "a",
        "b",
    ]
    for s in slices:
        assert s["apiVersion"] == "discovery.k8s.io/v1"
        assert s["kind"] == "EndpointSlice"
        assert s["metadata"]["namespace"] == NS
        labels = s["metadata"]["labels"]
        assert labels[objs.SERVICE_NAME_LABEL] == "web"
        assert labels[objs.MANAGED_BY_LABEL] == objs.MANAGED_BY
        assert labels[objs.OWNER_LABEL] == objs.OWNER
        assert labels[objs.K8S_SERVICE_NAME_LABEL] == objs.derived_service_name("web")
        # Ours: the agent must not export it back.
        assert slice_owner(s) is None


def test_import_slice_names_are_stable() -> None:
    exports = [record("a", slices=("web-abc", "web-def"))]

    first = objs.import_slices(merge_exports(exports), exports)
    second = objs.import_slices(merge_exports(exports), exports)

    assert [s["metadata"]["name"] for s in first] == [s["metadata"]["name"] for s in second]


def test_import_slice_names_stay_valid_for_long_names() -> None:
    cluster = "c" * 63  # the longest cluster id
    exported = ExportedService(
        cluster=cluster,
        namespace=NS,
        name="s" * 63,
        type=ServiceType.CLUSTER_SET_IP,
        ports=(ServicePort("http", "TCP", 80),),
        endpoints=(EndpointSet("e" * 253, "IPv4", (), ()),),
    )

    (slice_,) = objs.import_slices(merge_exports([exported]), [exported])

    _assert_valid_slice_name(slice_["metadata"]["name"])


def test_import_slices_of_a_headless_import_have_no_kubernetes_service_name() -> None:
    exports = [record("a", type=ServiceType.HEADLESS)]

    (slice_,) = objs.import_slices(merge_exports(exports), exports)

    labels = slice_["metadata"]["labels"]
    assert objs.K8S_SERVICE_NAME_LABEL not in labels
    assert labels[objs.SERVICE_NAME_LABEL] == "web"
    assert labels[objs.SOURCE_CLUSTER_LABEL] == "a"
    assert labels[objs.MANAGED_BY_LABEL] == objs.MANAGED_BY


def test_import_slices_carry_ports_and_endpoint_conditions_over() -> None:
    exports = [record("a")]

    (slice_,) = objs.import_slices(merge_exports(exports), exports)

    assert slice_["addressType"] == "IPv4"
    assert slice_["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 8080, "appProtocol": "http"},
        {"name": "grpc", "protocol": "TCP", "port": 9091},
    ]
    assert slice_["endpoints"] == [
        {
            "addresses": ["10.0.0.1"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "zone": "zone-a",
            "hostname": "h0",
        },
        {
            "addresses": ["10.0.0.2", "10.0.0.3"],
            "conditions": {"ready": False, "serving": True, "terminating": True},
        },
    ]


def test_import_slices_for_an_export_without_endpoints() -> None:
    exports = [record("a", slices=()), record("b")]

    slices = objs.import_slices(merge_exports(exports), exports)

    assert [s["metadata"]["labels"][objs.SOURCE_CLUSTER_LABEL] for s in slices] == ["b"]


def test_exported_records_round_trip_to_import_slices() -> None:
    """A Service exported by build_record comes out as an equivalent import slice."""
    built = objs.build_record(
        "a",
        export_obj(),
        service_obj(),
        [
            slice_obj(
                "web-abc",
                [ep("10.0.0.1", ready=False, serving=True, terminating=True)],
                ports=[{"name": "http", "port": 8080}],
            )
        ],
    )
    assert isinstance(built, ExportedService)

    (slice_,) = objs.import_slices(merge_exports([built]), [built])

    assert slice_["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert slice_["endpoints"] == [
        {
            "addresses": ["10.0.0.1"],
            "conditions": {"ready": False, "serving": True, "terminating": True},
        }
    ]


# --- slice ownership (agents.agent) -----------------------------------------------------


def test_slice_owner_of_a_service_slice() -> None:
    assert slice_owner(slice_obj("web-abc", [], service="web")) == (NS, "web")


def test_slice_owner_of_a_slice_managed_by_another_controller() -> None:
    slice_ = slice_obj("web-abc", [], service="web")
    slice_["metadata"]["labels"][objs.MANAGED_BY_LABEL] = "endpointslice-controller.k8s.io"

    assert slice_owner(slice_) == (NS, "web")


def test_slice_owner_ignores_our_import_slices() -> None:
    slice_ = slice_obj("imported-1", [], service=objs.derived_service_name("web"))
    slice_["metadata"]["labels"][objs.MANAGED_BY_LABEL] = objs.MANAGED_BY

    assert slice_owner(slice_) is None


@pytest.mark.parametrize("labels", [None, {}, {"app": "web"}], ids=["none", "empty", "other"])
def test_slice_owner_without_a_service_name_label(labels: dict[str, str] | None) -> None:
    slice_ = slice_obj("orphan", [])
    slice_["metadata"]["labels"] = labels

    assert slice_owner(slice_) is None


def test_a_losing_clusters_slices_do_not_carry_the_winners_port() -> None:
    """kube-proxy matches slice ports to Service ports by name: b's "http" (8080 where
    a's is 80) must not get the import's "http" traffic, while its "grpc" still does."""
    a = record("a")
    b = ExportedService(
        **{
            **record("b").__dict__,
            "ports": (ServicePort("http", "TCP", 8080), ServicePort("grpc", "TCP", 9090, "grpc")),
        }
    )
    merged = merge_exports([a, b])
    slices = {
        s["metadata"]["labels"][objs.SOURCE_CLUSTER_LABEL]: s
        for s in objs.import_slices(merged, [a, b])
    }
    assert [p["name"] for p in slices["a"]["ports"]] == ["http", "grpc"]
    assert [p["name"] for p in slices["b"]["ports"]] == ["grpc"]
    only_http = ExportedService(**{**b.__dict__, "ports": (ServicePort("http", "TCP", 8080),)})
    merged = merge_exports([a, only_http])
    assert [
        s["metadata"]["labels"][objs.SOURCE_CLUSTER_LABEL]
        for s in objs.import_slices(merged, [a, only_http])
    ] == ["a"]


def test_a_slice_without_ports_means_all_ports_and_is_imported() -> None:
    headless = ExportedService(
        cluster="a", namespace=NS, name="db", type=ServiceType.HEADLESS, ports=(),
        endpoints=(EndpointSet("db-1", "IPv4", (), (Endpoint(("10.0.0.9",), True, True, False),)),),
    )  # fmt: skip
    (slice_,) = objs.import_slices(merge_exports([headless]), [headless])
    assert slice_["ports"] == []


def test_the_derived_service_carries_affinity_families_and_traffic_policies() -> None:
    exported = ExportedService(
        **{
            **record("a", affinity="ClientIP", timeout=600).__dict__,
            "ip_families": ("IPv6", "IPv4"),
            "internal_traffic_policy": "Local",
            "traffic_distribution": "PreferClose",
        }
    )
    merged = merge_exports([exported])
    spec = objs.derived_service(merged)["spec"]
    assert spec["sessionAffinity"] == "ClientIP"
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 600}}
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (["IPv6", "IPv4"], "PreferDualStack")
    assert (spec["internalTrafficPolicy"], spec["trafficDistribution"]) == ("Local", "PreferClose")
    # The import shows the families the derived Service got, in its order.
    imported = objs.service_import(merged, ["fd00::1"], ["IPv6"])["spec"]
    assert (imported["ips"], imported["ipFamilies"]) == (["fd00::1"], ["IPv6"])
    assert imported["internalTrafficPolicy"] == "Local"
    assert imported["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 600}}


@pytest.mark.parametrize(
    ("field", "value", "reason", "fragment"),
    [
        ("exportedLabels", {"bad key": "v"}, "InvalidExportedLabels", "key 'bad key'"),
        ("exportedLabels", {"tier": "x" * 64}, "InvalidExportedLabels", "value of 'tier'"),
        ("exportedLabels", {"app.kubernetes.io/managed-by": "me"}, "InvalidExportedLabels",
         "the agent's own"),
        ("exportedAnnotations", {"bad key": "v"}, "InvalidExportedAnnotations", "key 'bad key'"),
    ],
)  # fmt: skip
def test_invalid_exported_metadata_is_held_back_not_the_export(
    field: str, value: dict[str, str], reason: str, fragment: str
) -> None:
    """A new export with metadata the apiserver would refuse is exported without it."""
    export = {
        "metadata": {"namespace": NS, "name": "web", "creationTimestamp": CREATED},
        "spec": {field: {**value, "fine": "yes"}},
    }
    service = {"metadata": {"namespace": NS, "name": "web"}, "spec": {"ports": [{"port": 80}]}}
    record = objs.build_record("a", export, service, [])
    assert isinstance(record, ExportedService)
    assert (record.exported_labels, record.exported_annotations) == ((), ())
    (problem,) = objs.exported_metadata(export, None).problems
    assert (problem.reason, problem.field, problem.last_valid) == (reason, field, False)
    assert fragment in problem.message


def test_an_endpointslice_port_the_registry_would_refuse_is_left_out_not_the_export() -> None:
    """The apiserver takes any int32 as an EndpointSlice port; readers refuse a record with
    one outside 1-65535. The record the agent builds always decodes."""
    slices = [
        slice_obj("web-1", [ep("10.0.0.1")],
                  ports=[{"name": "http", "port": 8080}, {"name": "odd", "port": 0}]),
        slice_obj("web-2", [ep("10.0.0.2")], ports=[{"name": "http", "port": 70000}]),
        slice_obj("web-3", [ep("10.0.0.3")], ports=[{"name": "all"}]),  # nil: all ports
    ]  # fmt: skip
    record = objs.build_record("a", export_obj(), service_obj(), slices)
    assert isinstance(record, ExportedService)
    assert [(s.name, [p.name for p in s.ports]) for s in record.endpoints] == [
        ("web-1", ["http"]),
        ("web-3", []),
    ]
    assert decode_service(encode_service(record)) == record


# What a v1.36 apiserver answers for Services of families its service CIDRs lack.
V6_REFUSED = (
    'Service "derived-x" is invalid: spec.ipFamilies[0]: Invalid value: "IPv6": '
    "not configured on this cluster"
)
DUAL_REFUSED = (
    'Service "derived-x" is invalid: spec.ipFamilies[1]: Invalid value: "IPv6": '
    "not configured on this cluster"
)


@pytest.mark.parametrize(
    ("message", "refused"),
    [
        (V6_REFUSED, {"IPv6"}),
        (DUAL_REFUSED, {"IPv6"}),
        ('spec.ports[0].name: Invalid value: "x": must be unique', set()),
        ("provided IP is already allocated", set()),
    ],
)
def test_refused_families_are_read_from_the_apiservers_refusal(
    message: str, refused: set[str]
) -> None:
    assert objs.refused_families(message) == refused


def _with_families(*families: str) -> ExportedService:
    return ExportedService(**{**record("a").__dict__, "ip_families": families})


def test_a_dual_stack_import_keeps_the_family_the_cluster_has() -> None:
    merged = merge_exports([_with_families("IPv6", "IPv4")])
    families = objs.usable_families(merged, frozenset({"IPv6"}))
    assert families == ["IPv4"]
    spec = objs.derived_service(merged, families=families)["spec"]
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (["IPv4"], "PreferDualStack")


def test_a_single_stack_import_of_a_missing_family_has_none_left() -> None:
    merged = merge_exports([_with_families("IPv6")])
    assert objs.usable_families(merged, frozenset({"IPv6"})) == []
    assert objs.usable_families(merged, frozenset()) == ["IPv6"]
