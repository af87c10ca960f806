"""KEP-1645's rules where they cross clusters, on real apiservers and agents.

Each test exports one Service from several of three clusters, in a namespace of its own,
and checks what every cluster imports and what every exporter's conditions say. The
merge rules themselves are pinned by golden files (tests/golden/merge); these tests show
that the result is applied: the derived Service is valid, the imported EndpointSlices
carry the right ports, and the exporter refuses what would break other clusters.

Exporters created in one go share a creationTimestamp (whole seconds), so the winner of
a conflict is the first cluster by name: ``a``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api

from e2e import scenario as sc
from e2e.cluster import kubectl_table
from e2e.federation import Federation
from e2e.test_service_federation import eventually
from federation.registry.records import ServicePort

pytestmark = pytest.mark.integration

CLUSTERS = ("a", "b", "c")


@pytest.fixture
def fed(control_plane: Federation) -> Federation:
    return control_plane


@pytest.fixture
def clients(control_plane_clients: dict[str, ApiClient]) -> dict[str, ApiClient]:
    return control_plane_clients


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "mcs")


def export_from(
    fed: Federation,
    cluster_id: str,
    ns: str,
    ports: tuple[tuple[str, int, str], ...],
    *,
    slice_ports: tuple[tuple[str, int], ...] = (),
    spec: dict[str, Any] | None = None,
    export_spec: dict[str, Any] | None = None,
) -> None:
    cluster = fed.env.cluster(cluster_id)
    service = sc.service(ns, "echo", ports)
    service["spec"].update(spec or {})
    export = sc.export(ns, "echo")
    if export_spec:
        export["spec"] = export_spec
    sc.apply(
        cluster,
        service,
        sc.endpoint_slice(
            cluster, ns, "echo", [20], ports=slice_ports or tuple((n, p) for n, p, _ in ports)
        ),
        export,
    )


def imports(clients: dict[str, ApiClient], ns: str) -> dict[str, sc.Obj]:
    found = {
        c: sc.get_custom(client, "serviceimports", ns, "echo") for c, client in clients.items()
    }
    missing = [c for c, obj in found.items() if obj is None]
    assert not missing, f"no ServiceImport in {missing}"
    return {c: obj for c, obj in found.items() if obj is not None}


def ports_of(obj: sc.Obj) -> set[tuple[str, int, str]]:
    return {(p.get("name", ""), p["port"], p.get("protocol", "TCP")) for p in obj["spec"]["ports"]}


def conflict(client: ApiClient, ns: str) -> tuple[str, str]:
    return sc.conditions(sc.get_custom(client, "serviceexports", ns, "echo"))["Conflict"]


def derived_service(client: ApiClient, ns: str, imported: sc.Obj) -> Any:
    name = imported["metadata"]["annotations"]["multicluster.kubernetes.io/derived-service"]
    return CoreV1Api(client).read_namespaced_service(name, ns)


def test_an_unnamed_and_a_named_port_still_import_everywhere(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    """Their union would be an invalid Service, and no cluster would get the import."""
    export_from(fed, "a", ns, (("", 80, "TCP"),))
    export_from(fed, "b", ns, (("http", 8080, "TCP"),))

    def imported() -> None:
        for cluster_id, obj in imports(clients, ns).items():
            assert ports_of(obj) == {("", 80, "TCP")}, cluster_id
            assert sc.clusters(obj) == ["a", "b"]
            assert len(obj["spec"]["ips"]) == 1
            derived = derived_service(clients[cluster_id], ns, obj)
            assert [(p.name, p.port) for p in derived.spec.ports] == [(None, 80)]
        for cluster_id in ("a", "b"):
            assert conflict(clients[cluster_id], ns)[0] == "True"
            assert "PortConflict" in conflict(clients[cluster_id], ns)[1]

    eventually(imported, "a valid import of a's unnamed port in every cluster")


def test_every_exporter_is_marked_when_ports_differ(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    """b agrees with the winner a, c has an extra port: the import has the union, and all
    three exports say Conflict (KEP-1645: the condition goes on all ServiceExports)."""
    http = ("http", 80, "TCP")
    export_from(fed, "a", ns, (http,))
    export_from(fed, "b", ns, (http,))
    export_from(fed, "c", ns, (http, ("stcp", 142, "SCTP")))

    def marked() -> None:
        for obj in imports(clients, ns).values():
            assert ports_of(obj) == {http, ("stcp", 142, "SCTP")}
        for cluster_id in CLUSTERS:
            assert conflict(clients[cluster_id], ns) == ("True", "PortConflict"), cluster_id

    eventually(marked, "the union imported and all three exports in conflict")


def test_a_losing_clusters_slices_do_not_carry_the_winners_port(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    """b's "http" is 8080 where a's is 80: "http" traffic must reach a only. kube-proxy
    matches slice ports by name, so b's imported slice must not carry "http"."""
    grpc = ("grpc", 9090, "TCP")
    export_from(
        fed, "a", ns, (("http", 80, "TCP"), grpc), slice_ports=(("http", 8080), ("grpc", 9091))
    )
    export_from(
        fed, "b", ns, (("http", 8080, "TCP"), grpc), slice_ports=(("http", 8080), ("grpc", 9091))
    )

    def sliced() -> None:
        for client in clients.values():
            slices = {
                s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"]: s
                for s in sc.list_imported_slices(client, ns, "echo")
            }
            assert {p["name"] for p in slices["a"]["ports"]} == {"http", "grpc"}
            assert {p["name"] for p in slices["b"]["ports"]} == {"grpc"}

    eventually(sliced, "b's imported slices without the http port")
    assert ServicePort("http", "TCP", 80) in [
        ServicePort(p["name"], p["protocol"], p["port"])
        for p in imports(clients, ns)["c"]["spec"]["ports"]
    ]


