"""The hub's registry-to-snapshot loop (federation.hub.core.Hub) over the in-memory registry.

The hub is driven by hand: ``watcher.load()``, :meth:`Hub.publish_loaded`, then
``watcher.step()`` with reads that never block, exactly as :meth:`Hub.run` does it.
The xDS wire is covered by tests/integration/test_xds_protocol.py and the data plane
by e2e/test_data_plane.py; this is what the hub decides to put in the cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from federation.cli import hub as hub_main
from federation.errors import InvalidInputError
from federation.hub import snapshots
from federation.hub.core import Hub
from federation.hub.snapshots import SnapshotBuilder, SnapshotOptions
from federation.registry import gatewayapi as g
from federation.registry.kinds import Kind, RecordRef
from federation.translate.inputs import ImportView, TranslateOptions
from federation.translate.ir import GatewayIR, ListenerIR, ServiceIR
from federation.translate.proxy import render_service
from federation.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, SnapshotCache
from tests.memory_store import FlakyReader, MemoryRegistry
from tests.unit.test_registry_watcher import join, svc
from tests.unit.test_translate import export

WEB_CLUSTER = "clusterset/shop/web/80"


def hub_of(registry: MemoryRegistry, *, extension: Any = None, **options: Any) -> Hub:
    """A hub on ``registry`` driven by hand (no blocking reads, no heap freeze), its
    snapshots checked; ``options``: more SnapshotOptions."""
    return Hub(
        registry.reader(),
        SnapshotCache(),
        SnapshotOptions(TranslateOptions(), {}, check_consistency=True, **options),
        block_ms=0,
        check_interval=0,
        freeze_heap=False,
        extension=extension,
    )


def make_hub() -> tuple[MemoryRegistry, Hub]:
    registry = MemoryRegistry()
    return registry, hub_of(registry)


async def test_nothing_is_served_until_the_registry_is_loaded() -> None:
    registry, hub = make_hub()
    await join(registry, "a", [svc("a", "web")])
    await hub.watcher.load()
    assert not hub.cache.ready and hub.cache.groups() == []
    hub.publish_loaded()
    assert hub.cache.ready and hub.ready.is_set()
    snapshot = hub.cache.get("a")
    assert snapshot is not None
    assert list(snapshot.of(CLUSTER)) == [WEB_CLUSTER]
    assert list(snapshot.of(ENDPOINT)) == [WEB_CLUSTER]
    assert len(snapshot.of(LISTENER)) == 1 and len(snapshot.of(ROUTE)) == 1


async def test_an_empty_registry_is_not_served_until_a_member_joins() -> None:
    """After a flush or a failover to an empty replica, a restarting hub must not tell
    every Envoy that nothing exists: it waits for the agents to republish."""
    registry, hub = make_hub()
    await hub.watcher.load()
    await hub.watcher.step()
    assert not hub.ready.is_set() and not hub.cache.ready
    await join(registry, "a", [svc("a", "web")])
    await hub.watcher.step()
    assert hub.ready.is_set() and hub.cache.ready
    snapshot = hub.cache.get("a")
    assert snapshot is not None and list(snapshot.of(CLUSTER)) == [WEB_CLUSTER]


async def test_a_member_that_exports_nothing_gets_every_import() -> None:
    registry, hub = make_hub()
    await join(registry, "a", [svc("a", "web")])
    await hub.watcher.load()
    hub.publish_loaded()
    await join(registry, "c", [])
    await hub.watcher.step()
    snapshot = hub.cache.get("c")
    assert snapshot is not None, "a consumer-only cluster got no configuration"
    assert list(snapshot.of(CLUSTER)) == [WEB_CLUSTER]


@pytest.mark.parametrize("exporters", [("a",), ("a", "b")])
async def test_non_exporters_share_one_assignment_and_exporters_get_their_own(
    exporters: tuple[str, ...],
) -> None:
    registry, hub = make_hub()
    for i, cluster in enumerate(exporters):
        await join(registry, cluster, [svc(cluster, "web", address=f"10.{i}.0.1")])
    await join(registry, "c", [])
    await join(registry, "d", [])
    await hub.watcher.load()
    hub.publish_loaded()

    def cla(group: str) -> object:
        snapshot = hub.cache.get(group)
        assert snapshot is not None
        return snapshot.get(ENDPOINT, WEB_CLUSTER)

    assert cla("c") is cla("d")  # built and serialized once
    variants = {id(cla(g)) for g in (*exporters, "c")}
    # A single exporter's locality is priority 0 for everyone: one variant for all.
    assert len(variants) == (1 if len(exporters) == 1 else len(exporters) + 1)


async def test_an_endpoint_change_is_pushed_as_assignments_only() -> None:
    registry, hub = make_hub()
    writer = await join(registry, "a", [svc("a", "web")])
    await join(registry, "b", [])
    await hub.watcher.load()
    hub.publish_loaded()
    before = {g: hub.cache.get(g) for g in ("a", "b")}
    full = hub.builder.full_pushes

    await writer.publish(svc("a", "web", address="10.0.0.9"))
    await hub.watcher.step()

    assert hub.builder.full_pushes == full
    assert hub.builder.endpoint_pushes == 1
    for group, old in before.items():
        new = hub.cache.get(group)
        assert old is not None and new is not None
        assert new.of(CLUSTER) is old.of(CLUSTER), f"{group}: clusters were rebuilt"
        assert new.version(ENDPOINT) != old.version(ENDPOINT)


async def test_a_withdrawn_service_leaves_every_group() -> None:
    registry, hub = make_hub()
    writer = await join(registry, "a", [svc("a", "web"), svc("a", "api")])
    await join(registry, "b", [])
    await hub.watcher.load()
    hub.publish_loaded()
    await writer.withdraw(RecordRef(Kind.SERVICE, "shop", "web"))
    await hub.watcher.step()
    for group in ("a", "b"):
        snapshot = hub.cache.get(group)
        assert snapshot is not None
        assert list(snapshot.of(CLUSTER)) == ["clusterset/shop/api/80"]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("a=localhost:10080", "--listener-address for a: listener address 'localhost' is not"),
        ("127.0.0.1", "--listener-address must be HOST:PORT"),
        ("b=127.0.0.1:0", "--listener-address for b must be HOST:PORT"),
    ],
)
def test_a_bad_listener_flag_stops_the_hub_at_start(flag: str, message: str) -> None:
    args = ["--xds-address", "127.0.0.1:1"]
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        asyncio.run(hub_main.run(hub_main.parse_args([*args, "--listener-address", flag])))


async def test_envoys_listen_on_loopback_unless_told_otherwise() -> None:
    """An Envoy listening on every address would be an open proxy to every exported
    service for whoever reaches its host."""
    registry, hub = make_hub()
    await join(registry, "a", [svc("a", "web")])
    await hub.watcher.load()
    hub.publish_loaded()
    snapshot = hub.cache.get("a")
    assert snapshot is not None
    (resource,) = snapshot.of(LISTENER).values()
    address = listener_pb2.Listener.FromString(resource.body).address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 10080)
    assert hub_main.parse_args([]).listener_address == []


# --- Gateways ------------------------------------------------------------------------------


def _route(path: str, backend: str = "web") -> g.HTTPRouteRecord:
    return g.HTTPRouteRecord(
        cluster="b",
        namespace="shop",
        name="api",
        spec=g.HTTPRouteSpec(
            parent_refs=(g.ParentReference("gw"),),
            rules=(
                g.HTTPRouteRule(
                    matches=(g.HTTPRouteMatch(path=g.PathMatch("PathPrefix", path)),),
                    backend_refs=(
                        g.HTTPBackendRef(
                            backend, group="multicluster.x-k8s.io", kind="ServiceImport", port=80
                        ),
                    ),
                ),
            ),
        ),
    )


GW_GROUP = "b/shop/gw"
GATEWAY = g.GatewayRecord(
    cluster="b",
    namespace="shop",
    name="gw",
    spec=g.GatewaySpec("federation", (g.Listener("http", 8080, "HTTP"),)),
)


def _route_config(hub: Hub, group: str) -> route_pb2.RouteConfiguration:
    snapshot = hub.cache.get(group)
    assert snapshot is not None
    resource = snapshot.get(ROUTE, "gateway/8080")
    assert resource is not None
    return route_pb2.RouteConfiguration.FromString(resource.body)


async def test_a_gateway_reaches_only_its_own_envoys() -> None:
    """b's Gateway shop/gw is served to its own node group b/shop/gw: b's shared Envoys
    keep the clusterset listener alone, and a gets nothing of b's."""
    registry, hub = make_hub()
    await join(registry, "a", [svc("a", "web")])
    await join(registry, "b", [GATEWAY, _route("/api")])
    await hub.watcher.load()
    hub.publish_loaded()
    gw, b, a = hub.cache.get(GW_GROUP), hub.cache.get("b"), hub.cache.get("a")
    assert gw is not None and b is not None and a is not None
    assert set(gw.of(LISTENER)) == {"gateway/8080"}
    assert set(b.of(LISTENER)) == {"clusterset-http"}
    assert set(a.of(LISTENER)) == {"clusterset-http"}
    assert "clusterset" not in gw.of(ROUTE)
    (route,) = _route_config(hub, GW_GROUP).virtual_hosts[0].routes
    assert route.match.path_separated_prefix == "/api"
    assert route.route.cluster == WEB_CLUSTER
    assert set(hub.cache.groups()) == {"a", "b", GW_GROUP}


