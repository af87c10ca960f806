"""What an agent publishes of its cluster's Gateway API objects (agents.gateway)."""

from __future__ import annotations

from typing import Any

from agents.gateway import GatewayAgent, GatewayObjects, desired_records
from federation.registry import gatewayapi as g
from federation.registry import policies as p
from federation.registry.kinds import Kind, RecordRef
from federation.registry.records import LocalService
from federation.translate.gateway.status import CONTROLLER_NAME

GROUP = "gateway.networking.k8s.io"


def meta(name: str, ns: str | None = "shop", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "generation": 2,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if ns is not None:
        out["namespace"] = ns
    out.update(extra)
    return out


def objects() -> GatewayObjects:
    agent = GatewayAgent("b", None, None, None, None)  # type: ignore[arg-type]
    events = [
        (
            "gatewayclasses",
            {"metadata": meta("ours", None), "spec": {"controllerName": CONTROLLER_NAME}},
        ),
        (
            "gatewayclasses",
            {"metadata": meta("theirs", None), "spec": {"controllerName": "x.io/y"}},
        ),
        (
            "gateways",
            {
                "metadata": meta("gw"),
                "spec": {
                    "gatewayClassName": "ours",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                },
            },
        ),
        (
            "gateways",
            {"metadata": meta("other"), "spec": {"gatewayClassName": "theirs", "listeners": []}},
        ),
        (
            "httproutes",
            {
                "metadata": meta("api"),
                "spec": {
                    "parentRefs": [{"group": GROUP, "kind": "Gateway", "name": "gw"}],
                    "rules": [
                        {
                            "backendRefs": [
                                {
                                    "group": "",
                                    "kind": "Service",
                                    "name": "local",
                                    "port": 80,
                                    "weight": 1,
                                },
                                {
                                    "group": "multicluster.x-k8s.io",
                                    "kind": "ServiceImport",
                                    "name": "echo",
                                    "port": 80,
                                },
                                {"name": "external", "port": 80},
                                {"name": "missing", "port": 80},
                            ],
                            "filters": [
                                {
                                    "type": "RequestMirror",
                                    "requestMirror": {"backendRef": {"name": "shadow", "port": 80}},
                                }
                            ],
                            "sessionPersistence": {"sessionName": "ignored"},
                        }
                    ],
                },
            },
        ),
        (
            "referencegrants",
            {
                "metadata": meta("grant"),
                "spec": {
                    "from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "x"}],
                    "to": [{"group": "", "kind": "Service"}],
                },
            },
        ),
        ("httproutes", {"metadata": meta("broken"), "spec": {"rules": "not a list"}}),
    ]
    for plural, body in events:
        agent.on_event(plural, "ADDED", body)
    return agent.objects


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": meta(name), "spec": {"ports": [{"name": "http", "port": 80}], **spec}}


def test_the_cluster_publishes_its_gateways_routes_grants_and_the_services_routes_use() -> None:
    services = {
        ("shop", "local"): service("local"),
        ("shop", "shadow"): service("shadow"),
        ("shop", "external"): service("external", type="ExternalName"),
        ("shop", "unused"): service("unused"),
    }
    slices = {
        ("shop", "local"): {
            "local-1": {
                "metadata": {"name": "local-1"},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": ["10.202.0.5"], "conditions": {"ready": True}}],
            }
        }
    }
    records = desired_records("b", objects(), services, slices, {"shop": {"team": "a"}})
    assert set(records) == {
        RecordRef(Kind.GATEWAY, "shop", "gw"),  # not "other": its class is not ours
        RecordRef(Kind.HTTP_ROUTE, "shop", "api"),  # not "broken": it cannot be read
        RecordRef(Kind.REFERENCE_GRANT, "shop", "grant"),
        RecordRef(Kind.LOCAL_SERVICE, "shop", "local"),
        RecordRef(Kind.LOCAL_SERVICE, "shop", "shadow"),  # a mirror's backend
    }
    route = records[RecordRef(Kind.HTTP_ROUTE, "shop", "api")]
    assert isinstance(route, g.HTTPRouteRecord)
    assert (route.cluster, route.generation, route.namespace_labels) == ("b", 2, (("team", "a"),))
    assert route.spec.rules[0].backend_refs[0] == g.HTTPBackendRef(
        "local", group="", kind="Service", port=80, weight=1
    )
    local = records[RecordRef(Kind.LOCAL_SERVICE, "shop", "local")]
    assert isinstance(local, LocalService)
    assert [e.addresses for s in local.endpoints for e in s.endpoints] == [("10.202.0.5",)]


# --- statuses --------------------------------------------------------------------------------


class FakeKube:
    """Records status writes (the object's API path and the status written)."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(self, api_path: str, status: Any) -> dict[str, Any]:
        self.patches.append((api_path, dict(status)))
        return {}


def _status_agent() -> tuple[GatewayAgent, FakeKube]:
    from agents.status import StatusWriter

    kube = FakeKube()
    agent = GatewayAgent("b", kube, None, StatusWriter(kube), None)  # type: ignore[arg-type]
    for plural, body in [
        (
            "gatewayclasses",
            {"metadata": meta("ours", None), "spec": {"controllerName": CONTROLLER_NAME}},
        ),
        (
            "gateways",
            {
                "metadata": meta("gw"),
                "spec": {
                    "gatewayClassName": "ours",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                },
            },
        ),
        (
            "gateways",
            {
                "metadata": meta("other"),
                "spec": {
                    "gatewayClassName": "theirs",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                },
            },
        ),
    ]:
        agent.on_event(plural, "ADDED", body)
    return agent, kube


def _route_with_old_entries(parent: str) -> dict[str, Any]:
    """An HTTPRoute naming ``parent`` whose status still has our entry for ``gw`` (written
    when it named it) and another controller's for ``other``."""
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "x"}
    return {
        "metadata": meta("api", uid="u1"),
        "spec": {"parentRefs": [{"group": GROUP, "kind": "Gateway", "name": parent}]},
        "status": {
            "parents": [
                {
                    "parentRef": {"group": GROUP, "kind": "Gateway", "name": "gw"},
                    "controllerName": CONTROLLER_NAME,
                    "conditions": [accepted],
                },
                {
                    "parentRef": {"group": GROUP, "kind": "Gateway", "name": "other"},
                    "controllerName": "x.io/y",
                    "conditions": [accepted],
                },
            ]
        },
    }


