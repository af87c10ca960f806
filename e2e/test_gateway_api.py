"""User story 2 and 3 on Gateway API: routes in cluster b send paths to ServiceImports.

On the shared three-cluster environment (``data_plane`` in ``e2e/fixtures.py``) with real
apiservers, agents, the hub and real Envoys: each test applies a GatewayClass, a Gateway
in ``b`` on a port of its own, routes and backends, then asserts on responses through
``b``'s Envoy and on the statuses ``kubectl get ... -o yaml`` shows. Backend host ids are
60 and up (other data-plane tests use lower ones). Request loops are bounded in count
and time; figures are printed (``-s``).
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.backends import GRPC_METHOD
from e2e.federation import Federation
from e2e.pki import CertificateAuthority
from e2e.processes import Process, wait_until
from e2e.traffic import Loop, Outcome, export_with_backends, kill

pytestmark = pytest.mark.integration

CLUSTER_B = "b"


@pytest.fixture
def fed(data_plane: Federation) -> Iterator[Federation]:
    gw.apply(data_plane.env.cluster(CLUSTER_B), gw.gateway_class())
    yield data_plane


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "gw")


def gateway_address(fed: Federation) -> str:
    """A free port on b's Envoy address, for a Gateway listener of one test."""
    return gw.listener_address(fed.env.cluster(CLUSTER_B))


def make_gateway(fed: Federation, ns: str, name: str = "gw") -> str:
    address = gateway_address(fed)
    gw.apply(fed.env.cluster(CLUSTER_B), gw.gateway(ns, name, int(address.rpartition(":")[2])))
    return address


def local_service(
    fed: Federation, ns: str, name: str, hosts: list[int], *, ready: bool = True
) -> list[Process]:
    """A Service of b (not exported) with backends for ``hosts``."""
    b = fed.env.cluster(CLUSTER_B)
    procs = [fed.start_backend(CLUSTER_B, h) for h in hosts]
    sc.apply(
        b,
        sc.service(ns, name, ports=(("http", 80, "TCP"),)),
        sc.endpoint_slice(b, ns, name, hosts, ready=ready),
    )
    return procs


def served_by(reply: gw.Reply | None) -> str | None:
    if reply is None or reply.status != 200:
        return None
    return str(reply.json()["cluster"])


