"""User story 2 and 3 on Gateway API: routes in cluster b send paths to ServiceImports.

On the shared three-cluster environment (``data_plane`` in ``e2e/fixtures.py``) with real
apiservers, agents, the hub and real Envoys: each test applies a GatewayClass, a Gateway
in ``b`` on a port of its own, routes and backends, starts the Gateway's own Envoy (the
node group ``b/<namespace>/<name>``; this tier has no kubelet to run its Deployment),
then asserts on responses through it and on the statuses ``kubectl get ... -o yaml``
shows. Backend host ids are
60 and up (other data-plane tests use lower ones). Request loops are bounded in count
and time; figures are printed (``-s``).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.backends import GRPC_METHOD
from e2e.federation import Federation
from e2e.pki import CertificateAuthority
from e2e.processes import HarnessError, Process, wait_until
from e2e.traffic import Loop, Outcome, export_with_backends, gateway_attempt, kill

pytestmark = pytest.mark.integration

CLUSTER_B = "b"


@pytest.fixture
def fed(data_plane: Federation) -> Iterator[Federation]:
    """The shared environment with our GatewayClass in b; the Gateway Envoys a test
    started are stopped after it."""
    gw.apply(data_plane.env.cluster(CLUSTER_B), gw.gateway_class())
    yield data_plane
    for envoy in data_plane.gateway_envoys.values():
        envoy.stop()
    data_plane.gateway_envoys.clear()


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "gw")


def gateway_address(fed: Federation) -> str:
    """A free port on b's Envoy address, for a Gateway listener of one test."""
    return gw.listener_address(fed.env.cluster(CLUSTER_B))


def make_gateway(fed: Federation, ns: str, name: str = "gw") -> str:
    """An HTTP Gateway in b on a free port, with its own Envoy; its address."""
    address = gateway_address(fed)
    gw.apply(fed.env.cluster(CLUSTER_B), gw.gateway(ns, name, int(address.rpartition(":")[2])))
    fed.start_gateway_envoy(CLUSTER_B, ns, name)
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

    with Loop(None, probe=lambda: gateway_attempt(address), count=2000, seconds=90) as loop:
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
                        "set": [
                            {"name": "x-set", "value": "by-route"},
                            # Literal, not an Envoy substitution command.
                            {"name": "x-discount", "value": "50% %HOSTNAME%"},
                        ],
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
    assert echoed["x-discount"] == "50% %HOSTNAME%"
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
        fed.start_gateway_envoy(CLUSTER_B, ns, "gw")
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
    crt, key = ca.server_for("shop.example.com").write(directory, "tls")
    # The agent checks the Secret itself (only its verdict is published); the Envoy reads
    # the files, where a pod would have the Secret mounted.
    b.kubectl("create", "secret", "tls", "shop-cert", f"--cert={crt}", f"--key={key}", "-n", ns)
    address = gateway_address(fed)
    port = int(address.rpartition(":")[2])
    gw.apply(
        b,
        gw.gateway(ns, "tls", port, hostname="shop.example.com", certificate="shop-cert"),
        gw.http_route(ns, "secure", "tls", [{"backendRefs": [gw.backend("echo")]}]),
    )
    fed.start_gateway_envoy(CLUSTER_B, ns, "tls")
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


