"""A metadata mistake is not an outage: exported labels the apiserver would refuse.

A ServiceExport imported in every cluster is edited to add an ``exportedLabels`` key that
is not a valid label key (``bad key!``), with no admission policy installed (the control
plane's clusters have the CRDs only). Each importing cluster's apiserver would refuse it
on the ServiceImport, so the exporting agent holds the field back: the import stays in
every cluster with the last valid labels, the export says why in
``ExportedMetadataValid``, and fixing the key clears it. A new export with a bad key is
imported without the field. On the data plane, requests through an Envoy keep being
answered during the edit.

The admission policy that refuses such an export at ``kubectl apply`` is proven on a real
apiserver in tests/integration/test_charts.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client import ApiClient, CustomObjectsApi

from e2e import scenario as sc
from e2e.federation import Federation
from e2e.fixtures import api_client
from e2e.processes import wait_until
from e2e.test_service_federation import eventually
from e2e.traffic import DEADLINE, Loop, host, wait_served_by

pytestmark = pytest.mark.integration

CLUSTERS = ("a", "b", "c")
#: How long the imports are watched after the bad edit, beyond the agent's reaction.
OBSERVE_SECONDS = 3.0


def export_with_spec(fed: Federation, cluster_id: str, ns: str, spec: dict[str, Any]) -> None:
    cluster = fed.env.cluster(cluster_id)
    export = sc.export(ns, "echo")
    export["spec"] = spec
    sc.apply(
        cluster,
        sc.service(ns, "echo", (("http", 80, "TCP"),)),
        sc.endpoint_slice(cluster, ns, "echo", [30], ports=(("http", 8080),)),
        export,
    )


def set_export_spec(fed: Federation, cluster_id: str, ns: str, spec: dict[str, Any]) -> None:
    """Replace the ServiceExport's spec (``kubectl apply`` drops keys no longer written)."""
    export = sc.export(ns, "echo")
    export["spec"] = spec
    sc.apply(fed.env.cluster(cluster_id), export)


def metadata_condition(client: ApiClient, ns: str) -> dict[str, Any]:
    """The export's ``ExportedMetadataValid`` for its current generation (empty while the
    agent has not written it)."""
    export = sc.get_custom(client, "serviceexports", ns, "echo") or {}
    for c in (export.get("status") or {}).get("conditions") or []:
        if c["type"] == "ExportedMetadataValid":
            current = c.get("observedGeneration") == export["metadata"]["generation"]
            return dict(c) if current else {}
    return {}


def import_in(client: ApiClient, ns: str) -> dict[str, Any]:
    obj = sc.get_custom(client, "serviceimports", ns, "echo")
    assert obj is not None, "no ServiceImport"
    return obj


def list_version(client: ApiClient, ns: str) -> str:
    listed = CustomObjectsApi(client).list_namespaced_custom_object(
        sc.MCS, "v1beta1", ns, "serviceimports"
    )
    assert isinstance(listed, dict)
    return str(listed["metadata"]["resourceVersion"])


def import_events_since(client: ApiClient, ns: str, resource_version: str) -> list[Any]:
    """Every change of ``ns``'s ServiceImports after ``resource_version``, replayed by a
    watch that the apiserver ends after a second (it has them all from its cache)."""
    stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
        CustomObjectsApi(client).list_namespaced_custom_object,
        sc.MCS, "v1beta1", ns, "serviceimports",
        resource_version=resource_version, timeout_seconds=1,
    )  # fmt: skip
    return list(stream)


@pytest.fixture
def ns(control_plane: Federation) -> str:
    return sc.namespace_everywhere(control_plane.env.clusters.values(), "meta")