async def _route_parents(agent: GatewayAgent, kube: FakeKube) -> list[dict[str, Any]] | None:
    agent.published = agent.desired({}, {}, {})
    await agent.write_statuses([])
    written = [s for path, s in kube.patches if "/httproutes/" in path]
    return written[-1]["parents"] if written else None


async def test_our_entry_goes_when_the_route_no_longer_names_our_gateway() -> None:
    agent, kube = _status_agent()
    agent.on_event("httproutes", "ADDED", _route_with_old_entries("other"))
    parents = await _route_parents(agent, kube)
    # Gateway API: entries for parents the controller no longer handles are removed;
    # another controller's entry stays.
    assert parents is not None, "our stale entry was left in place"
    assert [p["controllerName"] for p in parents] == ["x.io/y"]


async def test_our_entry_goes_when_its_gateway_is_deleted() -> None:
    agent, kube = _status_agent()
    agent.on_event("httproutes", "ADDED", _route_with_old_entries("gw"))
    agent.on_event("gateways", "DELETED", {"metadata": meta("gw")})
    parents = await _route_parents(agent, kube)
    assert parents is not None, "our stale entry was left in place"
    assert [p["controllerName"] for p in parents] == ["x.io/y"]


# --- certificate Secrets ---------------------------------------------------------------------


