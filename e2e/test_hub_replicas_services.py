"""The data-plane story with 2 and 3 hub replicas on one registry.

Hubs are identical replicas: each reads the whole registry and serves any Envoy, so the
Envoys of a clusterset may be spread over them and move between them. These are the
data-plane tests of ``e2e/test_data_plane.py``, imported and collected again here, on
``replicated_plane`` (``e2e/fixtures.py``), where each cluster's Envoy prefers another
replica. Then what replicas promise each other: for the same registry every replica
serves every node group the same versions (a version is a digest of the resources'
bytes), and the version an Envoy ACKed on one replica is the one the others serve, so
an Envoy that moves is offered nothing new. Left out: the tests that kill or restart
"the" hub (``e2e/test_hub_replicas_gateways.py`` kills replicas under traffic).
"""

from __future__ import annotations

import json
import urllib.error
from http import HTTPStatus
from typing import Any

import pytest

from e2e import test_data_plane as story
from e2e.federation import Federation, fedctl
from e2e.processes import HarnessError, wait_until
from e2e.traffic import export_with_backend, host, wait_served_by

pytestmark = pytest.mark.integration

# The story's fixtures and tests: pytest collects them again in this module, where
# ``data_plane`` below is the replicated hubs' environment.
fed, ns = story.fed, story.ns
test_request_through_b_is_answered_by_a = story.test_request_through_b_is_answered_by_a
test_local_first_then_failover_without_failed_requests = (
    story.test_local_first_then_failover_without_failed_requests
)
test_restarted_envoy_gets_its_full_configuration = (
    story.test_restarted_envoy_gets_its_full_configuration
)

#: How long replicas may take to agree after a change (each reads the registry itself).
AGREE = 30.0


@pytest.fixture
def data_plane(replicated_plane: Federation) -> Federation:
    return replicated_plane


def served_versions(fed: Federation, replica: int, group: str) -> dict[str, str]:
    """The version of each type replica ``replica`` serves to ``group`` ({} for none)."""
    try:
        text = fed.hub_http(f"/debug/config-dump?cluster={group}", replica)
    except urllib.error.HTTPError as err:
        if err.code == HTTPStatus.NOT_FOUND:
            return {}
        raise
    dump: dict[str, Any] = json.loads(text)
    return dict(dump["versions"])


def acked_versions(fed: Federation) -> dict[str, list[dict[str, str | None]]]:
    """Per connected Envoy (node id), the version of each type it ACKed, from each
    replica it is connected to (one, once it has settled)."""
    out: dict[str, list[dict[str, str | None]]] = {}
    for hub in fed.hubs:
        for proxy in json.loads(fed.hub_http("/debug/proxy-status", hub.index)):
            if "refused" not in proxy:
                types = proxy["types"].items()
                acked = {t: s["acked_version"] for t, s in types}
                out.setdefault(proxy["node_id"], []).append(acked)
    return out


def test_every_replica_serves_the_same_versions_and_the_envoys_acked_them(
    fed: Federation, ns: str
) -> None:
    """Identical input, identical versions: no replica has a version of its own (a
    counter, a time, a random name), so an Envoy that moves between replicas sees
    neither a regression nor a push of what it has."""
    fed.start_backend("a", 14)
    export_with_backend(fed, "a", ns, 14)
    wait_served_by(fed.envoys["b"], host(ns), "a")
    groups = sorted(fed.env.clusters)
    seen: dict[str, list[dict[str, str]]] = {}

    def replicas_agree() -> bool:
        for group in groups:
            seen[group] = [served_versions(fed, h.index, group) for h in fed.hubs]
        return all(v[0] and all(x == v[0] for x in v) for v in seen.values())

    try:
        wait_until(replicas_agree, timeout=AGREE, what="every replica to serve the same versions")
    except HarnessError as err:
        raise AssertionError(f"{err}: {json.dumps(seen, indent=1)}") from err

    def envoys_acked() -> bool:
        acked = acked_versions(fed)
        mine = [acked.get(f"envoy-{group}") or [] for group in groups]
        if not replicas_agree() or any(len(on) != 1 or not on[0] for on in mine):
            return False  # not connected yet, or still on two replicas
        served = [seen[group][0] for group in groups]
        return all(on[0][t] == s.get(t) for on, s in zip(mine, served, strict=True) for t in on[0])

    try:
        wait_until(envoys_acked, timeout=AGREE, what="each Envoy to ACK what every replica serves")
    except HarnessError as err:
        raise AssertionError(f"{err}: acked {json.dumps(acked_versions(fed), indent=1)}") from err
    # What an operator sees: every replica's Envoys in one table, each on one replica.
    urls = [arg for h in fed.hubs for arg in ("--hub", f"http://127.0.0.1:{h.http_port}")]
    table = fedctl("proxy-status", *urls)
    assert table.returncode == 0, table.stderr
    print(table.stdout)
    rows = [line.split() for line in table.stdout.splitlines()[1:] if line.startswith("http")]
    urls_of = {f"http://127.0.0.1:{h.http_port}": h.index for h in fed.hubs}
    on = {}
    for group in groups:
        (row,) = [r for r in rows if r[1] == f"envoy-{group}"]
        assert row[-1] == "yes", table.stdout
        on[f"envoy-{group}"] = urls_of[row[0]]
    print(f"\n{len(fed.hubs)} replicas agree on {len(groups)} groups; Envoys on replicas {on}")
    # Spread as each prefers (an Envoy that had to move was sent back, as a connection's
    # maximum age would).
    assert on == {name: fed.preferred_hub[name] for name in on}
    assert len(set(on.values())) > 1
