"""``fedctl trace`` on real components: an export in ``a`` followed to every cluster's
Envoy and every importing cluster, and a trace that stops at "sent, not ACKed" for an
Envoy that was stopped (SIGSTOP: alive, connected, silent).

The environment is the shared three-cluster one (``data_plane`` in ``e2e/fixtures.py``);
each test works in a namespace of its own.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.federation import Federation, fedctl
from e2e.processes import wait_until
from e2e.traffic import DEADLINE, export_with_backends, host, wait_served_by
from federation.registry.gatewayapi import GATEWAY_GROUP

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(data_plane: Federation) -> Federation:
    return data_plane


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "trace")


def trace(
    fed: Federation, ns: str, output: str = "json", what: tuple[str, ...] = ("service", "echo")
) -> Any:
    """``fedctl trace`` of ``ns``'s export echo (or ``what``: kind, name, options)."""
    agents = [
        f"--agent={c}=http://127.0.0.1:{h.metrics_port}" for c, h in sorted(fed.agents.items())
    ]
    kind, name, *options = what
    done = fedctl(
        "trace", kind, f"{ns}/{name}", *options,
        "--hub", f"http://127.0.0.1:{fed.hub_http_port}", *agents, "-o", output,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if output == "json" else done.stdout


def step(found: dict[str, Any], who: str, what: str) -> dict[str, Any]:
    """The one step of ``who`` that says ``what`` (exactly, or followed by more words)."""
    match: dict[str, Any]
    (match,) = [
        s
        for s in found["steps"]
        if s["who"] == who and (s["what"] == what or s["what"].startswith(what + " "))
    ]
    return match


def test_an_export_is_traced_to_every_envoy_and_importer(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [70], start=True)
    for cluster in ("b", "c"):
        wait_served_by(fed.envoys[cluster], host(ns), "a")
    found: dict[str, Any] = {}

    def complete() -> bool:
        found.update(trace(fed, ns))
        return bool(found["complete"])

    wait_until(complete, timeout=DEADLINE, what="the trace to complete")
    print(trace(fed, ns, "text"))
    assert found["change"].startswith("a@")
    entry = found["change"].removeprefix("a@")
    took_up = step(found, "a", "agent took up the change")["at"]
    published = step(found, "a", f"registry entry {entry} published")["at"]
    read = step(found, "hub", f"read entry {entry}")["at"]
    applied = step(found, "hub", "snapshots updated:")["at"]
    assert all(s["state"] == "done" for s in found["steps"])
    # Timestamped, but for members without an Envoy (other tests' clusters in the registry).
    assert all(s["at"] is not None for s in found["steps"] if "no Envoy" not in s["what"])
    assert took_up <= published <= read <= applied
    for cluster in ("a", "b", "c"):
        sent = step(found, cluster, f"envoy-{cluster}: sent")["at"]
        acked = step(found, cluster, f"envoy-{cluster}: ACKed")["at"]
        assert applied <= sent <= acked, (cluster, applied, sent, acked)
    for cluster in ("b", "c"):
        assert step(found, cluster, "ServiceImport written")["at"] >= published


def test_a_stopped_envoy_ends_its_trace_at_sent_not_acked(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [71], start=True)
    envoy = fed.envoys["c"]
    wait_served_by(envoy, host(ns), "a")
    wait_until(lambda: trace(fed, ns)["complete"], timeout=DEADLINE, what="the first trace")
    first = trace(fed, ns)["change"]
    assert envoy.process is not None
    os.kill(envoy.process.pid, signal.SIGSTOP)  # our own Envoy, by its pid
    try:
        export_with_backends(fed, "a", ns, [71, 72], start=True)  # a new endpoint: a change
        found: dict[str, Any] = {}

        def stuck_at_c() -> bool:
            found.update(trace(fed, ns))
            if found["change"] == first:
                return False
            states = {(s["who"], s["state"]) for s in found["steps"]}
            return ("b", "done") in states and any(
                s["who"] == "c" and "not ACKed yet" in s["what"] for s in found["steps"]
            )

        wait_until(stuck_at_c, timeout=DEADLINE, what="the trace to stop at c's Envoy")
        text = trace(fed, ns, "text")
        print(text)
        assert not found["complete"] and text.rstrip().endswith("in progress")
        (sent, waiting) = [s for s in found["steps"] if s["who"] == "c" and "envoy-c" in s["what"]]
        assert sent["what"] == "envoy-c: sent" and sent["at"] is not None
        assert waiting["what"].endswith("ago, not ACKed yet") and waiting["state"] == "pending"
        assert step(found, "b", "envoy-b: ACKed")["state"] == "done"  # the others go on
    finally:
        os.kill(envoy.process.pid, signal.SIGCONT)
    wait_until(lambda: trace(fed, ns)["complete"], timeout=DEADLINE, what="c's Envoy to ACK")


def test_a_route_is_traced_to_its_gateways_envoy_only(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [73], start=True)
    b = fed.env.cluster("b")
    address = gw.listener_address(b)
    gw.apply(b, gw.gateway_class(), gw.gateway(ns, "gw", int(address.rpartition(":")[2])))
    envoy = fed.start_gateway_envoy("b", ns, "gw")
    group, node = f"b/{ns}/gw", f"envoy-b-{ns}-gw"
    route = [{"matches": [gw.prefix("/api")], "backendRefs": [gw.backend("echo")]}]
    gw.apply(b, gw.http_route(ns, "api", "gw", route))
    assert gw.wait_for_status(address, "/api/x", 200).json()["cluster"] == "a"
    what = ("httproute", "api", "--cluster", "b")
    wait_until(
        lambda: trace(fed, ns, what=what)["complete"], timeout=DEADLINE, what="the route's trace"
    )
    found = trace(fed, ns, what=what)
    print(trace(fed, ns, "text", what))
    entry = found["change"].removeprefix("b@")
    published = step(found, "b", f"registry entry {entry} published")["at"]
    read = step(found, "hub", f"read entry {entry}")["at"]
    applied = step(found, "hub", f"snapshots updated: {group} (generation")["at"]
    sent = step(found, group, f"{node}: sent")["at"]
    acked = step(found, group, f"{node}: ACKed")["at"]
    assert published <= read <= applied <= sent <= acked
    # The Gateway's own Envoys only: not b's shared Envoys, nor another cluster's.
    shared = ("envoy-a:", "envoy-b:", "envoy-c:")
    assert not [s for s in found["steps"] if s["what"].startswith(shared)]
    assert not [s for s in found["steps"] if s["who"] in ("a", "c")]
    # One of Envoy Gateway's policies on that route is followed the same way.
    gw.apply(
        b,
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": {"namespace": ns, "name": "timeouts"},
            "spec": {
                "targetRefs": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "name": "api"}],
                "timeout": {"http": {"requestTimeout": "3s"}},
            },
        },
    )
    policy = ("backendtrafficpolicy", "timeouts", "--cluster", "b")
    wait_until(
        lambda: trace(fed, ns, what=policy)["complete"], timeout=DEADLINE, what="the policy's trace"
    )
    found = trace(fed, ns, what=policy)
    print(trace(fed, ns, "text", policy))
    entry = found["change"].removeprefix("b@")
    published = step(found, "b", f"registry entry {entry} published")["at"]
    acked = step(found, group, f"{node}: ACKed")["at"]
    assert published <= acked
    envoy.stop()