def test_a_path_at_bs_gateway_is_served_by_as_backend(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [60], start=True)
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    gw.apply(
        b,
        gw.http_route(
            ns, "api", "gw", [{"matches": [gw.prefix("/api")], "backendRefs": [gw.backend("echo")]}]
        ),
    )
    reply = gw.wait_for_status(address, "/api/orders", 200)
    assert reply.json()["cluster"] == "a"
    assert reply.json()["path"] == "/api/orders"
    assert gw.request(address, "/other").status == 404  # no route matches
    gw.wait_conditions(
        lambda: gw.route_conditions(b, "httproute", ns, "api"),
        {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")},
        "the route's status",
    )
    gw.wait_conditions(
        lambda: gw.gateway_conditions(b, ns, "gw"),
        {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")},
        "the Gateway Programmed once b's Envoy ACKed it",
    )
    obj = gw.get_yaml(b, "gateway", ns, "gw")
    (listener,) = obj["status"]["listeners"]
    assert listener["attachedRoutes"] == 1
    assert gw.conditions(obj["status"]["conditions"])["Programmed"][0] == "True"
    assert obj["status"]["conditions"][0]["observedGeneration"] == obj["metadata"]["generation"]


def test_an_80_20_split_between_a_local_service_and_a_serviceimport(
    fed: Federation, ns: str
) -> None:
    export_with_backends(fed, "a", ns, [61], start=True)
    local_service(fed, ns, "local", [61])
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    gw.apply(
        b,
        gw.http_route(
            ns,
            "split",
            "gw",
            [
                {
                    "backendRefs": [
                        gw.backend("local", imported=False, weight=80),
                        gw.backend("echo", weight=20),
                    ]
                }
            ],
        ),
    )
    wait_until(
        lambda: {served_by(gw.try_request(address, "/")) for _ in range(30)} == {"a", "b"},
        timeout=gw.DEADLINE,
        what="both backends of the split to answer",
    )
    counts = Counter(served_by(gw.try_request(address, "/")) for _ in range(500))
    # Binomial(500, 0.8): mean 400, standard deviation 8.9. The tolerance is 4.5 standard
    # deviations (±40), which a correct split misses about once in 150,000 runs.
    print(f"\n80/20 split over 500 requests: {dict(counts)}")
    assert counts[None] == 0
    assert 360 <= counts["b"] <= 440, counts


def test_failover_to_a_without_failed_requests(fed: Federation, ns: str) -> None:
    """The route's ServiceImport is exported from a and b; b's Envoy prefers b. Under a
    request loop, b's endpoints go not ready (then ready again), then b's backends die
    while their slices still say ready: no request fails, and traffic moves to a."""
    export_with_backends(fed, "a", ns, [62], start=True)
    b_backends = [fed.start_backend(CLUSTER_B, h) for h in (62, 63)]
    export_with_backends(fed, CLUSTER_B, ns, [62, 63])
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    gw.apply(b, gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]))
    wait_until(
        lambda: served_by(gw.try_request(address, "/")) == "b",
        timeout=gw.DEADLINE,
        what="b's own backends to serve b's gateway",
    )

    def probe() -> Outcome:
        try:
            reply = gw.request(address, "/", timeout=2)
        except OSError as err:
            return Outcome(None, f"{type(err).__name__}: {err}")
        if reply.status != 200:
            return Outcome(None, f"HTTP {reply.status} {reply.body[:200]!r}")
        return Outcome(str(reply.json()["cluster"]))

    with Loop(None, probe=probe, count=2000, seconds=90) as loop:
        loop.wait_for(20)
        not_ready = time.monotonic()
        sc.apply(b, sc.endpoint_slice(b, ns, "echo", [62, 63], ready=False))
        moved = loop.wait_served("a", since=not_ready)
        loop.wait_for(30, since=moved)
        ready = time.monotonic()
        sc.apply(b, sc.endpoint_slice(b, ns, "echo", [62, 63], ready=True))
        back = loop.wait_served("b", since=ready)
        loop.wait_for(20, since=back)
        with loop.paused():
            kill(b_backends)
            killed = time.monotonic()
        loop.wait_for(100, since=killed)
    print(
        f"\ngateway failover: {loop.served()}; not ready -> a after "
        f"{1000 * (moved - not_ready):.0f} ms; after the kill {loop.served(since=killed)}"
    )
    assert loop.failures() == 0, loop.failed
    assert set(loop.served(since=killed)) == {"a"}
    assert "b" in loop.served(since=back)


