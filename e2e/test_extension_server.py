"""Envoy Gateway's extension server, called by the hub, end to end on a real Envoy.

On the shared three-cluster environment (as :mod:`e2e.test_gateway_api`), whose hub this
module restarts with ``--extension-server`` (and restores after): a Gateway in ``b``
routing to a ServiceImport exported by ``a``, and the tests' extension server
(:mod:`e2e.extension_server`, a process speaking the generated protocol) whose
``PostRouteModify`` adds ``x-extension: <cluster>``, the cluster the hub names in the
call. Then the server is killed: failing closed, the Gateway's Envoy keeps the last
result the extension accepted (a new route is not served) until the server is back;
failing open, it gets the translation unmodified. Both show in the hub's metrics.
Backend host ids are 120 and up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.cluster import free_port
from e2e.extension_server import HEADER
from e2e.federation import Federation, metric, prometheus_values
from e2e.processes import Process, wait_until
from e2e.test_gateway_api import CLUSTER_B, fed, make_gateway
from e2e.traffic import export_with_backends

pytestmark = pytest.mark.integration

#: The shared environment with our GatewayClass in b (the fixture of the Gateway tests).
__all__ = ["fed"]


class Extension:
    """The extension server process and the hub flags that call it."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.port = free_port()
        self.process: Process | None = None

    def start(self) -> None:
        self.process = self.fed.start_extension_server(self.port)

    def kill(self) -> None:
        assert self.process is not None
        self.fed.env.group.stop(self.process, grace=2)
        self.process = None

    def restart_hub(self, *, fail_open: bool) -> None:
        self.fed.kill_hub()
        flags = ["--extension-server", f"127.0.0.1:{self.port}", "--extension-hook", "Route"]
        flags += ["--extension-timeout", "0.5"] + (["--extension-fail-open"] if fail_open else [])
        self.fed.start_hub(extra_args=flags)
        self.fed.wait_hub_ready()


@pytest.fixture
def extension(fed: Federation) -> Iterator[Extension]:
    found = Extension(fed)
    found.start()
    try:
        yield found
    finally:
        if found.process is not None:
            found.kill()
        fed.kill_hub()  # back to the shared hub
        fed.start_hub()
        fed.wait_hub_ready()


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "ext")


def route(ns: str, name: str, path: str) -> dict[str, Any]:
    """An HTTPRoute on ``gw`` for ``path`` to echo, whose answers say ``x-route: name``."""
    rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": path}}],
        "filters": [
            {
                "type": "ResponseHeaderModifier",
                "responseHeaderModifier": {"add": [{"name": "x-route", "value": name}]},
            }
        ],
        "backendRefs": [gw.backend("echo")],
    }
    return gw.http_route(ns, name, "gw", [rule])


def marked(address: str, path: str) -> tuple[str, str] | None:
    """Of a 200 answer: its x-extension header and the route that answered (``-`` for
    none), None for no answer or another status."""
    reply = gw.try_request(address, path)
    if reply is None or reply.status != 200:
        return None
    return reply.headers.get(HEADER, "-"), reply.headers.get("x-route", "-")


def runs(fed: Federation, outcome: str) -> float:
    text = fed.hub_http("/metrics")
    return sum(prometheus_values(text, "federation_hub_extension_runs_total", {"outcome": outcome}))


def extended_gateway(
    fed: Federation, ns: str, extension: Extension, host_id: int, *, fail_open: bool
) -> str:
    """The hub restarted with the extension server, then a Gateway in b routing ``/`` to
    echo (served by ``host_id`` in a) whose answers carry the extension's header; its
    address."""
    extension.restart_hub(fail_open=fail_open)
    export_with_backends(fed, "a", ns, [host_id], start=True)
    address = make_gateway(fed, ns)
    gw.apply(fed.env.cluster(CLUSTER_B), route(ns, "api", "/"))
    wait_until(
        lambda: marked(address, "/") == ("b", "api"), timeout=gw.DEADLINE, what="x-extension: b"
    )
    return address


def test_a_route_hook_adds_its_header_and_failing_closed_keeps_the_last_result(
    fed: Federation, ns: str, extension: Extension
) -> None:
    address = extended_gateway(fed, ns, extension, 120, fail_open=False)
    b = fed.env.cluster(CLUSTER_B)
    extension.kill()
    before = runs(fed, "failed_closed")
    gw.apply(b, route(ns, "v2", "/v2"))
    wait_until(
        lambda: runs(fed, "failed_closed") > before,
        timeout=gw.DEADLINE,
        what="the hub to fail closed on the dead extension server",
    )
    kept = {marked(address, path) for path in ("/", "/v2/x") for _ in range(10)}
    text = fed.hub_http("/metrics")
    failing = metric(text, "federation_hub_extension_failing_groups")
    errors = prometheus_values(
        text, "federation_hub_extension_calls_total", {"hook": "Route", "outcome": "error"}
    )
    print(f"\nfail closed: answers {kept}; failing groups {failing}, Route errors {errors}")
    # The last result the extension accepted: no v2 route yet (the catch-all answers
    # /v2), and every answer still carries the extension's header.
    assert kept == {("b", "api")}
    assert failing >= 1 and sum(errors) >= 1
    extension.start()
    wait_until(
        lambda: marked(address, "/v2/x") == ("b", "v2"),
        timeout=gw.DEADLINE,
        what="the retried Gateway to go through the extension server again",
    )
    wait_until(
        lambda: metric(fed.hub_http("/metrics"), "federation_hub_extension_failing_groups") == 0,
        timeout=gw.DEADLINE,
        what="no failing group left",
    )


def test_failing_open_serves_the_translation_unmodified(
    fed: Federation, ns: str, extension: Extension
) -> None:
    address = extended_gateway(fed, ns, extension, 121, fail_open=True)
    b = fed.env.cluster(CLUSTER_B)
    extension.kill()
    gw.apply(b, route(ns, "v3", "/v3"))
    wait_until(
        lambda: marked(address, "/v3/x") == ("-", "v3"),
        timeout=gw.DEADLINE,
        what="the unmodified translation (with the new route) on b's Gateway Envoy",
    )
    print(f"\nfail open: failed_open runs {runs(fed, 'failed_open')}")
    assert marked(address, "/") == ("-", "api")
    assert runs(fed, "failed_open") >= 1
