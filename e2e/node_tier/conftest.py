"""One node environment for the whole package: starting real nodes costs seconds, so the
tests share clusters ``a`` and ``b`` and work in namespaces of their own. Package scope
stops it as soon as the node-tier tests are done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.federation import Federation
from e2e.nodes import NodeEnvironment
from e2e.pods import envoy_pod


@pytest.fixture(scope="package")
def node_env() -> Iterator[NodeEnvironment]:
    with NodeEnvironment(("a", "b")) as env:
        yield env


@pytest.fixture(scope="package")
def node_federation(node_env: NodeEnvironment) -> Iterator[Federation]:
    """Redis, an agent per cluster and the hub on the host; an Envoy pod in ``b``."""
    federation = Federation(node_env, lease_ttl=3.0)
    federation.start()
    federation.start_hub()
    federation.wait_hub_ready()
    federation.envoys["b"] = envoy_pod(node_env.cluster("b"), hub_xds_port=federation.hub_xds_port)
    yield federation
