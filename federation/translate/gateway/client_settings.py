"""What a ClientTrafficPolicy sets, compiled into IR (:func:`compile_client`).

Called by :mod:`.policies`, which decides which policy covers which Gateway listener.
Implemented: HTTP request and idle timeouts, connection limits, TCP keepalive, client IP
detection from ``X-Forwarded-For`` (trusted hops) or a custom header, header handling
(underscores, keeping ``X-Request-ID``), HTTP/1 trailers and header case, HTTP/2
concurrent streams, TLS versions, ciphers, ALPN and client certificates (CA ConfigMaps,
:func:`.frontend_tls.policy_client_validation`), and the PROXY protocol. Every other
field (buffer limits, ...) is refused by name. Pure.
"""

from __future__ import annotations

from federation.registry.policies import ClientTLS, ClientTrafficPolicyRecord
from federation.translate.gateway.envoy_limits import MAX_UINT32, header_name
from federation.translate.gateway.frontend_tls import policy_client_validation
from federation.translate.gateway.policy_settings import (
    PolicyError,
    duration_ms_or_none,
    keepalive,
    refuse_unsupported,
)
from federation.translate.ir import ClientIR

#: ``withUnderscoresAction`` and Envoy's ``headers_with_underscores_action``.
UNDERSCORE_ACTIONS = {
    "Allow": "ALLOW",
    "RejectRequest": "REJECT_REQUEST",
    "DropHeader": "DROP_HEADER",
}
#: TLS versions as Envoy Gateway names them, and as Envoy does.
TLS_VERSIONS = {
    "Auto": "TLS_AUTO",
    "1.0": "TLSv1_0",
    "1.1": "TLSv1_1",
    "1.2": "TLSv1_2",
    "1.3": "TLSv1_3",
}
ALPN = ("h2", "http/1.1", "http/1.0")
#: The cipher suites Envoy (BoringSSL) can be configured with: TLS 1.2 and below. TLS 1.3
#: suites are not configurable, and a name Envoy does not know makes it reject the whole
#: listener, so anything else is refused here.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
)


def _tls(tls: ClientTLS) -> dict[str, object]:
    """The IR values of ``spec.tls``."""
    out: dict[str, object] = {}
    for name, version in (("minVersion", tls.min_version), ("maxVersion", tls.max_version)):
        if version is not None and version not in TLS_VERSIONS:
            raise PolicyError(f"spec.tls.{name} {version!r} is not one of {list(TLS_VERSIONS)}")
    unknown = [c for c in tls.ciphers if c not in CIPHERS]
    if unknown:
        raise PolicyError(
            f"spec.tls.ciphers {unknown} are not cipher suites Envoy can be configured "
            "with (TLS 1.2 and below; TLS 1.3 suites are not configurable)"
        )
    bad = [p for p in tls.alpn_protocols if p not in ALPN]
    if bad:
        raise PolicyError(f"spec.tls.alpnProtocols {bad} are not among {list(ALPN)}")
    out["tls_min_version"] = None if tls.min_version is None else TLS_VERSIONS[tls.min_version]
    out["tls_max_version"] = None if tls.max_version is None else TLS_VERSIONS[tls.max_version]
    out["tls_ciphers"] = tls.ciphers
    out["alpn_protocols"] = tls.alpn_protocols
    return out


def compile_client(policy: ClientTrafficPolicyRecord) -> ClientIR:
    """The settings of ``policy``; PolicyError names the first field it cannot serve."""
    refuse_unsupported(policy.unsupported)
    spec = policy.spec
    values: dict[str, object] = {}
    http = None if spec.timeout is None else spec.timeout.http
    if http is not None:
        values["request_timeout_ms"] = duration_ms_or_none(
            http.request_received_timeout, "spec.timeout.http.requestReceivedTimeout"
        )
        values["idle_timeout_ms"] = duration_ms_or_none(
            http.idle_timeout, "spec.timeout.http.idleTimeout"
        )
    detection = spec.client_ip_detection
    custom = None if detection is None else detection.custom_header
    if custom is not None:
        if detection is not None and detection.x_forwarded_for is not None:
            raise PolicyError(
                "spec.clientIPDetection: customHeader and xForwardedFor cannot both be given"
            )
        problem = header_name(custom.name)
        if problem is not None:
            raise PolicyError(f"spec.clientIPDetection.customHeader.name {custom.name!r} {problem}")
        values["client_ip_header"] = custom.name.lower()
        values["client_ip_fail_closed"] = custom.fail_closed
    xff = None if detection is None else detection.x_forwarded_for
    if xff is not None and xff.num_trusted_hops is not None:
        if not 0 <= xff.num_trusted_hops <= MAX_UINT32:
            raise PolicyError("spec.clientIPDetection.xForwardedFor.numTrustedHops is out of range")
        values["xff_trusted_hops"] = xff.num_trusted_hops
    headers = spec.headers
    if headers is not None:
        action = headers.with_underscores_action
        if action is not None and action not in UNDERSCORE_ACTIONS:
            raise PolicyError(
                f"spec.headers.withUnderscoresAction {action!r} is not one of "
                f"{list(UNDERSCORE_ACTIONS)}"
            )
        values["headers_with_underscores"] = None if action is None else UNDERSCORE_ACTIONS[action]
        values["preserve_request_id"] = headers.preserve_x_request_id
    if spec.http1 is not None:
        values["http1_trailers"] = spec.http1.enable_trailers
        values["http1_preserve_case"] = spec.http1.preserve_header_case
    if spec.http2 is not None and spec.http2.max_concurrent_streams is not None:
        if not 1 <= spec.http2.max_concurrent_streams <= 2**31 - 1:
            raise PolicyError("spec.http2.maxConcurrentStreams must be from 1 to 2147483647")
        values["http2_max_streams"] = spec.http2.max_concurrent_streams
    if spec.tls is not None:
        values.update(_tls(spec.tls))
    limit = None if spec.connection is None else spec.connection.connection_limit
    if limit is not None:
        if limit.value is None or not 1 <= limit.value <= MAX_UINT32:
            raise PolicyError(
                f"spec.connection.connectionLimit.value must be from 1 to {MAX_UINT32}"
            )
        values["connection_limit"] = limit.value
        values["connection_close_delay_ms"] = duration_ms_or_none(
            limit.close_delay, "spec.connection.connectionLimit.closeDelay"
        )
    if spec.tcp_keepalive is not None:
        values["keepalive"] = keepalive(spec.tcp_keepalive)
    values["client_validation"] = policy_client_validation(policy)
    if spec.proxy_protocol is not None:
        values["proxy_protocol"] = True
        values["proxy_protocol_optional"] = spec.proxy_protocol.optional
    elif spec.enable_proxy_protocol:
        values["proxy_protocol"] = True
    return ClientIR(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
