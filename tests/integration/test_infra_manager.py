"""The infra manager against a real kube-apiserver: what it writes, keeps and deletes.

Each test drives :class:`agents.infra.InfraManager` directly (no agent process) on its
own namespace of cluster ``a``; the apiserver-only tier has no garbage collector, so what
is deleted here is what the manager deletes itself.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents.infra import InfraManager
from agents.infra_objects import InfraSettings, copy_name, object_name
from agents.kube import Kube, load_configuration
from e2e import scenario as sc
from e2e.cluster import LocalCluster
from e2e.gateways import gateway, gateway_class

pytestmark = pytest.mark.integration

SETTINGS = InfraSettings(
    cluster="a",
    envoy_image="federation.local/envoy:test",
    bootstrap_image="federation.local/federation:test",
    hub_address="hub:18000",
)
PEM = base64.b64encode(b"not checked here").decode()


@pytest.fixture
async def kube(cluster_a: LocalCluster) -> AsyncIterator[Kube]:
    sc.apply(cluster_a, gateway_class())
    client = Kube(load_configuration(str(cluster_a.kubeconfig)))
    try:
        yield client
    finally:
        await client.close()


def _namespace(cluster: LocalCluster) -> str:
    ns = f"infra-{uuid.uuid4().hex[:6]}"
    sc.apply(cluster, sc.namespace(ns))
    return ns


async def _gateway(kube: Kube, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    obj = gateway(ns, name, 8080)
    obj["spec"].update(spec)
    path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways/{name}"
    return await kube.apply(path, obj)


async def _exists(kube: Kube, ns: str, kind: str, name: str) -> bool:
    group = "/apis/apps/v1" if kind == "deployments" else "/api/v1"
    return await kube.get(f"{group}/namespaces/{ns}/{kind}/{name}") is not None


async def test_a_granted_certificate_is_copied_only_next_to_gateways_it_is_granted_to(
    cluster_a: LocalCluster, kube: Kube
) -> None:
    """Two Gateways name the same Secret of namespace ``certs``; only the namespace the
    predicate grants gets a copy (a grant for one namespace is not one for another)."""
    certs, granted, other = (_namespace(cluster_a) for _ in range(3))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "wild", "namespace": certs},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": PEM, "tls.key": PEM},
    }
    await kube.apply(f"/api/v1/namespaces/{certs}/secrets/wild", secret)
    listener = {
        "name": "https",
        "port": 8443,
        "protocol": "HTTPS",
        "tls": {"certificateRefs": [{"name": "wild", "namespace": certs}]},
    }
    gateways = [await _gateway(kube, ns, "gw", listeners=[listener]) for ns in (granted, other)]
    manager = InfraManager(kube, SETTINGS)
    await manager.sync(gateways, {}, lambda gw_ns, ns, name: gw_ns == granted)
    assert await _exists(kube, granted, "secrets", copy_name("gw", certs, "wild"))
    assert not await _exists(kube, other, "secrets", copy_name("gw", certs, "wild"))
    assert await _exists(kube, other, "deployments", object_name("gw"))

    # The grant goes: the copy goes, the Gateway's Envoys stay.
    await manager.sync(gateways, {}, lambda gw_ns, ns, name: False)
    assert not await _exists(kube, granted, "secrets", copy_name("gw", certs, "wild"))
    assert await _exists(kube, granted, "deployments", object_name("gw"))


async def test_broken_parameters_keep_the_gateways_envoys_even_after_a_resync(
    cluster_a: LocalCluster, kube: Kube
) -> None:
    ns = _namespace(cluster_a)
    good = await _gateway(kube, ns, "gw")
    manager = InfraManager(kube, SETTINGS)
    await manager.sync([good], {})
    ref = {"group": "", "kind": "ConfigMap", "name": "missing"}
    broken = await _gateway(kube, ns, "gw", infrastructure={"parametersRef": ref})
    manager.forget_all()  # the periodic resync; a restarted agent knows nothing either
    (state,) = (await manager.sync([broken], {})).values()
    assert state.invalid_parameters and "missing" in state.invalid_parameters
    for kind in ("deployments", "services", "serviceaccounts"):
        assert await _exists(kube, ns, kind, object_name("gw")), kind
    # A new manager (an agent restart) keeps them too.
    await InfraManager(kube, SETTINGS).sync([broken], {})
    assert await _exists(kube, ns, "deployments", object_name("gw"))


async def test_one_gateways_failure_is_its_own_and_a_foreign_object_is_not_taken(
    cluster_a: LocalCluster, kube: Kube
) -> None:
    """A Service of the name the manager needs that is not ours: that Gateway reports it
    and gets nothing; the other Gateway is provisioned as usual."""
    ns = _namespace(cluster_a)
    sc.apply(cluster_a, sc.service(ns, object_name("taken")))
    taken, fine = await _gateway(kube, ns, "taken"), await _gateway(kube, ns, "fine")
    states = await InfraManager(kube, SETTINGS).sync([taken, fine], {})
    problem = states[ns, "taken"].problem
    assert problem and "is not the agent's" in problem
    assert states[ns, "fine"].problem is None
    assert await _exists(kube, ns, "deployments", object_name("fine"))
    assert not await _exists(kube, ns, "deployments", object_name("taken"))
    service = await kube.get(f"/api/v1/namespaces/{ns}/services/{object_name('taken')}")
    assert service is not None and not service["metadata"].get("ownerReferences")


async def test_a_gateway_whose_name_is_no_dns_label_gets_objects_all_the_same(
    cluster_a: LocalCluster, kube: Kube
) -> None:
    ns = _namespace(cluster_a)
    dotted = await _gateway(kube, ns, "api.v2")
    (state,) = (await InfraManager(kube, SETTINGS).sync([dotted], {})).values()
    assert state.problem is None
    assert await _exists(kube, ns, "services", object_name("api.v2"))


async def test_a_requested_address_goes_to_the_service_or_is_refused_by_name(
    cluster_a: LocalCluster, kube: Kube
) -> None:
    ns = _namespace(cluster_a)
    asked = await _gateway(
        kube, ns, "asked", addresses=[{"type": "IPAddress", "value": "192.0.2.9"}]
    )
    named = await _gateway(kube, ns, "named", addresses=[{"type": "Hostname", "value": "x.test"}])
    states = await InfraManager(kube, SETTINGS).sync([asked, named], {})
    service = await kube.get(f"/api/v1/namespaces/{ns}/services/{object_name('asked')}")
    assert service is not None and service["spec"]["loadBalancerIP"] == "192.0.2.9"
    # No load balancer here assigns it: the Gateway says so.
    assert states[ns, "asked"].unassigned_address
    assert "192.0.2.9" in (states[ns, "asked"].unassigned_address or "")
    assert "type Hostname" in (states[ns, "named"].unsupported_address or "")
    assert not await _exists(kube, ns, "deployments", object_name("named"))