def test_a_gateway_gets_its_own_deployment_and_service_restored_when_deleted(
    fed: Federation, ns: str
) -> None:
    """The agent's infra manager: a Gateway on port 80 gets a Deployment (its Envoys bind
    10080, unprivileged) and a Service with exactly port 80, both owned by the Gateway;
    status.addresses is the Service's address; a deleted Deployment comes back, and
    everything goes with the Gateway. (No kubelet here: the objects are what is checked.)"""
    b = fed.env.cluster(CLUSTER_B)
    gw.apply(b, gw.gateway(ns, "edge", 80))
    name = "edge-envoy"

    def provisioned() -> dict[str, gw.Obj]:
        found = {kind: gw.get_yaml(b, kind, ns, name) for kind in ("deployment", "service")}
        gateway = gw.get_yaml(b, "gateway", ns, "edge")
        for obj in found.values():
            (owner,) = obj["metadata"]["ownerReferences"]
            assert owner["uid"] == gateway["metadata"]["uid"] and owner["kind"] == "Gateway"
        return found

    wait_until(lambda: _quietly(provisioned), timeout=gw.DEADLINE, what="the Gateway's objects")
    found = provisioned()
    (port,) = found["service"]["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (80, 10080)
    (envoy,) = found["deployment"]["spec"]["template"]["spec"]["containers"]
    # The listener's port, bound unprivileged, beside the readiness listener.
    assert [p["containerPort"] for p in envoy["ports"]] == [19001, 10080]
    cluster_ip = found["service"]["spec"]["clusterIP"]
    wait_until(
        lambda: (
            (gw.get_yaml(b, "gateway", ns, "edge").get("status") or {}).get("addresses")
            == [{"type": "IPAddress", "value": cluster_ip}]
        ),
        timeout=gw.DEADLINE,
        what="status.addresses from the Gateway's Service",
    )
    print(f"\n{b.kubectl('get', 'gateway', 'edge', '-n', ns).stdout.rstrip()}")
    uid = found["deployment"]["metadata"]["uid"]
    sc.delete(b, "deployment", ns, name)
    wait_until(
        lambda: (
            _quietly(lambda: gw.get_yaml(b, "deployment", ns, name)["metadata"]["uid"])
            not in (None, uid)
        ),
        timeout=gw.DEADLINE,
        what="the deleted Deployment to be applied again",
    )
    sc.delete(b, "gateway", ns, "edge")
    wait_until(
        lambda: not b.kubectl("get", "deployments,services", "-n", ns, "-o", "name").stdout.strip(),
        timeout=gw.DEADLINE,
        what="the Gateway's objects to go with it",
    )


def _quietly(read: Any) -> Any:
    """``read()``, or None while what it reads is missing or incomplete."""
    try:
        return read()
    except (AssertionError, KeyError, ValueError, HarnessError, subprocess.CalledProcessError):
        return None


def test_a_missing_certificate_secret_leaves_its_listener_unserved_until_it_exists(
    fed: Federation, ns: str
) -> None:
    """The agent GETs the Secret an HTTPS listener names: while it does not exist, the
    listener is ResolvedRefs=False/InvalidCertificateRef and not served (nothing about it
    reaches b's Envoy); once it exists, the agent's next re-check (no Secret is watched)
    serves it. The files stand in for the kubelet's mount."""
    export_with_backends(fed, "a", ns, [72], start=True)
    b = fed.env.cluster(CLUSTER_B)
    address = gateway_address(fed)
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    gw.apply(
        b,
        gw.gateway(ns, "late", port, hostname="late.example.com", certificate="late-cert"),
        gw.http_route(ns, "secure", "late", [{"backendRefs": [gw.backend("echo")]}]),
    )
    fed.start_gateway_envoy(CLUSTER_B, ns, "late")

    def listener() -> dict[str, Any]:
        status = gw.get_yaml(b, "gateway", ns, "late").get("status") or {}
        found: list[dict[str, Any]] = status.get("listeners") or [{}]
        return found[0]

    gw.wait_conditions(
        lambda: gw.conditions(listener().get("conditions")),
        {"ResolvedRefs": ("False", "InvalidCertificateRef"), "Programmed": ("False", "Invalid")},
        "InvalidCertificateRef while the Secret does not exist",
    )
    message = next(c["message"] for c in listener()["conditions"] if c["type"] == "ResolvedRefs")
    print(f"\nResolvedRefs without the Secret: {message}")
    assert message == f"Secret {ns}/late-cert does not exist"
    gw.wait_conditions(
        lambda: gw.gateway_conditions(b, ns, "late"),
        {"Accepted": ("False", "ListenersNotValid"), "Programmed": ("False", "Invalid")},
        "the Gateway has no listener to serve",
    )
    with pytest.raises(OSError):  # no Envoy listener on the port
        socket.create_connection((host, port), timeout=2).close()

    ca = CertificateAuthority("late-test-ca")
    crt, key = ca.server_for("late.example.com").write(fed.secret_dir / ns / "late-cert", "tls")
    started = time.monotonic()
    b.kubectl("create", "secret", "tls", "late-cert", f"--cert={crt}", f"--key={key}", "-n", ns)
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())

    def https_status() -> int | None:
        request = b"GET /secure HTTP/1.1\r\nHost: late.example.com\r\nConnection: close\r\n\r\n"
        try:
            with (
                socket.create_connection((host, port), timeout=2) as raw,
                context.wrap_socket(raw, server_hostname="late.example.com") as tls,
            ):
                tls.sendall(request)
                return int(tls.recv(65536).split(b" ", 2)[1])
        except (OSError, ValueError, IndexError):
            return None

    # The agent re-checks a failing Secret within a minute (doubling from 2 s).
    wait_until(lambda: https_status() == 200, timeout=75, what="HTTPS once the Secret exists")
    print(f"served {time.monotonic() - started:.1f} s after the Secret was created")
    gw.wait_conditions(
        lambda: gw.conditions(listener().get("conditions")),
        {"ResolvedRefs": ("True", "ResolvedRefs"), "Programmed": ("True", "Programmed")},
        "the listener resolved and served",
    )


