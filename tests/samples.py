"""Sample registry records of every kind, for the codec, store and watcher tests.

Each builder fills in most of its record's fields, so that a round trip through a codec
or a store exercises them; ``every_kind`` gives one record of each kind for a cluster.
"""

from __future__ import annotations

from federation.registry import failover as f
from federation.registry import gatewayapi as g
from federation.registry import policies as p
from federation.registry.kinds import Record
from federation.registry.records import (
    ClusterRecord,
    Endpoint,
    EndpointPort,
    EndpointSet,
    ExportedService,
    LocalService,
    ServicePort,
    ServiceType,
)

NS = "demo"


def service(cluster: str, name: str = "echo", generation: int = 1) -> ExportedService:
    return ExportedService(
        cluster=cluster,
        namespace=NS,
        name=name,
        type=ServiceType.CLUSTER_SET_IP,
        ports=(ServicePort("http", "TCP", 80),),
        created="2026-01-01T00:00:00Z",
        generation=generation,
    )


def cluster_record(cluster: str) -> ClusterRecord:
    return ClusterRecord(cluster=cluster, agent_version="test", last_full_sync=1.0, epoch="e")


def local_service(cluster: str, name: str = "local") -> LocalService:
    return LocalService(
        cluster=cluster,
        namespace=NS,
        name=name,
        ports=(ServicePort("http", "TCP", 80), ServicePort("grpc", "TCP", 9090, "grpc")),
        endpoints=(
            EndpointSet(
                f"{name}-1",
                "IPv4",
                (EndpointPort("http", "TCP", 8080),),
                (Endpoint(("10.1.0.1",), True, True, False, zone="z1"),),
            ),
        ),
    )


def gateway(cluster: str, name: str = "gw") -> g.GatewayRecord:
    return g.GatewayRecord(
        cluster=cluster,
        namespace=NS,
        name=name,
        generation=3,
        created="2026-01-01T00:00:00Z",
        spec=g.GatewaySpec(
            gateway_class_name="federation",
            listeners=(
                g.Listener(name="http", port=80, protocol="HTTP"),
                g.Listener(
                    name="https",
                    port=443,
                    protocol="HTTPS",
                    hostname="*.example.com",
                    tls=g.GatewayTLSConfig(
                        mode="Terminate",
                        certificate_refs=(g.SecretObjectReference("cert", "", "Secret", NS),),
                    ),
                    allowed_routes=g.AllowedRoutes(
                        namespaces=g.RouteNamespaces(
                            from_="Selector",
                            selector=g.LabelSelector(
                                match_labels=(("team", "a"),),
                                match_expressions=(
                                    g.LabelSelectorRequirement("env", "In", ("prod", "qa")),
                                ),
                            ),
                        ),
                        kinds=(g.RouteGroupKind("HTTPRoute", g.GATEWAY_GROUP),),
                    ),
                ),
            ),
        ),
    )


