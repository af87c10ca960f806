"""Focused tests of the xDS translator (federation.translate); see also the golden tests."""

# xds-protos and protobuf ship no type stubs: their modules are untyped to mypy.

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from google.protobuf import any_pb2, descriptor_pool, message_factory

from federation.errors import InvalidInputError
from federation.registry.records import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    ExportedService,
    ServicePort,
    ServiceType,
)
from federation.translate import names
from federation.translate.clusterset import default_port, translated_ports
from federation.translate.inputs import (
    AddressMap,
    ImportView,
    TranslateOptions,
    address_maps_from_flags,
    parse_address_map_flag,
)
from federation.translate.ir import ServiceIR
from federation.translate.proxy import render_service
from federation.translate.proxy.clusters import ClaVariant
from tests.translation import (
    build_cla,
    build_cla_variants,
    build_cluster,
    build_listener,
    build_node_config,
    build_route_config,
    cla_variant,
)

HTTP = ServicePort("http", "TCP", 80)
OPTIONS = TranslateOptions()


def export(
    cluster: str,
    *,
    namespace: str = "shop",
    name: str = "web",
    addresses: tuple[str, ...] = (),
    ports: tuple[ServicePort, ...] = (HTTP,),
    created: str = "2025-03-01T10:00:00Z",
) -> ExportedService:
    slices = (
        EndpointSet(
            f"{name}-{cluster}",
            "IPv4",
            (EndpointPort("http", "TCP", 8080),),
            tuple(Endpoint((a,), True, True, False) for a in addresses),
        ),
    )
    return ExportedService(
        cluster=cluster,
        namespace=namespace,
        name=name,
        type=ServiceType.CLUSTER_SET_IP,
        ports=ports,
        created=created,
        endpoints=slices,
    )


def serialized(msg: Any) -> bytes:
    data: bytes = msg.SerializeToString(deterministic=True)
    return data


# --- variants -----------------------------------------------------------------------


def test_250_viewers_of_a_service_from_3_clusters_get_4_variants() -> None:
    members = [f"c{i:03d}" for i in range(250)]
    exporters = ["c007", "c100", "c249"]
    view = ImportView.of(
        [
            export(c, addresses=(f"10.{i}.0.1", f"10.{i}.0.2"))
            for i, c in enumerate(exporters, start=1)
        ]
    )
    by_bytes: dict[bytes, set[str]] = defaultdict(set)
    by_key: dict[ClaVariant, set[str]] = defaultdict(set)
    for viewer in members:
        by_bytes[serialized(build_cla(view, HTTP, viewer, OPTIONS))].add(viewer)
        by_key[cla_variant(view, viewer, OPTIONS)].add(viewer)

    assert len(by_bytes) == 4
    # cla_variant groups viewers exactly as their bytes do.
    assert sorted(map(sorted, by_bytes.values())) == sorted(map(sorted, by_key.values()))
    assert {k.local: len(v) for k, v in by_key.items()} == {
        None: 247,
        "c007": 1,
        "c100": 1,
        "c249": 1,
    }
    assert {k.family for k in by_key} == {"IPv4"}

    variants = build_cla_variants(view, HTTP, OPTIONS)
    assert set(variants) == set(by_key)
    for key, cla in variants.items():
        viewer = key.local if key.local is not None else "c000"
        assert serialized(cla) == serialized(build_cla(view, HTTP, viewer, OPTIONS))


def test_local_first_priorities() -> None:
    view = ImportView.of([export("a", addresses=("10.1.0.1",)), export("b")])

    def priorities(viewer: str | None, options: TranslateOptions = OPTIONS) -> dict[str, int]:
        cla = build_cla(view, HTTP, viewer, options)
        return {loc.locality.sub_zone: loc.priority for loc in cla.endpoints}

    assert priorities("a") == {"a": 0, "b": 1}
    assert priorities("b") == {"a": 1, "b": 0}
    assert priorities("c") == priorities(None) == {"a": 0, "b": 0}
    assert priorities("a", TranslateOptions(local_first=False)) == {"a": 0, "b": 0}
    assert cla_variant(view, "a", TranslateOptions(local_first=False)).local is None


def test_a_single_exporter_has_one_variant() -> None:
    view = ImportView.of([export("a", addresses=("10.1.0.1",))])
    assert cla_variant(view, "a") == ClaVariant(None, "IPv4")
    assert serialized(build_cla(view, HTTP, "a", OPTIONS)) == serialized(
        build_cla(view, HTTP, "z", OPTIONS)
    )
    assert list(build_cla_variants(view, HTTP, OPTIONS)) == [ClaVariant(None, "IPv4")]