def _mount(directory: Any, pair: Any, stamp: str) -> None:
    """Put ``pair`` where the Envoy reads it the way kubelet updates a mounted Secret:
    the files in a new ``..<stamp>`` directory, a ``..data_tmp`` symlink to it renamed
    over ``..data`` in one step (``rename(2)`` replaces a symlink atomically), and
    ``tls.crt``/``tls.key`` symlinks through ``..data``; the old data then goes."""
    import os
    import shutil

    data = directory / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    pair.write(directory / f"..{stamp}", "tls")
    (directory / "..data_tmp").symlink_to(f"..{stamp}")
    os.replace(directory / "..data_tmp", data)
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(directory / old)


def test_a_renewed_certificate_is_served_without_a_failed_request(fed: Federation, ns: str) -> None:
    """The certificate comes to b's Gateway Envoy as an SDS Secret of file paths, whose
    directory it watches: kubelet's swap of the mounted Secret's ``..data`` symlink makes
    it serve the renewed certificate, under a request loop that sees no failure, while a
    connection opened before goes on. A broken renewal (a key that is not the
    certificate's) is refused and the old certificate stays served."""
    import http.client

    from cryptography import x509

    from e2e.pki import KeyPair

    export_with_backends(fed, "a", ns, [73], start=True)
    b = fed.env.cluster(CLUSTER_B)
    hostname = "rotate.example.com"
    ca = CertificateAuthority("rotate-test-ca")
    first, renewed = ca.server_for(hostname), ca.server_for(hostname)
    directory = fed.secret_dir / ns / "rotate-cert"
    directory.mkdir(parents=True)
    _mount(directory, first, "1")
    crt, key = directory / "tls.crt", directory / "tls.key"
    b.kubectl("create", "secret", "tls", "rotate-cert", f"--cert={crt}", f"--key={key}", "-n", ns)
    address = gateway_address(fed)
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    gw.apply(
        b,
        gw.gateway(ns, "rotate", port, hostname=hostname, certificate="rotate-cert"),
        gw.http_route(ns, "secure", "rotate", [{"backendRefs": [gw.backend("echo")]}]),
    )
    envoy = fed.start_gateway_envoy(CLUSTER_B, ns, "rotate")
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())

    def serial(pair: KeyPair) -> str:
        return f"{x509.load_pem_x509_certificate(pair.cert_pem).serial_number:x}"

    def connect() -> http.client.HTTPConnection:
        """A keep-alive HTTPS connection with SNI and Host ``hostname``."""
        conn = http.client.HTTPConnection(host, port, timeout=2)
        raw = socket.create_connection((host, port), timeout=2)
        conn.sock = context.wrap_socket(raw, server_hostname=hostname)
        return conn

    def get(conn: http.client.HTTPConnection) -> int:
        conn.request("GET", "/secure", headers={"Host": hostname})
        reply = conn.getresponse()
        reply.read()
        return reply.status

    def probe() -> Outcome:
        """One request on a new connection: the serial of the certificate it was served."""
        try:
            conn = connect()
        except OSError as err:
            return Outcome(None, f"{type(err).__name__}: {err}")
        try:
            assert isinstance(conn.sock, ssl.SSLSocket)
            der = conn.sock.getpeercert(binary_form=True)
            status = get(conn)
        except (OSError, http.client.HTTPException) as err:
            return Outcome(None, f"{type(err).__name__}: {err}")
        finally:
            conn.close()
        if status != 200 or der is None:
            return Outcome(None, f"HTTP {status}")
        return Outcome(f"{x509.load_der_x509_certificate(der).serial_number:x}")

    wait_until(
        lambda: probe().served_by == serial(first),
        timeout=gw.DEADLINE,
        what="HTTPS with the first certificate at b's Gateway",
    )
    rotation_failures = r"key_rotation_failed$"
    kept = connect()
    assert get(kept) == 200
    with Loop(None, probe=probe, count=3000, seconds=120) as loop:
        loop.wait_for(20)
        # A broken renewal: the new certificate with another certificate's key.
        before = sum(envoy.stats(rotation_failures).values())
        broken = KeyPair(renewed.cert_pem, first.key_pem)
        _mount(directory, broken, "2")
        wait_until(
            lambda: sum(envoy.stats(rotation_failures).values()) > before,
            timeout=gw.DEADLINE,
            what="b's Envoy to refuse the broken renewal",
        )
        refused = time.monotonic()
        loop.wait_for(20, since=refused)
        swapped = time.monotonic()  # before: Envoy may serve it before _mount returns
        _mount(directory, renewed, "3")
        switched = loop.wait_served(serial(renewed), since=swapped)
        loop.wait_for(50, since=switched)
    print(
        f"\ncertificate renewal: {loop.served()}; served {1000 * (switched - swapped):.0f} ms "
        f"after the swap; failed: {loop.failed[:3]}"
    )
    assert loop.failures() == 0, loop.failed
    assert loop.served_within(refused, swapped) == {serial(first)}
    assert set(loop.served(since=switched)) == {serial(renewed)}
    assert get(kept) == 200  # a connection from before the renewal goes on
    kept.close()


