"""A bounded "last value per key" log, for what ``fedctl trace`` asks the processes.

The hub (:mod:`federation.hub.trace`) and the agents (:mod:`agents.trace`) each remember
the latest step they took for every service or route, but only for the most recently
changed ``kept`` keys, so that a clusterset with many services cannot grow them without
bound. Not thread-safe: each is written and read on one event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

V = TypeVar("V")

#: Keys remembered unless told otherwise (the most recently recorded).
KEPT = 50_000


class LastByKey(Generic[V]):
    """The last value recorded per key, for at most ``kept`` keys (oldest dropped first)."""

    def __init__(self, kept: int = KEPT) -> None:
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._kept = kept

    def record(self, keys: Iterable[Hashable], value: V) -> None:
        """Make ``value`` the last one of each of ``keys``."""
        for key in keys:
            self._values[key] = value
            self._values.move_to_end(key)
        while len(self._values) > self._kept:
            self._values.popitem(last=False)

    def get(self, key: Hashable) -> V | None:
        return self._values.get(key)

    def __len__(self) -> int:
        return len(self._values)
