"""The opt-in withdrawal policy: a stale cluster's exports go after a timeout.

By default a dead agent's exports are kept (fail-static; see
test_service_federation). With ``--withdraw-stale-after`` they are withdrawn
once the cluster has been stale that long, and come back with the agent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient

from e2e import scenario as sc
from e2e.cluster import LocalEnvironment
from e2e.federation import Federation
from e2e.fixtures import api_client
from e2e.processes import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    with LocalEnvironment(("a", "b")) as env:
        federation = Federation(env, lease_ttl=1.0, withdraw_stale_after=1.0)
        federation.start()
        yield federation


def _import(client: ApiClient) -> dict[str, object] | None:
    return sc.get_custom(client, "serviceimports", "shop", "cart")


def test_stale_cluster_is_withdrawn_after_the_timeout_and_returns(fed: Federation) -> None:
    a = fed.env.cluster("a")
    for cluster in fed.env.clusters.values():
        sc.apply(cluster, sc.namespace("shop"))
    sc.apply(
        a,
        sc.service("shop", "cart"),
        sc.endpoint_slice(a, "shop", "cart", [5]),
        sc.export("shop", "cart"),
    )
    with api_client(fed.env.cluster("b")) as b:
        wait_until(lambda: _import(b) is not None, timeout=15, what="the import in b")
        fed.kill_agent("a")
        try:
            # Lease (1 s) expires, then 1 s of staleness: the only exporter is
            # withdrawn, so the import goes.
            wait_until(lambda: _import(b) is None, timeout=15, what="the import withdrawn from b")
        finally:
            fed.start_agent("a")
            fed.wait_agent_ready("a")
        wait_until(
            lambda: sc.clusters(_import(b)) == ["a"],
            timeout=15,
            what="the import back in b once a's agent returns",
        )
