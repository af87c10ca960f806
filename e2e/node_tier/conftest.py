"""One node environment for the whole package: starting real nodes costs seconds, so the
tests share clusters ``a`` and ``b`` and work in namespaces of their own. Package scope
stops it as soon as the node-tier tests are done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.envoy import EnvoyClient
from e2e.federation import Federation
from e2e.nodes import NodeEnvironment
from e2e.pods import envoy_pod


@pytest.fixture(scope="package")
def node_env() -> Iterator[NodeEnvironment]:
    with NodeEnvironment(("a", "b")) as env:
        yield env


@pytest.fixture(scope="package")
def node_federation(node_env: NodeEnvironment) -> Federation:
    """Redis, an agent per cluster and the hub, on the host."""
    # The resync is a safety net: what the tests see converge did so through watches.
    federation = Federation(node_env, lease_ttl=3.0, resync_interval=900.0)
    federation.start()
    federation.start_hub()
    federation.wait_hub_ready()
    return federation


@pytest.fixture(scope="package")
def envoy_b(node_env: NodeEnvironment, node_federation: Federation) -> EnvoyClient:
    """An Envoy pod in ``b``, fed by the hub."""
    return envoy_pod(
        node_env.cluster("b"),
        hub_xds_port=node_federation.hub_xds_port,
        tls_dir=node_federation.xds_tls_dir("b"),
    )
