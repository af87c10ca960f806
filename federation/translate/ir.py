"""The intermediate representation of everything the hub serves, between the two stages.

The first translation stage resolves its inputs into IR:

* :mod:`federation.translate.clusterset` turns each ServiceImport into a
  :class:`ServiceIR`: one :class:`ServiceClusterIR` per served port, with one
  :class:`LocalityIR` per source cluster, and the virtual hosts that answer its
  clusterset names. Every node group shares them (:class:`ClustersetIR`).
* :mod:`federation.translate.gateway` resolves one member cluster's Gateways, routes,
  ReferenceGrants and backends (local Services and the clusterset's ServiceImports) into
  a :class:`GatewayIR` per Gateway: the listeners that Gateway's own Envoys open, their
  virtual hosts and routes in match-precedence order, each route's filters and weighted
  backends, and the local Services the routes send to. All Gateway API semantics
  (attachment, hostnames, precedence, references, grants, invalid input) are decided there.

:class:`NodeGroupIR` is what one node group serves beside the shared services: a
cluster's clusterset listener, or one Gateway. Nothing here refers to a Kubernetes object
any more.

The second stage (:mod:`federation.translate.proxy`) maps the IR to xDS resources, the
clusterset's and the Gateways' through the same code, and knows nothing of Gateway API or
MCS: a golden file of either stage can be read without the other.

Everything is a frozen dataclass with JSON-friendly fields, so the golden tests read and
write IR as YAML through the registry's strict codec (:mod:`federation.registry.codec`).
Durations are whole milliseconds; None means "not set".
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.registry.records import EndpointSet, ServicePort

# --- matches -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PathMatchIR:
    #: ``Exact``, ``PathPrefix`` or ``RegularExpression``.
    type: str
    value: str


@dataclass(frozen=True)
class ValueMatchIR:
    """A header or query parameter match: ``Exact`` or ``RegularExpression``."""

    name: str
    value: str
    type: str = "Exact"


@dataclass(frozen=True)
class MatchIR:
    path: PathMatchIR
    headers: tuple[ValueMatchIR, ...] = ()
    query_params: tuple[ValueMatchIR, ...] = ()
    method: str | None = None


# --- what a route does ---------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderIR:
    name: str
    value: str


@dataclass(frozen=True)
class HeaderModIR:
    set: tuple[HeaderIR, ...] = ()
    add: tuple[HeaderIR, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class PathRewriteIR:
    """``ReplaceFullPath`` (``value`` replaces the path) or ``ReplacePrefixMatch``
    (``value`` replaces the matched ``prefix``)."""

    type: str
    value: str
    prefix: str | None = None


@dataclass(frozen=True)
class BackendIR:
    """One weighted backend. ``cluster`` None: the reference is invalid, and this share
    of the requests is answered 500."""

    weight: int
    cluster: str | None = None
    request_headers: HeaderModIR | None = None
    response_headers: HeaderModIR | None = None


@dataclass(frozen=True)
class MirrorIR:
    """Copies of requests, sent to ``cluster``, for ``numerator / denominator`` of them."""

    cluster: str
    numerator: int = 100
    denominator: int = 100


@dataclass(frozen=True)
class CorsIR:
    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = False
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None


@dataclass(frozen=True)
class RedirectIR:
    status_code: int = 302
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: PathRewriteIR | None = None


@dataclass(frozen=True)
class RetryIR:
    """A route's own retries, on top of the data plane's default ones: also retry the
    responses with these ``codes``, at most ``attempts`` retries in all (None: the
    default number), waiting at least ``backoff_ms`` before each (None: the default).

    ``triggers`` (a BackendTrafficPolicy's ``retryOn.triggers``, as Envoy's ``retry_on``
    names) replace the default conditions instead; ``max_backoff_ms`` caps the back-off
    (None: ten times its base)."""

    codes: tuple[int, ...] = ()
    attempts: int | None = None
    backoff_ms: int | None = None
    triggers: tuple[str, ...] = ()
    max_backoff_ms: int | None = None


@dataclass(frozen=True)
class HashIR:
    """What consistent hashing keys a request on: the client's address, a header, or a
    cookie (which Envoy sets when missing, for ``cookie_ttl_ms``; None: a session cookie)."""

    source_ip: bool = False
    header: str | None = None
    cookie: str | None = None
    cookie_ttl_ms: int | None = None


@dataclass(frozen=True)
class FaultIR:
    """Injected faults: a delay of ``delay_ms`` for ``delay_percent`` of the requests, and
    an answer of ``abort_http_status`` (or gRPC ``abort_grpc_status``) instead of the
    backend's for ``abort_percent`` of them."""

    delay_ms: int | None = None
    delay_percent: float = 100.0
    abort_http_status: int | None = None
    abort_grpc_status: int | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True)
