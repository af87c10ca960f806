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
  ``Text`` (``text``, Envoy command operators; a file line gets a newline when missing)
  or ``JSON`` (``json``, field name to command operator); without ``type``, exactly one
  of ``text`` and ``json``; no format: our default JSON line.
* Sinks: ``File`` with ``file.path`` ``/dev/stdout`` or ``/dev/stderr`` only: a
  Gateway's Envoys run with a read-only root file system, and their log streams are
  what the cluster's log agent collects. ``OpenTelemetry``: ``openTelemetry.host`` (a
  DNS name or an IP address) and ``port`` (4317 by default, as in Envoy Gateway), a
  collector speaking OTLP/gRPC; ``resourceAttributes`` (or the deprecated
  ``resources``, not both) become the log's resource attributes, ``k8s.cluster.name``
  defaulting to the Gateway's member cluster.
* Refused by name, so that nothing is silently dropped: ``settings[].matches`` (a CEL
  expression Envoy would refuse only when the listener arrives, failing the whole
  listener), ``settings[].type`` other than ``Route`` (the Listener and Upstream
  loggers), the ``ALS`` sink, and ``openTelemetry.backendRefs`` and ``headers``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml

from federation.errors import InvalidInputError
from federation.registry.codec import from_json, unknown_fields
from federation.registry.records import InvalidRecordError

#: The parameters ConfigMap key that holds the settings.
ACCESS_LOG_KEY = "accessLog"
#: The files a ``File`` sink may name: the Envoy container's log streams.
LOG_STREAMS = ("/dev/stdout", "/dev/stderr")
#: Envoy Gateway's default OpenTelemetry collector port (OTLP/gRPC).
OTLP_PORT = 4317
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


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
        if self.type is None and bool(self.text) == bool(self.json):
            raise ValueError("without type, give exactly one of text and json")
        if self.type is FormatType.TEXT and self.json:
            raise ValueError("json is not used when type is Text")
        if self.type is FormatType.JSON and self.text:
            raise ValueError("text is not used when type is JSON")

    @property
    def is_text(self) -> bool:
        """A text line (else JSON): ``type``, or the one of ``text`` and ``json`` given."""
        return self.type is FormatType.TEXT or (self.type is None and bool(self.text))


@dataclass(frozen=True)
class FileSink:
    path: str

    def __post_init__(self) -> None:
        if self.path not in LOG_STREAMS:
            raise ValueError(
                f"path {self.path!r} is not supported: only {' and '.join(LOG_STREAMS)} "
                "(a Gateway's Envoys have a read-only file system; the cluster's log agent "
                "collects their log streams)"
            )


@dataclass(frozen=True)
class OpenTelemetrySink:
    host: str
    port: int = OTLP_PORT
    resources: tuple[tuple[str, str], ...] = ()
    resource_attributes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _is_host(self.host):
            raise ValueError(f"host {self.host!r} must be a DNS name or an IP address")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1 to 65535, got {self.port}")
        if self.resources and self.resource_attributes:
            raise ValueError("give resourceAttributes or the deprecated resources, not both")

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
UNSUPPORTED = ("matches", "als", "backendRefs", "headers")


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_DNS_NAME.match(host))
    return True


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
