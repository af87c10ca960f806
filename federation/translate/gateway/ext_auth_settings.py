"""A SecurityPolicy's ``extAuth`` compiled into IR: the authorization service resolved
to an Envoy cluster, as a route's backendRef is.

Called by :mod:`.security_settings`. The service is one backend (``backendRefs`` with
one entry, or the deprecated ``backendRef``): a Service of the policy's cluster or a
ServiceImport of the clusterset, in the policy's namespace or, with a ReferenceGrant
there that names SecurityPolicies, another. A gRPC service must speak HTTP/2 (its port's
``appProtocol`` or name says so). What cannot be resolved is refused by name, and the
policy then fails closed like any other it cannot serve. Pure.
"""

from __future__ import annotations

from federation.registry.policies import ENVOY_GATEWAY_GROUP, ExtAuth, SecurityPolicyRecord
from federation.translate.gateway.envoy_limits import MAX_UINT32, header_name
from federation.translate.gateway.inputs import ClusterInputs
from federation.translate.gateway.policy_settings import PolicyError, duration_ms_or_none
from federation.translate.gateway.refs import resolve_backend
from federation.translate.ir import ExtAuthIR, LocalClusterIR

SECURITY_POLICY = "SecurityPolicy"
#: The statuses Envoy's ``HttpStatus`` can carry (``envoy.type.v3.StatusCode``): any
#: other ``statusOnError`` would make Envoy refuse the listener.
ENVOY_STATUSES = frozenset(
    (*range(200, 209), 226, *range(300, 306), 307, 308, *range(400, 418), 421, 422, 423,
     424, 426, 428, 429, 431, *range(500, 509), 510, 511)
)  # fmt: skip
#: Envoy Gateway's timeout of a check.
DEFAULT_TIMEOUT_MS = 10_000


def _headers(names: tuple[str, ...], path: str) -> tuple[str, ...]:
    for i, name in enumerate(names):
        problem = header_name(name)
        if problem is not None:
            raise PolicyError(f"{path}[{i}] {name!r} {problem}")
    return tuple(n.lower() for n in names)


def compile_ext_auth(
    policy: SecurityPolicyRecord, ext: ExtAuth | None, inputs: ClusterInputs
) -> tuple[ExtAuthIR | None, LocalClusterIR | None]:
    """``spec.extAuth`` of ``policy``, and the local cluster it needs (None: the service
    is a ServiceImport, whose cluster every Envoy has); PolicyError names the first field
    it cannot serve."""
    if ext is None:
        return None, None
    if (ext.grpc is None) == (ext.http is None):
        raise PolicyError("spec.extAuth: exactly one of grpc and http must be given")
    grpc = ext.grpc is not None
    service = ext.grpc if ext.grpc is not None else ext.http
    assert service is not None
    path = "spec.extAuth.grpc" if grpc else "spec.extAuth.http"
    refs = [
        *((service.backend_ref,) if service.backend_ref is not None else ()),
        *service.backend_refs,
    ]
    if len(refs) != 1:
        raise PolicyError(
            f"{path}: exactly one backend (backendRefs or backendRef) is supported, "
            f"{len(refs)} given"
        )
    (ref,) = refs
    field = f"{path}.backendRef" if service.backend_ref is not None else f"{path}.backendRefs[0]"
    backend = resolve_backend(
        inputs,
        route_group=ENVOY_GATEWAY_GROUP,
        route_kind=SECURITY_POLICY,
        route_namespace=policy.namespace,
        group=ref.group,
        kind=ref.kind,
        namespace=ref.namespace,
        name=ref.name,
        port=ref.port,
    )
    if backend.cluster is None:
        raise PolicyError(f"{field}: {backend.message}")
    if grpc and not backend.http2:
        raise PolicyError(
            f"{field}: port {ref.port} of {ref.name} does not speak HTTP/2, "
            "which gRPC needs: set its appProtocol to grpc (or kubernetes.io/h2c), or name it grpc"
        )
    timeout = duration_ms_or_none(ext.timeout, "spec.extAuth.timeout")
    status = ext.status_on_error
    if status is not None and status not in ENVOY_STATUSES:
        raise PolicyError(
            f"spec.extAuth.statusOnError {status} is not an HTTP status Envoy can answer with"
        )
    extensions: dict[str, str] = {}
    for i, extension in enumerate(ext.context_extensions):
        where = f"spec.extAuth.contextExtensions[{i}]"
        if extension.type not in (None, "Value") or extension.value is None:
            raise PolicyError(f"{where}: only type Value with a value is supported")
        if extension.name in extensions:
            raise PolicyError(f"{where}.name {extension.name!r} is repeated")
        extensions[extension.name] = extension.value
    body = ext.body_to_ext_auth
    if body is not None and not 1 <= body.max_request_bytes <= MAX_UINT32:
        raise PolicyError(
            f"spec.extAuth.bodyToExtAuth.maxRequestBytes must be from 1 to {MAX_UINT32}"
        )
    http_path = "" if ext.http is None else ext.http.path or ""
    if http_path and not http_path.startswith("/"):
        raise PolicyError(f"spec.extAuth.http.path {http_path!r} does not start with /")
    namespace = ref.namespace or policy.namespace
    ir = ExtAuthIR(
        name=f"{policy.namespace}/{policy.name}",
        cluster=backend.cluster,
        grpc=grpc,
        authority=f"{ref.name}.{namespace}",
        path=http_path,
        headers_to_ext_auth=_headers(ext.headers_to_ext_auth, "spec.extAuth.headersToExtAuth"),
        headers_to_backend=()
        if ext.http is None
        else _headers(ext.http.headers_to_backend, "spec.extAuth.http.headersToBackend"),
        timeout_ms=timeout or DEFAULT_TIMEOUT_MS,
        fail_open=bool(ext.fail_open),
        recompute_route=bool(ext.recompute_route),
        status_on_error=status,
        max_request_bytes=None if body is None else body.max_request_bytes,
        context_extensions=tuple(extensions.items()),
    )
    return ir, backend.local_cluster(inputs.cluster)
