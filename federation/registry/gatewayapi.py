"""Typed registry records of the Gateway API objects an agent publishes.

An agent publishes, for its own cluster, the Gateways of our GatewayClass, every
HTTPRoute and GRPCRoute, and every ReferenceGrant (:mod:`federation.registry.kinds` has
the full list of kinds). The hub's first translation stage reads them from the registry
to build each cluster's listeners, routes and statuses.

The specs mirror Gateway API v1 (standard channel, v1.6) field for field, so that the
agent reads a Kubernetes object with the same strict codec (:mod:`federation.registry.codec`)
that decodes a record: ``spec.rules[].backendRefs`` there is ``spec.rules[i].backend_refs``
here. Only the fields this project implements are kept, and the few route settings it
does not implement but must refuse by name rather than drop unseen (a Kubernetes object is
read ignoring unknown fields); a field that is absent keeps its Kubernetes default,
applied by the apiserver (None here means "not set").
Enumerations stay strings on purpose: a value this version does not know is reported
by the translation stage as an ``UnsupportedValue`` status on the object, instead of
making the whole record undecodable.

Nothing secret is ever in a record: a Gateway names its certificate Secrets, and the
gateway's own Envoy reads them locally. The agent checks those Secrets and publishes only
its verdict on each (:class:`CertificateCheck`: usable, or why not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from federation.registry.codec import from_json, to_json
from federation.registry.records import InvalidRecordError
from federation.registry.telemetry import ProxyAccessLog

GATEWAY_GROUP = "gateway.networking.k8s.io"

# --- references ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParentReference:
    """``spec.parentRefs[]`` of a route: the Gateway (and listener) it attaches to."""

    name: str
    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class BackendObjectReference:
    """A backend: a ``Service`` of this cluster or a ``ServiceImport`` of the clusterset."""

    name: str
    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class LocalObjectReference:
    group: str
    kind: str
    name: str


@dataclass(frozen=True)
class SecretObjectReference:
    name: str
    group: str | None = None
    kind: str | None = None
    namespace: str | None = None


# --- filters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HTTPHeader:
    name: str
    value: str


@dataclass(frozen=True)
class HeaderModifier:
    set: tuple[HTTPHeader, ...] = ()
    add: tuple[HTTPHeader, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class HTTPPathModifier:
    type: str
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


@dataclass(frozen=True)
class RequestRedirect:
    scheme: str | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = None
    status_code: int | None = None


@dataclass(frozen=True)
class URLRewrite:
    hostname: str | None = None
    path: HTTPPathModifier | None = None


@dataclass(frozen=True)
class Fraction:
    numerator: int
    denominator: int | None = None


@dataclass(frozen=True)
class RequestMirror:
    backend_ref: BackendObjectReference
    percent: int | None = None
    fraction: Fraction | None = None


@dataclass(frozen=True)
class CORS:
    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool | None = None
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None


@dataclass(frozen=True)
class HTTPRouteFilter:
    type: str
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: URLRewrite | None = None
    request_mirror: RequestMirror | None = None
    cors: CORS | None = None
    extension_ref: LocalObjectReference | None = None


@dataclass(frozen=True)
class GRPCRouteFilter:
    type: str
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_mirror: RequestMirror | None = None
    extension_ref: LocalObjectReference | None = None


# --- matches ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathMatch:
    type: str = "PathPrefix"
    value: str = "/"


@dataclass(frozen=True)
class ValueMatch:
    """A header or query parameter match."""

    name: str
    value: str
    type: str = "Exact"


@dataclass(frozen=True)
class HTTPRouteMatch:
    path: PathMatch | None = None
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True)
class GRPCMethodMatch:
    type: str = "Exact"
    service: str | None = None
    method: str | None = None


@dataclass(frozen=True)
class GRPCRouteMatch:
    method: GRPCMethodMatch | None = None
    headers: tuple[ValueMatch, ...] = ()


# --- rules and specs ------------------------------------------------------------------------


@dataclass(frozen=True)
class HTTPBackendRef:
    name: str
    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None
    filters: tuple[HTTPRouteFilter, ...] = ()


@dataclass(frozen=True)
class GRPCBackendRef:
    name: str
    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None
    filters: tuple[GRPCRouteFilter, ...] = ()


@dataclass(frozen=True)
class HTTPRouteTimeouts:
    request: str | None = None
    backend_request: str | None = None


@dataclass(frozen=True)
class HTTPRouteRetry:
    """``retry`` of a rule (experimental channel): retried status codes, the number of
    retries and the minimum wait before each."""

    codes: tuple[int, ...] = ()
    attempts: int | None = None
    backoff: str | None = None


@dataclass(frozen=True)
class CookieConfig:
    lifetime_type: str | None = None


@dataclass(frozen=True)
class SessionPersistence:
    """``sessionPersistence`` of a rule (experimental channel): not implemented, kept so
    that a rule asking for it is refused instead of silently served without it."""

    session_name: str | None = None
    absolute_timeout: str | None = None
    type: str | None = None
    cookie_config: CookieConfig | None = None


@dataclass(frozen=True)
class HTTPRouteRule:
    name: str | None = None
    matches: tuple[HTTPRouteMatch, ...] = ()
    filters: tuple[HTTPRouteFilter, ...] = ()
    backend_refs: tuple[HTTPBackendRef, ...] = ()
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None
    session_persistence: SessionPersistence | None = None


@dataclass(frozen=True)
class GRPCRouteRule:
    name: str | None = None
    matches: tuple[GRPCRouteMatch, ...] = ()
    filters: tuple[GRPCRouteFilter, ...] = ()
    backend_refs: tuple[GRPCBackendRef, ...] = ()
    session_persistence: SessionPersistence | None = None


@dataclass(frozen=True)
class HTTPRouteSpec:
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[HTTPRouteRule, ...] = ()


@dataclass(frozen=True)
class GRPCRouteSpec:
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[GRPCRouteRule, ...] = ()


@dataclass(frozen=True)
class LabelSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


@dataclass(frozen=True)
class RouteNamespaces:
    from_: str = "Same"
    selector: LabelSelector | None = None


@dataclass(frozen=True)
class RouteGroupKind:
    kind: str
    group: str | None = None


@dataclass(frozen=True)
class AllowedRoutes:
    namespaces: RouteNamespaces | None = None
    kinds: tuple[RouteGroupKind, ...] = ()


@dataclass(frozen=True)
class GatewayTLSConfig:
    mode: str | None = None
    certificate_refs: tuple[SecretObjectReference, ...] = ()


@dataclass(frozen=True)
class Listener:
    name: str
    port: int
    protocol: str
    hostname: str | None = None
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes | None = None


@dataclass(frozen=True)
class FrontendTLSValidation:
    ca_certificate_refs: tuple[SecretObjectReference, ...] = ()
    mode: str | None = None


@dataclass(frozen=True)
class FrontendTLSConfig:
    validation: FrontendTLSValidation | None = None


@dataclass(frozen=True)
class FrontendTLSPerPort:
    port: int
    tls: FrontendTLSConfig | None = None


@dataclass(frozen=True)
class FrontendTLS:
    """Client certificate validation (``spec.tls.frontend``): a default for every HTTPS
    port, and per port."""

    default: FrontendTLSConfig | None = None
    per_port: tuple[FrontendTLSPerPort, ...] = ()


@dataclass(frozen=True)
class GatewaySpecTLS:
    frontend: FrontendTLS | None = None


@dataclass(frozen=True)
class GatewaySpec:
    gateway_class_name: str
    listeners: tuple[Listener, ...] = ()
    tls: GatewaySpecTLS | None = None


@dataclass(frozen=True)
class ReferenceGrantFrom:
    group: str
    kind: str
    namespace: str


@dataclass(frozen=True)
class ReferenceGrantTo:
    group: str
    kind: str
    name: str | None = None


@dataclass(frozen=True)
class ReferenceGrantSpec:
    from_: tuple[ReferenceGrantFrom, ...] = ()
    to: tuple[ReferenceGrantTo, ...] = ()


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateCheck:
    """The agent's verdict on one Secret that its Gateway's HTTPS listeners name in
    ``tls.certificateRefs``: whether the Gateway's Envoys can serve it and, when not,
    why (``message``). Never anything of the Secret's content."""

    namespace: str
    name: str
    usable: bool
    message: str | None = None


