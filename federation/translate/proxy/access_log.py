"""The access log of every connection manager: one JSON object per request on the Envoy's
standard output, the clusterset listener and the Gateways' alike.

Called by :func:`federation.translate.proxy.listeners.connection_manager`. Beside what
every access log has (method, path, authority, status, response flags, bytes and
durations, the route and upstream cluster and host), each line says **which member
cluster served the request**: ``source_cluster`` is the locality of the endpoint that
answered (the localities of a clusterset cluster are its source clusters,
:mod:`.clusters`), read with Envoy's CEL formatter. A request that reached no endpoint
(a direct response, a refused one, a local Service of a Gateway's own cluster) logs the
fields it has and ``-`` for the others. Pure.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2

STDOUT_LOGGER = "envoy.access_loggers.stdout"

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


def add_access_log(hcm: Any) -> None:
    """Give the connection manager ``hcm`` the access log."""
    hcm.access_log.add().CopyFrom(ACCESS_LOG)
