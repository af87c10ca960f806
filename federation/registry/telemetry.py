"""A Gateway's access-log settings, in Envoy Gateway's ``EnvoyProxy.spec.telemetry.accessLog``
shape, as the ``accessLog`` key of the Gateway's parameters ConfigMap holds them.

The agent parses the key (:func:`parse_access_log`, YAML or JSON) and publishes the result
on the Gateway's record (``GatewayRecord.access_log``); the hub renders it on every
connection manager of that Gateway's listeners (:mod:`federation.translate.proxy.access_log`).
Without the key, a Gateway's Envoys log as every Envoy we configure does: one JSON line per
request on standard output, with the source cluster.

What is supported, and how it differs from Envoy Gateway:

* ``disable: true``: no access log at all.
* ``settings[]``, each with a ``format`` and one or more ``sinks``. ``format.type``
  ``Text`` (``text``, Envoy command operators; a newline is added when missing) or
  ``JSON`` (``json``, field name to command operator); no format: our default JSON line.
* Sinks: ``File`` (``file.path``, ``/dev/stdout`` included) and ``OpenTelemetry``
  (``openTelemetry.host`` and ``port``, a collector speaking OTLP/gRPC; ``resources`` or
  ``resourceAttributes`` become the log's resource attributes, ``k8s.cluster.name``
  defaulting to the Gateway's member cluster).
* Refused by name, so that nothing is silently dropped: ``settings[].matches`` (a CEL
  expression Envoy would refuse only when the listener arrives, failing the whole
  listener), ``settings[].type`` other than ``Route`` (the Listener and Upstream
  loggers), the ``ALS`` sink, and ``openTelemetry.backendRefs`` and ``headers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml

from federation.errors import InvalidInputError
from federation.registry.codec import from_json, unknown_fields
from federation.registry.records import InvalidRecordError

#: The parameters ConfigMap key that holds the settings.
ACCESS_LOG_KEY = "accessLog"


class FormatType(StrEnum):
    TEXT = "Text"
    JSON = "JSON"


class SinkType(StrEnum):
    FILE = "File"
    OPEN_TELEMETRY = "OpenTelemetry"


@dataclass(frozen=True)
class AccessLogFormat:
    type: FormatType | None = None
    text: str | None = None
    #: Field name -> Envoy command operator, as sorted pairs.
    json: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.type is FormatType.TEXT and not self.text:
            raise ValueError("text is required when type is Text")
        if self.type is FormatType.JSON and not self.json:
            raise ValueError("json is required when type is JSON")
        if self.type is None and not self.text and not self.json:
            raise ValueError("give type with text or json")

    @property
    def is_text(self) -> bool:
        """A text line (else JSON): ``type``, or the one of ``text`` and ``json`` given."""
        return self.type is FormatType.TEXT or (self.type is None and bool(self.text))


@dataclass(frozen=True)
class FileSink:
    path: str

    def __post_init__(self) -> None:
        if not self.path or "\n" in self.path or "\0" in self.path:
            raise ValueError("path must be a file path")


@dataclass(frozen=True)
class OpenTelemetrySink:
    host: str
    port: int
    resources: tuple[tuple[str, str], ...] = ()
    resource_attributes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in "/: \n"):
            raise ValueError(f"host {self.host!r} must be a host name or IPv4 address")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1 to 65535, got {self.port}")

    @property
    def attributes(self) -> tuple[tuple[str, str], ...]:
        """The resource attributes: ``resourceAttributes``, else the deprecated
        ``resources`` (as Envoy Gateway reads them)."""
        return self.resource_attributes or self.resources


@dataclass(frozen=True)
class AccessLogSink:
    type: SinkType
    file: FileSink | None = None
    open_telemetry: OpenTelemetrySink | None = None

    def __post_init__(self) -> None:
        wanted = {SinkType.FILE: "file", SinkType.OPEN_TELEMETRY: "openTelemetry"}[self.type]
        given = [n for n, v in (("file", self.file), ("openTelemetry", self.open_telemetry)) if v]
        if given != [wanted]:
            raise ValueError(f"a {self.type.value} sink needs {wanted} (and nothing else)")


@dataclass(frozen=True)
class AccessLogSetting:
    sinks: tuple[AccessLogSink, ...]
    format: AccessLogFormat | None = None
    #: Only ``Route`` (the connection manager's log, what an unset type also means here).
    type: str | None = None

    def __post_init__(self) -> None:
        if not self.sinks:
            raise ValueError("sinks must list at least one sink")
        if self.type not in (None, "Route"):
            raise ValueError(f"type {self.type} is not supported (only Route)")


@dataclass(frozen=True)
class ProxyAccessLog:
    """``telemetry.accessLog``: ``disable``, or the ``settings`` that replace the default."""

    disable: bool = False
    settings: tuple[AccessLogSetting, ...] = ()


#: Fields of Envoy Gateway's shape we do not implement, refused by name.
UNSUPPORTED = ("matches", "als", "backendRefs", "headers", "logName")


def parse_access_log(text: str, where: str) -> ProxyAccessLog:
    """The ``accessLog`` value of a parameters ConfigMap (``where`` names it); raises
    InvalidInputError naming the field path and what is wrong."""
    path = f"{where}: {ACCESS_LOG_KEY}"
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidInputError(f"{path} is not YAML: {err}") from err
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{path} must be a mapping (EnvoyProxy telemetry.accessLog)")
    unknown = unknown_fields(ProxyAccessLog, raw, ACCESS_LOG_KEY)
    if unknown:
        unsupported = [u for u in unknown if u.rpartition(".")[2].split("[")[0] in UNSUPPORTED]
        named = unsupported or unknown
        kind = "not supported" if unsupported else "unknown"
        raise InvalidInputError(f"{where}: {kind}: {', '.join(named)}")
    try:
        return from_json(ProxyAccessLog, raw, path=ACCESS_LOG_KEY)
    except InvalidRecordError as err:
        raise InvalidInputError(f"{where}: {err}") from err


__all__ = [
    "ACCESS_LOG_KEY",
    "AccessLogFormat",
    "AccessLogSetting",
    "AccessLogSink",
    "FileSink",
    "FormatType",
    "OpenTelemetrySink",
    "ProxyAccessLog",
    "SinkType",
    "parse_access_log",
]
