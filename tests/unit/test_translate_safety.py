"""The translator's data-plane safety defaults: no traffic to hosts known dead or not
ready, retries elsewhere, no route timeout, WebSocket upgrades, one endpoint per pod and
HTTP-only ports. Each test fails on the translator as it was before these defaults."""

# xds-protos and protobuf ship no type stubs: their modules are untyped to mypy.

from __future__ import annotations

from typing import Any

import pytest
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
from federation.translate.clusterset import translated_ports
from federation.translate.inputs import ImportView, TranslateOptions, ip_families_from_flags
from federation.translate.protocols import PortProtocol, port_protocol
from federation.translate.proxy.clusters import ClaVariant
from federation.translate.proxy.features.retry import RETRY_POLICY
from tests.translation import (
    build_cla,
    build_cla_variants,
    build_cluster,
    build_listener,
    build_route_config,
)

HTTP = ServicePort("http", "TCP", 80)
OPTIONS = TranslateOptions()


def _slice(name: str, family: str, addresses: tuple[str, ...]) -> EndpointSet:
    return EndpointSet(
        name,
        family,
        (EndpointPort("http", "TCP", 8080),),
        tuple(Endpoint((a,), True, True, False) for a in addresses),
    )


def export(
    cluster: str,
    *slices: EndpointSet,
    ports: tuple[ServicePort, ...] = (HTTP,),
) -> ExportedService:
    return ExportedService(
        cluster=cluster,
        namespace="shop",
        name="web",
        type=ServiceType.CLUSTER_SET_IP,
        ports=ports,
        created="2025-03-01T10:00:00Z",
        endpoints=slices,
    )


def unpack(value: Any) -> Any:
    assert isinstance(value, any_pb2.Any)
    descriptor = descriptor_pool.Default().FindMessageTypeByName(value.TypeName())
    message = message_factory.GetMessageClass(descriptor)()
    assert value.Unpack(message)
    return message


def addresses(cla: Any) -> dict[str, list[str]]:
    return {
        loc.locality.sub_zone: [e.endpoint.address.socket_address.address for e in loc.lb_endpoints]
        for loc in cla.endpoints
    }


# --- health: the panic threshold ---------------------------------------------------------


def test_clusters_never_spread_traffic_over_unhealthy_hosts() -> None:
    """Envoy's default panic threshold (50 %) sends traffic to not-ready and ejected
    hosts as soon as fewer than half are healthy; ours is 0."""
    view = ImportView.of([export("a", _slice("a1", "IPv4", ("10.1.0.1",)))])
    cluster = build_cluster(view, HTTP, OPTIONS)
    assert cluster.common_lb_config.HasField("healthy_panic_threshold")
    assert cluster.common_lb_config.healthy_panic_threshold.value == 0.0


# --- retries and timeouts -------------------------------------------------------------------


def test_routes_retry_failures_before_the_request_was_seen_elsewhere() -> None:
    view = ImportView.of([export("a", _slice("a1", "IPv4", ("10.1.0.1",)))])
    (vhost,) = build_route_config([view]).virtual_hosts
    action = vhost.routes[0].route
    policy = action.retry_policy
    assert set(policy.retry_on.split(",")) == {
        "connect-failure",
        "refused-stream",
        "reset-before-request",
    }
    assert "5xx" not in policy.retry_on  # a 5xx may come from a backend that did the work
    assert policy.num_retries.value == RETRY_POLICY.num_retries <= 5
    assert [p.name for p in policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]
    assert policy.host_selection_retry_max_attempts >= 2
    assert policy.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    assert unpack(policy.retry_priority.typed_config).update_frequency == 1
    assert policy.retry_back_off.max_interval.ToMilliseconds() <= 1000


def test_the_retry_budget_is_bounded_per_cluster() -> None:
    view = ImportView.of([export("a", _slice("a1", "IPv4", ("10.1.0.1",)))])
    (thresholds,) = build_cluster(view, HTTP, OPTIONS).circuit_breakers.thresholds
    budget = thresholds.retry_budget
    assert 0 < budget.budget_percent.value <= 25
    assert budget.min_retry_concurrency.value == RETRY_POLICY.min_retry_concurrency


