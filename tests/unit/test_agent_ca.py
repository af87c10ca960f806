"""The agent's reading of client CA ConfigMaps (``agents.ca_certificates``): only
``ca.crt``, and only when it holds PEM certificates."""

from __future__ import annotations

from agents.ca_certificates import read_ca
from federation.pki import CertificateAuthority


def test_a_config_map_gives_its_ca_certificates_and_nothing_else() -> None:
    pem = CertificateAuthority.create("client-ca").cert_pem.decode()
    found = read_ca("shop", "ca", {"data": {"ca.crt": pem, "key.crt": "PRIVATE"}})
    assert (found.pem, found.message) == (pem, None)


def test_what_cannot_be_used_says_why() -> None:
    assert read_ca("shop", "ca", None).message == "ConfigMap shop/ca does not exist"
    assert read_ca("shop", "ca", {"data": {}}).message == "ConfigMap shop/ca has no ca.crt"
    bad = read_ca("shop", "ca", {"data": {"ca.crt": "not a certificate"}})
    assert bad.pem is None and bad.message == (
        "ConfigMap shop/ca: ca.crt holds no PEM certificate that parses"
    )


def test_the_config_maps_read_are_those_gateways_and_client_policies_may_use() -> None:
    from agents.ca_certificates import CACertificates
    from federation.registry import gatewayapi as g
    from federation.registry import policies as p
    from federation.registry.codec import from_json

    def ref(name: str, **extra: str) -> dict[str, str]:
        return {"group": "", "kind": "ConfigMap", "name": name, **extra}

    gateway = g.GatewayRecord(
        "b",
        "shop",
        "gw",
        from_json(
            g.GatewaySpec,
            {
                "gatewayClassName": "federation",
                "tls": {
                    "frontend": {
                        "default": {"validation": {"caCertificateRefs": [ref("ca")]}},
                        "perPort": [
                            {
                                "port": 8443,
                                "tls": {
                                    "validation": {
                                        "caCertificateRefs": [
                                            ref("shared", namespace="pki"),
                                            ref("secret", namespace="vault"),
                                            {"kind": "Secret", "name": "not-a-config-map"},
                                        ]
                                    }
                                },
                            }
                        ],
                    }
                },
            },
        ),
    )
    grant = g.ReferenceGrantRecord(
        "b",
        "pki",
        "shared",
        from_json(
            g.ReferenceGrantSpec,
            {
                "from": [
                    {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "shop"}
                ],
                "to": [{"group": "", "kind": "ConfigMap"}],
            },
        ),
    )
    policy = p.ClientTrafficPolicyRecord(
        "b",
        "edge",
        "ctp",
        from_json(
            p.ClientTrafficPolicySpec,
            {
                "tls": {
                    "clientValidation": {
                        "caCertificateRefs": [ref("edge-ca"), ref("x", namespace="y")]
                    }
                }
            },
        ),
    )
    # Not vault's (no grant), not the Secret, not another namespace's for a policy.
    assert CACertificates(None).wanted([gateway], [grant], [policy]) == [  # type: ignore[arg-type]
        ("edge", "edge-ca"),
        ("pki", "shared"),
        ("shop", "ca"),
    ]


def test_the_insecure_frontend_condition_names_where_clients_are_let_in() -> None:
    from federation.registry import gatewayapi as g
    from federation.registry.codec import from_json
    from federation.translate.gateway.frontend_tls import insecure_ports

    def where(frontend: dict[str, object]) -> str:
        spec = {"gatewayClassName": "federation", "tls": {"frontend": frontend}}
        return insecure_ports(g.GatewayRecord("b", "shop", "gw", from_json(g.GatewaySpec, spec)))

    fallback = {
        "validation": {"caCertificateRefs": [{"name": "ca"}], "mode": "AllowInsecureFallback"}
    }
    strict = {"validation": {"caCertificateRefs": [{"name": "ca"}]}}
    assert where({"default": strict}) == ""
    assert where({"default": fallback}) == "every port"
    assert where({"default": fallback, "perPort": [{"port": 443, "tls": strict}]}) == (
        "every port but 443"
    )
    assert where({"default": strict, "perPort": [{"port": 9443, "tls": fallback}]}) == "port 9443"
