"""``fedctl trace``: where the latest change of one export (or route) went.

    fedctl trace service demo/echo --hub http://HUB:18080 \\
        --agent a=http://AGENT_A:9464 --agent b=http://AGENT_B:9464 [-o json]
    fedctl trace httproute demo/api --cluster b --hub ... --agent b=http://AGENT_B:9464

A route lives in one cluster and reaches that cluster's Envoys only: its trace is the
cluster's agent publishing it, the hub reading and applying it, and the cluster's Envoys.

Asks each agent's and the hub's ``/debug/trace`` and prints one timeline:

1. the exporting cluster's agent took up the change and published it: the registry
   stream entry (``<cluster>@<ms>-<seq>``) is the change's id from there on;
2. the hub read that entry, and updated the snapshots of the node groups it affected;
3. for each Envoy of those groups: when the response carrying it was sent, and when it
   was ACKed or NACKed (with Envoy's message) — or that it was sent and is not answered
   yet, or not sent yet;
4. for each importing cluster: when its agent wrote the ServiceImport reflecting that
   entry, or that it does not reflect it yet.

A trace of a change still on its way says so, step by step ("sent 120 ms ago, not
ACKed yet"). Times are the processes' own clocks (Unix time): across machines they are
as close as the machines' clocks are. Pure functions (:func:`timeline`,
:func:`render`) with the reads at the edge (:mod:`federation.cli.fedctl`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from federation.debug_payloads import AgentTrace, EnvoyProgress, HubTrace
from federation.errors import InvalidInputError


@dataclass(frozen=True)
class Step:
    """One step of a trace: when (Unix time; None for a step not taken yet), where, what."""

    at: float | None
    who: str
    what: str
    #: ``done``, ``pending`` (not taken yet) or ``failed`` (a NACK).
    state: str = "done"


@dataclass(frozen=True)
class Trace:
    service: str
    change: str | None
    steps: list[Step]
    now: float

    @property
    def complete(self) -> bool:
        return self.change is not None and all(s.state == "done" for s in self.steps)


def agent_urls(values: list[str]) -> dict[str, str]:
    """``--agent CLUSTER=URL`` values by cluster; InvalidInputError for a bad one."""
    found = {}
    for value in values:
        cluster, sep, url = value.partition("=")
        if not sep or not cluster or not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"--agent {value!r}: expected CLUSTER=http://HOST:PORT")
        found[cluster] = url.rstrip("/")
    return found


def _id(entry: str | None) -> tuple[int, int]:
    """A stream entry id ``<ms>-<seq>`` as a comparable pair ((0, 0) for none)."""
    ms, _, seq = (entry or "0-0").partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


#: Seconds after reading an entry within which the hub may still be applying it.
SETTLING = 2.0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def timeline(service: str, agents: Mapping[str, AgentTrace], hub: HubTrace) -> Trace:
    """The trace of the latest change of ``service`` from each agent's and the hub's
    ``/debug/trace`` answers."""
    now = float(hub.get("now") or 0.0)
    steps: list[Step] = []
    exports = {c: export for c, a in agents.items() if (export := a.get("export"))}
    if not exports:
        return Trace(
            service, None, [Step(None, "-", "no agent published a change", "pending")], now
        )
    origin, export = max(exports.items(), key=lambda item: item[1]["published_at"])
    entry = export.get("entry") or "0-0"  # none: a withdrawal of what was not there
    change = f"{origin}@{entry}"
    what = "withdrawn" if export.get("withdrawn") else "published"
    steps.append(Step(export["observed_at"], origin, "agent took up the change"))
    steps.append(Step(export["published_at"], origin, f"registry entry {entry} {what}"))
    read = next((r for r in hub.get("registry", []) if r["cluster"] == origin), None)
    if read is None or _id(read["position"]) < _id(entry):
        last = f" (it is at {read['position']})" if read else ""
        steps.append(Step(None, "hub", f"has not read entry {entry} yet{last}", "pending"))
        return Trace(service, change, steps, now)
    # Read from the stream (the entry's own time) or within a load (the load's time).
    at = read["entry_read_at"] if read.get("entry") == entry else None
    at = read["read_at"] if at is None else at
    steps.append(Step(at, "hub", f"read entry {entry}"))
    applied = hub.get("applied")
    if applied is None or _id((applied.get("positions") or {}).get(origin)) < _id(entry):
        # The hub's last update of it predates the entry: it is being applied, or it
        # changed no snapshot (say, an agent restart republishing the same records).
        if now - at < SETTLING:
            steps.append(Step(None, "hub", "is applying it", "pending"))
        else:
            steps.append(Step(None, "hub", "no snapshot changed: the Envoys had it already"))
    else:
        groups = ", ".join(
            f"{g} (generation {n})" for g, n in sorted(applied["generations"].items())
        )
        steps.append(Step(applied["at"], "hub", f"snapshots updated: {groups or 'none'}"))
        for envoy in hub.get("envoys", []):
            steps.extend(_envoy_steps(envoy, now))
    for cluster, answer in sorted(agents.items()):
        imported = answer.get("import")
        if imported is None:
            continue
        reflected = (imported.get("positions") or {}).get(origin)
        if _id(reflected) < _id(entry):
            steps.append(
                Step(None, cluster, f"ServiceImport does not reflect {entry} yet", "pending")
            )
        else:
            steps.append(Step(imported["written_at"], cluster, "ServiceImport written"))
    return Trace(service, change, steps, now)


def _envoy_steps(envoy: EnvoyProgress, now: float) -> list[Step]:
    who, node = str(envoy["group"]), str(envoy["node_id"])
    state, sent, answered = envoy["state"], envoy.get("sent_at"), envoy.get("answered_at")
    if state == "no envoy":
        return [Step(None, who, "no Envoy of this cluster is connected")]
    if state == "not sent":
        return [Step(None, who, f"{node}: not sent yet", "pending")]
    if state == "gone":
        sent_step = [] if sent is None else [Step(sent, who, f"{node}: sent")]
        gone = f"{node}: disconnected before ACKing it (it resyncs when it reconnects)"
        return [*sent_step, Step(answered, who, gone, "pending")]
    steps = [Step(sent, who, f"{node}: sent")]
    if state == "acked":
        steps.append(Step(answered, who, f"{node}: ACKed"))
    elif state == "nacked":
        steps.append(Step(answered, who, f"{node}: NACKed: {envoy.get('nack')}", "failed"))
    else:
        steps.append(
            Step(
                None, who, f"{node}: sent {_ms(now - (sent or now))} ago, not ACKed yet", "pending"
            )
        )
    return steps


def render(trace: Trace, output: str = "text") -> str:
    if output == "json":
        body = {
            "service": trace.service,
            "change": trace.change,
            "complete": trace.complete,
            "steps": [asdict(s) for s in trace.steps],
        }
        return json.dumps(body, indent=2) + "\n"
    start = min((s.at for s in trace.steps if s.at is not None), default=trace.now)
    lines = [f"{trace.service}: change {trace.change or '(none)'}"]
    # In time order; steps not taken yet last, in the order they would come.
    for step in sorted(trace.steps, key=lambda s: (s.at is None, s.at or 0.0)):
        when = "" if step.at is None else f"+{_ms(step.at - start)}"
        mark = {"done": "", "pending": "  <- in progress", "failed": "  <- FAILED"}[step.state]
        lines.append(f"{when:>10}  {step.who:<6} {step.what}{mark}")
    lines.append("complete" if trace.complete else "in progress")
    return "\n".join(lines) + "\n"