class SecretKube:
    """Lists the given objects by plural and serves Secrets by API path (GET only)."""

    def __init__(self, listing: dict[str, list[dict[str, Any]]]) -> None:
        self.listing = listing
        self.secrets: dict[str, dict[str, Any]] = {}
        self.gets: list[str] = []

    async def list_items(self, path: str, label_selector: str | None = None) -> Any:
        return self.listing.get(path.rsplit("/", 1)[-1], [])

    async def get(self, path: str) -> Any:
        self.gets.append(path)
        return self.secrets.get(path)


def _tls_secret() -> tuple[dict[str, Any], bytes]:
    """A kubernetes.io/tls Secret with a fresh key and certificate, and the key's PEM."""
    import base64
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.example.com")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    crt = cert.public_bytes(serialization.Encoding.PEM)
    data = {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(pem).decode()}
    secret = {
        "metadata": meta("shop-cert", resourceVersion="5"),
        "type": "kubernetes.io/tls",
        "data": data,
    }
    return secret, pem


async def test_a_gateway_record_carries_verdicts_on_its_secrets_never_the_secrets() -> None:
    import asyncio

    import pytest

    from agents import gateway as agent_gateway
    from federation.registry.kinds import decode_record
    from tests.memory_store import MemoryRegistry

    https = {
        "name": "https",
        "port": 443,
        "protocol": "HTTPS",
        "tls": {"certificateRefs": [{"name": "shop-cert"}]},
    }
    kube = SecretKube(
        {
            "gatewayclasses": [
                {"metadata": meta("ours", None), "spec": {"controllerName": CONTROLLER_NAME}}
            ],
            "gateways": [
                {"metadata": meta("gw"), "spec": {"gatewayClassName": "ours", "listeners": [https]}}
            ],
        }
    )
    registry = MemoryRegistry()
    fake: Any = kube
    no_status: Any = None
    agent = GatewayAgent("b", fake, registry.writer("b"), no_status, None, recheck_interval=30.0)
    ref, path = RecordRef(Kind.GATEWAY, "shop", "gw"), "/api/v1/namespaces/shop/secrets/shop-cert"

    # Start-up: the Secrets are read with the listing, so the first full publish has them.
    agent.replace(await agent.list_all())
    assert kube.gets == [path]
    first = agent.desired({}, {}, {})[ref]
    assert isinstance(first, g.GatewayRecord)
    missing = g.CertificateCheck("shop", "shop-cert", False, "Secret shop/shop-cert does not exist")
    assert first.certificate_checks == (missing,)

    # A sync reads them again; while one is unusable, the next sync comes soon.
    loop = asyncio.get_running_loop()
    await agent.publish(agent.desired({}, {}, {}))
    assert agent._recheck is not None
    assert agent._recheck.when() - loop.time() == pytest.approx(
        agent_gateway.RECHECK_FIRST, abs=0.5
    )

    # The Secret is created: the next sync publishes the new verdict, and nothing of it.
    kube.secrets[path], key = _tls_secret()
    await agent.publish(agent.desired({}, {}, {}))
    data = (await registry.reader().snapshot("b")).records[ref.field]
    published = decode_record(Kind.GATEWAY, data)
    assert isinstance(published, g.GatewayRecord)
    assert published.certificate_checks == (g.CertificateCheck("shop", "shop-cert", True),)
    assert (
        b"PRIVATE KEY" not in data
        and kube.secrets[path]["data"]["tls.key"][:32].encode() not in data
    )
    assert key not in data
    assert agent._recheck.when() - loop.time() == pytest.approx(30.0, abs=0.5)


# --- BackendTrafficPolicies ------------------------------------------------------------------


def _policy(name: str, target: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": meta(name, uid=f"uid-{name}"),
        "spec": {"targetRefs": [{"group": GROUP, "kind": "Gateway", "name": target}], **spec},
    }