def test_a_bad_label_key_keeps_the_export_imported_everywhere(
    control_plane: Federation, control_plane_clients: dict[str, ApiClient], ns: str
) -> None:
    fed, clients = control_plane, control_plane_clients
    export_with_spec(fed, "a", ns, {"exportedLabels": {"tier": "web"}})

    def imported() -> None:
        for cluster_id, client in clients.items():
            obj = import_in(client, ns)
            assert sc.clusters(obj) == ["a"], cluster_id
            assert obj["metadata"]["labels"].get("tier") == "web", cluster_id
        assert metadata_condition(clients["a"], ns).get("status") == "True"

    eventually(imported, "a's export imported with tier=web in every cluster")
    versions = {c: list_version(client, ns) for c, client in clients.items()}

    set_export_spec(fed, "a", ns, {"exportedLabels": {"tier": "web", "bad key!": "x"}})
    edited = time.monotonic()
    held_back_at: list[float] = []

    def still_imported_and_held_back() -> bool:
        # Every pass checks that nothing was lost; done once the agent has said why and
        # the imports were seen whole for OBSERVE_SECONDS after that.
        for cluster_id, client in clients.items():
            obj = import_in(client, ns)
            assert sc.clusters(obj) == ["a"], f"{cluster_id}: {obj.get('status')}"
            labels = obj["metadata"]["labels"]
            assert labels.get("tier") == "web" and "bad key!" not in labels, cluster_id
        if not held_back_at and metadata_condition(clients["a"], ns).get("status") == "False":
            held_back_at.append(time.monotonic())
        return bool(held_back_at) and time.monotonic() - held_back_at[0] >= OBSERVE_SECONDS

    wait_until(
        still_imported_and_held_back,
        timeout=DEADLINE + OBSERVE_SECONDS,
        what="the bad key held back while every cluster keeps its import",
    )
    print(f"\nheld back {1000 * (held_back_at[0] - edited):.0f} ms after the edit")
    condition = metadata_condition(clients["a"], ns)
    assert condition["reason"] == "InvalidExportedLabels"
    assert "'bad key!'" in condition["message"], condition
    assert "keeps its last valid exportedLabels (tier=web)" in condition["message"]
    conditions = sc.conditions(sc.get_custom(clients["a"], "serviceexports", ns, "echo"))
    assert conditions["Valid"] == ("True", "Valid")
    assert conditions["Ready"] == ("True", "Exported")
    # Between the polls too: the apiservers replay every change since before the edit.
    for cluster_id, client in clients.items():
        events = import_events_since(client, ns, versions[cluster_id])
        assert not [e for e in events if e["type"] == "DELETED"], (cluster_id, events)
        for event in events:
            assert event["object"]["metadata"]["labels"].get("tier") == "web", event

    # Fixed: exported as written, the condition clears.
    set_export_spec(fed, "a", ns, {"exportedLabels": {"tier": "api"}})

    def fixed() -> None:
        for cluster_id, client in clients.items():
            labels = import_in(client, ns)["metadata"]["labels"]
            assert labels.get("tier") == "api", cluster_id
        condition = metadata_condition(clients["a"], ns)
        assert (condition.get("status"), condition.get("reason")) == ("True", "Valid")

    eventually(fixed, "tier=api imported everywhere and ExportedMetadataValid=True")


def test_a_new_export_with_a_bad_key_is_imported_without_that_field(
    control_plane: Federation, control_plane_clients: dict[str, ApiClient], ns: str
) -> None:
    fed, clients = control_plane, control_plane_clients
    export_with_spec(
        fed,
        "b",
        ns,
        {
            "exportedLabels": {"tier": "web"},
            "exportedAnnotations": {"owner": "team-b", "bad key!": "x"},
        },
    )

    def imported() -> None:
        for cluster_id, client in clients.items():
            obj = import_in(client, ns)
            assert sc.clusters(obj) == ["b"], cluster_id
            assert obj["metadata"]["labels"].get("tier") == "web"
            annotations = obj["metadata"]["annotations"]
            assert "owner" not in annotations and "bad key!" not in annotations
        condition = metadata_condition(clients["b"], ns)
        assert (condition.get("status"), condition.get("reason")) == (
            "False",
            "InvalidExportedAnnotations",
        )
        assert "'bad key!'" in condition["message"]
        assert "exported without exportedAnnotations" in condition["message"]

    eventually(imported, "b's export imported without its annotations, and why")


def test_a_bad_label_key_costs_no_request_through_an_envoy(data_plane: Federation) -> None:
    dp = data_plane
    ns = sc.namespace_everywhere(dp.env.clusters.values(), "meta-dp")
    dp.start_backend("a", 12)
    a = dp.env.cluster("a")
    sc.apply(
        a,
        sc.service(ns, "echo"),
        sc.endpoint_slice(a, ns, "echo", [12]),
        sc.export(ns, "echo", labels={"tier": "web"}),
    )
    wait_served_by(dp.envoys["b"], host(ns), "a")
    with api_client(a) as client, Loop(dp.envoys["b"], host(ns)) as loop:
        loop.wait_for(20)
        edited = time.monotonic()
        sc.apply(a, sc.export(ns, "echo", labels={"tier": "web", "bad key!": "x"}))
        wait_until(
            lambda: metadata_condition(client, ns).get("status") == "False",
            timeout=DEADLINE,
            what="a's export to hold the bad key back",
        )
        loop.wait_for(50, since=time.monotonic())
    print(f"\nrequests through b's Envoy since the edit: {loop.served(since=edited)}")
    assert loop.failures(since=edited) == 0, loop.failed
    assert loop.served(since=edited) == {"a": len([t for t, _ in loop.results if t >= edited])}
