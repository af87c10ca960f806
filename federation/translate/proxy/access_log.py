"""The access logs of every connection manager: by default one JSON object per request on
the Envoy's standard output, the clusterset listener and the Gateways' alike.

Called by :func:`federation.translate.proxy.listeners.connection_manager`. Beside what
every access log has (method, path, authority, status, response flags, bytes and
durations, the route and upstream cluster and host), each line says **which member
cluster served the request**: ``source_cluster`` is the locality of the endpoint that
answered (the localities of a clusterset cluster are its source clusters,
:mod:`.clusters`), read with Envoy's CEL formatter. A request that reached no endpoint
(a direct response, a refused one, a local Service of a Gateway's own cluster) logs the
fields it has and ``-`` for the others.

A Gateway's parameters may replace that log (``accessLog``,
:mod:`federation.registry.telemetry`): each logger then writes a text or JSON line to a
file, or sends it to an OpenTelemetry collector over OTLP/gRPC through a cluster of its
own (``accesslog/otel/<host>/<port>``, HTTP/2; a name is resolved by DNS). Pure.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from federation.translate.ir import AccessLoggerIR, ListenerIR
from federation.translate.proxy.common import host_cluster
from federation.translate.proxy.features.upstream_http import HTTP_PROTOCOL_OPTIONS

STDOUT_LOGGER = "envoy.access_loggers.stdout"
FILE_LOGGER = "envoy.access_loggers.file"
OTEL_LOGGER = "envoy.access_loggers.open_telemetry"
#: The OpenTelemetry logs' ``log_name`` (the collector sees it as the instrumentation scope).
OTEL_LOG_NAME = "federation-gateway"
#: Connecting to an OpenTelemetry collector.
COLLECTOR_TIMEOUT_MS = 2_000

#: The fields of a line and the Envoy command operator of each, in the order logged.
FIELDS: dict[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "route": "%ROUTE_NAME%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "source_cluster": "%CEL(upstream.locality.sub_zone)%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "user_agent": "%REQ(USER-AGENT)%",
}


def _stdout_log() -> Any:
    config = stream_pb2.StdoutAccessLog()
    config.log_format.json_format.update(FIELDS)
    out = accesslog_pb2.AccessLog(name=STDOUT_LOGGER)
    out.typed_config.Pack(config, deterministic=True)
    return out


#: Built once: every connection manager gets a copy.
ACCESS_LOG = _stdout_log()


def add_access_log(hcm: Any, loggers: tuple[AccessLoggerIR, ...] | None = None) -> None:
    """Give the connection manager ``hcm`` its access logs: ``loggers`` (None: the
    default JSON line on standard output; empty: none)."""
    if loggers is None:
        hcm.access_log.add().CopyFrom(ACCESS_LOG)
        return
    for ir in loggers:
        hcm.access_log.add().CopyFrom(_logger(ir))


def _logger(ir: AccessLoggerIR) -> Any:
    if ir.otel_host is not None and ir.otel_port is not None:
        return _otel_logger(ir, ir.otel_host, ir.otel_port)
    config = file_pb2.FileAccessLog(path=ir.file or "/dev/stdout")
    if ir.text is not None:
        line = ir.text if ir.text.endswith("\n") else ir.text + "\n"
        config.log_format.text_format_source.inline_string = line
    else:
        config.log_format.json_format.update(dict(ir.fields) or FIELDS)
    out = accesslog_pb2.AccessLog(name=FILE_LOGGER)
    out.typed_config.Pack(config, deterministic=True)
    return out


def _otel_logger(ir: AccessLoggerIR, host: str, port: int) -> Any:
    config = logs_service_pb2.OpenTelemetryAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=OTEL_LOG_NAME, transport_api_version=config_source_pb2.V3
        )
    )
    config.common_config.grpc_service.envoy_grpc.cluster_name = otel_cluster_name(host, port)
    if ir.text is not None:
        config.body.string_value = ir.text
    else:
        for key, operator in ir.fields or tuple(FIELDS.items()):
            config.attributes.values.add(key=key).value.string_value = operator
    for key, value in ir.resources:
        config.resource_attributes.values.add(key=key).value.string_value = value
    out = accesslog_pb2.AccessLog(name=OTEL_LOGGER)
    out.typed_config.Pack(config, deterministic=True)
    return out


_HTTP2 = http_protocol_options_pb2.HttpProtocolOptions(
    explicit_http_config={"http2_protocol_options": {}}
)


def otel_cluster_name(host: str, port: int) -> str:
    return f"accesslog/otel/{host}/{port}"


def otel_clusters(listener: ListenerIR) -> dict[str, Any]:
    """The clusters of the OpenTelemetry collectors ``listener``'s loggers send to."""
    return {
        otel_cluster_name(ir.otel_host, ir.otel_port): _collector_cluster(
            ir.otel_host, ir.otel_port
        )
        for ir in listener.access_logs or ()
        if ir.otel_host is not None and ir.otel_port is not None
    }


def _collector_cluster(host: str, port: int) -> Any:
    out = host_cluster(otel_cluster_name(host, port), host, port, COLLECTOR_TIMEOUT_MS)
    out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(_HTTP2, deterministic=True)
    return out
