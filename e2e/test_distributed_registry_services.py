"""The federation story on a Redis Cluster and on a primary under Sentinel.

The registry's code is the same whichever Redis its URL names; these are the service
federation tests of ``e2e/test_service_federation.py``, imported and collected again
here, on ``distributed_plane`` (``e2e/fixtures.py``): hub, agents and Envoys whose
registry is a Redis Cluster of 3 masters with a replica each, or a primary with a
replica under 3 sentinels. Left out: the tests that restart or write into the one
redis-server of the shared environment (data loss, a garbage record).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient

from e2e import test_service_federation as story
from e2e.federation import Federation
from e2e.fixtures import api_clients

pytestmark = pytest.mark.integration

# The story's fixtures and tests: pytest collects them again in this module, where
# ``control_plane`` below is the distributed registry's environment.
fed, clients, ns = story.fed, story.clients, story.ns
test_export_becomes_import_in_every_cluster = story.test_export_becomes_import_in_every_cluster
test_second_exporter_adds_its_cluster_and_endpoints = (
    story.test_second_exporter_adds_its_cluster_and_endpoints
)
test_conflicts_mark_every_exporter_and_the_oldest_wins = (
    story.test_conflicts_mark_every_exporter_and_the_oldest_wins
)
test_headless_export_imports_without_ips = story.test_headless_export_imports_without_ips
test_unexport_removes_the_import_only_with_the_last_exporter = (
    story.test_unexport_removes_the_import_only_with_the_last_exporter
)
test_dead_agent_goes_stale_keeps_endpoints_and_recovers = (
    story.test_dead_agent_goes_stale_keeps_endpoints_and_recovers
)
test_export_deleted_while_its_agent_was_down_is_withdrawn = (
    story.test_export_deleted_while_its_agent_was_down_is_withdrawn
)


@pytest.fixture
def control_plane(distributed_plane: Federation) -> Federation:
    return distributed_plane


@pytest.fixture
def control_plane_clients(distributed_plane: Federation) -> Iterator[dict[str, ApiClient]]:
    with api_clients(distributed_plane.env) as made:
        yield made
