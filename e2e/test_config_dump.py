"""``fedctl config-dump`` against the hub and real Envoys: what the hub serves cluster b
equals what b's Envoy reports in its admin ``/config_dump``, and a listener that b's
Envoy NACKed shows as a difference with the NACK message.

The environment is the shared three-cluster one (``data_plane`` in ``e2e/fixtures.py``);
each test works in a namespace of its own.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from e2e import scenario as sc
from e2e.federation import Federation, fedctl
from e2e.processes import HarnessError, wait_until
from e2e.traffic import (
    DEADLINE,
    export_with_backends,
    host,
    listener_port_taken,
    wait_served_by,
)
from federation.cli.config_dump import TYPES, envoy_resources
from federation.xds.snapshot import CLUSTER

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(data_plane: Federation) -> Federation:
    return data_plane


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "dump")


def config_dump(fed: Federation, *args: str) -> tuple[int, str]:
    done = fedctl(
        "config-dump", "--hub", f"http://127.0.0.1:{fed.hub_http_port}", "--cluster", "b", *args
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def test_the_dump_of_b_equals_what_bs_envoy_holds(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [60], start=True)
    envoy = fed.envoys["b"]
    wait_served_by(envoy, host(ns), "a")

    shown: list[str] = [""]

    def same() -> bool:
        code, shown[0] = config_dump(fed, "--envoy-admin", envoy.admin_address)
        return code == 0

    # Equal once b's Envoy has ACKed the latest push (a change may be in flight).
    try:
        wait_until(same, timeout=DEADLINE, what="b's Envoy to hold what the hub serves b")
    except HarnessError as err:
        raise AssertionError(f"{err}; the last comparison:\n{shown[0]}") from err
    code, text = config_dump(fed, "--envoy-admin", envoy.admin_address)
    print(text)
    assert code == 0
    for short in TYPES:
        assert f"  {short}: " in text and ", 0 differ" in text
    # The dump itself: the same names as Envoy's own dynamic resources, by Envoy's field names.
    code, out = config_dump(fed, "-o", "json")
    dumped: dict[str, Any] = json.loads(out)
    admin = envoy_resources(json.loads(envoy.admin("/config_dump?include_eds")))
    names = {r["name"] for r in dumped["clusters"]["resources"]}
    assert names == set(admin.resources[CLUSTER]) and f"clusterset/{ns}/echo/80" in names
    cluster = next(
        r for r in dumped["clusters"]["resources"] if r["name"].endswith(f"/{ns}/echo/80")
    )
    assert cluster["resource"]["outlier_detection"]["consecutive_local_origin_failure"] == 5
    assert cluster["resource"] == admin.resources[CLUSTER][cluster["name"]]


def test_a_nacked_listener_is_a_difference_with_the_nack_message(fed: Federation, ns: str) -> None:
    """b's listener port is taken when b's Envoy starts: it NACKs the listener, and the
    dump against its admin shows the hub's listener missing there, with the NACK."""
    export_with_backends(fed, "a", ns, [61], start=True)
    wait_served_by(fed.envoys["c"], host(ns), "a")
    with listener_port_taken(fed, "b") as envoy:
        port = envoy.listener_address.rpartition(":")[2]

        def nacked() -> bool:
            code, text = config_dump(
                fed, "--envoy-admin", envoy.admin_address, "--type", "listeners"
            )
            return code == 1 and "NACKed by" in text

        wait_until(nacked, timeout=DEADLINE, what="the dump to show b's NACKed listener")
        code, text = config_dump(fed, "--envoy-admin", envoy.admin_address, "--type", "listeners")
        print(text)
        assert code == 1
        # Other tests' Gateway listeners in b are the same; the clusterset one differs.
        assert re.search(r"listeners: \d+ same, 1 differ", text), text
        assert "--- hub/listeners/clusterset-http\n+++ /dev/null\n" in text
        assert "NACKed by envoy-b" in text and port in text  # Envoy's message names the port
        _, table = config_dump(fed, "--node", "envoy-b", "--type", "listeners")
        assert "nacked" in table and "NACKed version" in table
    wait_served_by(envoy, host(ns), "a")  # the re-offer after the port is free
    wait_until(
        lambda: config_dump(fed, "--envoy-admin", envoy.admin_address)[0] == 0,
        timeout=DEADLINE,
        what="b's Envoy to hold the listener after all",
    )