class RateLimitMatchIR:
    """One condition of a rate limit rule: a ``header`` (``name``), the ``method``, the
    ``path`` or the client's ``source`` address. ``type``: ``Exact``,
    ``RegularExpression`` or ``PathPrefix`` (paths); ``invert``: the rule counts requests
    that do *not* match."""

    kind: str
    value: str
    name: str = ""
    type: str = "Exact"
    invert: bool = False


@dataclass(frozen=True)
class RateLimitBucketIR:
    """``requests`` per ``seconds``, for the requests that match every one of ``matches``
    (none: every request, the route's default bucket)."""

    requests: int
    seconds: int
    matches: tuple[RateLimitMatchIR, ...] = ()


@dataclass(frozen=True)
class RateLimitIR:
    """A route's local rate limit, counted by each Envoy: the ``default`` bucket (None:
    unlimited) for requests that no rule's bucket counts; past a budget, 429."""

    default: RateLimitBucketIR | None = None
    rules: tuple[RateLimitBucketIR, ...] = ()


@dataclass(frozen=True)
class HeaderValuesIR:
    """A request header with one of ``values``."""

    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class JwtClaimIR:
    """A claim of a verified JWT (``path``: its keys, nested ones in order) equal to one
    of ``values``; ``array``: the claim is a list holding one of them."""

    path: tuple[str, ...]
    values: tuple[str, ...]
    array: bool = False


@dataclass(frozen=True)
class AuthorizationRuleIR:
    """A request matches when its client address is in one of ``cidrs`` (any when
    empty), it has every one of ``headers`` (with one of its values), its method is one
    of ``methods`` (any when empty), and the JWT that provider ``jwt_provider`` verified
    has every one of ``jwt_claims`` and ``jwt_scopes``; then it is allowed or denied."""

    allow: bool
    cidrs: tuple[str, ...] = ()
    headers: tuple[HeaderValuesIR, ...] = ()
    methods: tuple[str, ...] = ()
    #: Where that provider leaves the verified payload (:attr:`JwtProviderIR.payload_key`).
    jwt_provider: str | None = None
    jwt_claims: tuple[JwtClaimIR, ...] = ()
    jwt_scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthorizationIR:
    """A SecurityPolicy's ``authorization``: the first rule a request matches decides;
    without one, ``default_allow``. Denied requests are answered 403."""

    default_allow: bool = False
    rules: tuple[AuthorizationRuleIR, ...] = ()


@dataclass(frozen=True)
class RemoteJwksIR:
    """Where a JWT provider fetches its keys: ``uri``, through a cluster of its own
    (``cluster``) that reaches ``host``:``port``, over TLS when ``tls``."""

    uri: str
    cluster: str
    host: str
    port: int
    tls: bool = False
    #: How long fetched keys are kept; how soon a failed fetch is tried again.
    cache_ms: int = 300_000
    refetch_ms: int | None = None


@dataclass(frozen=True)
class JwtProviderIR:
    """One JWT provider of a SecurityPolicy. ``name`` is unique across the Gateway
    (``<namespace>/<policy>/<provider>``); ``payload_key`` (the provider's own name) is
    where the verified payload is left for authorization rules. Exactly one of
    ``remote_jwks`` and ``local_jwks`` (a JWKS document) is set."""

    name: str
    payload_key: str
    issuer: str = ""
    audiences: tuple[str, ...] = ()
    remote_jwks: RemoteJwksIR | None = None
    local_jwks: str | None = None
    #: (header, claim) pairs: each claim's value is copied into that request header.
    claim_to_headers: tuple[tuple[str, str], ...] = ()
    recompute_route: bool = False
    #: (header, value prefix) pairs, cookies and query parameters the token is read
    #: from; all empty: ``Authorization: Bearer`` and ``access_token``, Envoy's default.
    from_headers: tuple[tuple[str, str], ...] = ()
    from_cookies: tuple[str, ...] = ()
    from_params: tuple[str, ...] = ()


