"""The agent's status writer against a real apiserver (agents.status)."""

from __future__ import annotations

import uuid

import pytest
from kubernetes.client import ApiClient

from agents.kube import Kube, load_configuration
from agents.status import StatusWriter
from e2e import scenario as sc
from e2e.cluster import LocalCluster
from federation.model.conditions import export_conditions

pytestmark = pytest.mark.integration


async def test_a_status_write_to_an_export_deleted_meanwhile_is_not_a_failure(
    cluster_a: LocalCluster, admin_a: ApiClient
) -> None:
    """The export worker read the ServiceExport, then someone deleted it: the write
    finds nothing, and that is a race to skip quietly, not an error to retry."""
    ns = f"status-{uuid.uuid4().hex[:6]}"
    sc.apply(cluster_a, sc.namespace(ns), sc.export(ns, "gone"))
    export = sc.get_custom(admin_a, "serviceexports", ns, "gone")
    assert export is not None
    sc.delete(cluster_a, "serviceexport", ns, "gone")
    assert sc.get_custom(admin_a, "serviceexports", ns, "gone") is None

    kube = Kube(load_configuration(str(cluster_a.kubeconfig)))
    writer = StatusWriter(kube)
    conditions = export_conditions(cluster="a", service_problem=None, published=True)
    try:
        await writer.export_status(export, conditions)  # must not raise
    finally:
        await kube.close()

    assert (writer.writes, writer.gone) == (0, 1)
