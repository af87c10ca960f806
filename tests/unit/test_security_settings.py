"""SecurityPolicy (and ClientTrafficPolicy) fields that the golden cases do not show: values
Envoy would refuse (and with them the whole listener) are refused by name instead."""

from __future__ import annotations

from typing import Any

import pytest

from federation.registry import gatewayapi as g
from federation.registry import policies as p
from federation.registry.codec import from_json
from federation.registry.records import LocalService, ServicePort
from federation.translate.gateway.inputs import ClusterInputs
from federation.translate.gateway.policy_settings import PolicyError
from federation.translate.gateway.security_settings import compile_security

INPUTS = ClusterInputs(
    "b",
    local_services={
        ("shop", "authz"): LocalService("b", "shop", "authz", (ServicePort("http", "TCP", 80),))
    },
)


def _policy(**spec: Any) -> p.SecurityPolicyRecord:
    return p.SecurityPolicyRecord("b", "shop", "sp", from_json(p.SecurityPolicySpec, spec))


def _ext_auth(**fields: Any) -> p.SecurityPolicyRecord:
    return _policy(extAuth={"http": {"backendRefs": [{"name": "authz", "port": 80}]}, **fields})


def test_an_authorization_service_is_resolved_with_its_settings() -> None:
    settings = compile_security(
        _ext_auth(
            statusOnError=503,
            bodyToExtAuth={"maxRequestBytes": 1024},
            contextExtensions=[{"name": "tenant", "type": "Value", "value": "shop"}],
        ),
        INPUTS,
    )
    assert settings.ext_auth is not None
    assert (settings.ext_auth.cluster, settings.ext_auth.status_on_error) == (
        "local/shop/authz/80",
        503,
    )
    assert settings.ext_auth.context_extensions == (("tenant", "shop"),)
    assert settings.ext_auth_cluster is not None and settings.ext_auth_cluster.service == "authz"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"statusOnError": 299}, r"spec\.extAuth\.statusOnError 299"),
        (
            {"bodyToExtAuth": {"maxRequestBytes": 0}},
            r"spec\.extAuth\.bodyToExtAuth\.maxRequestBytes",
        ),
        (
            {"contextExtensions": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]},
            r"spec\.extAuth\.contextExtensions\[1\]\.name 'a' is repeated",
        ),
        ({"timeout": "soon"}, r"spec\.extAuth\.timeout"),
    ],
)
def test_values_envoy_would_refuse_are_refused_by_name(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(PolicyError, match=named):
        compile_security(_ext_auth(**fields), INPUTS)


def test_a_deprecated_backend_ref_is_named_as_such() -> None:
    policy = _policy(extAuth={"grpc": {"backendRef": {"name": "missing", "port": 80}}})
    with pytest.raises(PolicyError, match=r"spec\.extAuth\.grpc\.backendRef: Service shop/missing"):
        compile_security(policy, INPUTS)


@pytest.mark.parametrize(
    ("provider", "named"),
    [
        (
            {"remoteJWKS": {"uri": "https://"}},
            r"remoteJWKS\.uri 'https://' is not an http or https URI",
        ),
        ({"localJWKS": {"type": "Inline", "inline": "{}"}}, r"localJWKS\.inline is not a JWKS"),
        ({"localJWKS": {"type": "ValueRef"}}, r"localJWKS\.type 'ValueRef'"),
        (
            {
                "remoteJWKS": {"uri": "https://idp.example/jwks"},
                "claimToHeaders": [
                    {"header": "x-a", "claim": "a"},
                    {"header": "X-A", "claim": "b"},
                ],
            },
            r"claimToHeaders\[1\]\.header 'X-A' is repeated",
        ),
        (
            {"remoteJWKS": {"uri": "https://idp.example/jwks"}, "recomputeRoute": True},
            r"recomputeRoute needs",
        ),
    ],
)
def test_jwt_providers_envoy_could_not_serve_are_refused_by_name(
    provider: dict[str, Any], named: str
) -> None:
    with pytest.raises(PolicyError, match=rf"spec\.jwt\.providers\[0\]\.?.*{named}"):
        compile_security(_policy(jwt={"providers": [{"name": "idp", **provider}]}), INPUTS)


def test_a_client_ip_header_and_x_forwarded_for_together_are_refused() -> None:
    from federation.translate.gateway.client_settings import compile_client

    spec = from_json(
        p.ClientTrafficPolicySpec,
        {
            "clientIPDetection": {
                "xForwardedFor": {"numTrustedHops": 1},
                "customHeader": {"name": "x-ip"},
            }
        },
    )
    with pytest.raises(PolicyError, match=r"customHeader and xForwardedFor cannot both"):
        compile_client(p.ClientTrafficPolicyRecord("b", "shop", "ctp", spec))
    bad = from_json(
        p.ClientTrafficPolicySpec, {"clientIPDetection": {"customHeader": {"name": "x ip"}}}
    )
    with pytest.raises(PolicyError, match=r"customHeader\.name 'x ip'"):
        compile_client(p.ClientTrafficPolicyRecord("b", "shop", "ctp", bad))


def _client_validation(refs: list[dict[str, Any]], **read: Any) -> p.ClientTrafficPolicyRecord:
    spec = from_json(
        p.ClientTrafficPolicySpec, {"tls": {"clientValidation": {"caCertificateRefs": refs}}}
    )
    cas = tuple(from_json(g.CACertificate, c) for c in read.get("cas", []))
    return p.ClientTrafficPolicyRecord("b", "shop", "ctp", spec, ca_certificates=cas)


@pytest.mark.parametrize(
    ("refs", "cas", "named"),
    [
        ([{"kind": "Secret", "name": "ca"}], [], r"caCertificateRefs\[0\]: only ConfigMaps"),
        (
            [{"name": "ca", "namespace": "other"}],
            [],
            r"caCertificateRefs\[0\]: a ConfigMap of another",
        ),
        ([{"name": "ca"}], [], r"ConfigMap shop/ca is not read yet"),
        (
            [{"name": "ca"}],
            [{"namespace": "shop", "name": "ca", "message": "ConfigMap shop/ca has no ca.crt"}],
            r"caCertificateRefs\[0\]: ConfigMap shop/ca has no ca\.crt",
        ),
    ],
)
def test_a_client_traffic_policys_client_validation_is_refused_by_name(
    refs: list[dict[str, Any]], cas: list[dict[str, Any]], named: str
) -> None:
    from federation.translate.gateway.client_settings import compile_client

    with pytest.raises(PolicyError, match=rf"spec\.tls\.clientValidation\..*{named}"):
        compile_client(_client_validation(refs, cas=cas))