@dataclass(frozen=True)
class JwtIR:
    """A SecurityPolicy's ``jwt``: a request needs a JWT one of ``providers`` verifies,
    or none at all when ``optional`` (an invalid one is refused either way). Requests
    refused are answered 401 (403: a token for another audience). ``requirement``: the
    policy's ``<namespace>/<name>``."""

    requirement: str
    providers: tuple[JwtProviderIR, ...]
    optional: bool = False


@dataclass(frozen=True)
class ExtAuthIR:
    """A SecurityPolicy's ``extAuth``: every request is first checked by the HTTP or
    (``grpc``) gRPC service behind ``cluster``; ``name`` is the policy's
    ``<namespace>/<name>``, which names its filter."""

    name: str
    cluster: str
    grpc: bool = False
    #: The service's host name, for the check request's authority.
    authority: str = ""
    #: HTTP: the path prefix checks are sent under.
    path: str = ""
    #: Request headers sent with a check (none: the service kind's default).
    headers_to_ext_auth: tuple[str, ...] = ()
    #: HTTP: headers of an allowing answer that go on to the backend.
    headers_to_backend: tuple[str, ...] = ()
    timeout_ms: int = 10_000
    fail_open: bool = False
    recompute_route: bool = False
    status_on_error: int | None = None
    max_request_bytes: int | None = None
    context_extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CredentialAuthIR:
    """A SecurityPolicy's ``basicAuth`` or ``apiKeyAuth``: a request must carry
    credentials that the policy's Secrets hold. Only the policy is named (``name``,
    ``<namespace>/<name>``, which names its filter): the credentials stay in their
    cluster, and its agent gives the Gateway's Envoys the filter's configuration."""

    name: str


@dataclass(frozen=True)
class RouteIR:
    """One match of one rule of one route, with everything the rule does.

    Exactly one of ``backends``, ``redirect`` or ``direct_status`` says what answers:
    forwarding to the weighted backends (every invalid one's share answered 500), a
    redirect, or a fixed status with no backend (500 when a rule has no valid backend).
    """

    #: ``<kind>/<namespace>/<name>/rule/<i>/match/<j>``: stable, for stats and debugging.
    name: str
    match: MatchIR
    backends: tuple[BackendIR, ...] = ()
    redirect: RedirectIR | None = None
    direct_status: int | None = None
    request_headers: HeaderModIR | None = None
    response_headers: HeaderModIR | None = None
    rewrite_hostname: str | None = None
    rewrite_path: PathRewriteIR | None = None
    mirrors: tuple[MirrorIR, ...] = ()
    cors: CorsIR | None = None
    #: The whole request, retries included (HTTPRoute ``timeouts.request``).
    timeout_ms: int | None = None
    #: One attempt at a backend (HTTPRoute ``timeouts.backendRequest``).
    backend_timeout_ms: int | None = None
    #: The route's own retries (HTTPRoute ``retry``); None: the default retries only.
    retry: RetryIR | None = None
    #: The key of consistent hashing (a BackendTrafficPolicy's ``loadBalancer``).
    hash_policy: HashIR | None = None
    #: A BackendTrafficPolicy's ``faultInjection`` and local ``rateLimit``.
    fault: FaultIR | None = None
    rate_limit: RateLimitIR | None = None
    #: A SecurityPolicy's ``authorization``.
    authorization: AuthorizationIR | None = None
    #: A SecurityPolicy's JWT authentication; None: none.
    jwt: JwtIR | None = None
    #: A SecurityPolicy's external authorization; None: none.
    ext_auth: ExtAuthIR | None = None
    #: A SecurityPolicy's basic auth and API key authentication; None: none.
    basic_auth: CredentialAuthIR | None = None
    api_key_auth: CredentialAuthIR | None = None
    #: What answers the share of an invalid backend: 500 for HTTP, 503 for gRPC (which
    #: clients read as UNAVAILABLE, as GRPCRoute requires).
    invalid_status: int = 500
    #: The Envoy stat prefix of the route (a BackendTrafficPolicy's ``routeStatName``):
    #: per-route statistics; None: none.
    stat_name: str | None = None


