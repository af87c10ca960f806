"""Typed registry records of the Envoy Gateway policies an agent publishes.

Envoy Gateway's policy API (``gateway.envoyproxy.io/v1alpha1``) is what teams attach to
Gateways and routes for retries, timeouts, circuit breakers and load balancing. An agent
publishes its cluster's BackendTrafficPolicies as they are written, so that a team's
existing YAML works unchanged; the first translation stage decides what each one applies
to (:mod:`federation.translate.gateway.policies`).

The specs mirror Envoy Gateway v1.9.1 field for field, as :mod:`.gatewayapi` mirrors
Gateway API (``spec.circuitBreaker.maxPendingRequests`` is
``spec.circuit_breaker.max_pending_requests`` here), but only the fields this project
implements are kept. Every other field the object sets is named in the record's
``unsupported`` (``spec.rateLimit``, ``spec.loadBalancer.zoneAware``), so that the policy
is refused by name (``Accepted=False``) instead of applying only part of what it says.
Durations and enumerations stay strings: a value this version cannot serve is reported on
the policy's status, and the record still decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from federation.registry.codec import JSON_NAME
from federation.registry.gatewayapi import (
    BackendObjectReference,
    CACertificate,
    LabelSelectorRequirement,
    SecretObjectReference,
)

#: Envoy Gateway's API group.
ENVOY_GATEWAY_GROUP = "gateway.envoyproxy.io"


@dataclass(frozen=True)
class PolicyTargetReference:
    """``targetRefs[]`` (Gateway API's LocalPolicyTargetReferenceWithSectionName): an
    object of the policy's own namespace, and optionally one section of it (a Gateway's
    listener, a route's rule, by name)."""

    group: str
    kind: str
    name: str
    section_name: str | None = None


@dataclass(frozen=True)
class TargetSelector:
    """``targetSelectors[]``: every object of ``kind`` in the policy's namespace whose
    labels match (Kubernetes label selector semantics). Selecting other namespaces
    (``namespaces``) is not implemented."""

    kind: str
    group: str | None = None
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


@dataclass(frozen=True)
class BackOff:
    base_interval: str | None = None
    max_interval: str | None = None


@dataclass(frozen=True)
class PerRetry:
    timeout: str | None = None
    back_off: BackOff | None = None


@dataclass(frozen=True)
class RetryOn:
    triggers: tuple[str, ...] = ()
    http_status_codes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Retry:
    num_retries: int | None = None
    retry_on: RetryOn | None = None
    per_retry: PerRetry | None = None


@dataclass(frozen=True)
class TCPTimeout:
    connect_timeout: str | None = None


@dataclass(frozen=True)
class HTTPTimeout:
    request_timeout: str | None = None
    connection_idle_timeout: str | None = None
    max_connection_duration: str | None = None


@dataclass(frozen=True)
class Timeout:
    tcp: TCPTimeout | None = None
    http: HTTPTimeout | None = None


@dataclass(frozen=True)
class CircuitBreaker:
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_parallel_requests: int | None = None
    max_parallel_retries: int | None = None
    max_requests_per_connection: int | None = None


@dataclass(frozen=True)
class HashHeader:
    name: str


@dataclass(frozen=True)
class HashCookie:
    name: str
    ttl: str | None = None


@dataclass(frozen=True)
class ConsistentHash:
    #: ``SourceIP``, ``Header`` or ``Cookie``.
    type: str
    header: HashHeader | None = None
    cookie: HashCookie | None = None
    table_size: int | None = None


@dataclass(frozen=True)
class SlowStart:
    window: str | None = None


@dataclass(frozen=True)
class LoadBalancer:
    #: ``RoundRobin``, ``LeastRequest``, ``Random`` or ``ConsistentHash``.
    type: str
    consistent_hash: ConsistentHash | None = None
    slow_start: SlowStart | None = None


@dataclass(frozen=True)
class HealthCheckPayload:
    #: ``Text`` (only this is implemented) or ``Binary``.
    type: str
    text: str | None = None


@dataclass(frozen=True)
class HTTPActiveHealthChecker:
    path: str
    hostname: str | None = None
    method: str | None = None
    expected_statuses: tuple[int, ...] = ()
    expected_response: HealthCheckPayload | None = None


@dataclass(frozen=True)
class TCPActiveHealthChecker:
    send: HealthCheckPayload | None = None
    receive: HealthCheckPayload | None = None


@dataclass(frozen=True)
class ActiveHealthCheck:
    #: ``HTTP`` or ``TCP``.
    type: str
    timeout: str | None = None
    interval: str | None = None
    unhealthy_threshold: int | None = None
    healthy_threshold: int | None = None
    http: HTTPActiveHealthChecker | None = None
    tcp: TCPActiveHealthChecker | None = None


@dataclass(frozen=True)
class PassiveHealthCheck:
    split_external_local_origin_errors: bool | None = None
    interval: str | None = None
    consecutive_local_origin_failures: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_5xx_errors: int | None = field(
        default=None, metadata={JSON_NAME: "consecutive5XxErrors"}
    )
    base_ejection_time: str | None = None
    max_ejection_percent: int | None = None
    failure_percentage_threshold: int | None = None
    always_eject_one_endpoint: bool | None = None


@dataclass(frozen=True)
class HealthCheck:
    active: ActiveHealthCheck | None = None
    passive: PassiveHealthCheck | None = None
    panic_threshold: int | None = None


@dataclass(frozen=True)
class BackendMetrics:
    """``spec.telemetry.metrics``: ``routeStatName``, the pattern of the Envoy stat
    prefix of the routes under the policy (per-route statistics, off by default)."""

    route_stat_name: str | None = None


@dataclass(frozen=True)
class BackendTelemetry:
    """``spec.telemetry``: ``metrics`` only (``tracing`` is refused by name)."""

    metrics: BackendMetrics | None = None


@dataclass(frozen=True)
class TCPKeepalive:
    probes: int | None = None
    idle_time: str | None = None
    interval: str | None = None


@dataclass(frozen=True)
class FaultInjectionDelay:
    fixed_delay: str
    percentage: float | None = None


@dataclass(frozen=True)
class FaultInjectionAbort:
    http_status: int | None = None
    grpc_status: int | None = None
    percentage: float | None = None


@dataclass(frozen=True)
class FaultInjection:
    delay: FaultInjectionDelay | None = None
    abort: FaultInjectionAbort | None = None


@dataclass(frozen=True)
class RateLimitHeaderMatch:
    name: str
    #: ``Exact`` (the default) or ``RegularExpression``.
    type: str | None = None
    value: str | None = None
    invert: bool | None = None


@dataclass(frozen=True)
class RateLimitMethodMatch:
    value: str
    invert: bool | None = None


@dataclass(frozen=True)
class RateLimitPathMatch:
    value: str
    #: ``PathPrefix`` (the default), ``Exact`` or ``RegularExpression``.
    type: str | None = None
    invert: bool | None = None


@dataclass(frozen=True)
class RateLimitSourceMatch:
    value: str
    #: ``Exact`` (the default).
    type: str | None = None
    invert: bool | None = None


@dataclass(frozen=True)
class RateLimitSelectCondition:
    headers: tuple[RateLimitHeaderMatch, ...] = ()
    methods: tuple[RateLimitMethodMatch, ...] = ()
    path: RateLimitPathMatch | None = None
    source_cidr: RateLimitSourceMatch | None = field(
        default=None, metadata={JSON_NAME: "sourceCIDR"}
    )


@dataclass(frozen=True)
class RateLimitValue:
    requests: int
    #: ``Second``, ``Minute``, ``Hour``, ``Day``, ``Week``, ``Month`` or ``Year``.
    unit: str


@dataclass(frozen=True)
class RateLimitRule:
    limit: RateLimitValue
    client_selectors: tuple[RateLimitSelectCondition, ...] = ()


@dataclass(frozen=True)
class LocalRateLimit:
    rules: tuple[RateLimitRule, ...] = ()


@dataclass(frozen=True)
class RateLimitSpec:
    #: Deprecated in Envoy Gateway: ``Local`` (``Global`` is not implemented).
    type: str | None = None
    local: LocalRateLimit | None = None


@dataclass(frozen=True)
class PolicyTargets:
    """What every Envoy Gateway policy's spec starts with (``PolicyTargetReferences``)."""

    #: The deprecated single form of ``targetRefs``; both may be given.
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] = ()
    target_selectors: tuple[TargetSelector, ...] = ()

    def targets(self) -> tuple[PolicyTargetReference, ...]:
        """Every target, ``targetRef`` first, each once."""
        both = (self.target_ref,) if self.target_ref is not None else ()
        return tuple(dict.fromkeys((*both, *self.target_refs)))


