"""What a SecurityPolicy sets, compiled into IR (:func:`compile_security`), and applied
to the routes it covers (:func:`apply_security`).

Called by :mod:`.policies`, which decides which policy covers which route. Implemented:
``cors`` (as Gateway API's CORS filter: the same IR and Envoy filter; a route's own CORS
filter stays where it has one), ``jwt`` (:mod:`.jwt_settings`), ``extAuth``
(:mod:`.ext_auth_settings`), ``basicAuth`` and ``apiKeyAuth`` (:mod:`.credential_settings`)
and ``authorization`` by client address, request headers, method and JWT claims and
scopes. Every other field (OIDC among them) is refused by name, and
the policy's targets deny every request meanwhile (:data:`DENY_ALL`): a policy that asks
for authentication must never be served without it. Pure.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from federation.registry.gatewayapi import CORS
from federation.registry.policies import SecurityCORS, SecurityPolicyRecord
from federation.translate.gateway.credential_settings import compile_credentials
from federation.translate.gateway.ext_auth_settings import compile_ext_auth
from federation.translate.gateway.filters import FilterError
from federation.translate.gateway.filters import cors as cors_filter
from federation.translate.gateway.inputs import ClusterInputs
from federation.translate.gateway.jwt_settings import compile_jwt, jwt_principal
from federation.translate.gateway.policy_settings import (
    PolicyError,
    duration_seconds,
    refuse_unsupported,
)
from federation.translate.ir import (
    AuthorizationIR,
    AuthorizationRuleIR,
    CorsIR,
    CredentialAuthIR,
    ExtAuthIR,
    HeaderValuesIR,
    JwtIR,
    LocalClusterIR,
    RouteIR,
)

ACTIONS = {"Allow": True, "Deny": False}
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


@dataclass(frozen=True)
class SecuritySettings:
    """What one accepted SecurityPolicy applies to the routes it covers."""

    cors: CorsIR | None = None
    authorization: AuthorizationIR | None = None
    jwt: JwtIR | None = None
    ext_auth: ExtAuthIR | None = None
    #: The cluster of ``ext_auth``'s service when it is a Service of this cluster.
    ext_auth_cluster: LocalClusterIR | None = None
    basic_auth: CredentialAuthIR | None = None
    api_key_auth: CredentialAuthIR | None = None


#: What the targets of a SecurityPolicy that cannot be served get: every request denied.
DENY_ALL = SecuritySettings(authorization=AuthorizationIR(default_allow=False))


def _cors(cors: SecurityCORS | None) -> CorsIR | None:
    """``spec.cors`` through the CORS filter's own checks (origins, methods and headers
    Envoy would refuse are refused here, by path)."""
    if cors is None:
        return None
    as_filter = CORS(
        allow_origins=cors.allow_origins,
        allow_credentials=cors.allow_credentials,
        allow_methods=cors.allow_methods,
        allow_headers=cors.allow_headers,
        expose_headers=cors.expose_headers,
        max_age=duration_seconds(cors.max_age, "spec.cors.maxAge"),
    )
    try:
        return cors_filter(as_filter, "spec.cors")
    except FilterError as err:
        raise PolicyError(str(err)) from None


def _action(value: str, path: str) -> bool:
    if value not in ACTIONS:
        raise PolicyError(f"{path} {value!r} is not Allow or Deny")
    return ACTIONS[value]


def compile_security(policy: SecurityPolicyRecord, inputs: ClusterInputs) -> SecuritySettings:
    """The settings of ``policy`` (its references resolved in ``inputs``); PolicyError
    names the first field it cannot serve."""
    refuse_unsupported(policy.unsupported)
    spec = policy.spec
    jwt = compile_jwt(policy, spec.jwt)
    ext_auth, ext_auth_cluster = compile_ext_auth(policy, spec.ext_auth, inputs)
    basic_auth, api_key_auth = compile_credentials(policy, inputs.grants)
    authorization = None
    if spec.authorization is not None:
        rules = []
        for i, rule in enumerate(spec.authorization.rules):
            path = f"spec.authorization.rules[{i}]"
            principal, operation = rule.principal, rule.operation
            cidrs = () if principal is None else principal.client_cidrs
            for cidr in cidrs:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise PolicyError(
                        f"{path}.principal.clientCIDRs {cidr!r} is not a CIDR"
                    ) from None
            headers = () if principal is None else principal.headers
            for j, header in enumerate(headers):
                if not header.values:
                    raise PolicyError(f"{path}.principal.headers[{j}].values is empty")
            jwt_provider, claims, scopes = jwt_principal(
                None if principal is None else principal.jwt, jwt, f"{path}.principal.jwt"
            )
            methods = () if operation is None else tuple(m.upper() for m in operation.methods)
            bad = [m for m in methods if m not in _METHODS]
            if bad:
                raise PolicyError(f"{path}.operation.methods {bad} are not HTTP methods")
            rules.append(
                AuthorizationRuleIR(
                    allow=_action(rule.action, f"{path}.action"),
                    cidrs=tuple(str(ipaddress.ip_network(c, strict=False)) for c in cidrs),
                    headers=tuple(HeaderValuesIR(h.name.lower(), h.values) for h in headers),
                    methods=methods,
                    jwt_provider=jwt_provider,
                    jwt_claims=claims,
                    jwt_scopes=scopes,
                )
            )
        default = spec.authorization.default_action or "Deny"
        authorization = AuthorizationIR(
            default_allow=_action(default, "spec.authorization.defaultAction"),
            rules=tuple(rules),
        )
    return SecuritySettings(
        cors=_cors(spec.cors),
        authorization=authorization,
        jwt=jwt,
        ext_auth=ext_auth,
        ext_auth_cluster=ext_auth_cluster,
        basic_auth=basic_auth,
        api_key_auth=api_key_auth,
    )


def apply_security(settings: SecuritySettings, ir: RouteIR) -> RouteIR:
    """``ir`` with ``settings``: a route's own CORS filter stays (it is more specific);
    authorization and authentication apply to every route, redirects and fixed answers
    included."""
    changes: dict[str, object] = {}
    if settings.cors is not None and ir.cors is None:
        changes["cors"] = settings.cors
    if settings.authorization is not None:
        changes["authorization"] = settings.authorization
    if settings.jwt is not None:
        changes["jwt"] = settings.jwt
    if settings.ext_auth is not None:
        changes["ext_auth"] = settings.ext_auth
    if settings.basic_auth is not None:
        changes["basic_auth"] = settings.basic_auth
    if settings.api_key_auth is not None:
        changes["api_key_auth"] = settings.api_key_auth
    return dataclasses.replace(ir, **changes) if changes else ir  # type: ignore[arg-type]