def test_a_policy_is_published_with_every_field_we_do_not_implement_named() -> None:
    agent = GatewayAgent("b", None, None, None, None)  # type: ignore[arg-type]
    agent.on_event(
        "backendtrafficpolicies",
        "ADDED",
        _policy(
            "btp",
            "gw",
            retry={"numRetries": 3, "numAttemptsPerPriority": 2},
            rateLimit={"global": {"rules": []}},
            compressor=[{"type": "Gzip"}],
            loadBalancer={"type": "RoundRobin", "zoneAware": {"preferLocal": {}}},
        ),
    )
    records = desired_records("b", agent.objects, {}, {}, {})
    policy = records[RecordRef(Kind.BACKEND_TRAFFIC_POLICY, "shop", "btp")]
    assert isinstance(policy, p.BackendTrafficPolicyRecord)
    assert policy.spec.retry == p.Retry(num_retries=3)
    assert policy.spec.load_balancer == p.LoadBalancer("RoundRobin")
    # Each is named by its path, so that the status says what to remove.
    assert policy.unsupported == (
        "spec.compressor",
        "spec.loadBalancer.zoneAware",
        "spec.rateLimit.global",
        "spec.retry.numAttemptsPerPriority",
    )


async def test_policy_status_has_our_ancestor_entries_and_keeps_other_controllers() -> None:
    agent, kube = _status_agent()
    theirs = {
        "ancestorRef": {"group": GROUP, "kind": "Gateway", "name": "other"},
        "controllerName": "x.io/y",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
    }
    stale = {**theirs, "controllerName": CONTROLLER_NAME, "ancestorRef": {"name": "gone"}}
    ok = _policy("ok", "gw", retry={})
    ok["status"] = {"ancestors": [theirs, stale]}
    agent.on_event("backendtrafficpolicies", "ADDED", ok)
    agent.on_event("backendtrafficpolicies", "ADDED", _policy("bad", "gw", requestBuffer={}))
    agent.published = agent.desired({}, {}, {})
    await agent.write_statuses([])
    written = {
        path.rsplit("/", 1)[-1]: status["ancestors"]
        for path, status in kube.patches
        if "/backendtrafficpolicies/" in path
    }
    assert set(written) == {"ok", "bad"}
    assert written["ok"][0] == theirs  # another controller's entry stays; our stale one goes
    [ours] = written["ok"][1:]
    assert ours["ancestorRef"] == {
        "group": GROUP,
        "kind": "Gateway",
        "name": "gw",
        "namespace": "shop",
    }
    assert [(c["type"], c["status"], c["reason"]) for c in ours["conditions"]] == [
        ("Accepted", "True", "Accepted")
    ]
    [refused] = written["bad"]
    [accepted] = refused["conditions"]
    assert (accepted["status"], accepted["reason"]) == ("False", "Invalid")
    assert "spec.requestBuffer" in accepted["message"]


def test_a_security_policy_is_published_with_its_unsupported_fields_named() -> None:
    agent = GatewayAgent("b", None, None, None, None)  # type: ignore[arg-type]
    body = _policy(
        "sp",
        "gw",
        oidc={"provider": {}},
        jwt={"providers": []},
        cors={"allowOrigins": ["https://a.b"]},
    )
    agent.on_event("securitypolicies", "ADDED", body)
    records = desired_records("b", agent.objects, {}, {}, {})
    policy = records[RecordRef(Kind.SECURITY_POLICY, "shop", "sp")]
    assert isinstance(policy, p.SecurityPolicyRecord)
    assert policy.spec.cors == p.SecurityCORS(allow_origins=("https://a.b",))
    assert policy.spec.jwt == p.JWT()
    assert policy.unsupported == ("spec.oidc",)


def test_a_full_publish_carries_the_security_policies_secret_verdicts() -> None:
    """The records a (re)start publishes at once carry the verdicts read while listing,
    so that the hub never sees the policy without them."""
    agent = GatewayAgent("b", None, None, None, None)  # type: ignore[arg-type]
    agent.on_event(
        "securitypolicies", "ADDED", _policy("sp", "gw", basicAuth={"users": {"name": "u"}})
    )
    verdict = (p.SecretCheck("shop", "u", True),)
    records = desired_records("b", agent.objects, {}, {}, {}, secret_checks=lambda r: verdict)
    policy = records[RecordRef(Kind.SECURITY_POLICY, "shop", "sp")]
    assert isinstance(policy, p.SecurityPolicyRecord) and policy.secret_checks == verdict


