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

from collections.abc import Hashable
from typing import Generic, TypeVar

from federation.bounded import KEPT, LastByKey

Step = TypeVar("Step")


def publish_time(entry: str | None, before: float, after: float) -> float:
    """When a publish took effect: the registry's own time of its stream entry (an id is
    ``<ms>-<seq>`` of the Redis server's clock), within the call's ``before``..``after``
    (which absorbs the id's millisecond truncation and clock differences)."""
    try:
        at = int((entry or "").partition("-")[0]) / 1000
    except ValueError:
        return after
    return min(max(at, before), after)


class TraceBook(Generic[Step]):
    """The last recorded step per service (or route), for the most recent ``kept``; a step
    is a :class:`~federation.debug_payloads.ExportStep` or
    :class:`~federation.debug_payloads.ImportStep`, as ``/debug/trace`` answers it."""

    def __init__(self, kept: int = KEPT) -> None:
        self._steps: LastByKey[Step] = LastByKey(kept)

    def record(self, key: Hashable, step: Step) -> None:
        self._steps.record((key,), step)

    def get(self, key: Hashable) -> Step | None:
        return self._steps.get(key)
