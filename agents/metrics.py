"""The agent's HTTP endpoints: Prometheus metrics, liveness and readiness.

Started by ``agents.main`` on ``--metrics-address`` (loopback by default).
``/readyz`` answers 200 only once the agent has published its state and
loaded the whole registry; ``/metrics`` renders the counters that the agent,
its registry watcher and its work queues keep.
"""

from __future__ import annotations

from aiohttp import web

from agents.agent import Agent


def render(agent: Agent) -> str:
    """Prometheus text exposition of the agent's counters and gauges."""
    stats = agent.watcher.stats
    cluster = agent.cluster
    rows: list[tuple[str, str, str, dict[str, str], float]] = [
        (
            "federation_agent_ready",
            "gauge",
            "1 once the agent is ready",
            {},
            1.0 if agent.ready.is_set() else 0.0,
        ),
        (
            "federation_agent_exports_published",
            "gauge",
            "services this cluster currently exports to the registry",
            {},
            len(agent.published),
        ),
        (
            "federation_agent_exports_invalid",
            "gauge",
            "ServiceExports that cannot be exported (Valid=False)",
            {},
            len(agent.problems),
        ),
        (
            "federation_registry_stale_clusters",
            "gauge",
            "member clusters whose lease expired",
            {},
            len(agent.watcher.stale_clusters()),
        ),
        (
            "federation_registry_entries_total",
            "counter",
            "stream entries applied",
            {},
            stats.entries,
        ),
        (
            "federation_registry_reloads_total",
            "counter",
            "full reloads of a cluster from a snapshot",
            {},
            stats.reloads,
        ),
        (
            "federation_registry_bad_records_total",
            "counter",
            "registry records skipped because they could not be decoded",
            {},
            stats.bad_records,
        ),
        (
            "federation_registry_errors_total",
            "counter",
            "registry reads that failed",
            {},
            stats.errors,
        ),
        (
            "federation_agent_status_writes_total",
            "counter",
            "status writes to ServiceExports and ServiceImports",
            {},
            agent.status.writes,
        ),
    ]
    for queue in (agent.export_queue, agent.import_queue):
        rows.append(
            (
                "federation_agent_queue_processed_total",
                "counter",
                "keys processed by a work queue",
                {"queue": queue.name},
                queue.processed,
            )
        )
        rows.append(
            (
                "federation_agent_queue_failed_total",
                "counter",
                "key processing attempts that failed",
                {"queue": queue.name},
                queue.failed,
            )
        )
    lines, seen = [], set()
    for name, kind, help_text, labels, value in rows:
        if name not in seen:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            seen.add(name)
        all_labels = {"cluster": cluster, **labels}
        label_text = ",".join(f'{k}="{v}"' for k, v in all_labels.items())
        lines.append(f"{name}{{{label_text}}} {value:g}")
    return "\n".join(lines) + "\n"


async def serve(agent: Agent, address: str) -> web.AppRunner:
    """Start the endpoints on ``host:port``; the caller cleans up the runner."""
    host, _, port = address.rpartition(":")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=render(agent), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if agent.ready.is_set():
            return web.Response(text="ok")
        return web.Response(status=503, text="not ready: loading the registry")

    app = web.Application()
    app.add_routes(
        [web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    return runner