def test_a_failover_policy_is_published_as_a_record_of_its_own_kind() -> None:
    from federation.registry.failover import ClusterWeight, FailoverPolicyRecord

    agent = GatewayAgent("b", None, None, None, None)  # type: ignore[arg-type]
    target = {"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "web"}
    body = {
        "metadata": meta("prefer", uid="uid-prefer"),
        "spec": {"targetRefs": [target], "weights": [{"cluster": "a", "weight": 3}], "x": 1},
    }
    agent.on_event("failoverpolicies", "ADDED", body)
    records = desired_records("b", agent.objects, {}, {}, {})
    policy = records[RecordRef(Kind.FAILOVER_POLICY, "shop", "prefer")]
    assert isinstance(policy, FailoverPolicyRecord)
    assert policy.spec.weights == (ClusterWeight("a", 3),)
    assert policy.unsupported == ("spec.x",)


def test_the_services_security_policies_authorize_with_are_published() -> None:
    agent = GatewayAgent("b", None, None, None, None)  # type: ignore[arg-type]
    grpc = {"grpc": {"backendRefs": [{"name": "grpc-authz", "port": 9000}]}}
    http = {"http": {"backendRef": {"name": "http-authz", "namespace": "sec", "port": 80}}}
    agent.on_event("securitypolicies", "ADDED", _policy("one", "gw", extAuth=grpc))
    agent.on_event("securitypolicies", "ADDED", _policy("two", "gw", extAuth=http))
    services = {
        ("shop", "grpc-authz"): service("grpc-authz"),
        ("sec", "http-authz"): {**service("http-authz"), "metadata": meta("http-authz", "sec")},
        ("shop", "unused"): service("unused"),
    }
    records = desired_records("b", agent.objects, services, {}, {})
    assert {ref for ref in records if ref.kind == Kind.LOCAL_SERVICE} == {
        RecordRef(Kind.LOCAL_SERVICE, "shop", "grpc-authz"),
        RecordRef(Kind.LOCAL_SERVICE, "sec", "http-authz"),
    }


def test_a_client_traffic_policy_is_published_with_its_unsupported_fields_named() -> None:
    agent = GatewayAgent("b", None, None, None, None)  # type: ignore[arg-type]
    body = _policy(
        "ctp",
        "gw",
        clientIPDetection={"xForwardedFor": {"numTrustedHops": 1}},
        headers={"preserveXRequestID": True},
        enableProxyProtocol=True,
        http3={},
    )
    agent.on_event("clienttrafficpolicies", "ADDED", body)
    records = desired_records("b", agent.objects, {}, {}, {})
    policy = records[RecordRef(Kind.CLIENT_TRAFFIC_POLICY, "shop", "ctp")]
    assert isinstance(policy, p.ClientTrafficPolicyRecord)
    detection = policy.spec.client_ip_detection
    assert detection is not None and detection.x_forwarded_for == p.XForwardedFor(1)
    assert policy.spec.headers == p.ClientHeaders(preserve_x_request_id=True)
    assert policy.spec.enable_proxy_protocol is True
    assert policy.unsupported == ("spec.http3",)


def test_a_security_policys_cors_gets_the_cors_filters_checks() -> None:
    import pytest

    from federation.translate.gateway.inputs import ClusterInputs
    from federation.translate.gateway.policy_settings import PolicyError
    from federation.translate.gateway.security_settings import compile_security

    bad = p.SecurityPolicyRecord(
        "b",
        "shop",
        "sp",
        p.SecurityPolicySpec(cors=p.SecurityCORS(allow_headers=("x token",))),
    )
    with pytest.raises(PolicyError, match=r"spec\.cors\.allowHeaders\[0\]"):
        compile_security(bad, ClusterInputs("b"))
