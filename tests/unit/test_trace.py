"""fedctl trace: the timeline built from the agents' and the hub's answers."""

from __future__ import annotations

from typing import Any, cast

import pytest

from agents.trace import publish_time
from federation.cli import trace as tr
from federation.debug_payloads import AgentTrace, EnvoyProgress, HubTrace
from federation.errors import InvalidInputError

ENTRY = "1764201600000-0"


def agents(imported_b: str | None = ENTRY) -> dict[str, AgentTrace]:
    b_positions = {} if imported_b is None else {"a": imported_b}
    return {
        "a": {
            "cluster": "a",
            "now": 100.5,
            "export": {"observed_at": 100.000, "entry": ENTRY, "published_at": 100.003},
            "import": {"written_at": 100.030, "positions": {"a": ENTRY}},
        },
        "b": {
            "cluster": "b",
            "now": 100.5,
            "export": None,
            "import": {"written_at": 100.040, "positions": b_positions},
        },
    }


def hub(*envoys: EnvoyProgress, read: str = ENTRY) -> HubTrace:
    return {
        "service": "demo/echo",
        "now": 100.500,
        "registry": [
            {
                "cluster": "a",
                "position": read,
                "read_at": 100.011,
                "entry": read,
                "entry_read_at": 100.010,
            }
        ],
        "applied": {"at": 100.012, "generations": {"a": 7, "b": 8}, "positions": {"a": read}},
        "envoys": list(envoys),
    }


def envoy(group: str, state: str, **more: Any) -> EnvoyProgress:
    return cast(
        EnvoyProgress, {"node_id": f"envoy-{group}", "group": group, "state": state, **more}
    )


def test_a_complete_trace_lists_every_step_in_order() -> None:
    found = tr.timeline(
        "service demo/echo",
        agents(),
        hub(
            envoy("a", "acked", sent_at=100.015, answered_at=100.020),
            envoy("b", "acked", sent_at=100.016, answered_at=100.025),
        ),
    )
    assert found.complete and found.change == f"a@{ENTRY}"
    assert tr.render(found).splitlines() == [
        f"service demo/echo: change a@{ENTRY}",
        "     +0 ms  a      agent took up the change",
        f"     +3 ms  a      registry entry {ENTRY} published",
        f"    +10 ms  hub    read entry {ENTRY}",
        "    +12 ms  hub    snapshots updated: a (generation 7), b (generation 8)",
        "    +15 ms  a      envoy-a: sent",
        "    +16 ms  b      envoy-b: sent",
        "    +20 ms  a      envoy-a: ACKed",
        "    +25 ms  b      envoy-b: ACKed",
        "    +30 ms  a      ServiceImport written",
        "    +40 ms  b      ServiceImport written",
        "complete",
    ]


def test_a_trace_in_progress_says_where_it_waits() -> None:
    found = tr.timeline(
        "demo/echo",
        agents(imported_b="1764201500000-0"),
        hub(
            envoy("a", "nacked", sent_at=100.015, answered_at=100.020, nack="bad listener"),
            envoy("b", "sent", sent_at=100.380),
        ),
    )
    text = tr.render(found)
    assert not found.complete and text.endswith("in progress\n")
    assert "envoy-a: NACKed: bad listener  <- FAILED" in text
    assert "envoy-b: sent 120 ms ago, not ACKed yet  <- in progress" in text
    assert f"b      ServiceImport does not reflect {ENTRY} yet  <- in progress" in text


def test_a_hub_behind_the_registry_stops_the_trace_there() -> None:
    found = tr.timeline("demo/echo", agents(), hub(read="1764201500000-0"))
    assert [s.what for s in found.steps][-1] == (
        f"has not read entry {ENTRY} yet (it is at 1764201500000-0)"
    )


def test_an_entry_within_a_load_counts_as_read_at_the_load() -> None:
    """The hub loaded the cluster after the entry (it has no entry of its own for it)."""
    loaded = hub()
    loaded["registry"][0].update(
        {"position": "1764201700000-3", "entry": None, "entry_read_at": None}
    )
    found = tr.timeline("demo/echo", agents(), loaded)
    assert tr.Step(100.011, "hub", f"read entry {ENTRY}") in found.steps


def test_agent_urls_are_cluster_equals_url() -> None:
    assert tr.agent_urls(["a=http://127.0.0.1:9464/"]) == {"a": "http://127.0.0.1:9464"}
    with pytest.raises(InvalidInputError, match="CLUSTER=http"):
        tr.agent_urls(["a:9464"])


def test_a_change_that_moved_no_snapshot_is_complete_once_settled() -> None:
    """The hub read the entry, but its last update of the service is older (an agent's
    restart republished the same records): nothing was to be sent."""
    older = hub(envoy("a", "acked", sent_at=99.0, answered_at=99.1))
    applied = older["applied"]
    assert applied is not None
    applied["positions"] = {"a": "1764201500000-0"}
    older["now"] = 103.0  # seconds after the hub read it
    found = tr.timeline("service demo/echo", agents(), older)
    assert found.complete
    assert tr.Step(None, "hub", "no snapshot changed: the Envoys had it already") in found.steps
    assert not [s for s in found.steps if "envoy-a" in s.what]  # the old push is not shown
    older["now"] = 100.5  # half a second after the hub read it
    assert tr.timeline("service demo/echo", agents(), older).steps[-3].what == "is applying it"


def test_an_envoy_gone_before_acking_and_a_cluster_without_envoys() -> None:
    found = tr.timeline(
        "service demo/echo",
        agents(),
        hub(envoy("a", "gone", sent_at=100.015, answered_at=100.2), envoy("b", "no envoy")),
    )
    text = tr.render(found)
    assert "envoy-a: disconnected before ACKing it" in text and "<- in progress" in text
    assert "b      no Envoy of this cluster is connected" in text
    assert not found.complete


def test_a_publish_takes_effect_at_its_entrys_time_within_the_call() -> None:
    assert publish_time("100005-0", 100.001, 100.020) == 100.005
    assert publish_time("100000-3", 100.0004, 100.020) == 100.0004  # ms truncation
    assert publish_time("200000-0", 100.001, 100.020) == 100.020  # another clock: bounded
    assert publish_time(None, 100.001, 100.020) == 100.020
