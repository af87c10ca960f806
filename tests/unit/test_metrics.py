"""The Prometheus text exposition shared by the hub and the agents."""

from __future__ import annotations

from federation.metrics import Sample, exposition


def test_each_metric_has_help_and_type_once_then_its_samples() -> None:
    text = exposition(
        [
            Sample("q_total", "counter", "keys processed", 3, {"queue": "exports"}),
            Sample("q_total", "counter", "keys processed", 4, {"queue": "imports"}),
            Sample("ready", "gauge", "1 once ready", True),
        ]
    )
    assert text == (
        "# HELP q_total keys processed\n"
        "# TYPE q_total counter\n"
        'q_total{queue="exports"} 3\n'
        'q_total{queue="imports"} 4\n'
        "# HELP ready 1 once ready\n"
        "# TYPE ready gauge\n"
        "ready 1\n"
    )


def test_common_labels_come_first_and_values_are_escaped() -> None:
    text = exposition([Sample("m", "gauge", "h", 0.5, {"why": 'a "b"\\\n'})], {"cluster": "a"})
    assert text.splitlines()[-1] == 'm{cluster="a",why="a \\"b\\"\\\\\\n"} 0.5'
