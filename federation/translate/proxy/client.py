"""A ClientTrafficPolicy's settings on an Envoy listener: its connection manager and,
for HTTPS, its TLS context.

Called by :mod:`.listeners` for a listener whose IR has ``client`` (none by default).
How each maps: a connection limit is Envoy's connection limit network filter ahead of
the connection manager, TCP keepalive the listening socket's options, the PROXY
protocol a listener filter ahead of TLS inspection;
``requestReceivedTimeout`` is the connection manager's
``request_timeout``, ``idleTimeout`` its connections' idle timeout; trusted
``X-Forwarded-For`` hops make Envoy take the client's address from that header (and the
RBAC of SecurityPolicies with it), as Envoy Gateway configures it, and so does a custom
header (Envoy's original IP detection extension, refusing requests without one with 403
when ``failClosed``); underscores in
header names are allowed, refused or dropped; ``X-Request-ID`` is kept; HTTP/1 trailers
and header case, HTTP/2 concurrent streams; TLS versions, ciphers and ALPN replace our
defaults (TLS 1.2 and up; h2 and HTTP/1.1); client certificate validation replaces the
Gateway's.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import protocol_pb2, socket_option_pb2
from envoy.extensions.filters.listener.proxy_protocol.v3 import proxy_protocol_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.http.header_formatters.preserve_case.v3 import preserve_case_pb2
from envoy.extensions.http.original_ip_detection.custom_header.v3 import custom_header_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2
from envoy.type.v3 import http_status_pb2

from federation.translate.ir import ClientIR, ClientValidationIR
from federation.translate.proxy.common import duration_ms

PRESERVE_CASE = "envoy.http.stateful_header_formatters.preserve_case"
CONNECTION_LIMIT = "envoy.filters.network.connection_limit"
PROXY_PROTOCOL = "envoy.filters.listener.proxy_protocol"
CUSTOM_HEADER = "envoy.extensions.http.original_ip_detection.custom_header"
#: Linux's socket option levels and names for TCP keepalive (Envoy passes them through).
_SOL_SOCKET, _SO_KEEPALIVE = 1, 9
_IPPROTO_TCP, _TCP_KEEPIDLE, _TCP_KEEPINTVL, _TCP_KEEPCNT = 6, 4, 5, 6


def patch_connection_manager(client: ClientIR, hcm: Any) -> None:
    if client.request_timeout_ms is not None:
        hcm.request_timeout.CopyFrom(duration_ms(client.request_timeout_ms))
    if client.idle_timeout_ms is not None:
        hcm.common_http_protocol_options.idle_timeout.CopyFrom(duration_ms(client.idle_timeout_ms))
    if client.headers_with_underscores is not None:
        hcm.common_http_protocol_options.headers_with_underscores_action = (
            protocol_pb2.HttpProtocolOptions.HeadersWithUnderscoresAction.Value(
                client.headers_with_underscores
            )
        )
    if client.xff_trusted_hops is not None:
        hcm.use_remote_address.value = True
        hcm.xff_num_trusted_hops = client.xff_trusted_hops
    if client.client_ip_header is not None:
        # As Envoy Gateway: the extension decides the address, not the connection.
        hcm.use_remote_address.value = False
        config = custom_header_pb2.CustomHeaderConfig(
            header_name=client.client_ip_header, allow_extension_to_set_address_as_trusted=True
        )
        if client.client_ip_fail_closed:
            config.reject_with_status.code = http_status_pb2.Forbidden
        extension = hcm.original_ip_detection_extensions.add(name=CUSTOM_HEADER)
        extension.typed_config.Pack(config, deterministic=True)
    if client.preserve_request_id is not None:
        hcm.preserve_external_request_id = client.preserve_request_id
    if client.http1_trailers is not None:
        hcm.http_protocol_options.enable_trailers = client.http1_trailers
    if client.http1_preserve_case:
        formatter = hcm.http_protocol_options.header_key_format.stateful_formatter
        formatter.name = PRESERVE_CASE
        formatter.typed_config.Pack(
            preserve_case_pb2.PreserveCaseFormatterConfig(), deterministic=True
        )
    if client.http2_max_streams is not None:
        hcm.http2_protocol_options.max_concurrent_streams.value = client.http2_max_streams


def patch_tls(client: ClientIR, context: Any) -> None:
    params = context.common_tls_context.tls_params
    if client.tls_min_version is not None:
        params.tls_minimum_protocol_version = type(params).TlsProtocol.Value(client.tls_min_version)
    if client.tls_max_version is not None:
        params.tls_maximum_protocol_version = type(params).TlsProtocol.Value(client.tls_max_version)
    if client.tls_ciphers:
        params.cipher_suites[:] = list(client.tls_ciphers)
    if client.alpn_protocols:
        context.common_tls_context.alpn_protocols[:] = list(client.alpn_protocols)
    if client.client_validation is not None:  # the policy's replaces the Gateway's
        context.common_tls_context.ClearField("validation_context")
        validate_clients(context, client.client_validation)


def connection_limit_filter(client: ClientIR, stat_prefix: str) -> Any | None:
    """The network filter that caps the listener's connections, before its connection
    manager; None without a limit."""
    if client.connection_limit is None:
        return None
    config = connection_limit_pb2.ConnectionLimit(stat_prefix=stat_prefix)
    config.max_connections.value = client.connection_limit
    if client.connection_close_delay_ms is not None:
        config.delay.CopyFrom(duration_ms(client.connection_close_delay_ms))
    return config


def validate_clients(context: Any, validation: ClientValidationIR) -> None:
    """Ask clients of the TLS ``context`` for a certificate verified against
    ``validation``'s CA certificates (public: inline, not a Secret of their own)."""
    checked = context.common_tls_context.validation_context
    checked.trusted_ca.inline_string = validation.ca
    if validation.optional:  # AllowInsecureFallback: the check decides nothing
        checked.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    context.require_client_certificate.value = not validation.optional


def proxy_protocol_filter(client: ClientIR) -> Any | None:
    """The listener filter that reads the PROXY protocol header (None: not asked for)."""
    if not client.proxy_protocol:
        return None
    return proxy_protocol_pb2.ProxyProtocol(
        allow_requests_without_proxy_protocol=bool(client.proxy_protocol_optional)
    )


def keepalive_options(client: ClientIR) -> list[Any]:
    """TCP keepalive on the listening socket (accepted sockets inherit it)."""
    keepalive = client.keepalive
    if keepalive is None:
        return []
    listening = socket_option_pb2.SocketOption.STATE_LISTENING
    options = [
        socket_option_pb2.SocketOption(
            level=_SOL_SOCKET, name=_SO_KEEPALIVE, int_value=1, state=listening
        )
    ]
    for name, value in (
        (_TCP_KEEPCNT, keepalive.probes),
        (_TCP_KEEPIDLE, keepalive.idle_seconds),
        (_TCP_KEEPINTVL, keepalive.interval_seconds),
    ):
        if value is not None:
            options.append(
                socket_option_pb2.SocketOption(
                    level=_IPPROTO_TCP, name=name, int_value=value, state=listening
                )
            )
    return options
