"""A SecurityPolicy's ``basicAuth`` and ``apiKeyAuth`` compiled into IR: the Secrets that
hold the credentials checked, and nothing of their content.

Called by :mod:`.security_settings`; the agent uses :func:`credential_secrets` to know
which Secrets to read. Credentials never leave their cluster: the registry holds only the
agent's verdict on each Secret (:class:`~federation.registry.policies.SecretCheck`), the
hub's configuration names only the policy (an Envoy filter
``envoy.filters.http.basic_auth/<namespace>/<policy>`` whose configuration is discovered),
and the Envoys of the policy's Gateways get that configuration, users or keys included,
from their own cluster's agent (:mod:`agents.credentials`).

A policy is served when every Secret it names is a core Secret, in its namespace or in
one whose ReferenceGrant lets SecurityPolicies of its namespace refer to it, and the agent
found it usable (a ``.htpasswd`` key Envoy parses; API keys that are not empty and not
shared by two clients). Otherwise PolicyError names the Secret and why, and the policy
fails closed like any other it cannot serve. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from federation.registry.gatewayapi import ReferenceGrantRecord, SecretObjectReference
from federation.registry.policies import (
    ENVOY_GATEWAY_GROUP,
    APIKeyAuth,
    BasicAuth,
    SecretCheck,
    SecurityPolicyRecord,
)
from federation.translate.gateway.envoy_limits import header_name
from federation.translate.gateway.policy_settings import PolicyError
from federation.translate.gateway.refs import CORE_GROUP, granted
from federation.translate.ir import CredentialAuthIR

SECURITY_POLICY = "SecurityPolicy"
SECRET = "Secret"


@dataclass(frozen=True)
class SecretRef:
    """A Secret a policy names for credentials: the field that names it, and whether the
    policy may use it (a core Secret, of its namespace or granted to it)."""

    field: str
    namespace: str
    name: str
    #: Why the policy may not use it (None: it may).
    problem: str | None = None


def _ref(
    policy: SecurityPolicyRecord,
    ref: SecretObjectReference,
    field: str,
    grants: Iterable[ReferenceGrantRecord],
) -> SecretRef:
    group = CORE_GROUP if ref.group is None else ref.group
    kind = SECRET if ref.kind is None else ref.kind
    namespace = ref.namespace or policy.namespace
    problem = None
    if (group, kind) != (CORE_GROUP, SECRET):
        problem = f"{group or 'core'}/{kind} {ref.name} is not a Secret"
    elif namespace != policy.namespace and not granted(
        grants,
        from_group=ENVOY_GATEWAY_GROUP,
        from_kind=SECURITY_POLICY,
        from_namespace=policy.namespace,
        to_group=CORE_GROUP,
        to_kind=SECRET,
        to_namespace=namespace,
        to_name=ref.name,
    ):
        problem = (
            f"Secret {namespace}/{ref.name} is in another namespace and no ReferenceGrant "
            f"in {namespace} allows SecurityPolicies of {policy.namespace} to refer to it"
        )
    return SecretRef(field, namespace, ref.name, problem)


def credential_secrets(
    policy: SecurityPolicyRecord, grants: Sequence[ReferenceGrantRecord]
) -> tuple[tuple[SecretRef, ...], tuple[SecretRef, ...]]:
    """The Secrets of ``policy``'s ``basicAuth`` and of its ``apiKeyAuth``, in order."""
    spec = policy.spec
    basic: tuple[SecretRef, ...] = ()
    if spec.basic_auth is not None:
        basic = (_ref(policy, spec.basic_auth.users, "spec.basicAuth.users", grants),)
    keys: tuple[SecretRef, ...] = ()
    if spec.api_key_auth is not None:
        keys = tuple(
            _ref(policy, ref, f"spec.apiKeyAuth.credentialRefs[{i}]", grants)
            for i, ref in enumerate(spec.api_key_auth.credential_refs)
        )
    return basic, keys


def _checked(refs: tuple[SecretRef, ...], checks: tuple[SecretCheck, ...]) -> None:
    verdicts = {(c.namespace, c.name): c for c in checks}
    for ref in refs:
        if ref.problem is not None:
            raise PolicyError(f"{ref.field}: {ref.problem}")
        check = verdicts.get((ref.namespace, ref.name))
        if check is None:
            raise PolicyError(
                f"{ref.field}: Secret {ref.namespace}/{ref.name} has not been read by the "
                "cluster's agent yet"
            )
        if not check.usable:
            raise PolicyError(f"{ref.field}: Secret {ref.namespace}/{ref.name}: {check.message}")


def _header(value: str | None, path: str) -> None:
    if value is not None and (problem := header_name(value)) is not None:
        raise PolicyError(f"{path} {value!r} {problem}")


def _basic(basic: BasicAuth) -> None:
    _header(basic.forward_username_header, "spec.basicAuth.forwardUsernameHeader")


def _api_keys(keys: APIKeyAuth) -> None:
    if not keys.credential_refs:
        raise PolicyError("spec.apiKeyAuth.credentialRefs is empty")
    if not keys.extract_from:
        raise PolicyError("spec.apiKeyAuth.extractFrom is empty")
    for i, source in enumerate(keys.extract_from):
        path = f"spec.apiKeyAuth.extractFrom[{i}]"
        lists = [n for n in (source.headers, source.params, source.cookies) if n]
        if len(lists) != 1:
            raise PolicyError(f"{path}: exactly one of headers, params and cookies must be given")
        for j, name in enumerate(source.headers):
            _header(name, f"{path}.headers[{j}]")
        for kind, names in (("params", source.params), ("cookies", source.cookies)):
            if any(not n for n in names):
                raise PolicyError(f"{path}.{kind} has an empty name")
    _header(keys.forward_client_id_header, "spec.apiKeyAuth.forwardClientIDHeader")


def compile_credentials(
    policy: SecurityPolicyRecord, grants: Sequence[ReferenceGrantRecord]
) -> tuple[CredentialAuthIR | None, CredentialAuthIR | None]:
    """``policy``'s basic auth and API key authentication (None: it sets none);
    PolicyError names the first field or Secret it cannot serve."""
    spec = policy.spec
    basic_refs, key_refs = credential_secrets(policy, grants)
    users = {(r.namespace, r.name) for r in basic_refs}
    for ref in key_refs:
        if (ref.namespace, ref.name) in users:
            raise PolicyError(
                f"{ref.field}: Secret {ref.namespace}/{ref.name} is spec.basicAuth.users too; "
                "a Secret holds users or API keys, not both"
            )
    name = f"{policy.namespace}/{policy.name}"
    basic = keys = None
    if spec.basic_auth is not None:
        _basic(spec.basic_auth)
        _checked(basic_refs, policy.secret_checks)
        basic = CredentialAuthIR(name)
    if spec.api_key_auth is not None:
        _api_keys(spec.api_key_auth)
        _checked(key_refs, policy.secret_checks)
        keys = CredentialAuthIR(name)
    return basic, keys