def http_route(cluster: str, name: str = "route") -> g.HTTPRouteRecord:
    mirror = g.RequestMirror(
        g.BackendObjectReference("shadow", port=80), fraction=g.Fraction(1, 10)
    )
    return g.HTTPRouteRecord(
        cluster=cluster,
        namespace=NS,
        name=name,
        generation=2,
        created="2026-01-02T00:00:00Z",
        namespace_labels=(("team", "a"),),
        spec=g.HTTPRouteSpec(
            parent_refs=(g.ParentReference("gw", section_name="http"),),
            hostnames=("shop.example.com",),
            rules=(
                g.HTTPRouteRule(
                    name="api",
                    matches=(
                        g.HTTPRouteMatch(
                            path=g.PathMatch("PathPrefix", "/api"),
                            headers=(g.ValueMatch("x-env", "prod"),),
                            query_params=(g.ValueMatch("v", "2", "RegularExpression"),),
                            method="GET",
                        ),
                    ),
                    filters=(
                        g.HTTPRouteFilter(
                            "RequestHeaderModifier",
                            request_header_modifier=g.HeaderModifier(
                                set=(g.HTTPHeader("x-a", "1"),), remove=("x-b",)
                            ),
                        ),
                        g.HTTPRouteFilter("RequestMirror", request_mirror=mirror),
                        g.HTTPRouteFilter(
                            "CORS",
                            cors=g.CORS(allow_origins=("https://a.example",), max_age=5),
                        ),
                    ),
                    backend_refs=(
                        g.HTTPBackendRef(
                            "echo",
                            group="multicluster.x-k8s.io",
                            kind="ServiceImport",
                            port=80,
                            weight=80,
                        ),
                        g.HTTPBackendRef("local", port=80, weight=20),
                    ),
                    timeouts=g.HTTPRouteTimeouts(request="10s", backend_request="2s"),
                ),
                g.HTTPRouteRule(
                    filters=(
                        g.HTTPRouteFilter(
                            "RequestRedirect",
                            request_redirect=g.RequestRedirect(
                                scheme="https",
                                path=g.HTTPPathModifier("ReplaceFullPath", "/new"),
                                status_code=301,
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )


def grpc_route(cluster: str, name: str = "grpc") -> g.GRPCRouteRecord:
    return g.GRPCRouteRecord(
        cluster=cluster,
        namespace=NS,
        name=name,
        generation=1,
        spec=g.GRPCRouteSpec(
            parent_refs=(g.ParentReference("gw"),),
            rules=(
                g.GRPCRouteRule(
                    matches=(
                        g.GRPCRouteMatch(
                            method=g.GRPCMethodMatch(service="echo.Echo", method="Count"),
                            headers=(g.ValueMatch("x-env", "prod"),),
                        ),
                    ),
                    backend_refs=(g.GRPCBackendRef("echo", port=9090),),
                ),
            ),
        ),
    )


def reference_grant(cluster: str, name: str = "grant") -> g.ReferenceGrantRecord:
    return g.ReferenceGrantRecord(
        cluster=cluster,
        namespace="backends",
        name=name,
        spec=g.ReferenceGrantSpec(
            from_=(g.ReferenceGrantFrom(g.GATEWAY_GROUP, "HTTPRoute", NS),),
            to=(g.ReferenceGrantTo("", "Service", "echo"),),
        ),
    )


def backend_traffic_policy(cluster: str, name: str = "btp") -> p.BackendTrafficPolicyRecord:
    """A BackendTrafficPolicy on HTTPRoute ``route`` with every field we implement."""
    return p.BackendTrafficPolicyRecord(
        cluster=cluster,
        namespace="demo",
        name=name,
        generation=2,
        created="2026-01-01T00:00:00Z",
        spec=p.BackendTrafficPolicySpec(
            target_refs=(p.PolicyTargetReference(g.GATEWAY_GROUP, "HTTPRoute", "route"),),
            retry=p.Retry(
                num_retries=2,
                retry_on=p.RetryOn(triggers=("connect-failure",), http_status_codes=(503,)),
                per_retry=p.PerRetry(timeout="1s", back_off=p.BackOff("100ms", "1s")),
            ),
            timeout=p.Timeout(tcp=p.TCPTimeout("2s"), http=p.HTTPTimeout(request_timeout="10s")),
            circuit_breaker=p.CircuitBreaker(max_connections=10, max_pending_requests=5),
            load_balancer=p.LoadBalancer(
                "ConsistentHash", consistent_hash=p.ConsistentHash("Header", p.HashHeader("x-user"))
            ),
        ),
        unsupported=("spec.rateLimit",),
    )


def failover_policy(cluster: str, name: str = "prefer") -> f.FailoverPolicyRecord:
    """A FailoverPolicy on ServiceImport ``echo``: c first, then a."""
    return f.FailoverPolicyRecord(
        cluster=cluster,
        namespace=NS,
        name=name,
        generation=1,
        created="2026-01-01T00:00:00Z",
        spec=f.FailoverPolicySpec(
            target_refs=(
                p.PolicyTargetReference("multicluster.x-k8s.io", "ServiceImport", "echo"),
            ),
            order=("c", "a"),
        ),
    )


def every_kind(cluster: str) -> list[Record]:
    """One record of each kind, all of ``cluster``."""
    return [
        service(cluster),
        local_service(cluster),
        gateway(cluster),
        http_route(cluster),
        grpc_route(cluster),
        reference_grant(cluster),
        backend_traffic_policy(cluster),
        failover_policy(cluster),
    ]
