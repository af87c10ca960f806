"""The hub's HTTP endpoints and metrics: health, readiness, ``/metrics`` and proxy status.

Started by ``federation-hub`` (:mod:`federation.cli.hub`) beside the xDS server.
``/debug/proxy-status`` is what ``fedctl proxy-status`` reads: every connected Envoy and
the sync state of each resource type it subscribed to.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Literal

from aiohttp import web

from federation.hub.core import Hub
from federation.metrics import Sample, exposition
from federation.process import serve_http
from federation.registry.watcher import registry_samples
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
            "changes of one cluster's Gateway configuration pushed to its Envoys only",
            hub.builder.gateway_pushes,
        ),
        *(
            Sample(f"federation_xds_{name}", kind, text, getattr(xds, attr))
            for name, kind, text, attr in _XDS_METRICS
        ),
        *registry_samples(hub.watcher),
    ]


_XDS_METRICS: tuple[tuple[str, Literal["counter", "gauge"], str, str], ...] = (
    ("streams_opened_total", "counter", "ADS streams opened", "streams_opened"),
    ("streams_active", "gauge", "ADS streams open now", "streams_active"),
    (
        "streams_rejected_total",
        "counter",
        "ADS streams refused (no or unauthorized node)",
        "streams_rejected",
    ),
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
)


async def serve_hub_http(
    hub: Hub, sync: SyncRegistry, xds: XdsMetrics, address: str
) -> web.AppRunner:
    async def proxy_status(_: web.Request) -> web.Response:
        body = json.dumps([p.to_json() for p in sync.list()], indent=2)
        return web.Response(text=body, content_type="application/json")

    return await serve_http(
        address,
        "--http-address",
        hub.ready,
        lambda: exposition(_samples(hub, sync, xds)),
        {"/debug/proxy-status": proxy_status},
    )
