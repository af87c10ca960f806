"""A SecurityPolicy's ``jwt``, and the JWT principals of its authorization rules, compiled
into IR.

Called by :mod:`.security_settings`. Envoy Gateway's JWT providers map onto Envoy's
``jwt_authn`` providers one to one: the issuer and audiences to check, where the keys are
(a remote JWKS fetched through a cluster built for its URI, or an inline local JWKS), the
claims to copy into request headers, and where the token is read from. A provider is named
``<namespace>/<policy>/<provider>`` in the filter, so that two policies' providers of the
same name never meet; the payload it verifies is left in the request's metadata under the
provider's own name, where authorization rules that name that provider read claims and
scopes. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from federation.registry.policies import (
    JWT,
    JWTPrincipal,
    JWTProvider,
    RemoteJWKS,
    SecurityPolicyRecord,
)
from federation.translate.gateway.envoy_limits import header_name
from federation.translate.gateway.policy_settings import PolicyError, duration_ms_or_none
from federation.translate.ir import JwtClaimIR, JwtIR, JwtProviderIR, RemoteJwksIR

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: How long fetched keys are kept unless ``cacheDuration`` says otherwise (Envoy
#: Gateway's default, which its CRD fills in).
DEFAULT_CACHE_MS = 300_000
_CLAIM_TYPES = {None: False, "String": False, "StringArray": True}


def remote_jwks(jwks: RemoteJWKS, path: str) -> RemoteJwksIR:
    """The cluster a remote JWKS is fetched through: one per scheme, host and port,
    shared by every provider that names them."""
    try:
        parts = urlsplit(jwks.uri)
        port = parts.port
    except ValueError as err:
        raise PolicyError(f"{path}.uri {jwks.uri!r} is not a URI: {err}") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise PolicyError(f"{path}.uri {jwks.uri!r} is not an http or https URI with a host")
    host = parts.hostname
    port = port or _DEFAULT_PORTS[parts.scheme]
    cache = duration_ms_or_none(jwks.cache_duration, f"{path}.cacheDuration")
    refetch = duration_ms_or_none(jwks.failed_refetch_duration, f"{path}.failedRefetchDuration")
    return RemoteJwksIR(
        uri=jwks.uri,
        cluster=f"jwks/{parts.scheme}/{host}/{port}",
        host=host,
        port=port,
        tls=parts.scheme == "https",
        cache_ms=cache or DEFAULT_CACHE_MS,
        refetch_ms=refetch or None,
    )


def _local_jwks(inline: str | None, kind: str | None, path: str) -> str:
    if kind not in (None, "Inline") or inline is None:
        raise PolicyError(f"{path}.type {kind!r}: only an Inline JWKS is supported")
    try:
        doc = json.loads(inline)
    except ValueError as err:
        raise PolicyError(f"{path}.inline is not JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise PolicyError(f'{path}.inline is not a JWKS: it needs a non-empty "keys" list')
    return inline


def _header(name: str, path: str) -> str:
    problem = header_name(name)
    if problem is not None:
        raise PolicyError(f"{path} {name!r} {problem}")
    return name


def _pairs(pairs: Iterable[tuple[str, str]], path: str, key: str) -> tuple[tuple[str, str], ...]:
    """(header, value) pairs at ``path``, each header a valid name, and given once."""
    out: dict[str, str] = {}
    for i, (name, value) in enumerate(pairs):
        where = f"{path}[{i}].{key}"
        _header(name, where)
        if name.lower() in (n.lower() for n in out):
            raise PolicyError(f"{where} {name!r} is repeated")
        out[name] = value
    return tuple(out.items())


def _provider(policy: str, provider: JWTProvider, path: str) -> JwtProviderIR:
    if (provider.remote_jwks is None) == (provider.local_jwks is None):
        raise PolicyError(f"{path}: exactly one of remoteJWKS and localJWKS must be given")
    remote = local = None
    if provider.remote_jwks is not None:
        remote = remote_jwks(provider.remote_jwks, f"{path}.remoteJWKS")
    else:
        assert provider.local_jwks is not None
        jwks = provider.local_jwks
        local = _local_jwks(jwks.inline, jwks.type, f"{path}.localJWKS")
    claims = _pairs(
        ((c.header, c.claim) for c in provider.claim_to_headers), f"{path}.claimToHeaders", "header"
    )
    if provider.recompute_route and not claims:
        raise PolicyError(f"{path}.recomputeRoute needs claimToHeaders")
    extract = provider.extract_from
    headers: tuple[tuple[str, str], ...] = ()
    if extract is not None:
        headers = _pairs(
            ((h.name, h.value_prefix or "") for h in extract.headers),
            f"{path}.extractFrom.headers",
            "name",
        )
    return JwtProviderIR(
        name=f"{policy}/{provider.name}",
        payload_key=provider.name,
        issuer=provider.issuer or "",
        audiences=provider.audiences,
        remote_jwks=remote,
        local_jwks=local,
        claim_to_headers=claims,
        recompute_route=bool(provider.recompute_route),
        from_headers=headers,
        from_cookies=() if extract is None else extract.cookies,
        from_params=() if extract is None else extract.params,
    )


def compile_jwt(policy: SecurityPolicyRecord, jwt: JWT | None) -> JwtIR | None:
    """``spec.jwt`` of ``policy``; PolicyError names the first field it cannot serve."""
    if jwt is None:
        return None
    if not jwt.providers:
        raise PolicyError("spec.jwt.providers is empty")
    name = f"{policy.namespace}/{policy.name}"
    seen: set[str] = set()
    providers = []
    for i, provider in enumerate(jwt.providers):
        if provider.name in seen:
            raise PolicyError(f"spec.jwt.providers[{i}].name {provider.name!r} is repeated")
        seen.add(provider.name)
        providers.append(_provider(name, provider, f"spec.jwt.providers[{i}]"))
    return JwtIR(requirement=name, providers=tuple(providers), optional=bool(jwt.optional))


def jwt_principal(
    principal: JWTPrincipal | None, jwt: JwtIR | None, path: str
) -> tuple[str | None, tuple[JwtClaimIR, ...], tuple[str, ...]]:
    """(payload key, claims, scopes) of a rule's ``principal.jwt`` at ``path``; the
    provider must be one of the same policy's ``jwt`` providers."""
    if principal is None:
        return None, (), ()
    known = () if jwt is None else tuple(p.payload_key for p in jwt.providers)
    if principal.provider not in known:
        raise PolicyError(
            f"{path}.provider {principal.provider!r} is not a provider of this policy's jwt"
        )
    if not principal.claims and not principal.scopes:
        raise PolicyError(f"{path} needs claims or scopes")
    claims = []
    for i, claim in enumerate(principal.claims):
        where = f"{path}.claims[{i}]"
        if claim.value_type not in _CLAIM_TYPES:
            raise PolicyError(
                f"{where}.valueType {claim.value_type!r} is not String or StringArray"
            )
        if not claim.values:
            raise PolicyError(f"{where}.values is empty")
        keys = tuple(claim.name.split("."))
        if not all(keys):
            raise PolicyError(f"{where}.name {claim.name!r} has an empty part")
        claims.append(JwtClaimIR(keys, claim.values, array=_CLAIM_TYPES[claim.value_type]))
    return principal.provider, tuple(claims), principal.scopes
