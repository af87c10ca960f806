"""A minimal OpenTelemetry logs collector for the e2e tests: an OTLP/gRPC
``LogsService.Export`` server on loopback that keeps every log record it receives.

Enough to see what a Gateway's Envoy sends to an ``OpenTelemetry`` access-log sink: each
record's attributes and body, and its resource's attributes. Used as a context manager.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


@dataclass(frozen=True)
class LogRecord:
    """One received log record, its values as strings."""

    resource: dict[str, str]
    attributes: dict[str, str]
    body: str


def _field(message: Any, name: str, old_name: str) -> Any:
    """Field ``name`` of ``message``, or ``old_name`` in the older OTLP protos that
    xds-protos ships (the same field numbers, so the same bytes, under older names)."""
    fields = message.DESCRIPTOR.fields_by_name
    return getattr(message, name if name in fields else old_name)


def _strings(key_values: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in key_values}


class Collector:
    """Receives OTLP logs at ``address`` (127.0.0.1 and a free port) while started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[LogRecord] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self._export,
                    request_deserializer=logs_service_pb2.ExportLogsServiceRequest.FromString,
                    response_serializer=logs_service_pb2.ExportLogsServiceResponse.SerializeToString,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.host = "127.0.0.1"

    def _export(self, request: Any, _: grpc.ServicerContext) -> Any:
        got = []
        for resource_logs in request.resource_logs:
            resource = _strings(resource_logs.resource.attributes)
            for scope in _field(resource_logs, "scope_logs", "instrumentation_library_logs"):
                for record in _field(scope, "log_records", "logs"):
                    got.append(
                        LogRecord(resource, _strings(record.attributes), record.body.string_value)
                    )
        with self._lock:
            self._records += got
        return logs_service_pb2.ExportLogsServiceResponse()

    def records(self) -> list[LogRecord]:
        with self._lock:
            return list(self._records)

    def __enter__(self) -> Collector:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop(grace=None)
