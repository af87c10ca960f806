"""The agent's HTTP endpoints: Prometheus metrics, liveness and readiness.

Started by ``agents.main`` on ``--metrics-address`` (loopback by default).
``/readyz`` answers 200 only once the agent has published its state and
loaded the whole registry; ``/metrics`` renders the counters that the agent,
its registry watcher and its work queues keep.
"""

from __future__ import annotations

from aiohttp import web

from agents.agent import Agent
from federation.metrics import Sample, exposition
from federation.process import serve_http
from federation.registry.watcher import registry_samples


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
        *registry_samples(agent.watcher),
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


def render(agent: Agent) -> str:
    """Prometheus text exposition of the agent's counters and gauges."""
    return exposition(samples(agent), {"cluster": agent.cluster})


async def serve(agent: Agent, address: str) -> web.AppRunner:
    """Start the endpoints on ``host:port``; the caller cleans up the runner."""
    return await serve_http(address, "--metrics-address", agent.ready, lambda: render(agent))
