"""The package fixture of the Helm-installed node-tier tests (see :mod:`e2e.helm_install`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.helm_install import CLUSTERS, Installed, install
from e2e.nodes import NodeEnvironment
from e2e.processes import ProcessGroup
from e2e.redis_server import RedisServer


@pytest.fixture(scope="package")
def installed() -> Iterator[Installed]:
    group = ProcessGroup()
    try:
        with (
            NodeEnvironment(CLUSTERS, federation_crds=False) as env,
            RedisServer(group) as redis,
        ):
            yield install(env, redis)
    finally:
        group.stop_all()
