"""The agent's side of basic auth and API keys (``agents.credentials``): verdicts that
say why a Secret cannot be served, configurations Envoy loads, and each Gateway's Envoys
served only the policies of its routes."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from agents.credentials import (
    NOT_SERVED,
    SecretData,
    gateway_resources,
    htpasswd_users,
    policy_credentials,
    read_secret,
)
from federation.registry import gatewayapi as g
from federation.registry import policies as p
from federation.registry.codec import from_json
from federation.translate.ir import (
    CredentialAuthIR,
    GatewayIR,
    ListenerIR,
    MatchIR,
    PathMatchIR,
    RouteIR,
)

BASIC = "envoy.filters.http.basic_auth/shop/auth"
KEYS = "envoy.filters.http.api_key_auth/shop/auth"


def sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def policy(spec: dict[str, Any], name: str = "auth") -> p.SecurityPolicyRecord:
    return p.SecurityPolicyRecord("b", "shop", name, from_json(p.SecurityPolicySpec, spec))


def grant_to(namespace: str, secret: str) -> g.ReferenceGrantRecord:
    spec = {
        "from": [{"group": "gateway.envoyproxy.io", "kind": "SecurityPolicy", "namespace": "shop"}],
        "to": [{"group": "", "kind": "Secret", "name": secret}],
    }
    return g.ReferenceGrantRecord("b", namespace, "grant", from_json(g.ReferenceGrantSpec, spec))


def encoded(data: dict[str, str]) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_htpasswd_lines_are_checked_as_envoy_parses_them() -> None:
    text = f"# users\r\nalice:{sha('a')}\r\n\nbob:{sha('b')}"
    assert htpasswd_users(text) == (None, f"alice:{sha('a')}\nbob:{sha('b')}\n")
    assert htpasswd_users("alice")[0] == ".htpasswd line 1 is not NAME:HASH"
    assert htpasswd_users("alice:$apr1$xyz$abc")[0] == (
        ".htpasswd line 1 (user 'alice'): the password is not a {SHA} hash, the only kind "
        "Envoy checks (htpasswd -s writes it)"
    )
    assert htpasswd_users("alice:{SHA}short")[0] == (
        ".htpasswd line 1 (user 'alice'): the {SHA} hash is not 28 base64 characters"
    )
    twice = f"alice:{sha('a')}\nalice:{sha('b')}"
    assert htpasswd_users(twice)[0] == ".htpasswd line 2 (user 'alice'): the user is named twice"


def test_basic_auth_is_served_with_its_users_and_forwarded_header() -> None:
    basic = policy({"basicAuth": {"users": {"name": "users"}, "forwardUsernameHeader": "x-user"}})
    secrets = {
        ("shop", "users"): read_secret("shop", "users", encoded({".htpasswd": f"al:{sha('x')}"}))
    }
    found = policy_credentials(basic, [], secrets)
    assert found.checks == (p.SecretCheck("shop", "users", usable=True),)
    config = found.configs[BASIC]
    assert config.users.inline_string == f"al:{sha('x')}\n"
    assert config.forward_username_header == "x-user"
    missing = policy_credentials(basic, [], {("shop", "users"): read_secret("shop", "users", None)})
    assert missing.checks == (p.SecretCheck("shop", "users", False, "it does not exist"),)
    assert missing.configs == {}
    no_key = policy_credentials(basic, [], {("shop", "users"): SecretData(data={})})
    assert no_key.checks[0].message == "it has no '.htpasswd' key"


def test_api_keys_merge_secrets_first_client_wins_and_a_shared_key_is_refused() -> None:
    spec = {
        "apiKeyAuth": {
            "credentialRefs": [{"name": "keys"}, {"name": "more", "namespace": "vault"}],
            "extractFrom": [
                {"headers": ["x-api-key"]},
                {
                    "params": ["key"],
                },
            ],
            "forwardClientIDHeader": "x-client",
            "sanitize": True,
        }
    }
    keys = policy(spec)
    grants = [grant_to("vault", "more")]
    secrets = {
        ("shop", "keys"): SecretData(data={"alice": "k-alice", "bob": "k-bob"}),
        ("vault", "more"): SecretData(data={"bob": "k-bob-2", "carol": "k-carol"}),
    }
    found = policy_credentials(keys, grants, secrets)
    assert [c.usable for c in found.checks] == [True, True]
    config = found.configs[KEYS]
    assert [(c.client, c.key) for c in config.credentials] == [
        ("alice", "k-alice"),
        ("bob", "k-bob"),
        ("carol", "k-carol"),
    ]
    assert [s.header or f"?{s.query}" for s in config.key_sources] == ["x-api-key", "?key"]
    assert (config.forwarding.header, config.forwarding.hide_credentials) == ("x-client", True)

    shared = dict(secrets)
    shared[("vault", "more")] = SecretData(data={"dave": "k-alice"})
    refused = policy_credentials(keys, grants, shared)
    assert refused.checks[1] == p.SecretCheck(
        "vault", "more", False, "client 'dave' has the same key as client 'alice'"
    )
    assert refused.configs == {}
    # Without the grant the other namespace's Secret is not read: no verdict, no config.
    ungranted = policy_credentials(keys, [], secrets)
    assert [c.name for c in ungranted.checks] == ["keys"] and ungranted.configs == {}
    empty = policy_credentials(keys, grants, {**secrets, ("shop", "keys"): SecretData(data={})})
    assert empty.checks[0].message == "it holds no API key"


def test_an_agent_that_serves_no_credentials_says_so_without_reading() -> None:
    import asyncio

    from agents.credentials import Credentials

    class NoKube:
        async def get(self, path: str) -> Any:
            raise AssertionError(f"read {path}")

    credentials = Credentials(NoKube())  # type: ignore[arg-type]
    basic = policy({"basicAuth": {"users": {"name": "users"}}})
    asyncio.run(credentials.refresh([basic], [], serving=False))
    assert credentials.checks_for(basic) == (p.SecretCheck("shop", "users", False, NOT_SERVED),)
    assert credentials.configs == {}


def test_a_gateways_envoys_get_only_the_configurations_of_its_routes() -> None:
    def gateway(name: str, *auth: RouteIR) -> GatewayIR:
        from federation.translate.ir import VirtualHostIR

        host = VirtualHostIR(name="vh", domains=("*",), routes=auth)
        return GatewayIR("b", (ListenerIR("gateway/80", 80, (host,)),), namespace="shop", name=name)

    match = MatchIR(PathMatchIR("PathPrefix", "/"))
    route = RouteIR(name="r", match=match, basic_auth=CredentialAuthIR("shop/auth"))
    configs = {
        BASIC: policy_credentials(
            policy({"basicAuth": {"users": {"name": "u"}}}),
            [],
            {("shop", "u"): SecretData(data={".htpasswd": f"a:{sha('a')}"})},
        ).configs[BASIC]
    }
    served = gateway_resources(gateway("gw", route), configs)
    assert [r.name for r in served] == [BASIC]
    assert gateway_resources(gateway("other"), configs) == []


def test_no_users_is_refused_since_envoy_would_keep_the_previous_ones() -> None:
    assert htpasswd_users("")[0] == ".htpasswd holds no user"
    assert htpasswd_users("# everyone removed\n\n")[0] == ".htpasswd holds no user"


def test_only_the_keys_used_must_be_text() -> None:
    raw = {".htpasswd": f"a:{sha('a')}", "logo.png": "\x89PNG"}
    secret = {"data": {k: base64.b64encode(v.encode("latin-1")).decode() for k, v in raw.items()}}
    read = read_secret("shop", "users", secret)
    basic = policy({"basicAuth": {"users": {"name": "users"}}})
    assert policy_credentials(basic, [], {("shop", "users"): read}).checks[0].usable
    keys = policy(
        {"apiKeyAuth": {"credentialRefs": [{"name": "users"}], "extractFrom": [{"headers": ["k"]}]}}
    )
    found = policy_credentials(keys, [], {("shop", "users"): read})
    assert found.checks[0].message == "its key 'logo.png' is not UTF-8 text"
    assert read_secret("shop", "x", {"data": {"k": "%%%"}}).problem == "its key 'k' is not base64"


def test_one_secret_for_users_and_api_keys_is_refused_by_the_first_stage() -> None:
    from federation.translate.gateway.credential_settings import compile_credentials
    from federation.translate.gateway.policy_settings import PolicyError

    both = policy(
        {
            "basicAuth": {"users": {"name": "shared"}},
            "apiKeyAuth": {
                "credentialRefs": [{"name": "shared"}],
                "extractFrom": [{"headers": ["k"]}],
            },
        }
    )
    try:
        compile_credentials(both, [])
    except PolicyError as err:
        assert str(err).startswith("spec.apiKeyAuth.credentialRefs[0]: Secret shop/shared is")
    else:
        raise AssertionError("a Secret used for both was accepted")


def test_the_agent_will_not_run_gateway_envoys_that_cannot_reach_it() -> None:
    import asyncio

    import pytest

    from agents.main import parse_args, start_credential_server
    from federation.errors import FederationError

    args = parse_args(
        ["--credentials-address", "127.0.0.1:0", "--credentials-insecure-plaintext",
         "--gateway-envoy-image", "envoy", "--gateway-bootstrap-image", "f",
         "--gateway-hub-address", "hub:1"]
    )  # fmt: skip
    with pytest.raises(FederationError, match="needs --gateway-agent-address"):
        asyncio.run(start_credential_server(args, "b"))
    args = parse_args(["--credentials-address", "127.0.0.1:0"])
    with pytest.raises(FederationError, match="--credentials-tls-dir"):
        asyncio.run(start_credential_server(args, "b"))