def test_localities_carry_weights_and_stale_flag() -> None:
    view = ImportView.of(
        [export("a", addresses=("10.1.0.1",)), export("b", addresses=("10.2.0.1",))],
        stale={"b", "not-an-exporter"},
    )
    cla = build_cla(view, HTTP, None, TranslateOptions(cluster_weights={"a": 7}))
    got = {
        loc.locality.sub_zone: (
            loc.load_balancing_weight.value,
            dict(loc.metadata.filter_metadata["federation"].fields.items()).get("stale"),
        )
        for loc in cla.endpoints
    }
    assert got["a"] == (7, None)
    assert got["b"][0] == 1
    assert got["b"][1] is not None and got["b"][1].bool_value is True
    for loc in cla.endpoints:
        # zone repeats the cluster id for Envoy's per-source-cluster statistics.
        assert (loc.locality.region, loc.locality.zone) == ("", loc.locality.sub_zone)


# --- determinism ----------------------------------------------------------------------


def _shuffled(view_exports: list[ExportedService], seed: int) -> list[ExportedService]:
    rng = random.Random(seed)
    out = []
    for e in view_exports:
        slices = []
        for s in e.endpoints:
            endpoints = list(s.endpoints)
            rng.shuffle(endpoints)
            slices.append(dataclasses.replace(s, endpoints=tuple(endpoints)))
        rng.shuffle(slices)
        out.append(dataclasses.replace(e, endpoints=tuple(slices)))
    rng.shuffle(out)
    return out


def test_same_input_in_another_order_gives_identical_bytes() -> None:
    exports = [
        dataclasses.replace(
            export(c, addresses=tuple(f"10.{i}.{j}.{k}" for j in range(3) for k in range(5))),
            endpoints=export(c, addresses=("10.9.9.9", "10.9.9.8")).endpoints
            + export(c, addresses=tuple(f"10.{i}.0.{k}" for k in range(5))).endpoints,
        )
        for i, c in enumerate(["a", "b", "c", "d"], start=1)
    ]
    options = TranslateOptions(cluster_weights={"b": 2, "a": 3})
    options_reordered = TranslateOptions(cluster_weights={"a": 3, "b": 2})
    assert options == options_reordered and hash(options) == hash(options_reordered)

    first = build_node_config([ImportView.of(exports)], "b", ("127.0.0.1", 10080), options)
    for seed in range(5):
        again = build_node_config(
            [ImportView.of(_shuffled(exports, seed))],
            "b",
            ("127.0.0.1", 10080),
            options_reordered,
        )
        for kind in ("clusters", "endpoints", "listeners", "routes"):
            mine, theirs = getattr(first, kind), getattr(again, kind)
            assert list(mine) == list(theirs)
            for name in mine:
                assert serialized(mine[name]) == serialized(theirs[name]), (kind, name)


def test_view_sorts_its_exports() -> None:
    a, b = export("a"), export("b")
    assert ImportView.of([b, a]).exports == (a, b)


# --- address maps -----------------------------------------------------------------------


def test_address_map_translates_the_prefix_and_keeps_the_host_part() -> None:
    amap = AddressMap((("10.201.0.0/16", "127.1.0.0/16"), ("fd00:1::/64", "fd00:2::/64")))
    assert amap.translate("10.201.3.4") == "127.1.3.4"
    assert amap.translate("10.202.3.4") == "10.202.3.4"
    assert amap.translate("fd00:1::9") == "fd00:2::9"
    assert amap.translate("not-an-ip") == "not-an-ip"
    assert AddressMap(()).translate("10.201.3.4") == "10.201.3.4"


