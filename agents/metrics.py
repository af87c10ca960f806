"""The agent's HTTP endpoints: Prometheus metrics, liveness and readiness, trace.

Started by ``agents.main`` on ``--metrics-address`` (loopback by default).
``/readyz`` answers 200 only once the agent has published its state and
loaded the whole registry; ``/metrics`` renders the counters that the agent,
its registry watcher, its work queues and its DNS server keep;
``/debug/trace?namespace=&name=`` is the agent's part of ``fedctl trace``
(:mod:`agents.trace`), ``/debug/dns?name=&type=`` what ``fedctl dns`` prints.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from agents.agent import Agent
from federation.debug_payloads import AgentTrace, DnsExplanation
from federation.dns.explain import explain
from federation.errors import InvalidInputError
from federation.metrics import Sample, exposition
from federation.process import serve_http
from federation.registry.watcher import ServiceName, registry_samples
from federation.retry import STATS as RETRIES


def samples(agent: Agent) -> list[Sample]:
    """The agent's counters and gauges, read now."""
    rows = [
        Sample(
            "federation_agent_ready", "gauge", "1 once the agent is ready", agent.ready.is_set()
        ),
        Sample(
            "federation_agent_exports_published",
            "gauge",
            "services this cluster currently exports to the registry",
            len(agent.exports.published),
        ),
        Sample(
            "federation_agent_exports_invalid",
            "gauge",
            "ServiceExports that cannot be exported (Valid=False)",
            len(agent.exports.problems),
        ),
        Sample(
            "federation_agent_exports_metadata_held_back",
            "gauge",
            "exports whose exportedLabels or exportedAnnotations are invalid and held back "
            "(ExportedMetadataValid=False)",
            sum(1 for _, metadata in agent.exports.metadata.values() if metadata.problems),
        ),
        *registry_samples(agent.watcher),
        *RETRIES.samples(),
        Sample(
            "federation_agent_status_writes_total",
            "counter",
            "status writes to ServiceExports and ServiceImports",
            agent.status.writes,
        ),
        Sample(
            "federation_agent_status_writes_skipped_total",
            "counter",
            "status writes skipped because the object was deleted meanwhile",
            agent.status.gone,
        ),
        Sample(
            "federation_agent_import_repairs_total",
            "counter",
            "objects the agent owns that someone else deleted or changed, and it repaired",
            agent.imports.repairs,
        ),
        Sample(
            "federation_agent_kube_throttled_retries_total",
            "counter",
            "apiserver requests answered 429 (Too Many Requests) and retried",
            agent.kube.throttled,
        ),
    ]
    rows += dns_samples(agent)
    rows += credential_samples(agent)
    for queue in (agent.exports.queue, agent.imports.queue):
        labels = {"queue": queue.name}
        rows += [
            Sample(
                "federation_agent_queue_processed_total",
                "counter",
                "keys processed by a work queue",
                queue.processed,
                labels,
            ),
            Sample(
                "federation_agent_queue_failed_total",
                "counter",
                "key processing attempts that failed",
                queue.failed,
                labels,
            ),
        ]
    return rows


def dns_samples(agent: Agent) -> list[Sample]:
    """The clusterset.local server's counters (none when the agent does not serve it)."""
    server = agent.dns
    if server is None:
        return []
    rows = [
        Sample(
            "federation_agent_dns_imports",
            "gauge",
            "imports with names in this cluster's clusterset.local zone",
            len(server.zone),
        ),
        Sample(
            "federation_agent_dns_tcp_refused_total",
            "counter",
            "DNS TCP connections closed at once: too many open",
            server.tcp_refused,
        ),
    ]
    for (transport, qtype, rcode), count in sorted(server.counts.items()):
        rows.append(
            Sample(
                "federation_agent_dns_queries_total",
                "counter",
                "DNS messages by transport, query type and response code (dropped: no response)",
                count,
                {"transport": transport, "qtype": qtype, "rcode": rcode},
            )
        )
    return rows


def credential_samples(agent: Agent) -> list[Sample]:
    """The credential server's counters (none when the agent does not serve credentials):
    a NACK means an Envoy refused the credentials it was sent and keeps its last ones."""
    server = agent.gateway.credential_server
    if server is None:
        return []
    metrics = server.metrics
    rows = [
        Sample(
            "federation_agent_credential_configs",
            "gauge",
            "basic auth and API key configurations served to this cluster's Gateway Envoys",
            len(agent.gateway.credentials.configs),
        ),
        Sample(
            "federation_agent_credential_streams",
            "gauge",
            "Gateway Envoys' streams open to the credential server",
            metrics.streams_active,
        ),
        Sample(
            "federation_agent_credential_nacks_total",
            "counter",
            "credential configurations an Envoy refused",
            metrics.nacks,
        ),
    ]
    for reason, count in sorted(metrics.refusals.items()):
        rows.append(
            Sample(
                "federation_agent_credential_streams_refused_total",
                "counter",
                "streams the credential server refused, by reason",
                count,
                {"reason": reason},
            )
        )
    return rows


def dns_payload(agent: Agent, name: str, qtype: str) -> DnsExplanation:
    """What this agent's zone answers to ``name`` of type ``qtype``, and why (``fedctl
    dns``)."""
    return explain(agent.imports.zone, name, qtype, agent.cluster)


def render(agent: Agent) -> str:
    """Prometheus text exposition of the agent's counters and gauges."""
    return exposition(samples(agent), {"cluster": agent.cluster})


def trace_payload(agent: Agent, key: ServiceName, kind: str = "service") -> AgentTrace:
    """The agent's part of ``fedctl trace`` for one service, or one of its cluster's
    Gateway API records of ``kind`` (:mod:`agents.trace`)."""
    if kind != "service":
        found = agent.gateway.trace.get((kind, *key))
        return {"cluster": agent.cluster, "now": time.time(), "export": found, "import": None}
    return {
        "cluster": agent.cluster,
        "now": time.time(),
        "export": agent.exports.trace.get(key),
        "import": agent.imports.trace.get(key),
    }


async def serve(agent: Agent, address: str) -> web.AppRunner:
    """Start the endpoints on ``host:port`` (``/debug/trace`` among them); the caller
    cleans up the runner."""

    async def trace(request: web.Request) -> web.Response:
        namespace, name = request.query.get("namespace", ""), request.query.get("name", "")
        if not namespace or not name:
            raise web.HTTPBadRequest(text="?namespace=<namespace>&name=<service> is required\n")
        kind = request.query.get("kind", "service")
        body = json.dumps(trace_payload(agent, (namespace, name), kind))
        return web.Response(text=body, content_type="application/json")

    async def dns_question(request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if not name:
            raise web.HTTPBadRequest(text="?name=<name>[&type=A] is required\n")
        try:
            payload = dns_payload(agent, name, request.query.get("type", "A"))
        except InvalidInputError as err:
            raise web.HTTPBadRequest(text=f"{err}\n") from err
        return web.Response(text=json.dumps(payload), content_type="application/json")

    routes = {"/debug/trace": trace, "/debug/dns": dns_question}
    return await serve_http(
        address, "--metrics-address", agent.ready, lambda: render(agent), routes
    )