@dataclass(frozen=True)
class VirtualHostIR:
    name: str
    domains: tuple[str, ...]
    #: In match precedence order: Envoy uses the first that matches.
    routes: tuple[RouteIR, ...] = ()


@dataclass(frozen=True)
class CertificateIR:
    """A TLS certificate the Envoy reads from its own disk (never through the registry):
    ``<secret dir>/<namespace>/<name>/tls.crt`` and ``tls.key``."""

    namespace: str
    name: str


@dataclass(frozen=True)
class ClientValidationIR:
    """Client certificates on an HTTPS listener: verified against ``ca`` (PEM
    certificates); ``optional``: a client without one, or with one that does not
    verify, is let in all the same (Gateway API's ``AllowInsecureFallback``)."""

    ca: str
    optional: bool = False


@dataclass(frozen=True)
class FilterChainIR:
    """HTTPS: the certificates served for ``server_names`` (SNI; empty: any).

    With ``route_config`` the chain has routes of its own, ``virtual_hosts``, instead of
    its listener's: a connection whose SNI chose it then cannot reach the virtual hosts
    another chain serves (those answer 421 Misdirected Request).
    """

    server_names: tuple[str, ...]
    certificates: tuple[CertificateIR, ...]
    #: The route configuration it gets over RDS (None: its listener's).
    route_config: str | None = None
    virtual_hosts: tuple[VirtualHostIR, ...] = ()
    #: Client certificate validation; None: clients present no certificate.
    client_validation: ClientValidationIR | None = None


@dataclass(frozen=True)
class KeepaliveIR:
    """TCP keepalive on upstream connections; None keeps the system's setting."""

    probes: int | None = None
    idle_seconds: int | None = None
    interval_seconds: int | None = None


@dataclass(frozen=True)
class ClientIR:
    """A ClientTrafficPolicy's settings of one Envoy listener; None keeps Envoy's (and our)
    defaults. TLS versions are Envoy's names (``TLSv1_2``)."""

    request_timeout_ms: int | None = None
    idle_timeout_ms: int | None = None
    xff_trusted_hops: int | None = None
    #: The client's address comes from this header; ``client_ip_fail_closed``: a request
    #: without a valid one is refused (403).
    client_ip_header: str | None = None
    client_ip_fail_closed: bool | None = None
    headers_with_underscores: str | None = None
    preserve_request_id: bool | None = None
    http1_trailers: bool | None = None
    http1_preserve_case: bool | None = None
    http2_max_streams: int | None = None
    tls_min_version: str | None = None
    tls_max_version: str | None = None
    tls_ciphers: tuple[str, ...] = ()
    alpn_protocols: tuple[str, ...] = ()
    #: At most this many connections at once; past it, new ones are closed after
    #: ``connection_close_delay_ms``.
    connection_limit: int | None = None
    connection_close_delay_ms: int | None = None
    keepalive: KeepaliveIR | None = None
    #: HTTPS: client certificates (replacing the Gateway's ``spec.tls.frontend``).
    client_validation: ClientValidationIR | None = None
    #: Read the PROXY protocol header ahead of each connection (its client address then
    #: is the client's); ``proxy_protocol_optional``: accept connections without one.
    proxy_protocol: bool | None = None
    proxy_protocol_optional: bool | None = None


@dataclass(frozen=True)
class AccessLoggerIR:
    """One access log of a connection manager: ``text`` (Envoy's command operators) or
    JSON ``fields`` (empty: the default fields), written to ``file`` (a text line ends in
    a newline there) or sent to the OTLP/gRPC collector at ``otel_host``:``otel_port``
    with ``resources``."""

    text: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    file: str | None = None
    otel_host: str | None = None
    otel_port: int | None = None
    resources: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ListenerIR:
    """One Envoy listener: every listener of one Gateway on ``port`` (or the clusterset's).

    ``tls`` is empty for plain HTTP; for HTTPS it has one filter chain per hostname
    (plus the catch-all), which share the listener's route configuration unless they
    have their own.
    """

    name: str
    port: int
    virtual_hosts: tuple[VirtualHostIR, ...] = ()
    tls: tuple[FilterChainIR, ...] = ()
    #: The route configuration it gets over RDS (None: the listener's own name).
    route_config: str | None = None
    #: Virtual hosts are chosen by ``Host`` with its port (the clusterset listener, whose
    #: domains name ports); None: without it (Gateway API hostnames have no port).
    hosts_by_port: bool | None = None
    #: The IP it binds (None: the node group's listener address).
    address: str | None = None
    #: The port it binds, when not ``port``: a Gateway's Envoys run unprivileged, so a
    #: listener port below 1024 is bound above it and its Service maps the two.
    bind_port: int | None = None
    #: The ClientTrafficPolicy that applies to it.
    client: ClientIR | None = None
    #: How its requests are logged, replacing the default JSON line on standard output
    #: (None: the default; empty: no access log).
    access_logs: tuple[AccessLoggerIR, ...] | None = None