async def test_two_gateways_on_one_port_each_have_their_own_envoys() -> None:
    """Two Gateways in different namespaces, both HTTP on port 80 without a hostname:
    neither conflicts, each group gets one listener (bound above 1024, since Gateway
    Envoys run unprivileged) with its own routes."""
    registry, hub = make_hub()
    await join(registry, "a", [svc("a", "web")])
    gateways = [
        g.GatewayRecord(
            "b", ns, "gw", g.GatewaySpec("federation", (g.Listener("http", 80, "HTTP"),))
        )
        for ns in ("shop", "bank")
    ]
    bank_route = dataclasses.replace(_route("/bank"), namespace="bank")
    await join(registry, "b", [*gateways, _route("/shop"), bank_route])
    await hub.watcher.load()
    hub.publish_loaded()
    for ns in ("shop", "bank"):
        snapshot = hub.cache.get(f"b/{ns}/gw")
        assert snapshot is not None
        (resource,) = snapshot.of(LISTENER).values()
        listener = listener_pb2.Listener.FromString(resource.body)
        assert listener.address.socket_address.port_value == 10080
        routes = route_pb2.RouteConfiguration.FromString(snapshot.of(ROUTE)["gateway/80"].body)
        (route,) = routes.virtual_hosts[0].routes
        assert route.match.path_separated_prefix == f"/{ns}"