def test_routes_have_no_timeout() -> None:
    """Unset, Envoy's route timeout is 15 s, which cuts long gRPC streams: it must be an
    explicit 0 (disabled)."""
    view = ImportView.of([export("a", _slice("a1", "IPv4", ("10.1.0.1",)))])
    (vhost,) = build_route_config([view]).virtual_hosts
    action = vhost.routes[0].route
    assert action.HasField("timeout")
    assert action.timeout.ToNanoseconds() == 0


def test_the_listener_upgrades_websockets() -> None:
    hcm = unpack(build_listener("127.0.0.1", 10080).filter_chains[0].filters[0].typed_config)
    assert [u.upgrade_type for u in hcm.upgrade_configs] == ["websocket"]
    assert not hcm.HasField("request_timeout") or hcm.request_timeout.ToNanoseconds() == 0


# --- protocols ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (ServicePort("http", "TCP", 80), PortProtocol.HTTP),
        (ServicePort("http-api", "TCP", 80), PortProtocol.HTTP),
        (ServicePort("", "TCP", 80), PortProtocol.HTTP),
        (ServicePort("web", "TCP", 8080), PortProtocol.HTTP),
        (ServicePort("ws", "TCP", 8080), PortProtocol.HTTP),
        (ServicePort("grpc", "TCP", 9090), PortProtocol.HTTP2),
        (ServicePort("grpc-internal", "TCP", 9090), PortProtocol.HTTP2),
        (ServicePort("h2c", "TCP", 9090), PortProtocol.HTTP2),
        (ServicePort("x", "TCP", 9090, "grpc"), PortProtocol.HTTP2),
        (ServicePort("x", "TCP", 9090, "kubernetes.io/h2c"), PortProtocol.HTTP2),
        (ServicePort("x", "TCP", 80, "kubernetes.io/ws"), PortProtocol.HTTP),
        (ServicePort("x", "TCP", 80, "HTTP"), PortProtocol.HTTP),
        # appProtocol wins over the name.
        (ServicePort("http", "TCP", 3306, "mysql"), PortProtocol.OTHER),
        (ServicePort("grpc", "TCP", 443, "https"), PortProtocol.OTHER),
        (ServicePort("x", "TCP", 443, "kubernetes.io/wss"), PortProtocol.OTHER),
        (ServicePort("tcp-db", "TCP", 5432), PortProtocol.OTHER),
        (ServicePort("https", "TCP", 443), PortProtocol.OTHER),
        (ServicePort("tls", "TCP", 443), PortProtocol.OTHER),
        (ServicePort("redis", "TCP", 6379), PortProtocol.OTHER),
        (ServicePort("mysql", "TCP", 3306), PortProtocol.OTHER),
        (ServicePort("http", "UDP", 80), PortProtocol.OTHER),
        (ServicePort("http", "SCTP", 80), PortProtocol.OTHER),
    ],
)
def test_port_protocol(port: ServicePort, expected: PortProtocol) -> None:
    assert port_protocol(port) is expected


def test_non_http_ports_get_no_cluster_and_no_virtual_host() -> None:
    ports = (
        HTTP,
        ServicePort("tcp-db", "TCP", 5432),
        ServicePort("cache", "TCP", 6379, "redis"),
        ServicePort("grpc", "TCP", 9090),
    )
    view = ImportView.of([export("a", _slice("a1", "IPv4", ("10.1.0.1",)), ports=ports)])
    assert [p.port for p in translated_ports(view)] == [80, 9090]
    domains = [d for vh in build_route_config([view]).virtual_hosts for d in vh.domains]
    assert not any(d.endswith((":5432", ":6379")) for d in domains)
    with pytest.raises(InvalidInputError, match="not an HTTP port"):
        build_cluster(view, ports[1], OPTIONS)
    # A port named grpc speaks HTTP/2 upstream even without appProtocol.
    grpc = build_cluster(view, ports[3], OPTIONS)
    h2 = unpack(
        grpc.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
    )
    assert h2.explicit_http_config.HasField("http2_protocol_options")