@dataclass(frozen=True)
class CircuitBreakerIR:
    """Envoy's circuit breaker thresholds; None keeps Envoy's default (1024 each, and
    unlimited requests per connection)."""

    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None
    max_requests_per_connection: int | None = None


@dataclass(frozen=True)
class HealthCheckIR:
    """Active health checking of every endpoint: ``HTTP`` (a request for ``path``, healthy
    when the status is one of ``expected_statuses`` and the body holds
    ``expected_text``) or ``TCP`` (connect, send ``send_text``, expect ``receive_text``)."""

    type: str
    timeout_ms: int
    interval_ms: int
    unhealthy_threshold: int
    healthy_threshold: int
    path: str = ""
    host: str | None = None
    method: str | None = None
    expected_statuses: tuple[int, ...] = ()
    expected_text: str | None = None
    send_text: str | None = None
    receive_text: str | None = None


@dataclass(frozen=True)
class OutlierIR:
    """Passive health checking (Envoy's outlier detection), in place of the defaults."""

    interval_ms: int | None = None
    base_ejection_ms: int | None = None
    max_ejection_percent: int | None = None
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    split_external_local_origin_errors: bool | None = None
    failure_percentage_threshold: int | None = None
    always_eject_one: bool | None = None


@dataclass(frozen=True)
class ClusterPolicyIR:
    """A BackendTrafficPolicy's settings of the clusters its routes send to; None keeps
    the data plane's default.

    ``lb_type`` is ``RoundRobin``, ``LeastRequest``, ``Random`` or ``ConsistentHash``
    (Maglev, with ``hash_table_size`` entries; the key is the route's ``hash_policy``).
    """

    connect_timeout_ms: int | None = None
    idle_timeout_ms: int | None = None
    max_connection_duration_ms: int | None = None
    circuit_breaker: CircuitBreakerIR | None = None
    lb_type: str | None = None
    hash_table_size: int | None = None
    slow_start_window_ms: int | None = None
    health_check: HealthCheckIR | None = None
    outlier: OutlierIR | None = None
    #: Percent of healthy hosts under which Envoy spreads over all (ours: 0, never).
    panic_threshold: int | None = None
    keepalive: KeepaliveIR | None = None


@dataclass(frozen=True)
class PolicyClusterIR:
    """Cluster ``base`` as a BackendTrafficPolicy configures it, named
    ``policy/<namespace>/<name>/<base>``: the routes under the policy send to it instead.
    It shares ``base``'s endpoints (the same ClusterLoadAssignment), so a policy never
    changes which backends, only how they are reached."""

    name: str
    base: str
    http2: bool
    policy: ClusterPolicyIR


@dataclass(frozen=True)
class LocalClusterIR:
    """A Service of this cluster that a route sends to (not exported): its Envoy
    cluster, named ``local/<namespace>/<name>/<port>``, with the endpoints of the port."""

    name: str
    cluster: str
    namespace: str
    service: str
    #: The port routed to, and all of the Service's (endpoint ports are matched by name).
    port: ServicePort
    ports: tuple[ServicePort, ...]
    http2: bool
    endpoints: tuple[EndpointSet, ...] = ()
    #: None: the defaults (a route's BackendTrafficPolicy makes a :class:`PolicyClusterIR`).
    policy: ClusterPolicyIR | None = None


@dataclass(frozen=True)
class JSONPatchIR:
    """One RFC 6902 operation on the resource of type ``type_url`` named ``name``;
    ``value`` is JSON text. ``path`` None with ``op`` add: ``value`` is a whole new
    resource."""

    type_url: str
    name: str
    op: str
    path: str | None = None
    from_: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class PatchPolicyIR:
    """One accepted EnvoyPatchPolicy: its patches, applied all or none."""

    namespace: str
    name: str
    generation: int
    patches: tuple[JSONPatchIR, ...]


