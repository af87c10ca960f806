"""pytest fixtures for the local multi-cluster environment.

Loaded for every test run through ``-p e2e.fixtures`` (pyproject.toml). The
session-wide environment is started on first use and stopped at the end of
the run, also when tests fail or the run is interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient
from kubernetes.config import new_client_from_config

from e2e.cluster import Identity, LocalCluster, LocalEnvironment


@pytest.fixture(scope="session")
def local_env() -> Iterator[LocalEnvironment]:
    """Two member clusters, ``a`` and ``b``, shared by the whole session."""
    with LocalEnvironment(("a", "b")) as env:
        yield env


@pytest.fixture(scope="session")
def cluster_a(local_env: LocalEnvironment) -> LocalCluster:
    return local_env.cluster("a")


def api_client(cluster: LocalCluster, identity: Identity | None = None) -> ApiClient:
    """A kubernetes client for ``cluster``, as admin unless ``identity`` is given."""
    path = identity.kubeconfig if identity else cluster.kubeconfig
    client: ApiClient = new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(path)
    )
    return client


@pytest.fixture
def admin_a(cluster_a: LocalCluster) -> Iterator[ApiClient]:
    with api_client(cluster_a) as client:
        yield client
