"""The hub's snapshot builder serves exactly what the golden tests check.

For every clusterset golden case (``tests/golden/translate``) and every Gateway golden case
(``tests/golden/proxy``), the hub's :class:`~federation.hub.snapshots.SnapshotBuilder`
builds the node group's snapshot, and its bytes must equal those of
:func:`federation.translate.proxy.node_config`, which the golden files are rendered from.
Both assemble with :func:`federation.translate.proxy.assemble`; this proves that nothing
the hub does on the way (incremental builds, serialization, sharing across groups) makes
what it serves differ from what the goldens show.
"""

from __future__ import annotations

from typing import Any

import pytest

from federation.hub.snapshots import TYPES, SnapshotBuilder, SnapshotOptions
from federation.registry.watcher import ServiceName
from federation.translate.clusterset import clusterset_listener
from federation.translate.ir import ClustersetIR, GatewayIR, NodeGroupIR
from federation.translate.proxy import XdsResources, node_config
from federation.xds.snapshot import SnapshotCache
from tests.unit import test_proxy_golden as proxy_golden
from tests.unit import test_translate_golden as translate_golden

#: The node group that stands for a golden case's ``viewer: null`` (a cluster that
#: exports nothing).
OUTSIDER = "outsider"


def _wire(resources: XdsResources[Any]) -> dict[str, dict[str, bytes]]:
    return {
        type_url: {n: m.SerializeToString(deterministic=True) for n, m in kind.items()}
        for type_url, kind in zip(TYPES, resources.by_kind(), strict=True)
    }


def _served(cache: SnapshotCache, group: str) -> dict[str, dict[str, bytes]]:
    snapshot = cache.get(group)
    assert snapshot is not None
    return {t: {n: r.body for n, r in snapshot.of(t).items()} for t in TYPES}


def _clusterset_builder(
    loaded: translate_golden.Case,
) -> tuple[str, SnapshotCache, SnapshotBuilder]:
    """The node group a clusterset golden case views from, and a builder serving it."""
    group = loaded.viewer or OUTSIDER
    host, port = loaded.listener
    cache = SnapshotCache()
    options = SnapshotOptions(loaded.options, {group: f"{host}:{port}"}, check_consistency=True)
    return group, cache, SnapshotBuilder(cache, options)


@pytest.mark.parametrize("case", translate_golden.CASES)
def test_the_hub_serves_the_clusterset_golden(case: str) -> None:
    loaded = translate_golden.load_case(case)
    group, cache, builder = _clusterset_builder(loaded)
    views = translate_golden.views(loaded.records, loaded.stale, loaded.policies, loaded.failover)
    changed: dict[ServiceName, Any] = {(v.namespace, v.name): v for v in views}
    builder.update(changed, groups={group})
    golden = translate_golden.build(loaded, loaded.records)
    assert _served(cache, group) == _wire(golden)


@pytest.mark.parametrize("case", ["failover-order", "failover-weights"])
def test_a_failover_policy_that_comes_and_goes_is_pushed_as_endpoints(case: str) -> None:
    """A FailoverPolicy changes only the viewer's assignments: the builder pushes them
    when it appears (what the golden shows) and when it goes (back to the defaults)."""
    loaded = translate_golden.load_case(case)
    group, cache, builder = _clusterset_builder(loaded)

    def update(failover: tuple[Any, ...]) -> None:
        views = translate_golden.views(loaded.records, loaded.stale, loaded.policies, failover)
        builder.update({(v.namespace, v.name): v for v in views}, groups={group})

    update(())
    without = _served(cache, group)
    update(loaded.failover)
    assert _served(cache, group) == _wire(translate_golden.build(loaded, loaded.records))
    assert _served(cache, group) != without
    update(())
    assert _served(cache, group) == without


@pytest.mark.parametrize("case", proxy_golden.CASES)
def test_the_hub_serves_the_gateway_golden(case: str) -> None:
    raw, ir, options, secret_dir = proxy_golden.load_case(case)
    host = raw["host"]
    cache = SnapshotCache()
    builder = SnapshotBuilder(
        cache,
        SnapshotOptions(options, {ir.cluster: f"{host}:10080"}, secret_dir=secret_dir),
    )

    def resolve(group: str) -> GatewayIR:
        return ir

    builder.update({}, {ir.cluster}, {ir.cluster}, resolve)
    group = NodeGroupIR(ir.cluster, clusterset_listener(host, 10080), ir)
    expected = node_config(ClustersetIR(), group, host, options, secret_dir=secret_dir)
    assert _served(cache, ir.cluster) == _wire(expected)
    # What the golden file shows is part of it, byte for byte.
    golden = _wire(proxy_golden.build(case))
    served = _served(cache, ir.cluster)
    for type_url, resources in golden.items():
        assert {n: served[type_url][n] for n in resources} == resources