@dataclass(frozen=True)
class GatewayIR:
    """What one Gateway's Envoys serve, routes sorted and resolved: its listeners and the
    local Services its routes send to. ``namespace`` and ``name`` name the Gateway."""

    cluster: str
    listeners: tuple[ListenerIR, ...] = ()
    local_clusters: tuple[LocalClusterIR, ...] = ()
    namespace: str = ""
    name: str = ""
    #: The clusters of the BackendTrafficPolicies its routes are under, sorted by name.
    policy_clusters: tuple[PolicyClusterIR, ...] = ()
    #: Its EnvoyPatchPolicies, in the order they apply (applied by the hub after the
    #: second stage, when it allows patches: :mod:`federation.hub.patches`).
    patches: tuple[PatchPolicyIR, ...] = ()


# --- the clusterset --------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalityIR:
    """One source cluster's endpoints of a clusterset cluster: one Envoy locality.

    ``ports`` are that exporter's own Service ports (an endpoint port is matched to the
    import port by name, and an exporter whose port lost a conflict gets no traffic);
    ``stale``: the cluster's lease expired, its endpoints are kept (fail-static) and
    flagged.
    """

    cluster: str
    ports: tuple[ServicePort, ...]
    endpoints: tuple[EndpointSet, ...] = ()
    stale: bool = False


@dataclass(frozen=True)
class FailoverIR:
    """How the Envoys of member cluster ``viewer`` fail over between a service's
    exporters (a FailoverPolicy of ``viewer``), instead of local first: ``order``, the
    exporters most preferred first, a priority level each, the others sharing the level
    after; or ``weights``, one level of weighted exporters, the others after. A cluster
    that does not export the service is skipped."""

    viewer: str
    order: tuple[str, ...] = ()
    weights: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ServiceClusterIR:
    """The Envoy cluster of one port of a ServiceImport, with one locality per source
    cluster, named ``clusterset/<namespace>/<name>/<port>``.

    Every node group gets it; only the priorities of its ClusterLoadAssignment depend on
    who looks (each exporter sees its own locality first), which the second stage builds
    as at most exporters + 1 variants.
    """

    name: str
    namespace: str
    service: str
    port: ServicePort
    http2: bool
    localities: tuple[LocalityIR, ...] = ()
    #: The import has this one port only: a slice with one unnamed port then serves it.
    single_port: bool = False
    #: The cluster settings of the BackendTrafficPolicy on the ServiceImport (its
    #: exporters'), which every node group gets; None: the defaults.
    policy: ClusterPolicyIR | None = None
    #: The member clusters whose FailoverPolicy orders the localities for their Envoys,
    #: sorted by viewer; every other cluster's Envoys see local first.
    failover: tuple[FailoverIR, ...] = ()


@dataclass(frozen=True)
class ServiceIR:
    """One ServiceImport as every node group serves it: its clusters and virtual hosts."""

    namespace: str
    name: str
    clusters: tuple[ServiceClusterIR, ...] = ()
    #: One per served port; none when the Service has no clusterset DNS name.
    virtual_hosts: tuple[VirtualHostIR, ...] = ()
    #: The exporting clusters, sorted (every cluster of the service has their localities).
    exporters: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClustersetIR:
    """Every ServiceImport the hub serves, sorted by namespace and name."""

    services: tuple[ServiceIR, ...] = ()


@dataclass(frozen=True)
class NodeGroupIR:
    """What one node group serves beside the shared :class:`ClustersetIR`: a cluster's
    shared Envoys have the clusterset listener, a Gateway's own Envoys its
    :class:`GatewayIR` (:mod:`federation.node_groups`).

    ``group`` None stands for the Envoys of a cluster that exports nothing (tests).
    """

    group: str | None
    clusterset_listener: ListenerIR | None = None
    gateway: GatewayIR | None = None
    #: EnvoyPatchPolicies on the cluster's clusterset listener (shared Envoys only), in
    #: the order they apply; a Gateway's are its own (:attr:`GatewayIR.patches`).
    patches: tuple[PatchPolicyIR, ...] = ()
