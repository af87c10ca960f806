"""Envoy Gateway's SecurityPolicy (authorization, CORS and JWT) and ClientTrafficPolicy,
honoured by a Gateway's own real Envoy.

On the shared three-cluster environment (as :mod:`e2e.test_gateway_api`): a Gateway in
``b`` with routes to a ServiceImport exported by ``a``. Clients here connect from
loopback addresses, so the client ranges are loopback ranges. Backend host ids are 90
and up.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.federation import Federation, metric
from e2e.jwks import JwksServer
from e2e.pki import CertificateAuthority
from e2e.processes import wait_until
from e2e.test_gateway_api import CLUSTER_B, fed, gateway_address, make_gateway
from e2e.traffic import export_with_backends
from federation.node_groups import GATEWAY_METADATA
from federation.translate.gateway.status import CONTROLLER_NAME

pytestmark = pytest.mark.integration

#: The shared environment with our GatewayClass in b (the fixture of the Gateway tests).
__all__ = ["fed"]

GATEWAY_GROUP = "gateway.networking.k8s.io"


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "sp")


def envoy_gateway_policy(
    policy_kind: str, ns: str, name: str, kind: str, target: str, **spec: Any
) -> dict[str, Any]:
    """An Envoy Gateway policy of ``policy_kind`` on ``kind`` ``target``, as documented."""
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": policy_kind,
        "metadata": {"namespace": ns, "name": name},
        "spec": {"targetRefs": [{"group": GATEWAY_GROUP, "kind": kind, "name": target}], **spec},
    }


def security_policy(ns: str, name: str, kind: str, target: str, **spec: Any) -> dict[str, Any]:
    return envoy_gateway_policy("SecurityPolicy", ns, name, kind, target, **spec)


def partners_only(ns: str, route: str) -> dict[str, Any]:
    """A SecurityPolicy letting only clients of 203.0.113.0/24 (a partner's range, as
    the Gateway sees the client) reach HTTPRoute ``route``."""
    return security_policy(
        ns,
        "partners",
        "HTTPRoute",
        route,
        authorization={
            "defaultAction": "Deny",
            "rules": [{"action": "Allow", "principal": {"clientCIDRs": ["203.0.113.0/24"]}}],
        },
    )


def wait_status(fed: Federation, ns: str, name: str, status: str, reason: str) -> None:
    gw.wait_conditions(
        lambda: _conditions(fed, ns, name),
        {"Accepted": (status, reason)},
        f"SecurityPolicy {ns}/{name} Accepted={status}",
    )


def _conditions(fed: Federation, ns: str, name: str) -> dict[str, tuple[str, str]]:
    return _policy_conditions(fed, "securitypolicy", ns, name)


def _policy_conditions(
    fed: Federation, kind: str, ns: str, name: str
) -> dict[str, tuple[str, str]]:
    """Our first ancestor entry's conditions of a policy of ``kind`` (empty until
    written)."""
    obj = gw.get_yaml(fed.env.cluster(CLUSTER_B), kind, ns, name)
    for ancestor in (obj.get("status") or {}).get("ancestors") or []:
        if ancestor.get("controllerName") == CONTROLLER_NAME:
            return gw.conditions(ancestor.get("conditions"))
    return {}


def test_client_ip_and_header_rules_allow_and_deny(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [90], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    rule = {"backendRefs": [gw.backend("echo")]}
    gw.apply(
        b,
        gw.http_route(ns, "ops", "gw", [{**rule, "matches": [gw.prefix("/ops")]}]),
        gw.http_route(ns, "blocked", "gw", [{**rule, "matches": [gw.prefix("/blocked")]}]),
    )
    gw.wait_for_status(address, "/ops", 200)
    gw.apply(
        b,
        security_policy(
            ns,
            "ops-only",
            "HTTPRoute",
            "ops",
            authorization={
                "defaultAction": "Deny",
                "rules": [
                    {
                        "action": "Deny",
                        "principal": {"clientCIDRs": ["0.0.0.0/0"]},
                        "operation": {"methods": ["DELETE"]},
                    },
                    {
                        "action": "Allow",
                        "principal": {
                            "clientCIDRs": ["127.0.0.0/8"],
                            "headers": [{"name": "x-team", "values": ["ops", "sre"]}],
                        },
                    },
                ],
            },
        ),
        security_policy(
            ns,
            "no-loopback",
            "HTTPRoute",
            "blocked",
            authorization={
                "defaultAction": "Allow",
                "rules": [{"action": "Deny", "principal": {"clientCIDRs": ["127.0.0.0/8"]}}],
            },
        ),
    )
    wait_status(fed, ns, "ops-only", "True", "Accepted")
    gw.wait_for_status(address, "/ops", 403)
    ops = {"x-team": "ops"}
    answers = {
        "no header": gw.request(address, "/ops").status,
        "x-team: ops": gw.request(address, "/ops", headers=ops).status,
        "x-team: dev": gw.request(address, "/ops", headers={"x-team": "dev"}).status,
        "DELETE as ops": gw.request(address, "/ops", method="DELETE", headers=ops).status,
    }
    gw.wait_for_status(address, "/blocked", 403)
    print(f"\nauthorization on /ops: {answers}; /blocked from loopback: 403")
    assert answers == {
        "no header": 403,
        "x-team: ops": 200,
        "x-team: dev": 403,
        "DELETE as ops": 403,
    }


def test_a_gateways_cors_answers_the_preflight(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [91], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    gw.apply(b, gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]))
    gw.wait_for_status(address, "/", 200)
    gw.apply(
        b,
        security_policy(
            ns,
            "cors",
            "Gateway",
            "gw",
            cors={
                "allowOrigins": ["https://app.example.com"],
                "allowMethods": ["GET", "PUT"],
                "allowHeaders": ["x-token"],
                "maxAge": "10m",
            },
        ),
    )
    wait_status(fed, ns, "cors", "True", "Accepted")
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "x-token",
    }
    gw.wait_conditions(
        lambda: {
            "allow-origin": (
                gw.request(address, "/", method="OPTIONS", headers=preflight).headers.get(
                    "access-control-allow-origin", ""
                ),
                "",
            )
        },
        {"allow-origin": ("https://app.example.com", "")},
        "the preflight answered by the Gateway",
    )
    reply = gw.request(address, "/", method="OPTIONS", headers=preflight)
    other = gw.request(
        address, "/", method="OPTIONS", headers={**preflight, "Origin": "https://evil.example"}
    )
    print(f"\nCORS preflight: {reply.status} {dict(reply.headers)}; other origin: {other.status}")
    assert reply.status == 200
    assert reply.headers["access-control-allow-methods"] == "GET, PUT"
    assert reply.headers["access-control-max-age"] == "600"
    assert "access-control-allow-origin" not in other.headers
    # The preflight never reached the backend: it answers with JSON naming its cluster.
    assert b"cluster" not in reply.body


def test_a_security_policy_that_cannot_be_served_fails_closed(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [92], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    rule = {"backendRefs": [gw.backend("echo")]}
    gw.apply(
        b,
        gw.http_route(ns, "guarded", "gw", [{**rule, "matches": [gw.prefix("/guarded")]}]),
        gw.http_route(ns, "other", "gw", [{**rule, "matches": [gw.prefix("/other")]}]),
    )
    gw.wait_for_status(address, "/guarded", 200)
    gw.apply(
        b,
        security_policy(
            ns,
            "basic",
            "HTTPRoute",
            "guarded",
            basicAuth={"users": {"name": "htpasswd"}},
        ),
    )
    wait_status(fed, ns, "basic", "False", "Invalid")
    gw.wait_for_status(address, "/guarded", 403)
    message = gw.get_yaml(b, "securitypolicy", ns, "basic")["status"]["ancestors"][0]
    print(f"\nan unservable SecurityPolicy: /guarded 403, /other 200; {message['conditions']}")
    assert "spec.basicAuth" in message["conditions"][0]["message"]
    assert gw.request(address, "/other").status == 200
    sc.delete(b, "securitypolicy", ns, "basic")
    gw.wait_for_status(address, "/guarded", 200)


def test_a_client_traffic_policy_trusts_x_forwarded_for_for_the_client_ip_rule(
    fed: Federation, ns: str
) -> None:
    """A ClientTrafficPolicy on the Gateway trusts one X-Forwarded-For hop (a load
    balancer in front of it), so a SecurityPolicy's client range sees the real client;
    it also refuses header names with underscores."""
    export_with_backends(fed, "a", ns, [93], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    gw.apply(b, gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]))
    gw.wait_for_status(address, "/", 200)
    client = envoy_gateway_policy(
        "ClientTrafficPolicy",
        ns,
        "edge",
        "Gateway",
        "gw",
        clientIPDetection={"xForwardedFor": {"numTrustedHops": 1}},
        headers={"withUnderscoresAction": "RejectRequest"},
    )
    gw.apply(
        b,
        client,
        partners_only(ns, "api"),
    )
    gw.wait_conditions(
        lambda: _policy_conditions(fed, "clienttrafficpolicy", ns, "edge"),
        {"Accepted": ("True", "Accepted")},
        "the ClientTrafficPolicy accepted",
    )
    partner = {"X-Forwarded-For": "203.0.113.7"}
    gw.wait_for_status(address, "/", 200, headers=partner)
    answers = {
        "partner": gw.request(address, "/", headers=partner).status,
        "other": gw.request(address, "/", headers={"X-Forwarded-For": "198.51.100.1"}).status,
        "direct": gw.request(address, "/").status,
        "underscore": gw.request(address, "/", headers={**partner, "x_token": "1"}).status,
    }
    print(f"\nclient IP from X-Forwarded-For: {answers}")
    assert answers == {"partner": 200, "other": 403, "direct": 403, "underscore": 400}


def test_jwt_authentication_with_a_remote_jwks_claims_and_an_optional_token(
    fed: Federation, ns: str
) -> None:
    """JWTs checked against a JWKS served on loopback: a valid token passes with its
    subject copied into a header; expired, wrong-issuer and missing tokens get 401, a
    token for another audience 403; an optional policy (with a local JWKS) lets a request without a
    token through; an authorization rule reads a claim of the verified token."""
    export_with_backends(fed, "a", ns, [94], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    rule = {"backendRefs": [gw.backend("echo")]}
    gw.apply(
        b,
        *(
            gw.http_route(ns, name, "gw", [{**rule, "matches": [gw.prefix(f"/{name}")]}])
            for name in ("api", "open", "team")
        ),
    )
    gw.wait_for_status(address, "/team", 200)
    issuer = "https://issuer.e2e.test"
    with JwksServer() as jwks:
        corp = {"name": "corp", "issuer": issuer, "audiences": ["shop"]}
        remote = {**corp, "remoteJWKS": {"uri": jwks.uri}}
        gw.apply(
            b,
            security_policy(
                ns,
                "api-jwt",
                "HTTPRoute",
                "api",
                jwt={
                    "providers": [
                        {**remote, "claimToHeaders": [{"header": "x-user", "claim": "sub"}]}
                    ]
                },
            ),
            security_policy(
                ns,
                "open-jwt",
                "HTTPRoute",
                "open",
                jwt={
                    "optional": True,
                    "providers": [{**corp, "localJWKS": {"type": "Inline", "inline": jwks.jwks}}],
                },
            ),
            security_policy(
                ns,
                "team-only",
                "HTTPRoute",
                "team",
                jwt={"providers": [remote]},
                authorization={
                    "defaultAction": "Deny",
                    "rules": [
                        {
                            "action": "Allow",
                            "principal": {
                                "jwt": {
                                    "provider": "corp",
                                    "claims": [{"name": "team", "values": ["ops"]}],
                                }
                            },
                        }
                    ],
                },
            ),
        )
        for name in ("api-jwt", "open-jwt", "team-only"):
            wait_status(fed, ns, name, "True", "Accepted")
        good = {"iss": issuer, "aud": "shop", "sub": "alice"}

        def bearer(**claims: Any) -> dict[str, str]:
            lifetime = claims.pop("lifetime", 300.0)
            return {"Authorization": f"Bearer {jwks.token(lifetime=lifetime, **claims)}"}

        # Each policy in force: its denying answer (the routes answered 200 before).
        # Expired well past Envoy's 60 s allowance for clock skew.
        expired = bearer(**good, lifetime=-600)
        gw.wait_for_status(address, "/api", 401)
        gw.wait_for_status(address, "/open", 401, headers=expired)
        gw.wait_for_status(address, "/team", 403, headers=bearer(**good, team="dev"))
        valid = gw.request(address, "/api", headers=bearer(**good))
        answers = {
            "valid": valid.status,
            "expired": gw.request(address, "/api", headers=expired).status,
            "wrong issuer": gw.request(
                address, "/api", headers=bearer(**{**good, "iss": "https://evil.test"})
            ).status,
            "wrong audience": gw.request(
                address, "/api", headers=bearer(**{**good, "aud": "other"})
            ).status,
            "missing": gw.request(address, "/api").status,
            "optional, missing": gw.request(address, "/open").status,
            "optional, valid": gw.request(address, "/open", headers=bearer(**good)).status,
            "optional, expired": gw.request(address, "/open", headers=expired).status,
            "team ops": gw.request(address, "/team", headers=bearer(**good, team="ops")).status,
            "team dev": gw.request(address, "/team", headers=bearer(**good, team="dev")).status,
        }
        user = valid.json()["headers"].get("x-user")
        print(f"\nJWT: {answers}; x-user={user!r}; JWKS fetched {jwks.fetches} time(s)")
        assert answers == {
            "valid": 200,
            "expired": 401,
            "wrong issuer": 401,
            "wrong audience": 403,  # Envoy's answer to a token not meant for this API
            "missing": 401,
            "optional, missing": 200,
            "optional, valid": 200,
            "optional, expired": 401,
            "team ops": 200,
            "team dev": 403,
        }
        assert user == "alice"
        assert jwks.fetches >= 1


def test_external_authorization_over_http_and_grpc(fed: Federation, ns: str) -> None:
    """Two SecurityPolicies with ``extAuth``: an HTTP service that is a ServiceImport
    exported by another cluster, and a gRPC service that is a Service of the Gateway's
    own cluster. Each allows ``x-user: alice`` (adding a header the backend sees) and
    denies everyone else."""
    export_with_backends(fed, "a", ns, [95], start=True)
    a, b = fed.env.cluster("a"), fed.env.cluster(CLUSTER_B)
    fed.start_backend("a", 96)
    sc.apply(
        a,
        sc.service(ns, "authz", ports=(("http", 80, "TCP"),)),
        sc.endpoint_slice(a, ns, "authz", [96]),
        sc.export(ns, "authz"),
    )
    fed.start_backend(CLUSTER_B, 97, 9091, protocol="grpc")
    sc.apply(
        b,
        sc.service(ns, "grpc-authz", ports=(("grpc", 9090, "TCP"),)),
        sc.endpoint_slice(b, ns, "grpc-authz", [97], ports=(("grpc", 9091),)),
    )
    address = make_gateway(fed, ns)
    rule = {"backendRefs": [gw.backend("echo")]}
    gw.apply(
        b,
        *(
            gw.http_route(ns, name, "gw", [{**rule, "matches": [gw.prefix(f"/{name}")]}])
            for name in ("http", "grpc")
        ),
    )
    gw.wait_for_status(address, "/grpc", 200)
    authz = {"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "authz"}
    gw.apply(
        b,
        security_policy(
            ns,
            "http-authz",
            "HTTPRoute",
            "http",
            extAuth={
                "http": {
                    "backendRefs": [{**authz, "port": 80}],
                    "path": "/__authz",
                    "headersToBackend": ["x-authz"],
                },
                "headersToExtAuth": ["x-user"],
            },
        ),
        security_policy(
            ns,
            "grpc-authz",
            "HTTPRoute",
            "grpc",
            extAuth={"grpc": {"backendRefs": [{"name": "grpc-authz", "port": 9090}]}},
        ),
    )
    for name in ("http-authz", "grpc-authz"):
        wait_status(fed, ns, name, "True", "Accepted")
    alice, bob = {"x-user": "alice"}, {"x-user": "bob"}
    for path in ("/http", "/grpc"):  # each policy in force: its denying answer
        gw.wait_for_status(address, path, 403, headers=bob)
    allowed = {path: gw.request(address, path, headers=alice) for path in ("/http", "/grpc")}
    answers = {
        f"{path} {who}": gw.request(address, path, headers=headers).status
        for path in ("/http", "/grpc")
        for who, headers in (("alice", alice), ("bob", bob), ("nobody", {}))
    }
    seen = {path: reply.json()["headers"].get("x-authz") for path, reply in allowed.items()}
    denied = gw.request(address, "/grpc", headers=bob).body.decode().strip()
    print(f"\nexternal authorization: {answers}; backend saw x-authz {seen}; denial {denied!r}")
    assert answers == {
        "/http alice": 200,
        "/http bob": 403,
        "/http nobody": 403,
        "/grpc alice": 200,
        "/grpc bob": 403,
        "/grpc nobody": 403,
    }
    assert seen == {"/http": "allowed by a", "/grpc": f"allowed by {CLUSTER_B} over gRPC"}
    assert denied == f"denied by {CLUSTER_B} over gRPC"


def _through_proxy(address: str, client: str, path: str = "/") -> int | None:
    """The status of a request sent with a PROXY protocol (v1) header saying it comes
    from ``client``, as a load balancer in front of the Gateway would send it (None: no
    answer)."""
    host, _, port = address.rpartition(":")
    header = f"PROXY TCP4 {client} {host} 40000 {port}\r\n"
    request = f"GET {path} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n"
    reply = b""
    try:
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall((header + request).encode())
            while chunk := conn.recv(65536):
                reply += chunk
    except OSError:
        return None
    parts = reply.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def test_a_client_traffic_policy_reads_the_proxy_protocol_for_the_client_ip_rule(
    fed: Federation, ns: str
) -> None:
    """A ClientTrafficPolicy that requires the PROXY protocol: the address in the header
    is the client's, which a SecurityPolicy's client range then sees; a connection
    without the header is refused."""
    export_with_backends(fed, "a", ns, [98], start=True)
    address = make_gateway(fed, ns)
    b = fed.env.cluster(CLUSTER_B)
    gw.apply(b, gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]))
    gw.wait_for_status(address, "/", 200)
    gw.apply(
        b,
        envoy_gateway_policy("ClientTrafficPolicy", ns, "lb", "Gateway", "gw", proxyProtocol={}),
        partners_only(ns, "api"),
    )
    gw.wait_conditions(
        lambda: _policy_conditions(fed, "clienttrafficpolicy", ns, "lb"),
        {"Accepted": ("True", "Accepted")},
        "the ClientTrafficPolicy accepted",
    )
    wait_until(
        lambda: gw.try_request(address, "/") is None,
        timeout=gw.DEADLINE,
        what="a request without the PROXY header refused",
    )
    wait_until(
        lambda: _through_proxy(address, "198.51.100.1") == 403,
        timeout=gw.DEADLINE,
        what="the client range rule in force",
    )
    answers = {
        "partner": _through_proxy(address, "203.0.113.9"),
        "other": _through_proxy(address, "198.51.100.1"),
    }
    print(f"\nclient IP from the PROXY protocol: {answers}; without the header: refused")
    assert answers == {"partner": 200, "other": 403}


def _https_status(
    address: str, hostname: str, server_ca: bytes, client: tuple[Path, Path] | None
) -> int | None:
    """The status of GET / over TLS (SNI ``hostname``), with the client certificate
    ``client`` (certificate and key files) or none; None: no answer (the handshake or
    the connection refused)."""
    context = ssl.create_default_context(cadata=server_ca.decode())
    if client is not None:
        context.load_cert_chain(*client)
    host, _, port = address.rpartition(":")
    request = f"GET / HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n\r\n".encode()
    try:
        with (
            socket.create_connection((host, int(port)), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            tls.sendall(request)
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
    except OSError:
        return None
    parts = reply.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def test_client_certificates_are_checked_as_the_gateway_and_a_client_traffic_policy_say(
    fed: Federation, ns: str, tmp_path: Path
) -> None:
    """A Gateway whose spec.tls.frontend names a ConfigMap's CA: a client with a
    certificate from that CA is served, one without a certificate or with another CA's
    is refused in the handshake; then a ClientTrafficPolicy makes the certificate
    optional on that listener."""
    export_with_backends(fed, "a", ns, [99], start=True)
    b = fed.env.cluster(CLUSTER_B)
    hostname = "mtls.example.com"
    server_ca, client_ca, rogue_ca = (
        CertificateAuthority(name) for name in ("server-ca", "client-ca", "rogue-ca")
    )
    directory = fed.secret_dir / ns / "mtls-cert"
    directory.mkdir(parents=True)
    crt, key = server_ca.server_for(hostname).write(directory, "tls")
    b.kubectl("create", "secret", "tls", "mtls-cert", f"--cert={crt}", f"--key={key}", "-n", ns)
    (tmp_path / "ca.crt").write_bytes(client_ca.cert_pem)
    b.kubectl("create", "configmap", "client-ca", f"--from-file={tmp_path / 'ca.crt'}", "-n", ns)
    trusted = client_ca.client("alice").write(tmp_path, "alice")
    rogue = rogue_ca.client("mallory").write(tmp_path, "mallory")
    address = gateway_address(fed)
    gateway = gw.gateway(
        ns, "mtls", int(address.rpartition(":")[2]), hostname=hostname, certificate="mtls-cert"
    )
    ref = {"group": "", "kind": "ConfigMap", "name": "client-ca"}
    gateway["spec"]["tls"] = {"frontend": {"default": {"validation": {"caCertificateRefs": [ref]}}}}
    gw.apply(b, gateway, gw.http_route(ns, "api", "mtls", [{"backendRefs": [gw.backend("echo")]}]))
    fed.start_gateway_envoy(CLUSTER_B, ns, "mtls")

    def status(client: tuple[Path, Path] | None) -> int | None:
        return _https_status(address, hostname, server_ca.cert_pem, client)

    wait_until(lambda: status(trusted) == 200, timeout=gw.DEADLINE, what="a trusted client served")
    required = {
        "trusted": status(trusted),
        "no certificate": status(None),
        "other CA": status(rogue),
    }
    gw.apply(
        b,
        envoy_gateway_policy(
            "ClientTrafficPolicy",
            ns,
            "optional-certs",
            "Gateway",
            "mtls",
            tls={"clientValidation": {"optional": True, "caCertificateRefs": [ref]}},
        ),
    )
    wait_until(
        lambda: status(None) == 200,
        timeout=gw.DEADLINE,
        what="a client without a certificate served",
    )
    optional = {"trusted": status(trusted), "no certificate": status(None)}
    print(f"\nclient certificates required: {required}; optional: {optional}")
    assert required == {"trusted": 200, "no certificate": None, "other CA": None}
    assert optional == {"trusted": 200, "no certificate": 200}


def _registry_text(fed: Federation) -> str:
    """Every key and value of the registry, as text (values of any Redis type)."""
    client = fed.redis.admin_client()
    readers: dict[str, Callable[[Any], Any]] = {
        "string": client.get,
        "hash": client.hgetall,
        "stream": client.xrange,
        "set": client.smembers,
        "zset": lambda key: client.zrange(key, 0, -1),
        "list": lambda key: client.lrange(key, 0, -1),
    }
    try:
        found = []
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            found.append(f"{key!r} {readers[kind](key)!r}")
        return "\n".join(found)
    finally:
        client.close()


def test_basic_auth_and_api_keys_from_secrets_that_stay_in_their_cluster(
    fed: Federation, ns: str
) -> None:
    """A SecurityPolicy with ``basicAuth`` (an htpasswd Secret) on one route, one with
    ``apiKeyAuth`` (a Secret of client keys) on another: right credentials pass, wrong
    or missing ones get 401, the user and the client id reach the backend and the key
    does not. The credentials reach the Gateway's Envoy from b's agent only: the
    registry holds none of them. A policy naming a Secret that does not exist is
    refused by name, and its route denies every request."""
    export_with_backends(fed, "a", ns, [100], start=True)
    b = fed.env.cluster(CLUSTER_B)
    address = make_gateway(fed, ns)
    rule = {"backendRefs": [gw.backend("echo")]}
    gw.apply(
        b,
        *(
            gw.http_route(ns, name, "gw", [{**rule, "matches": [gw.prefix(f"/{name}")]}])
            for name in ("basic", "keys", "missing", "open")
        ),
    )
    gw.wait_for_status(address, "/missing", 200)
    password, key = secrets.token_urlsafe(12), secrets.token_urlsafe(24)
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    htpasswd = f"alice:{{SHA}}{digest}\n"
    b.kubectl(
        "create", "secret", "generic", "users", f"--from-literal=.htpasswd={htpasswd}", "-n", ns
    )
    b.kubectl("create", "secret", "generic", "api-keys", f"--from-literal=bob={key}", "-n", ns)
    gw.apply(
        b,
        security_policy(
            ns,
            "basic",
            "HTTPRoute",
            "basic",
            basicAuth={"users": {"name": "users"}, "forwardUsernameHeader": "x-user"},
        ),
        security_policy(
            ns,
            "keys",
            "HTTPRoute",
            "keys",
            apiKeyAuth={
                "credentialRefs": [{"name": "api-keys"}],
                "extractFrom": [{"headers": ["x-api-key"]}],
                "forwardClientIDHeader": "x-client-id",
                "sanitize": True,
            },
        ),
        security_policy(
            ns, "missing", "HTTPRoute", "missing", basicAuth={"users": {"name": "no-such"}}
        ),
    )
    for name in ("basic", "keys"):
        wait_status(fed, ns, name, "True", "Accepted")
    wait_status(fed, ns, "missing", "False", "Invalid")

    def basic(user: str, secret: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{secret}".encode()).decode()
        return {"authorization": f"Basic {token}"}

    right_basic, right_key = basic("alice", password), {"x-api-key": key}
    # The agent's configuration has reached the Envoy once the right credentials pass.
    passed = {
        "/basic": gw.wait_for_status(address, "/basic", 200, headers=right_basic),
        "/keys": gw.wait_for_status(address, "/keys", 200, headers=right_key),
    }
    cases = {
        "/basic alice": ("/basic", right_basic),
        "/basic wrong password": ("/basic", basic("alice", "wrong")),
        "/basic unknown user": ("/basic", basic("mallory", password)),
        "/basic none": ("/basic", {}),
        "/keys bob": ("/keys", right_key),
        "/keys wrong key": ("/keys", {"x-api-key": "not-" + key}),
        "/keys none": ("/keys", {}),
        "/open none": ("/open", {}),
        "/missing alice": ("/missing", right_basic),
    }
    answers = {
        label: gw.request(address, path, headers=headers).status
        for label, (path, headers) in cases.items()
    }
    seen = {path: reply.json()["headers"] for path, reply in passed.items()}
    message = _policy_message(fed, ns, "missing")
    text = fed.metrics(CLUSTER_B)
    served = {
        name: metric(text, f"federation_agent_credential_{name}")
        for name in ("configs", "streams", "nacks_total")
    }
    print(
        f"\nbasic auth and API keys: {answers}; policy 'missing': {message!r}; b's agent: {served}"
    )
    assert answers == {
        "/basic alice": 200,
        "/basic wrong password": 401,
        "/basic unknown user": 401,
        "/basic none": 401,
        "/keys bob": 200,
        "/keys wrong key": 401,
        "/keys none": 401,
        "/open none": 200,
        "/missing alice": 403,
    }
    assert seen["/basic"].get("x-user") == "alice"
    assert seen["/keys"].get("x-client-id") == "bob"
    assert "x-api-key" not in seen["/keys"]
    assert "no-such" in message and "does not exist" in message
    assert served["configs"] >= 2 and served["streams"] >= 1 and served["nacks_total"] == 0
    # Only b's Envoys get b's credentials: cluster a's certificate, claiming b's Gateway
    # or a Gateway of a, gets nothing.
    names = [f"envoy.filters.http.basic_auth/{ns}/basic"]
    gateway = f"{ns}/gw"
    asked = {
        "b for b": _ask_agent_for_credentials(fed, CLUSTER_B, CLUSTER_B, CLUSTER_B, gateway, names),
        "a as b": _ask_agent_for_credentials(fed, CLUSTER_B, "a", CLUSTER_B, gateway, names),
        "a for a": _ask_agent_for_credentials(fed, CLUSTER_B, "a", "a", gateway, names),
    }
    print(f"credential server answers: {asked}")
    assert asked == {
        "b for b": ("OK", 1),
        "a as b": ("PERMISSION_DENIED", 0),
        "a for a": ("NOT_FOUND", 0),
    }
    registry = _registry_text(fed)
    assert "securitypolicy" in registry.lower()  # the policies are there...
    for credential in (password, digest, key):  # ...and none of their credentials
        assert credential not in registry


def _ask_agent_for_credentials(
    fed: Federation, agent: str, certificate: str, node_cluster: str, gateway: str, names: list[str]
) -> tuple[str, int]:
    """Open an ECDS stream to ``agent``'s credential server with ``certificate``'s
    cluster certificate, claiming to be an Envoy of ``node_cluster``'s ``gateway``; the
    gRPC status it ends with (or OK) and how many configurations it got."""
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2
    from envoy.service.extension.v3 import config_discovery_pb2_grpc
    from google.protobuf import struct_pb2

    directory = fed.xds_tls_dir(certificate)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(directory / "ca.crt").read_bytes(),
        private_key=(directory / "tls.key").read_bytes(),
        certificate_chain=(directory / "tls.crt").read_bytes(),
    )
    # The agent's certificate names no host: match what it carries.
    options = [("grpc.ssl_target_name_override", f"federation-agent-{agent}")]
    metadata = struct_pb2.Struct()
    metadata.update({GATEWAY_METADATA: gateway})
    node = base_pb2.Node(id="probe", cluster=node_cluster, metadata=metadata)
    request = discovery_pb2.DiscoveryRequest(
        node=node,
        type_url="type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        resource_names=names,
    )
    with grpc.secure_channel(fed.agent_credentials_address(agent), credentials, options) as ch:
        stub = config_discovery_pb2_grpc.ExtensionConfigDiscoveryServiceStub(ch)
        try:
            for response in stub.StreamExtensionConfigs(iter([request]), timeout=5):
                return "OK", len(response.resources)
        except grpc.RpcError as err:
            return err.code().name, 0
    return "OK", 0


def _policy_message(fed: Federation, ns: str, name: str) -> str:
    obj = gw.get_yaml(fed.env.cluster(CLUSTER_B), "securitypolicy", ns, name)
    for ancestor in (obj.get("status") or {}).get("ancestors") or []:
        if ancestor.get("controllerName") == CONTROLLER_NAME:
            for cond in ancestor.get("conditions") or []:
                if cond.get("type") == "Accepted":
                    return str(cond.get("message"))
    return ""