def test_address_map_flag() -> None:
    assert parse_address_map_flag("a=10.201.0.0/16=127.1.0.0/16") == (
        "a",
        ("10.201.0.0/16", "127.1.0.0/16"),
    )
    maps = address_maps_from_flags(["b=10.202.0.0/16=127.2.0.0/16", "a=10.201.0.0/16=127.1.0.0/16"])
    assert list(maps) == ["a", "b"]
    assert maps["b"].translate("10.202.0.1") == "127.2.0.1"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ((("10.201.0.0/33", "127.1.0.0/16"),), "is not a valid CIDR"),
        ((("bogus", "127.1.0.0/16"),), "is not a valid CIDR"),
        ((("10.201.0.1/16", "127.1.0.0/16"),), "has host bits set"),
        ((("10.201.0.0/16", "127.1.0.0/24"),), "prefix lengths differ"),
        ((("10.201.0.0/16", "fd00::/16"),), "mixes IPv4 and IPv6"),
        (
            (("10.201.0.0/16", "127.1.0.0/16"), ("10.201.4.0/24", "127.2.4.0/24")),
            "overlap",
        ),
    ],
)
def test_address_map_errors(rules: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        AddressMap(rules)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("a=10.201.0.0/16", "must be CLUSTER=SOURCE_CIDR=TARGET_CIDR"),
        ("Bad_Cluster=10.201.0.0/16=127.1.0.0/16", "invalid cluster id"),
        ("a=10.201.0.0/16=127.0.0.0/8", "prefix lengths differ"),
    ],
)
def test_address_map_flag_errors(flag: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_address_map_flag(flag)


def test_option_errors() -> None:
    for weights in ({"a": 0}, {"a": 10**9}, {"a": True}, {"NOT A CLUSTER": 1}):
        with pytest.raises(InvalidInputError):
            TranslateOptions(cluster_weights=weights)
    with pytest.raises(InvalidInputError, match="connect timeout"):
        TranslateOptions(connect_timeout_ms=0)
    assert TranslateOptions(cluster_weights={"a": 2}).weight("b") == 1


def test_view_errors() -> None:
    a = export("a")
    merged = ImportView.of([a]).merged
    with pytest.raises(InvalidInputError, match="other Services"):
        ImportView(merged, (a, export("b", name="other")))
    with pytest.raises(InvalidInputError, match="its merge is of"):
        ImportView(merged, (a, export("b")))


# --- routes and listener -------------------------------------------------------------------


def test_route_domains_are_unique_and_cover_every_port() -> None:
    ports = (HTTP, ServicePort("grpc", "TCP", 9090), ServicePort("dns", "UDP", 53))
    views = [
        ImportView.of([export("a", namespace=ns, name=name, ports=ports)])
        for ns in ("shop", "web", "shop-web")
        for name in ("web", "shop", "api")
    ]
    config = build_route_config(reversed(views))
    domains = [d for vh in config.virtual_hosts for d in vh.domains]
    assert len(domains) == len(set(domains)) == 9 * 3  # bare host, :80, :9090
    vhost_names = [vh.name for vh in config.virtual_hosts]
    assert vhost_names == sorted(vhost_names)
    assert "web.shop.svc.clusterset.local" in domains
    vhost = next(vh for vh in config.virtual_hosts if vh.name == "clusterset/shop/web/9090")
    assert list(vhost.domains) == ["web.shop.svc.clusterset.local:9090"]
    assert vhost.routes[0].route.cluster == "clusterset/shop/web/9090"


def test_default_port_is_80_else_the_lowest() -> None:
    view = ImportView.of(
        [export("a", ports=(ServicePort("b", "TCP", 8443), ServicePort("a", "TCP", 8080)))]
    )
    assert default_port(view) == ServicePort("a", "TCP", 8080)
    assert [p.port for p in translated_ports(view)] == [8080, 8443]
    assert names.hostnames("shop", "web", 8080, default=True) == (
        "web.shop.svc.clusterset.local",
        "web.shop.svc.clusterset.local:8080",
    )


def test_route_config_rejects_two_views_of_one_service_and_skips_non_dns_names() -> None:
    view = ImportView.of([export("a")])
    with pytest.raises(InvalidInputError, match="two views of shop/web"):
        build_route_config([view, view])
    dotted = ImportView.of([export("a", name="web.x")])
    assert len(build_route_config([view, dotted]).virtual_hosts) == 1


def test_listener() -> None:
    listener = build_listener("127.0.0.1", 10080)
    assert listener.name == names.LISTENER_NAME
    assert [f.name for f in listener.filter_chains[0].filters] == [
        "envoy.filters.network.http_connection_manager"
    ]
    hcm = _unpack(listener.filter_chains[0].filters[0].typed_config)
    assert hcm.rds.route_config_name == names.ROUTE_CONFIG_NAME
    assert hcm.rds.config_source.HasField("ads")
    # The same filter chain as every Gateway listener, in the features' order.
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]
    with pytest.raises(InvalidInputError):
        build_listener("localhost", 10080)
    with pytest.raises(InvalidInputError):
        build_listener("127.0.0.1", 0)


# --- clusters ------------------------------------------------------------------------------


