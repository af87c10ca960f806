"""The hub's HTTP endpoints and metrics: health, readiness, ``/metrics`` and proxy status.

Started by ``federation-hub`` (:mod:`federation.cli.hub`) beside the xDS server.
``/debug/proxy-status`` is what ``fedctl proxy-status`` reads: every connected Envoy and
the sync state of each resource type it subscribed to, then the nodes refused in the
last minutes (with ``refused``: reason, gRPC code, message, count).
``/debug/config-dump?cluster=<id>`` is what ``fedctl config-dump`` reads: that node
group's snapshot, resource by resource (:mod:`federation.hub.config_dump`);
``/debug/trace?namespace=&name=`` is the hub's part of ``fedctl trace``
(:mod:`federation.hub.trace`).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Literal

from aiohttp import web

from federation.hub.config_dump import payload
from federation.hub.core import Hub
from federation.hub.extension import BUCKETS, ExtensionStage
from federation.hub.trace import trace_payload
from federation.metrics import Sample, exposition, histogram
from federation.process import serve_http
from federation.registry.kinds import Kind
from federation.registry.watcher import registry_samples
from federation.retry import STATS as RETRIES
from federation.xds.status import SyncRegistry, SyncState, XdsMetrics


def _samples(hub: Hub, sync: SyncRegistry, xds: XdsMetrics) -> list[Sample]:
    proxies = sync.list()
    states = Counter(t.state for p in proxies for t in p.types)
    return [
        Sample(
            "federation_hub_ready",
            "gauge",
            "1 once the whole registry is loaded",
            hub.ready.is_set(),
        ),
        Sample(
            "federation_hub_registry_failing_seconds",
            "gauge",
            "seconds that reads of the registry have failed for (0 while they succeed)",
            hub.watcher.failing_for(),
        ),
        Sample("federation_hub_connected_proxies", "gauge", "connected ADS streams", len(proxies)),
        *(
            Sample(
                "federation_hub_proxy_types",
                "gauge",
                "resource types of connected Envoys, by sync state",
                states[state],
                {"state": state.value},
            )
            for state in SyncState
        ),
        Sample(
            "federation_hub_full_pushes_total",
            "counter",
            "changes that rebuilt every node group's snapshot",
            hub.builder.full_pushes,
        ),
        Sample(
            "federation_hub_endpoint_pushes_total",
            "counter",
            "changes pushed as ClusterLoadAssignments only",
            hub.builder.endpoint_pushes,
        ),
        Sample(
            "federation_hub_route_pushes_total",
            "counter",
            "changes pushed as the clusterset route configuration only",
            hub.builder.route_pushes,
        ),
        Sample(
            "federation_hub_gateway_pushes_total",
            "counter",
            "changes of one Gateway's configuration pushed to its own Envoys only",
            hub.builder.gateway_pushes,
        ),
        Sample(
            "federation_hub_translation_errors_total",
            "counter",
            "node group or service updates that failed in translation (logged; what was "
            "served stays)",
            hub.builder.translation_errors,
        ),
        *(
            Sample(f"federation_xds_{name}", kind, text, getattr(xds, attr))
            for name, kind, text, attr in _XDS_METRICS
        ),
        *(
            Sample(
                "federation_xds_streams_refused_total",
                "counter",
                "ADS streams refused, by reason",
                count,
                {"reason": reason},
            )
            for reason, count in sorted(xds.refusals.items())
        ),
        *registry_samples(hub.watcher),
        *RETRIES.samples(),
        *([] if hub.extension is None else extension_samples(hub.extension)),
    ]


def extension_samples(stage: ExtensionStage) -> list[Sample]:
    """The extension server's calls (by hook and outcome), their latency, the group runs
    (by outcome) and the groups whose last run failed."""
    stats = stage.stats
    out = [
        Sample(
            "federation_hub_extension_calls_total",
            "counter",
            "calls of the extension server, by hook and outcome (ok, error, timeout, invalid)",
            count,
            {"hook": hook, "outcome": outcome},
        )
        for (hook, outcome), count in sorted(stats.calls.items())
    ]
    for hook, counts in sorted(stats.buckets.items()):
        out += histogram(
            "federation_hub_extension_call_seconds",
            "latency of the extension server's calls, by hook",
            BUCKETS,
            counts,
            stats.seconds.get(hook, 0.0),
            {"hook": hook},
        )
    out += [
        Sample(
            "federation_hub_extension_remembered_total",
            "counter",
            "hook requests answered from what the server said before (the input was the same)",
            stats.remembered,
        ),
        *(
            Sample(
                "federation_hub_extension_runs_total",
                "counter",
                "node group runs through the extension server, by outcome (ok, unchanged, "
                "failed_open: served unmodified, failed_closed: kept what it served)",
                count,
                {"outcome": outcome},
            )
            for outcome, count in sorted(stats.runs.items())
        ),
        Sample(
            "federation_hub_extension_failing_groups",
            "gauge",
            "node groups whose last run through the extension server failed (retried)",
            len(stage.due()),
        ),
    ]
    return out


_XDS_METRICS: tuple[tuple[str, Literal["counter", "gauge"], str, str], ...] = (
    ("streams_opened_total", "counter", "ADS streams opened", "streams_opened"),
    ("streams_active", "gauge", "ADS streams open now", "streams_active"),
    ("responses_total", "counter", "discovery responses sent", "responses_sent"),
    ("sent_bytes_total", "counter", "bytes of discovery responses sent", "bytes_sent"),
    ("acks_total", "counter", "responses Envoys ACKed", "acks"),
    ("nacks_total", "counter", "responses Envoys NACKed", "nacks"),
    ("stale_requests_total", "counter", "requests ignored for a stale nonce", "stale_requests"),
    (
        "nack_reoffers_total",
        "counter",
        "NACKed responses offered again after their backoff",
        "nack_reoffers",
    ),
    (
        "catch_ups_total",
        "counter",
        "streams of Envoys holding configuration, held until the hub read the registry again",
        "catch_ups",
    ),
    (
        "catch_up_timeouts_total",
        "counter",
        "of those, streams served what the hub had after the wait timed out",
        "catch_up_timeouts",
    ),
    ("tls_reloads_total", "counter", "xDS TLS files re-read after a change", "tls_reloads"),
    (
        "tls_reload_failures_total",
        "counter",
        "xDS TLS files that changed but could not be used (the old ones stay)",
        "tls_reload_failures",
    ),
)


async def serve_hub_http(
    hub: Hub, sync: SyncRegistry, xds: XdsMetrics, address: str
) -> web.AppRunner:
    async def proxy_status(_: web.Request) -> web.Response:
        entries = [p.to_json() for p in sync.list()] + [r.to_json() for r in sync.refused()]
        body = json.dumps(entries, indent=2)
        return web.Response(text=body, content_type="application/json")

    async def config_dump(request: web.Request) -> web.Response:
        group = request.query.get("cluster", "")
        if not group:
            raise web.HTTPBadRequest(text="?cluster=<member cluster id> is required\n")
        run = None if hub.extension is None else hub.extension.last.get(group)
        found = payload(hub.cache, group, run)
        if found is None:
            why = "" if run is None or run.error is None else f" (extension server: {run.error})"
            raise web.HTTPNotFound(
                text=f"the hub serves no configuration to cluster {group!r}{why}\n"
            )
        return web.Response(text=json.dumps(found), content_type="application/json")

    async def trace(request: web.Request) -> web.Response:
        namespace, name = request.query.get("namespace", ""), request.query.get("name", "")
        cluster = request.query.get("cluster", "")
        try:
            kind = Kind(request.query.get("kind", "service"))
        except ValueError:
            raise web.HTTPBadRequest(text=f"kind: one of {', '.join(Kind)}\n") from None
        if not namespace or not name or (kind is not Kind.SERVICE and not cluster):
            raise web.HTTPBadRequest(
                text="?namespace=&name= are required (and &cluster= for a route)\n"
            )
        found = trace_payload(hub.watcher, hub.changes, sync, (namespace, name), kind, cluster)
        return web.Response(text=json.dumps(found), content_type="application/json")

    return await serve_http(
        address,
        "--http-address",
        hub.ready,
        lambda: exposition(_samples(hub, sync, xds)),
        {
            "/debug/proxy-status": proxy_status,
            "/debug/config-dump": config_dump,
            "/debug/trace": trace,
        },
        not_ready=hub.not_ready,
    )