@dataclass(frozen=True)
class CACertificate:
    """The agent's reading of one ConfigMap that its Gateway's client certificate
    validation names: its ``ca.crt`` (``pem``, public certificates only) when it holds
    PEM certificates, else why not (``message``)."""

    namespace: str
    name: str
    pem: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class GatewayRecord:
    """A Gateway of our GatewayClass in ``cluster``.

    ``certificate_checks``: the agent's verdict on each certificate Secret it checked,
    sorted by namespace and name. A Secret without one (a record of an agent that
    predates the checks) is taken as usable.
    """

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = "gateway"

    cluster: str
    namespace: str
    name: str
    spec: GatewaySpec
    generation: int = 0
    created: str = ""
    certificate_checks: tuple[CertificateCheck, ...] = ()
    #: The CA certificates its client certificate validation names, as the agent read
    #: them, sorted by namespace and name (none read: not yet, or not granted).
    ca_certificates: tuple[CACertificate, ...] = ()
    #: The Gateway's own labels: a policy's ``targetSelectors`` select by them.
    labels: tuple[tuple[str, str], ...] = ()
    #: The ``accessLog`` of its parameters, as the agent parsed them (None: none given,
    #: or the agent does not run the Gateways' Envoys and reads no parameters).
    access_log: ProxyAccessLog | None = None


