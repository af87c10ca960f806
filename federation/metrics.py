"""Prometheus text exposition for the hub and the agents.

Each process lists its counters and gauges as :class:`Sample` values when ``/metrics``
is scraped (the numbers live on the objects that count them), and :func:`exposition`
renders them: one ``# HELP`` and ``# TYPE`` per metric name, then its samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Sample:
    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The metric a histogram's ``_bucket``, ``_sum`` and ``_count`` samples belong to.
    family: str = ""


def histogram(
    name: str,
    help: str,
    bounds: Sequence[float],
    counts: Sequence[int],
    total: float,
    labels: Mapping[str, str] | None = None,
) -> list[Sample]:
    """The samples of one histogram: ``counts`` per bucket (one more than ``bounds``: the
    last is above every bound), made cumulative, then the sum and the count."""
    out = []
    running = 0
    for bound, count in zip((*map(str, bounds), "+Inf"), counts, strict=True):
        running += count
        le = {**(labels or {}), "le": bound}
        out.append(Sample(f"{name}_bucket", "histogram", help, running, le, name))
    base = dict(labels or {})
    out.append(Sample(f"{name}_sum", "histogram", help, total, base, name))
    out.append(Sample(f"{name}_count", "histogram", help, running, base, name))
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """Every digit of a count (``:g`` would print 1234567 as 1.23457e+06)."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def exposition(samples: Iterable[Sample], common: Mapping[str, str] | None = None) -> str:
    """The text format of ``samples``; ``common`` labels are added to every sample."""
    lines: list[str] = []
    seen: set[str] = set()
    for sample in samples:
        family = sample.family or sample.name
        if family not in seen:
            seen.add(family)
            lines += [f"# HELP {family} {sample.help}", f"# TYPE {family} {sample.kind}"]
        labels = {**(common or {}), **sample.labels}
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        value = _number(sample.value)
        lines.append(f"{sample.name}{{{text}}} {value}" if text else f"{sample.name} {value}")
    return "\n".join(lines) + "\n"
