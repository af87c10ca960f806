"""What state-of-the-world and delta ADS streams share: wake-up, push loop and timers.

Used by :mod:`federation.xds.sotw` and :mod:`federation.xds.delta`, whose stream classes
subclass :class:`Stream`, and by :mod:`federation.xds.server`, which creates one per ADS
call and runs it. A stream is woken by the snapshot cache when its group changes and by
its reader when a request needs an answer; it then computes (``plan``) and writes the
responses that bring the Envoy up to the group's latest snapshot.

Two behaviours are shared here because both protocols need them the same way:

* **A NACK is not forever.** Envoy also rejects resources for reasons outside the
  config, such as a listener port held by another process. A NACKed response is offered
  again after :func:`nack_backoff` (doubling from ``nack_retry_base`` up to
  ``nack_retry_max``), as long as nothing newer of its type was sent meanwhile; an ACK
  resets the backoff. Each re-offer is counted (``XdsMetrics.nack_reoffers``).
* **Warm before route.** Envoy keeps a new cluster warming until its
  ClusterLoadAssignment arrives, and sends a request for it only after it has applied
  the CDS response. A route that names the cluster before then gets 503 (Envoy's
  ``no_cluster``). So when a push adds clusters whose assignments Envoy has not asked
  for yet, the rest of the push (listeners, routes, cluster removals) waits until their
  assignments have been sent, until Envoy has answered the CDS response (it has then
  asked for everything it will), or at most ``warm_timeout``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import grpc
from envoy.config.endpoint.v3 import endpoint_pb2

from federation.xds.peers import Refusal
from federation.xds.snapshot import CLUSTER, LISTENER, Resource, Snapshot, SnapshotCache
from federation.xds.status import StreamSync, XdsMetrics

log = logging.getLogger("federation.xds.server")

#: Types whose state-of-the-world responses hold every resource (wildcard).
FULL_STATE_TYPES = frozenset({CLUSTER, LISTENER})


@dataclass(frozen=True)
class StreamSettings:
    """Timing of every stream of one server."""

    #: Minimum time between two pushes of one stream that a cache change waits for.
    push_interval: float = 0.02
    #: First delay before a NACKed response is offered again; doubles per NACK.
    nack_retry_base: float = 1.0
    #: Longest delay between two offers of a response Envoy keeps NACKing.
    nack_retry_max: float = 300.0
    #: Longest time the rest of a push waits for new clusters' assignments to be asked for.
    warm_timeout: float = 5.0
    #: Resource names and types one stream may subscribe to or report holding: a bound on
    #: the memory one client can make the hub spend.
    max_subscribed_names: int = 100_000


def nack_backoff(attempt: int, settings: StreamSettings) -> float:
    """Seconds before the ``attempt``-th re-offer (1-based) of a NACKed response."""
    exponent = min(max(attempt - 1, 0), 60)
    return float(min(settings.nack_retry_base * 2**exponent, settings.nack_retry_max))


@lru_cache(maxsize=4096)
def empty_load_assignment(name: str) -> Resource:
    """The ClusterLoadAssignment sent for a requested name that does not exist."""
    return Resource.of(endpoint_pb2.ClusterLoadAssignment(cluster_name=name), name)


def placeholder(
    name: str, previous: str | None, clusters: Mapping[str, Resource]
) -> Resource | None:
    """What to send for a requested ClusterLoadAssignment missing from the snapshot.

    ``previous`` is the version the stream last sent for the name. Never sent: the empty
    assignment at once. Sent before and its cluster remains: the empty assignment (its
    endpoints are gone). Sent before and its cluster goes too: nothing, so the cluster
    keeps its endpoints until routes have moved off it and it is removed.
    """
    if previous is None or name in clusters:
        return empty_load_assignment(name)
    return None


class Stream:
    """One ADS stream's identity, wake-up, push loop, NACK re-offers and warming hold."""

    protocol = ""

    def __init__(
        self,
        cache: SnapshotCache,
        metrics: XdsMetrics,
        settings: StreamSettings,
        group: str,
        sync: StreamSync,
        *,
        charge: Callable[[int], None] | None = None,
    ) -> None:
        """``charge(delta)`` accounts for a change of the names this stream subscribes to
        in its peer's budget (it raises a Refusal when the budget is spent)."""
        self.cache = cache
        self.metrics = metrics
        self.settings = settings
        self.group = group
        self.sync = sync
        #: Set by the cache on changes and by the reader on requests that need an answer.
        self.wake = asyncio.Event()
        #: A request arrived that needs an answer: answer without debouncing.
        self.requested = False
        self.closed = False
        self.failure: BaseException | None = None
        #: The cache generation of the snapshot the last push was computed from.
        self.seen: int | None = None
        self._nonces = itertools.count(1)
        self._timers: set[asyncio.TimerHandle] = set()
        self._nack_attempts: dict[str, int] = {}
        #: New clusters whose assignments were not sent yet: the push waits for them.
        self.warming: set[str] = set()
        self._charge = charge
        #: The names (and types) this stream holds, as charged to its peer.
        self.names_held = 0
        self.warm_deadline = 0.0

    def check_names(self, names: int) -> None:
        """Refuse a request that would make the stream hold more than
        ``max_subscribed_names`` names and types (``names`` of them)."""
        total = names
        if total > self.settings.max_subscribed_names:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too-many-names",
                f"this stream would subscribe to {total} resource names and types, more "
                f"than the {self.settings.max_subscribed_names} the hub allows",
            )
        if self._charge is not None and total != self.names_held:
            self._charge(total - self.names_held)
        self.names_held = total

    def next_nonce(self) -> str:
        return str(next(self._nonces))

    def poke(self) -> None:
        self.requested = True
        self.wake.set()

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` in ``delay`` seconds unless the stream has closed by then."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            assert handle is not None
            self._timers.discard(handle)
            if not self.closed:
                callback()

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def release_names(self) -> None:
        """Give the names this stream held back to its peer's budget (once, at its end)."""
        if self._charge is not None and self.names_held:
            self._charge(-self.names_held)
        self.names_held = 0

    def close(self) -> None:
        self.closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self.wake.set()

    # --- requests ----------------------------------------------------------------------

    def on_request(self, request: Any) -> None:
        raise NotImplementedError

    def acked(self, type_url: str, version: str, nonce: str = "") -> None:
        self.metrics.acks += 1
        self.sync.acked(type_url, version, nonce)
        self._nack_attempts.pop(type_url, None)

    def nacked(self, type_url: str, version: str, nonce: str, message: str) -> None:
        """Record a NACK and schedule the re-offer of what was rejected."""
        self.metrics.nacks += 1
        self.sync.nacked(type_url, version, nonce, message)
        attempt = self._nack_attempts.get(type_url, 0) + 1
        self._nack_attempts[type_url] = attempt
        delay = nack_backoff(attempt, self.settings)
        log.warning(
            "Envoy %s (group %s) rejected %s version %s: %s (offered again in %.3g s)",
            self.sync.node_id,
            self.group,
            type_url,
            version,
            message,
            delay,
        )
        self.later(delay, lambda: self._reoffer(type_url, nonce))

    def _reoffer(self, type_url: str, nonce: str) -> None:
        if self.reoffer(type_url, nonce):
            self.metrics.nack_reoffers += 1
            log.info(
                "offering %s again to Envoy %s (group %s) after its NACK",
                type_url,
                self.sync.node_id,
                self.group,
            )
            self.poke()

    def reoffer(self, type_url: str, nonce: str) -> bool:
        """Mark what the response ``nonce`` of ``type_url`` carried to be sent again.

        False (nothing marked) when a newer response of the type went out since: that one
        is what Envoy judges now.
        """
        raise NotImplementedError

    # --- warming -----------------------------------------------------------------------

    def hold_for(self, names: Iterable[str]) -> None:
        """A CDS response just sent added clusters ``names`` whose assignments Envoy has
        not asked for: the rest of the push waits for them (see :meth:`holding`)."""
        fresh = set(names) - self.warming
        if not fresh:
            return
        self.warming |= fresh
        self.warm_deadline = asyncio.get_running_loop().time() + self.settings.warm_timeout
        self.later(self.settings.warm_timeout, self.poke)

    def holding(self, snapshot: Snapshot, sent: Iterable[str], cds_answered: bool) -> bool:
        """Whether the push must stop after the assignments (warm before route).

        ``sent``: assignment names sent so far on the stream; ``cds_answered``: whether
        Envoy has ACKed or NACKed every CDS response sent.
        """
        if not self.warming:
            return False
        self.warming.intersection_update(snapshot.of(CLUSTER).keys())
        self.warming.difference_update(sent)
        if not self.warming:
            return False
        if cds_answered:
            # Envoy asks for a new cluster's assignment before it answers the CDS response
            # that added it: these names it will not ask for (it rejected them, say).
            log.debug("Envoy %s did not ask for %s", self.sync.node_id, sorted(self.warming))
        elif asyncio.get_running_loop().time() >= self.warm_deadline:
            log.warning(
                "Envoy %s (group %s) did not ask for the assignments of new clusters %s "
                "within %.3g s; pushing its routes anyway",
                self.sync.node_id,
                self.group,
                sorted(self.warming)[:5],
                self.settings.warm_timeout,
            )
        else:
            return True
        self.warming.clear()
        return False

    # --- pushing -----------------------------------------------------------------------

    def plan(
        self, snapshot: Snapshot, changes: dict[str, set[str]] | None, previous: int | None
    ) -> list[bytes]:
        """The responses that bring the stream up to ``snapshot``, in push order."""
        raise NotImplementedError

    async def run(self, context: grpc.aio.ServicerContext) -> None:
        loop = asyncio.get_running_loop()
        last_push = -float("inf")
        while True:
            await self.wake.wait()
            if self.closed:
                return
            if not self.cache.ready or self.cache.get(self.group) is None:
                self.wake.clear()
                continue
            wait = last_push + self.settings.push_interval - loop.time()
            if not self.requested and wait > 0:
                # A change right after a push: gather the rest of the burst first.
                await asyncio.sleep(wait)
                if self.closed:
                    return
            self.wake.clear()
            if await self._send_changes(context):
                last_push = loop.time()

    async def _send_changes(self, context: grpc.aio.ServicerContext) -> bool:
        """Send what the group's snapshot has that this stream lacks; whether anything
        was sent. A method of its own so that nothing it holds (the responses, the
        snapshot) outlives it while the stream waits for the next change: with
        thousands of idle streams, a last response kept per stream was a third of the
        hub's memory."""
        snapshot = self.cache.get(self.group)
        if snapshot is None:
            return False
        generation = self.cache.generation(self.group)
        previous = self.seen
        changes = None if previous is None else self.cache.changes_since(self.group, previous)
        self.seen = generation
        self.requested = False
        responses = self.plan(snapshot, changes, previous)
        for response in responses:
            await context.write(response)
            self.metrics.responses_sent += 1
            self.metrics.bytes_sent += len(response)
        return bool(responses)
