"""The agent's part of ``fedctl trace``: when it acted on the latest change of a service
or of one of its cluster's routes.

:class:`TraceBook` keeps, per service, the last step the export reconciler took (when it
took up the change, which registry stream entry its publish made, when) and the last
step the import reconciler took (when it wrote the ServiceImport, and up to which entry
of each exporting cluster's stream it reflected); per Gateway API record (keyed
``(kind, namespace, name)``), the last publish of the Gateway API side. The agent serves both at
``/debug/trace?namespace=&name=`` beside its metrics (:mod:`agents.metrics`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

#: Services remembered per book (the most recently changed).
KEPT = 50_000


def publish_time(entry: str | None, before: float, after: float) -> float:
    """When a publish took effect: the registry's own time of its stream entry (an id is
    ``<ms>-<seq>`` of the Redis server's clock), within the call's ``before``..``after``
    (which absorbs the id's millisecond truncation and clock differences)."""
    try:
        at = int((entry or "").partition("-")[0]) / 1000
    except ValueError:
        return after
    return min(max(at, before), after)


class TraceBook:
    """The last recorded step per service."""

    def __init__(self, kept: int = KEPT) -> None:
        self._steps: OrderedDict[Hashable, dict[str, Any]] = OrderedDict()
        self._kept = kept

    def record(self, key: Hashable, **step: Any) -> None:
        self._steps[key] = step
        self._steps.move_to_end(key)
        while len(self._steps) > self._kept:
            self._steps.popitem(last=False)

    def get(self, key: Hashable) -> dict[str, Any] | None:
        return self._steps.get(key)