def test_filters_headers_redirect_rewrite_and_cors(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [64], start=True)
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    rules = [
        {
            "matches": [gw.prefix("/headers")],
            "filters": [
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {
                        "set": [{"name": "x-set", "value": "by-route"}],
                        "remove": ["x-drop"],
                    },
                },
                {
                    "type": "ResponseHeaderModifier",
                    "responseHeaderModifier": {
                        "add": [{"name": "x-served-by", "value": "federation"}]
                    },
                },
            ],
            "backendRefs": [gw.backend("echo")],
        },
        {
            "matches": [gw.prefix("/old")],
            "filters": [
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {
                        "statusCode": 301,
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
                    },
                }
            ],
        },
        {
            "matches": [gw.prefix("/v1")],
            "filters": [
                {
                    "type": "URLRewrite",
                    "urlRewrite": {
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}
                    },
                }
            ],
            "backendRefs": [gw.backend("echo")],
        },
        {
            "matches": [gw.prefix("/cors")],
            "filters": [
                {
                    "type": "CORS",
                    "cors": {
                        "allowOrigins": ["https://app.example.com"],
                        "allowMethods": ["GET", "POST"],
                        "allowHeaders": ["x-token"],
                        "maxAge": 600,
                    },
                }
            ],
            "backendRefs": [gw.backend("echo")],
        },
    ]
    gw.apply(b, gw.http_route(ns, "filters", "gw", rules))
    reply = gw.wait_for_status(address, "/headers", 200, headers={"x-drop": "1", "x-set": "client"})
    echoed = reply.json()["headers"]
    assert echoed["x-set"] == "by-route" and "x-drop" not in echoed
    assert reply.headers["x-served-by"] == "federation"
    moved = gw.request(address, "/old/page")
    assert moved.status == 301 and moved.headers["location"].endswith("/new/page")
    rewritten = gw.request(address, "/v1/items")
    assert rewritten.status == 200 and rewritten.json()["path"] == "/v2/items"
    preflight = gw.request(
        address,
        "/cors/x",
        method="OPTIONS",
        headers={
            "origin": "https://app.example.com",
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-token",
        },
    )
    assert preflight.status == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    denied = gw.request(
        address,
        "/cors/x",
        method="OPTIONS",
        headers={"origin": "https://evil.example.net", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in denied.headers


def test_a_mirror_sends_copies_to_its_backend(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [65], start=True)
    local_service(fed, ns, "shadow", [66])
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    gw.apply(
        b,
        gw.http_route(
            ns,
            "mirrored",
            "gw",
            [
                {
                    "filters": [
                        {
                            "type": "RequestMirror",
                            "requestMirror": {"backendRef": gw.backend("shadow", imported=False)},
                        }
                    ],
                    "backendRefs": [gw.backend("echo")],
                }
            ],
        ),
    )
    gw.wait_for_status(address, "/", 200)
    shadow = f"{b.backend_ip(66)}:8080"
    start = gw.request(shadow, "/__count").json()["served"]

    def mirrored() -> bool:
        # Envoy drops a copy (fire and forget) while the shadow cluster has no endpoint
        # yet: the route can answer before the mirror's EDS has arrived.
        gw.request(address, "/warm-up")
        return bool(gw.request(shadow, "/__count").json()["served"] > start)

    wait_until(mirrored, timeout=gw.DEADLINE, what="the mirror's first copy")
    before = gw.request(shadow, "/__count").json()["served"]
    for _ in range(20):
        assert served_by(gw.request(address, "/copied")) == "a"  # answered by the primary
    wait_until(
        lambda: gw.request(shadow, "/__count").json()["served"] >= before + 20,
        timeout=gw.DEADLINE,
        what="the mirror's backend to receive the copies",
    )


def test_a_backend_request_timeout_answers_504(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [67], start=True)
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    gw.apply(
        b,
        gw.http_route(
            ns,
            "timed",
            "gw",
            [
                {
                    "backendRefs": [gw.backend("echo")],
                    "timeouts": {"request": "5s", "backendRequest": "500ms"},
                }
            ],
        ),
    )
    gw.wait_for_status(address, "/slow?ms=0", 200)
    started = time.monotonic()
    reply = gw.request(address, "/slow?ms=3000", timeout=10)
    print(f"\nslow backend: {reply.status} after {time.monotonic() - started:.2f} s")
    assert reply.status == 504


def test_a_grpcroute_reaches_a_real_grpc_server_by_service_and_method(
    fed: Federation, ns: str
) -> None:
    a = fed.env.cluster("a")
    fed.start_backend("a", 68, 9091, protocol="grpc")
    sc.apply(
        a,
        sc.service(ns, "rpc", ports=(("grpc", 9090, "TCP"),)),
        sc.endpoint_slice(a, ns, "rpc", [68], ports=(("grpc", 9091),)),
        sc.export(ns, "rpc"),
    )
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    gw.apply(
        b,
        gw.grpc_route(
            ns,
            "rpc",
            "gw",
            [
                {
                    "matches": [{"method": {"service": "federation.test.Echo", "method": "Count"}}],
                    "backendRefs": [gw.backend("rpc", 9090)],
                }
            ],
        ),
    )

    def call(method: str) -> list[bytes] | grpc.StatusCode:
        with grpc.insecure_channel(address, options=[("grpc.default_authority", "rpc.test")]) as ch:
            try:
                return list(ch.unary_stream(method)(b"3,0", timeout=5))
            except grpc.RpcError as err:
                code: grpc.StatusCode = err.code()
                return code

    wait_until(
        lambda: call(GRPC_METHOD) == [b"a 0", b"a 1", b"a 2"],
        timeout=gw.DEADLINE,
        what="the gRPC call through b's gateway",
    )
    # Another method of the service matches no rule: the gateway answers 404, which
    # gRPC reports as UNIMPLEMENTED.
    assert call("/federation.test.Echo/Other") == grpc.StatusCode.UNIMPLEMENTED
    gw.wait_conditions(
        lambda: gw.route_conditions(b, "grpcroute", ns, "rpc"),
        {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")},
        "the GRPCRoute's status",
    )


def test_a_reference_grant_allows_a_cross_namespace_backend_and_revoking_it_takes_effect(
    fed: Federation, ns: str
) -> None:
    other = sc.namespace_everywhere(fed.env.clusters.values(), "gw-other")
    export_with_backends(fed, "a", other, [69], start=True)
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    gw.apply(
        b,
        gw.http_route(ns, "cross", "gw", [{"backendRefs": [gw.backend("echo", namespace=other)]}]),
    )
    gw.wait_conditions(
        lambda: gw.route_conditions(b, "httproute", ns, "cross"),
        {"ResolvedRefs": ("False", "RefNotPermitted")},
        "RefNotPermitted without a ReferenceGrant",
    )
    assert gw.wait_for_status(address, "/", 500).status == 500
    gw.apply(b, gw.reference_grant(other, "allow", ns))
    assert served_by(gw.wait_for_status(address, "/", 200)) == "a"
    gw.wait_conditions(
        lambda: gw.route_conditions(b, "httproute", ns, "cross"),
        {"ResolvedRefs": ("True", "ResolvedRefs")},
        "ResolvedRefs once granted",
    )
    sc.delete(b, "referencegrant", other, "allow")
    gw.wait_for_status(address, "/", 500)
    gw.wait_conditions(
        lambda: gw.route_conditions(b, "httproute", ns, "cross"),
        {"ResolvedRefs": ("False", "RefNotPermitted")},
        "RefNotPermitted again once the grant is revoked",
    )


def test_programmed_waits_for_the_ack_and_a_nack_says_why(fed: Federation, ns: str) -> None:
    """Another process holds the Gateway's port: b's Envoy rejects the listener, and the
    Gateway stays Programmed=False with Envoy's message; freed, it becomes Programmed."""
    export_with_backends(fed, "a", ns, [70], start=True)
    b = fed.env.cluster(CLUSTER_B)
    address = gateway_address(fed)
    host, _, port = address.rpartition(":")
    blocker = socket.socket()
    try:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((host, int(port)))
        blocker.listen()
        gw.apply(b, gw.gateway(ns, "gw", int(port)))
        gw.apply(b, gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]))
        gw.wait_conditions(
            lambda: gw.gateway_conditions(b, ns, "gw"),
            {"Programmed": ("False", "Invalid")},
            "Programmed=False after the NACK",
        )
        obj = gw.get_yaml(b, "gateway", ns, "gw")
        message = next(
            c["message"] for c in obj["status"]["conditions"] if c["type"] == "Programmed"
        )
        print(f"\nProgrammed while the port is taken: {message}")
        assert "Address already in use" in message or "cannot bind" in message
    finally:
        blocker.close()
    gw.wait_conditions(
        lambda: gw.gateway_conditions(b, ns, "gw"),
        {"Programmed": ("True", "Programmed")},
        "Programmed once the port is free and the listener was ACKed",
        timeout=60,
    )
    assert served_by(gw.wait_for_status(address, "/", 200)) == "a"


def test_an_https_listener_terminates_tls_with_a_certificate_from_the_envoys_disk(
    fed: Federation, ns: str
) -> None:
    """The certificate never passes through the hub: b's Envoy reads the mounted Secret
    from its own disk, where the hub's --secret-dir says it is."""
    export_with_backends(fed, "a", ns, [71], start=True)
    b = fed.env.cluster(CLUSTER_B)
    ca = CertificateAuthority("gateway-test-ca")
    directory = fed.secret_dir / ns / "shop-cert"
    directory.mkdir(parents=True)
    ca.server_for("shop.example.com").write(directory, "tls")
    address = gateway_address(fed)
    port = int(address.rpartition(":")[2])
    gw.apply(
        b,
        gw.gateway(ns, "tls", port, hostname="shop.example.com", certificate="shop-cert"),
        gw.http_route(ns, "secure", "tls", [{"backendRefs": [gw.backend("echo")]}]),
    )
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    host, _, _ = address.rpartition(":")

    def https_get() -> tuple[int, str] | None:
        """GET /secure over TLS with SNI and Host shop.example.com; (status, cluster)."""
        request = b"GET /secure HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n"
        try:
            with (
                socket.create_connection((host, port), timeout=2) as raw,
                context.wrap_socket(raw, server_hostname="shop.example.com") as tls,
            ):
                tls.sendall(request)
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            return int(head.split(b" ", 2)[1]), json.loads(body)["cluster"]
        except (OSError, ValueError, IndexError, KeyError):
            return None

    wait_until(
        lambda: https_get() == (200, "a"),
        timeout=gw.DEADLINE,
        what="an HTTPS request to b's Gateway, verified against the test CA",
    )
    gw.wait_conditions(
        lambda: gw.gateway_conditions(b, ns, "tls"),
        {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")},
        "the HTTPS Gateway Programmed",
    )