def test_an_import_with_only_non_http_ports_has_no_route() -> None:
    ports = (ServicePort("tcp", "TCP", 5432),)
    view = ImportView.of([export("a", _slice("a1", "IPv4", ("10.1.0.1",)), ports=ports)])
    assert translated_ports(view) == ()
    assert list(build_route_config([view]).virtual_hosts) == []


# --- one pod, one endpoint -----------------------------------------------------------------


DUAL = export(
    "a",
    _slice("a-v4", "IPv4", ("10.1.0.1", "10.1.0.2")),
    _slice("a-v6", "IPv6", ("fd00:1::1", "fd00:1::2")),
)


def test_a_dual_stack_service_lists_each_pod_once() -> None:
    view = ImportView.of([DUAL])
    assert addresses(build_cla(view, HTTP, "b", OPTIONS)) == {"a": ["10.1.0.1", "10.1.0.2"]}


def test_each_node_group_gets_its_own_family() -> None:
    v6_only = export("c", _slice("c-v6", "IPv6", ("fd00:3::1",)))
    view = ImportView.of([DUAL, v6_only])
    options = TranslateOptions(ip_families={"b": "IPv6"})
    assert addresses(build_cla(view, HTTP, "b", options)) == {
        "a": ["fd00:1::1", "fd00:1::2"],
        "c": ["fd00:3::1"],
    }
    # An IPv4 group gets none of the IPv6-only cluster's endpoints: it could not reach them.
    assert addresses(build_cla(view, HTTP, "d", options)) == {
        "a": ["10.1.0.1", "10.1.0.2"],
        "c": [],
    }
    variants = build_cla_variants(view, HTTP, options)
    assert set(variants) == {
        ClaVariant(None, "IPv4"),
        ClaVariant(None, "IPv6"),
        ClaVariant("a", "IPv4"),
        ClaVariant("c", "IPv4"),
    }
    assert addresses(variants[ClaVariant(None, "IPv6")]) == addresses(
        build_cla(view, HTTP, "b", options)
    )


def test_clusters_sharing_a_pod_range_keep_their_endpoints_apart() -> None:
    same = ("10.1.0.1", "10.1.0.2")
    view = ImportView.of(
        [export("a", _slice("s", "IPv4", same)), export("b", _slice("s", "IPv4", same))]
    )
    assert addresses(build_cla(view, HTTP, "c", OPTIONS)) == {"a": list(same), "b": list(same)}


def test_ip_family_flags() -> None:
    assert ip_families_from_flags([]) == ({}, "IPv4")
    assert ip_families_from_flags(["IPv6", "a=IPv4"]) == ({"a": "IPv4"}, "IPv6")
    for bad in ("IPv5", "a=ipv4", "Bad_Cluster=IPv4"):
        with pytest.raises(InvalidInputError):
            ip_families_from_flags([bad])
    with pytest.raises(InvalidInputError, match="one of IPv4, IPv6"):
        TranslateOptions(default_ip_family="dual")


def test_a_header_value_with_percent_reaches_envoy_literally() -> None:
    """Gateway API header values are literal; Envoy reads % as a command, so it gets %%."""
    from envoy.config.route.v3 import route_components_pb2

    from federation.translate.ir import HeaderIR, HeaderModIR, MatchIR, PathMatchIR, RouteIR
    from federation.translate.proxy.features.headers import patch_route

    ir = RouteIR(
        "r",
        MatchIR(PathMatchIR("PathPrefix", "/")),
        request_headers=HeaderModIR(set=(HeaderIR("x-discount", "50%"),)),
        response_headers=HeaderModIR(add=(HeaderIR("x-host", "%HOSTNAME%"),)),
    )
    route = route_components_pb2.Route()
    patch_route(ir, route)
    assert route.request_headers_to_add[0].header.value == "50%%"
    assert route.response_headers_to_add[0].header.value == "%%HOSTNAME%%"