def test_a_route_envoy_would_refuse_does_not_freeze_its_gateway(fed: Federation, ns: str) -> None:
    """A header value with a newline: the CRD admits it, Envoy would NACK the route
    configuration of the whole listener, after which no change to the Gateway would be
    served. The route is refused instead (Accepted=False, naming the field), a valid
    route added afterwards answers within the usual deadline, and the Gateway stays
    Programmed."""
    export_with_backends(fed, "a", ns, [79], start=True)
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    echo = gw.backend("echo")
    newline = {
        "type": "RequestHeaderModifier",
        "requestHeaderModifier": {"set": [{"name": "x-bad", "value": "one\ntwo"}]},
    }
    bad = {"matches": [gw.prefix("/bad")], "filters": [newline], "backendRefs": [echo]}
    gw.apply(b, gw.http_route(ns, "bad", "gw", [bad]))
    gw.wait_conditions(
        lambda: gw.route_conditions(b, "httproute", ns, "bad"),
        {"Accepted": ("False", "UnsupportedValue")},
        "the route with a newline in a header value refused",
    )
    started = time.monotonic()
    good = {"matches": [gw.prefix("/good")], "backendRefs": [echo]}
    gw.apply(b, gw.http_route(ns, "good", "gw", [good]))
    assert served_by(gw.wait_for_status(address, "/good", 200)) == "a"
    print(f"\nthe valid route answered {time.monotonic() - started:.1f} s after it was applied")
    assert gw.request(address, "/bad").status == 404  # nothing of the refused route is served
    obj = gw.get_yaml(b, "httproute", ns, "bad")
    (parent,) = obj["status"]["parents"]
    message = next(c["message"] for c in parent["conditions"] if c["type"] == "Accepted")
    print(f"Accepted of the refused route: {message}")
    assert message.startswith(
        "rule 0: filters[0].requestHeaderModifier.set[0].value 'one\\ntwo': contains a line feed"
    )
    gw.wait_conditions(
        lambda: gw.gateway_conditions(b, ns, "gw"),
        {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")},
        "the Gateway Programmed: its Envoy ACKed every change",
    )


#: The tests collected again on other environments (a distributed registry, hub
#: replicas): routing, a split, failover and the statuses, none touching the hub itself.
PORTABLE = (
    test_a_path_at_bs_gateway_is_served_by_as_backend,
    test_an_80_20_split_between_a_local_service_and_a_serviceimport,
    test_failover_to_a_without_failed_requests,
    test_programmed_waits_for_the_ack_and_a_nack_says_why,
    test_a_reference_grant_allows_a_cross_namespace_backend_and_revoking_it_takes_effect,
)