def test_cluster_is_an_eds_cluster_fed_over_ads() -> None:
    view = ImportView.of([export("a", addresses=("10.1.0.1",))])
    cluster = build_cluster(view, HTTP, OPTIONS)
    assert cluster.name == names.cluster_name("shop", "web", 80) == "clusterset/shop/web/80"
    assert cluster.WhichOneof("cluster_discovery_type") == "type"
    assert cluster.type == cluster_pb2.Cluster.EDS
    eds = cluster.eds_cluster_config
    assert eds.eds_config.WhichOneof("config_source_specifier") == "ads"
    assert eds.eds_config.resource_api_version == config_source_pb2.V3
    # The assignment is named after the cluster (no service_name), and is not inline.
    assert eds.service_name == ""
    assert not cluster.HasField("load_assignment")
    assert build_cla(view, HTTP, None, OPTIONS).cluster_name == cluster.name
    assert cluster.connect_timeout.ToMilliseconds() == 1000
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert cluster.common_lb_config.HasField("locality_weighted_lb_config")
    od = cluster.outlier_detection
    # Connection failures eject a host; a backend's own 5xx responses do not.
    assert od.split_external_local_origin_errors
    assert (od.consecutive_local_origin_failure.value, od.max_ejection_percent.value) == (5, 100)
    assert od.enforcing_consecutive_local_origin_failure.value == 100
    assert (od.enforcing_consecutive_5xx.value, od.enforcing_consecutive_gateway_failure.value) == (
        0,
        0,
    )
    assert not cluster.typed_extension_protocol_options
    assert not build_cluster(view, HTTP, TranslateOptions(outlier_detection=False)).HasField(
        "outlier_detection"
    )


@pytest.mark.parametrize("app_protocol", ["kubernetes.io/h2c", "grpc", "http2"])
def test_http2_upstream_for_h2_app_protocols(app_protocol: str) -> None:
    port = ServicePort("h2", "TCP", 8443, app_protocol)
    view = ImportView.of([export("a", ports=(port,))])
    options = build_cluster(view, port, OPTIONS).typed_extension_protocol_options
    h2 = _unpack(options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"])
    assert h2.explicit_http_config.HasField("http2_protocol_options")


def test_ports_that_are_not_translated_are_refused() -> None:
    udp = ServicePort("dns", "UDP", 53)
    view = ImportView.of([export("a", ports=(HTTP, udp))])
    with pytest.raises(InvalidInputError, match="not an HTTP port"):
        build_cluster(view, udp, OPTIONS)
    with pytest.raises(InvalidInputError, match="not an HTTP port"):
        build_cla(view, ServicePort("x", "TCP", 81), None, OPTIONS)


def test_cluster_names_round_trip() -> None:
    assert names.parse_cluster_name("clusterset/shop/web/80") == ("shop", "web", 80)
    for bad in ("clusterset/shop/web", "other/shop/web/80", "clusterset/shop/web/0", "x/a/b/08"):
        with pytest.raises(InvalidInputError):
            names.parse_cluster_name(bad)


def test_no_deprecated_field_is_set() -> None:
    """Envoy 1.40: every field the translator sets is a non-deprecated v3 field."""
    view = ImportView.of(
        [
            export("a", addresses=("10.1.0.1",), ports=(HTTP, ServicePort("g", "TCP", 90, "grpc"))),
            export("b", addresses=("10.2.0.1",)),
        ],
        stale={"b"},
    )
    config = build_node_config([view], "a", ("127.0.0.1", 10080), OPTIONS)
    for kind in ("clusters", "endpoints", "listeners", "routes"):
        for msg in getattr(config, kind).values():
            assert msg.DESCRIPTOR.full_name.startswith("envoy.config.")
            assert ".v3." in msg.DESCRIPTOR.full_name
            _assert_not_deprecated(msg, msg.DESCRIPTOR.full_name)


def _unpack(value: Any) -> Any:
    assert isinstance(value, any_pb2.Any)
    descriptor = descriptor_pool.Default().FindMessageTypeByName(value.TypeName())
    message = message_factory.GetMessageClass(descriptor)()
    assert value.Unpack(message)
    return message


def _assert_not_deprecated(msg: Any, path: str) -> None:
    if isinstance(msg, any_pb2.Any):
        msg = _unpack(msg)
        assert ".v3." in msg.DESCRIPTOR.full_name, path
    for field, value in msg.ListFields():
        where = f"{path}.{field.name}"
        assert not field.GetOptions().deprecated, f"{where} is deprecated"
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = [v for v in value.values() if hasattr(v, "ListFields")]
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            _assert_not_deprecated(item, where)


def test_a_service_without_clusters_has_no_assignments_for_any_group() -> None:
    """A service left without a port (its exporters withdrawing, say) renders no cluster;
    every node group, exporter or not, then sees no assignment instead of an error (the
    hub once crashed on it)."""
    rendered = render_service(ServiceIR("shop", "gone", exporters=("a", "b")), OPTIONS)
    assert rendered.clusters == {}
    for group in ("a", "b", "z", None):
        assert rendered.seen_by(group, "IPv4") == {}