async def test_a_route_only_change_is_pushed_to_its_gateway_alone() -> None:
    registry, hub = make_hub()
    await join(registry, "a", [svc("a", "web")])
    writer = await join(registry, "b", [GATEWAY, _route("/api")])
    await hub.watcher.load()
    hub.publish_loaded()
    a_generation, b_generation = hub.cache.generation("a"), hub.cache.generation("b")
    before = hub.cache.get(GW_GROUP)
    await writer.publish(_route("/v2"))
    await hub.watcher.step()
    (route,) = _route_config(hub, GW_GROUP).virtual_hosts[0].routes
    assert route.match.path_separated_prefix == "/v2"
    assert hub.cache.generation("a") == a_generation  # nothing for a
    assert hub.cache.generation("b") == b_generation  # nor for b's shared Envoys
    after = hub.cache.get(GW_GROUP)
    assert before is not None and after is not None
    assert after.of(CLUSTER) is before.of(CLUSTER)  # only the routes changed
    assert (hub.builder.gateway_pushes, hub.builder.full_pushes) == (1, 1)


async def test_an_import_that_appears_later_resolves_a_waiting_route() -> None:
    registry, hub = make_hub()
    await join(registry, "b", [GATEWAY, _route("/api", backend="late")])
    await hub.watcher.load()
    hub.publish_loaded()
    (route,) = _route_config(hub, GW_GROUP).virtual_hosts[0].routes
    assert route.direct_response.status == 500  # no such ServiceImport yet
    await join(registry, "a", [svc("a", "late")])
    await hub.watcher.step()
    (route,) = _route_config(hub, GW_GROUP).virtual_hosts[0].routes
    assert route.route.cluster == "clusterset/shop/late/80"


