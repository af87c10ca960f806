"""The agent's part of ``fedctl trace``: when it acted on the latest change of a service.

:class:`TraceBook` keeps, per service, the last step the export reconciler took (when it
took up the change, which registry stream entry its publish made, when) and the last
step the import reconciler took (when it wrote the ServiceImport, and which stream entry
of each exporting cluster that reflected). The agent serves both at
``/debug/trace?namespace=&name=`` beside its metrics (:mod:`agents.metrics`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from federation.registry.watcher import ServiceName

#: Services remembered per book (the most recently changed).
KEPT = 50_000


class TraceBook:
    """The last recorded step per service."""

    def __init__(self, kept: int = KEPT) -> None:
        self._steps: OrderedDict[ServiceName, dict[str, Any]] = OrderedDict()
        self._kept = kept

    def record(self, key: ServiceName, **step: Any) -> None:
        self._steps[key] = step
        self._steps.move_to_end(key)
        while len(self._steps) > self._kept:
            self._steps.popitem(last=False)

    def get(self, key: ServiceName) -> dict[str, Any] | None:
        return self._steps.get(key)
