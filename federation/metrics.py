"""Prometheus text exposition for the hub and the agents.

Each process lists its counters and gauges as :class:`Sample` values when ``/metrics``
is scraped (the numbers live on the objects that count them), and :func:`exposition`
renders them: one ``# HELP`` and ``# TYPE`` per metric name, then its samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Sample:
    name: str
    kind: Literal["counter", "gauge"]
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(samples: Iterable[Sample], common: Mapping[str, str] | None = None) -> str:
    """The text format of ``samples``; ``common`` labels are added to every sample."""
    lines: list[str] = []
    seen: set[str] = set()
    for sample in samples:
        if sample.name not in seen:
            seen.add(sample.name)
            lines += [f"# HELP {sample.name} {sample.help}", f"# TYPE {sample.name} {sample.kind}"]
        labels = {**(common or {}), **sample.labels}
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(
            f"{sample.name}{{{text}}} {sample.value:g}"
            if text
            else f"{sample.name} {sample.value:g}"
        )
    return "\n".join(lines) + "\n"