def test_a_translation_error_costs_its_own_group_only() -> None:
    """A resolver that raises for one Gateway (an input no check foresaw): that group is
    served nothing new, every other group goes on."""
    cache = SnapshotCache()
    builder = SnapshotBuilder(
        cache, SnapshotOptions(translate=TranslateOptions(), listener_addresses={})
    )
    good = GatewayIR("b", (ListenerIR("gateway/8080", 8080),), namespace="shop", name="gw")

    def resolver(group: str) -> GatewayIR | None:
        if group == "b/shop/bad":
            raise RuntimeError("a bug")
        return good if group == GW_GROUP else None

    groups = {"b", GW_GROUP, "b/shop/bad"}
    builder.update({}, groups, groups, resolver)
    assert builder.translation_errors == 1
    served, bad = cache.get(GW_GROUP), cache.get("b/shop/bad")
    assert served is not None and set(served.of(LISTENER)) == {"gateway/8080"}
    assert bad is not None and not bad.of(LISTENER)  # present, with nothing of its Gateway


async def test_a_deleted_gateways_group_is_no_longer_served_nor_shown() -> None:
    registry, hub = make_hub()
    await join(registry, "a", [svc("a", "web")])
    writer = await join(registry, "b", [GATEWAY, _route("/api")])
    await hub.watcher.load()
    hub.publish_loaded()
    assert hub.cache.get(GW_GROUP) is not None
    await writer.withdraw(RecordRef(Kind.GATEWAY, "shop", "gw"))
    await hub.watcher.step()
    assert hub.cache.get(GW_GROUP) is None
    assert GW_GROUP not in set(hub.cache.groups())
    assert hub.cache.get("b") is not None  # the cluster's shared Envoys go on


def test_a_service_that_fails_translation_costs_its_own_update_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An import whose translation raises (an input no check foresaw) keeps what was
    served for it; the other imports of the same update are served, and the hub lives."""
    cache = SnapshotCache()
    builder = SnapshotBuilder(
        cache, SnapshotOptions(translate=TranslateOptions(), listener_addresses={})
    )

    def failing(ir: ServiceIR, options: TranslateOptions) -> Any:
        if ir.name == "bad":
            raise KeyError("a bug")
        return render_service(ir, options)

    monkeypatch.setattr(snapshots, "render_service", failing)
    views = {
        ("shop", name): ImportView.of([export("a", name=name, addresses=("10.1.0.1",))])
        for name in ("bad", "good")
    }
    builder.update(views, {"b"})
    assert builder.translation_errors == 1
    served = cache.get("b")
    assert served is not None
    assert {n.split("/")[2] for n in served.of(CLUSTER)} == {"good"}


async def test_a_hub_whose_registry_reads_fail_for_a_while_says_it_is_behind() -> None:
    """/readyz's reason: loading first; ready once loaded; with ``behind_after``, behind
    once reads have failed for longer (a replica cut off from Redis serves an old
    view); ready again with the next good read. A slow translation is no failed read."""
    now = [100.0]
    registry = MemoryRegistry()
    reader = FlakyReader(registry.reader())
    hub = Hub(
        reader,
        SnapshotCache(),
        SnapshotOptions(TranslateOptions(), {}, check_consistency=True),
        check_interval=0,
        freeze_heap=False,
        behind_after=10.0,
        clock=lambda: now[0],
    )
    await join(registry, "a", [svc("a", "web")])
    assert hub.not_ready() == "loading the registry"
    running = asyncio.create_task(hub.run())
    try:
        await asyncio.wait_for(hub.ready.wait(), 5)
        now[0] += 60.0  # no read failed: however long since the last one, not behind
        assert hub.not_ready() is None
        reader.failing = True
        await until(lambda: hub.watcher.failing_since is not None, "a read to fail")
        now[0] += 9.0
        assert hub.not_ready() is None
        now[0] += 2.0
        assert hub.not_ready() == "behind the registry: its reads have failed for 11 s"
        reader.failing = False
        await until(lambda: hub.watcher.failing_since is None, "a read to succeed again")
        assert hub.not_ready() is None
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds, for at most 5 s."""
    deadline = asyncio.get_running_loop().time() + 5
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_the_behind_threshold_is_a_positive_number_of_seconds() -> None:
    assert hub_main.parse_args(["--registry-behind-after", "2.5"]).registry_behind_after == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit):
            hub_main.parse_args(["--registry-behind-after", bad])