@dataclass(frozen=True)
class BackendTrafficPolicySpec(PolicyTargets):
    retry: Retry | None = None
    timeout: Timeout | None = None
    circuit_breaker: CircuitBreaker | None = None
    load_balancer: LoadBalancer | None = None
    health_check: HealthCheck | None = None
    tcp_keepalive: TCPKeepalive | None = None
    fault_injection: FaultInjection | None = None
    rate_limit: RateLimitSpec | None = None
    telemetry: BackendTelemetry | None = None


@dataclass(frozen=True)
class BackendTrafficPolicyRecord:
    """A BackendTrafficPolicy of ``cluster``. ``unsupported``: the paths of the fields it
    sets that this project does not implement (``spec.rateLimit``), sorted; a policy with
    any applies nowhere."""

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = "backendtrafficpolicy"

    cluster: str
    namespace: str
    name: str
    spec: BackendTrafficPolicySpec
    generation: int = 0
    created: str = ""
    unsupported: tuple[str, ...] = ()


# --- SecurityPolicy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SecurityCORS:
    """``spec.cors``: as Gateway API's CORS filter, with ``maxAge`` a duration."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: str | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True)
class AuthorizationHeaderMatch:
    name: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class JWTClaim:
    """A claim an authorization rule matches: ``name`` (dots for nested claims), of
    ``valueType`` ``String`` (the default) or ``StringArray``, one of ``values``."""

    name: str
    values: tuple[str, ...] = ()
    value_type: str | None = None


@dataclass(frozen=True)
class JWTPrincipal:
    """The client as its JWT (verified by ``provider``, one of the same policy's) says."""

    provider: str
    claims: tuple[JWTClaim, ...] = ()
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Principal:
    client_cidrs: tuple[str, ...] = field(default=(), metadata={JSON_NAME: "clientCIDRs"})
    headers: tuple[AuthorizationHeaderMatch, ...] = ()
    jwt: JWTPrincipal | None = None


@dataclass(frozen=True)
class Operation:
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthorizationRule:
    #: ``Allow`` or ``Deny``.
    action: str
    name: str | None = None
    principal: Principal | None = None
    operation: Operation | None = None


@dataclass(frozen=True)
class Authorization:
    rules: tuple[AuthorizationRule, ...] = ()
    #: ``Allow`` or ``Deny`` (Envoy Gateway's default).
    default_action: str | None = None


@dataclass(frozen=True)
class RemoteJWKS:
    """Where a provider's keys are fetched: an ``http`` or ``https`` URI, how long they
    are kept, and how soon a failed fetch is retried (``backendRefs`` and
    ``backendSettings`` are not implemented). The CRD defaults ``cacheDuration``."""

    uri: str
    cache_duration: str | None = None
    failed_refetch_duration: str | None = None


@dataclass(frozen=True)
class LocalJWKS:
    """A provider's keys, given inline (``type: Inline``); ``ValueRef`` (a ConfigMap) is
    not implemented."""

    type: str | None = None
    inline: str | None = None


@dataclass(frozen=True)
class ClaimToHeader:
    header: str
    claim: str


@dataclass(frozen=True)
class JWTHeaderExtractor:
    name: str
    value_prefix: str | None = None


@dataclass(frozen=True)
class JWTExtractor:
    headers: tuple[JWTHeaderExtractor, ...] = ()
    cookies: tuple[str, ...] = ()
    params: tuple[str, ...] = ()


@dataclass(frozen=True)
class JWTProvider:
    name: str
    issuer: str | None = None
    audiences: tuple[str, ...] = ()
    remote_jwks: RemoteJWKS | None = field(default=None, metadata={JSON_NAME: "remoteJWKS"})
    local_jwks: LocalJWKS | None = field(default=None, metadata={JSON_NAME: "localJWKS"})
    claim_to_headers: tuple[ClaimToHeader, ...] = ()
    recompute_route: bool | None = None
    extract_from: JWTExtractor | None = None


@dataclass(frozen=True)
class JWT:
    """``spec.jwt``: a request must carry a JWT that one of ``providers`` verifies (or
    none at all, when ``optional``)."""

    providers: tuple[JWTProvider, ...] = ()
    optional: bool | None = None


@dataclass(frozen=True)
class PolicyBackendRef(BackendObjectReference):
    """``backendRefs[]`` of Envoy Gateway's ``BackendCluster``: a backend and its weight."""

    weight: int | None = None


@dataclass(frozen=True)
class GRPCExtAuthService:
    """``extAuth.grpc``: the authorization service, as a backend (``backendSettings`` is
    not implemented)."""

    backend_ref: BackendObjectReference | None = None
    backend_refs: tuple[PolicyBackendRef, ...] = ()


@dataclass(frozen=True)
class HTTPExtAuthService(GRPCExtAuthService):
    """``extAuth.http``: as the gRPC service, with the path checks are sent under and the
    headers of its answer that go on to the backend."""

    path: str | None = None
    headers_to_backend: tuple[str, ...] = ()


@dataclass(frozen=True)
class BodyToExtAuth:
    max_request_bytes: int


@dataclass(frozen=True)
class ContextExtension:
    """A key and value sent with every check (``type: Value``; ``valueRef`` is not
    implemented)."""

    name: str
    type: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class ExtAuth:
    """``spec.extAuth``: every request is first checked by an HTTP or gRPC service."""

    grpc: GRPCExtAuthService | None = None
    http: HTTPExtAuthService | None = None
    headers_to_ext_auth: tuple[str, ...] = ()
    body_to_ext_auth: BodyToExtAuth | None = None
    timeout: str | None = None
    fail_open: bool | None = None
    recompute_route: bool | None = None
    status_on_error: int | None = None
    context_extensions: tuple[ContextExtension, ...] = ()


@dataclass(frozen=True)
class BasicAuth:
    """``spec.basicAuth``: users and their SHA-1 password hashes in the ``.htpasswd`` key
    of a Secret."""

    users: SecretObjectReference
    forward_username_header: str | None = None


@dataclass(frozen=True)
class APIKeyExtractFrom:
    """Where a request carries its API key: exactly one of the three lists."""

    headers: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()


@dataclass(frozen=True)
class APIKeyAuth:
    """``spec.apiKeyAuth``: API keys in Secrets, each key of a Secret's data a client id
    and its value that client's key."""

    credential_refs: tuple[SecretObjectReference, ...] = ()
    extract_from: tuple[APIKeyExtractFrom, ...] = ()
    forward_client_id_header: str | None = field(
        default=None, metadata={JSON_NAME: "forwardClientIDHeader"}
    )
    sanitize: bool | None = None


@dataclass(frozen=True)
class SecretCheck:
    """The agent's verdict on one Secret a SecurityPolicy names for basic auth or API
    keys: whether the agent can serve it to its Gateways' Envoys and, when not, why
    (``message``). Never anything of the Secret's content: the credentials stay in their
    cluster, served by its agent."""

    namespace: str
    name: str
    usable: bool
    message: str | None = None


@dataclass(frozen=True)
class SecurityPolicySpec(PolicyTargets):
    cors: SecurityCORS | None = None
    jwt: JWT | None = None
    ext_auth: ExtAuth | None = None
    authorization: Authorization | None = None
    basic_auth: BasicAuth | None = None
    api_key_auth: APIKeyAuth | None = field(default=None, metadata={JSON_NAME: "apiKeyAuth"})


@dataclass(frozen=True)
class SecurityPolicyRecord:
    """A SecurityPolicy of ``cluster``; ``unsupported`` as for BackendTrafficPolicies.
    Nothing secret: JWT keys are public, and of the Secrets that basic auth and API keys
    name the record holds only the agent's verdicts (``secret_checks``); their content
    reaches the Gateway's Envoys from the agent itself. OIDC is refused by name."""

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = "securitypolicy"

    cluster: str
    namespace: str
    name: str
    spec: SecurityPolicySpec
    generation: int = 0
    created: str = ""
    unsupported: tuple[str, ...] = ()
    secret_checks: tuple[SecretCheck, ...] = ()


# --- ClientTrafficPolicy -----------------------------------------------------------------------


@dataclass(frozen=True)
class HTTPClientTimeout:
    request_received_timeout: str | None = None
    idle_timeout: str | None = None


@dataclass(frozen=True)
class ClientTimeout:
    http: HTTPClientTimeout | None = None


@dataclass(frozen=True)
class XForwardedFor:
    num_trusted_hops: int | None = None


@dataclass(frozen=True)
class CustomHeader:
    """``clientIPDetection.customHeader``: the client's address is this header's value."""

    name: str
    fail_closed: bool | None = None


@dataclass(frozen=True)
class ClientIPDetection:
    x_forwarded_for: XForwardedFor | None = None
    custom_header: CustomHeader | None = None


@dataclass(frozen=True)
class ClientHeaders:
    #: ``Allow``, ``RejectRequest`` or ``DropHeader``.
    with_underscores_action: str | None = None
    preserve_x_request_id: bool | None = field(
        default=None, metadata={JSON_NAME: "preserveXRequestID"}
    )


@dataclass(frozen=True)
class ClientHTTP1:
    enable_trailers: bool | None = None
    preserve_header_case: bool | None = None


@dataclass(frozen=True)
class ClientHTTP2:
    max_concurrent_streams: int | None = None


@dataclass(frozen=True)
class ClientValidationContext:
    """``tls.clientValidation``: client certificates verified against the CA
    certificates of ConfigMaps (``ca.crt``); ``optional``: clients without one too."""

    optional: bool | None = None
    mode: str | None = None
    ca_certificate_refs: tuple[SecretObjectReference, ...] = field(
        default=(), metadata={JSON_NAME: "caCertificateRefs"}
    )


@dataclass(frozen=True)
class ClientTLS:
    #: ``Auto``, ``1.0``, ``1.1``, ``1.2`` or ``1.3``.
    min_version: str | None = None
    max_version: str | None = None
    ciphers: tuple[str, ...] = ()
    alpn_protocols: tuple[str, ...] = field(default=(), metadata={JSON_NAME: "alpnProtocols"})
    client_validation: ClientValidationContext | None = None


@dataclass(frozen=True)
class ConnectionLimit:
    value: int | None = None
    close_delay: str | None = None


@dataclass(frozen=True)
class ClientConnection:
    connection_limit: ConnectionLimit | None = None


@dataclass(frozen=True)
class ProxyProtocolSettings:
    optional: bool | None = None


@dataclass(frozen=True)
class ClientTrafficPolicySpec(PolicyTargets):
    timeout: ClientTimeout | None = None
    #: Deprecated by Envoy Gateway in favour of ``proxyProtocol``, which wins.
    enable_proxy_protocol: bool | None = None
    proxy_protocol: ProxyProtocolSettings | None = None
    connection: ClientConnection | None = None
    tcp_keepalive: TCPKeepalive | None = None
    client_ip_detection: ClientIPDetection | None = field(
        default=None, metadata={JSON_NAME: "clientIPDetection"}
    )
    headers: ClientHeaders | None = None
    http1: ClientHTTP1 | None = None
    http2: ClientHTTP2 | None = None
    tls: ClientTLS | None = None


@dataclass(frozen=True)
class ClientTrafficPolicyRecord:
    """A ClientTrafficPolicy of ``cluster``; ``unsupported`` as for BackendTrafficPolicies."""

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = "clienttrafficpolicy"

    cluster: str
    namespace: str
    name: str
    spec: ClientTrafficPolicySpec
    generation: int = 0
    created: str = ""
    unsupported: tuple[str, ...] = ()
    #: The agent's reading of the CA ConfigMaps ``tls.clientValidation`` names.
    ca_certificates: tuple[CACertificate, ...] = ()


#: Every Envoy Gateway policy record.
PolicyRecord = BackendTrafficPolicyRecord | SecurityPolicyRecord | ClientTrafficPolicyRecord