@dataclass(frozen=True)
class HTTPRouteRecord:
    """An HTTPRoute of ``cluster``; ``namespace_labels`` are its namespace's labels, which
    decide whether a listener's ``allowedRoutes`` selector admits it."""

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = "httproute"

    cluster: str
    namespace: str
    name: str
    spec: HTTPRouteSpec
    generation: int = 0
    created: str = ""
    namespace_labels: tuple[tuple[str, str], ...] = ()
    #: The route's own labels: a policy's ``targetSelectors`` select by them.
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GRPCRouteRecord:
    """A GRPCRoute of ``cluster``; see :class:`HTTPRouteRecord` for ``namespace_labels``."""

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = "grpcroute"

    cluster: str
    namespace: str
    name: str
    spec: GRPCRouteSpec
    generation: int = 0
    created: str = ""
    namespace_labels: tuple[tuple[str, str], ...] = ()
    #: The route's own labels: a policy's ``targetSelectors`` select by them.
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReferenceGrantRecord:
    """A ReferenceGrant of ``cluster``: it allows references *into* its namespace."""

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = "referencegrant"

    cluster: str
    namespace: str
    name: str
    spec: ReferenceGrantSpec
    generation: int = 0
    created: str = ""


GatewayAPIRecord = GatewayRecord | HTTPRouteRecord | GRPCRouteRecord | ReferenceGrantRecord


class _Named(Protocol):
    """What :func:`encode` and :func:`decode` need of a record class (these Gateway API
    records and the policies of :mod:`federation.registry.policies` alike)."""

    KIND: ClassVar[str]
    namespace: str
    name: str


R = TypeVar("R")


def encode(record: _Named, version: int) -> bytes:
    """Canonical bytes of a record: equal records encode to equal bytes."""
    body = {"v": version, "kind": record.KIND, **to_json(record)}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode(cls: type[R], data: Any, what: str) -> R:
    """Decode the JSON object ``data`` (without ``v`` and ``kind``) as ``cls``."""
    record = from_json(cls, data, path=what)
    if not getattr(record, "namespace", "") or not getattr(record, "name", ""):
        raise InvalidRecordError(f"{what}: namespace and name must not be empty")
    return record
