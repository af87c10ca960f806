"""A Gateway's access-log settings (its parameters' ``accessLog``, on its record) as the
access loggers of its listeners' connection managers.

Called by :mod:`.virtual_hosts` for each listener of the Gateway. One logger per sink of
each setting, in order; an OpenTelemetry sink's resource attributes get
``k8s.cluster.name`` (the Gateway's member cluster) unless the settings give it, so that
a collector shared by the clusterset can tell the clusters' logs apart. Pure.
"""

from __future__ import annotations

from federation.registry.telemetry import AccessLogSetting, ProxyAccessLog, SinkType
from federation.translate.ir import AccessLoggerIR

#: The resource attribute naming the member cluster of an OpenTelemetry log.
CLUSTER_ATTRIBUTE = "k8s.cluster.name"


def access_loggers(
    settings: ProxyAccessLog | None, cluster: str
) -> tuple[AccessLoggerIR, ...] | None:
    """The loggers of ``settings`` for a Gateway of ``cluster`` (None: the default log)."""
    if settings is None or (not settings.disable and not settings.settings):
        return None
    if settings.disable:
        return ()
    return tuple(logger for s in settings.settings for logger in _loggers(s, cluster))


def _loggers(setting: AccessLogSetting, cluster: str) -> list[AccessLoggerIR]:
    text: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    if setting.format is not None:
        if setting.format.is_text:
            text = setting.format.text or ""
        else:
            fields = setting.format.json
    out = []
    for sink in setting.sinks:
        if sink.type is SinkType.FILE and sink.file is not None:
            out.append(AccessLoggerIR(text, fields, file=sink.file.path))
        elif sink.open_telemetry is not None:
            otel = sink.open_telemetry
            resources = dict(otel.attributes)
            resources.setdefault(CLUSTER_ATTRIBUTE, cluster)
            out.append(
                AccessLoggerIR(
                    text,
                    fields,
                    otel_host=otel.host,
                    otel_port=otel.port,
                    resources=tuple(sorted(resources.items())),
                )
            )
    return out