def test_the_winners_labels_are_imported_as_a_set(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    http = (("http", 80, "TCP"),)
    export_from(
        fed,
        "a",
        ns,
        http,
        export_spec={
            "exportedLabels": {"dummy-label": "true"},
            "exportedAnnotations": {"dummy-annotation": "true"},
        },
    )
    export_from(
        fed,
        "b",
        ns,
        http,
        export_spec={
            "exportedLabels": {"dummy-label2": "true"},
            "exportedAnnotations": {"dummy-annotation2": "true"},
        },
    )

    def winners_set() -> None:
        for obj in imports(clients, ns).values():
            labels, annotations = obj["metadata"]["labels"], obj["metadata"]["annotations"]
            assert labels.get("dummy-label") == "true" and "dummy-label2" not in labels
            assert annotations.get("dummy-annotation") == "true"
            assert "dummy-annotation2" not in annotations
        for cluster_id in ("a", "b"):
            assert conflict(clients[cluster_id], ns) == (
                "True",
                "LabelsConflict,AnnotationsConflict",
            )

    eventually(winners_set, "a's labels and annotations, and Conflict on both exports")


def test_invalid_exported_labels_are_held_back_not_the_export(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    """An invalid label would make every importing cluster's apply fail: a exports without
    it, says why on its own condition, and both exports are imported everywhere."""
    http = (("http", 80, "TCP"),)
    export_from(fed, "b", ns, http)
    export_from(fed, "a", ns, http, export_spec={"exportedLabels": {"tier": "x" * 64}})

    def held_back() -> None:
        export = sc.get_custom(clients["a"], "serviceexports", ns, "echo")
        conditions = sc.conditions(export)
        assert conditions["Valid"][0] == "True"
        assert conditions["ExportedMetadataValid"] == ("False", "InvalidExportedLabels")
        assert export is not None
        message = next(
            c["message"]
            for c in export["status"]["conditions"]
            if c["type"] == "ExportedMetadataValid"
        )
        assert "value of 'tier'" in message and "at most 63" in message
        for obj in imports(clients, ns).values():
            assert sc.clusters(obj) == ["a", "b"]

    eventually(held_back, "a's labels held back with a reason, both exports imported")


def test_families_affinity_and_traffic_policies_reach_the_import_and_the_derived_service(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_from(
        fed,
        "a",
        ns,
        (("http", 80, "TCP"),),
        spec={
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            "internalTrafficPolicy": "Local",
            "trafficDistribution": "PreferClose",
        },
    )

    def carried() -> None:
        for cluster_id, obj in imports(clients, ns).items():
            spec = obj["spec"]
            assert spec["ipFamilies"] == ["IPv4"] and len(spec["ips"]) == 1, cluster_id
            assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 600}}
            assert (spec["internalTrafficPolicy"], spec["trafficDistribution"]) == (
                "Local",
                "PreferClose",
            )
            derived = derived_service(clients[cluster_id], ns, obj).spec
            assert derived.session_affinity == "ClientIP"
            assert derived.session_affinity_config.client_ip.timeout_seconds == 600
            assert (derived.ip_families, derived.ip_family_policy) == (["IPv4"], "SingleStack")
            assert derived.internal_traffic_policy == "Local"
            assert derived.traffic_distribution == "PreferClose"
            assert derived.cluster_ips == spec["ips"]

    eventually(carried, "affinity, families and traffic policies in every cluster")


def test_an_ipv6_import_is_not_ready_where_the_cluster_has_no_ipv6(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    """c is dual-stack, a and b are IPv4 only: c's IPv6 Service is imported everywhere, with
    a clusterset IP only in c, and a and b say why they have none."""
    export_from(
        fed, "c", ns, (("http", 80, "TCP"),),
        spec={"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"},
    )  # fmt: skip

    def imported() -> None:
        found = imports(clients, ns)
        assert sc.conditions(found["c"])["Ready"] == ("True", "Ready")
        (ip,) = found["c"]["spec"]["ips"]
        assert ":" in ip and found["c"]["spec"]["ipFamilies"] == ["IPv6"]
        for cluster_id in ("a", "b"):
            obj = found[cluster_id]
            assert sc.conditions(obj)["Ready"] == ("False", "IPFamilyNotSupported"), cluster_id
            assert not obj["spec"].get("ips") and obj["spec"]["ipFamilies"] == ["IPv6"]
            (ready,) = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
            assert "IPv6" in ready["message"], ready
            derived = CoreV1Api(clients[cluster_id]).list_namespaced_service(
                ns, label_selector="multicluster.kubernetes.io/service-name=echo"
            )
            assert not derived.items, f"a derived Service in {cluster_id}"

    eventually(imported, "c's IPv6 import: an IP in c, IPFamilyNotSupported in a and b")


def test_a_dual_stack_import_keeps_the_family_a_cluster_has(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    export_from(
        fed, "c", ns, (("http", 80, "TCP"),),
        spec={"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"},
    )  # fmt: skip

    def imported() -> None:
        found = imports(clients, ns)
        assert found["c"]["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
        assert len(found["c"]["spec"]["ips"]) == 2
        for cluster_id in ("a", "b"):
            obj = found[cluster_id]
            assert sc.conditions(obj)["Ready"] == ("True", "Ready"), cluster_id
            assert obj["spec"]["ipFamilies"] == ["IPv4"] and len(obj["spec"]["ips"]) == 1
            derived = derived_service(clients[cluster_id], ns, obj).spec
            assert derived.ip_family_policy == "PreferDualStack"
            assert derived.cluster_ips == obj["spec"]["ips"]

    eventually(imported, "the dual-stack import: both families in c, IPv4 in a and b")


def test_kubectl_shows_plain_ips_clusters_readiness_and_reasons(
    fed: Federation, clients: dict[str, ApiClient], ns: str
) -> None:
    http = (("http", 80, "TCP"),)
    export_from(fed, "a", ns, http)
    export_from(fed, "b", ns, http)
    sc.apply(fed.env.cluster("c"), sc.export(ns, "echo"))  # no Service in c

    def imported() -> None:
        assert sc.clusters(imports(clients, ns)["b"]) == ["a", "b"]
        export_c = sc.get_custom(clients["c"], "serviceexports", ns, "echo")
        assert sc.conditions(export_c)["Valid"] == ("False", "NoService")

    eventually(imported, "the import of a and b, and c's export refused")
    b, c = fed.env.cluster("b"), fed.env.cluster("c")
    text = b.kubectl("get", "serviceimports", "-n", ns).stdout
    (row,) = kubectl_table(text)
    assert list(row) == ["NAME", "TYPE", "IP", "CLUSTERS", "READY", "STALE", "AGE"]
    assert (row["NAME"], row["TYPE"], row["CLUSTERS"]) == ("echo", "ClusterSetIP", "a,b")
    assert (row["READY"], row["STALE"]) == ("True", "False")
    assert re.fullmatch(r"10\.\d+\.\d+\.\d+", row["IP"]), text  # plain, not a JSON list

    (wide,) = kubectl_table(b.kubectl("get", "svcimport", "-n", ns, "-o", "wide").stdout)
    assert wide["SECOND-IP"] in ("", "<none>")  # single-stack
    derived = wide["DERIVED-SERVICE"]
    assert derived.startswith("derived-")
    # Each derived object names its import in the MCS service-name label.
    for kind in ("service", "endpointslices"):
        linked = kubectl_table(
            b.kubectl(
                "get", kind, "-n", ns, "-l", "multicluster.kubernetes.io/service-name=echo",
                "-L", "multicluster.kubernetes.io/service-name",
            ).stdout
        )  # fmt: skip
        assert linked and {r["SERVICE-NAME"] for r in linked} == {"echo"}, linked
        if kind == "service":
            assert [r["NAME"] for r in linked] == [derived]

    (export,) = kubectl_table(c.kubectl("get", "svcexport", "-n", ns, "-o", "wide").stdout)
    assert list(export) == [
        "NAME", "VALID", "READY", "CONFLICT", "AGE", "VALID-REASON", "CONFLICT-REASON",
    ]  # fmt: skip
    assert (export["VALID"], export["READY"], export["VALID-REASON"]) == (
        "False", "False", "NoService",
    )  # fmt: skip
    both = b.kubectl("get", "serviceimports,serviceexports", "-A").stdout
    assert "serviceimport.multicluster.x-k8s.io/echo" in both
    assert "serviceexport.multicluster.x-k8s.io/echo" in both
    print(f"\n{both}")
