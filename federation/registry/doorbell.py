"""Tailing every cluster's stream on a Redis Cluster, where no command may span slots.

On one server (or a primary under Sentinel) a reader waits on every cluster's
stream with one blocking XREAD. On a Redis Cluster each stream lives in its
cluster's slot, and one XREAD may name streams of one slot only. Blocking on each
stream separately would hold a connection per cluster in every reader (every agent
and hub), so instead:

* after each change, a writer appends its cluster's id to one small stream, the
  *doorbell* (:data:`keys.DOORBELL`), outside its transaction;
* a reader blocks on the doorbell only, and when it rings reads the streams of the
  clusters named, one XREAD per stream, pipelined per node (the cluster client
  groups a pipeline's commands by node and sends each group at once);
* the doorbell is a hint, never the truth. Every ``block_ms`` (500 ms), whatever
  rang meanwhile, and when the doorbell rang more than one read returns, the reader
  reads every stream from its own position. A ring that was lost (a writer that
  stopped between its transaction and the ring, a failover of the doorbell's node)
  costs at most one ``block_ms`` of delay, and no change.

A doorbell entry carries only a cluster id. Any agent may ring for any cluster (its
ACL allows XADD on that one key, with XADD's own trimming): false rings, or rings
trimmed away, cost reads or at most one ``block_ms`` of delay, never a change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from redis.asyncio.cluster import RedisCluster

from federation.registry import keys
from federation.registry.replies import xread_streams
from federation.registry.topology import CLIENT_ERRORS

log = logging.getLogger(__name__)

_FIELD = "c"
#: Whether the last ring failed: failures are logged once, not per change.
_ring_failing = False


async def ring(client: RedisCluster, cluster: str) -> None:
    """Tell readers that ``cluster``'s stream has a new entry. Best effort: a failure
    is logged and left to the readers' periodic full read."""
    global _ring_failing
    try:
        await client.xadd(
            keys.DOORBELL, {_FIELD: cluster}, maxlen=keys.DOORBELL_MAXLEN, approximate=True
        )
    except CLIENT_ERRORS as err:
        if not _ring_failing:
            log.warning(
                "doorbell ring for %s failed (readers see changes within their periodic "
                "full read meanwhile): %s",
                cluster,
                err,
            )
        _ring_failing = True
        return
    if _ring_failing:
        log.info("doorbell rings again for %s", cluster)
    _ring_failing = False


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class DoorbellTail:
    """A reader's position in the doorbell: which streams it should read next."""

    #: Doorbell entries taken per wait; more waiting means a read of every stream.
    BATCH = 500

    def __init__(self, client: RedisCluster, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._position: str | None = None
        #: When every stream is read again, whatever rang (monotonic seconds).
        self._full_read_due = 0.0
        #: Whether the last :meth:`wait` waited on the doorbell.
        self.waited = False

    async def _start(self) -> None:
        newest = await self._client.xrevrange(keys.DOORBELL, "+", "-", count=1)
        self._position = _text(newest[0][0] or "0-0") if newest else "0-0"

    async def wait(self, clusters: Iterable[str], block_ms: int) -> set[str] | None:
        """Block up to ``block_ms`` for rings; the clusters among ``clusters`` that
        rang, or None when every stream should be read: the first wait (rings
        before it were not seen), every ``block_ms`` whatever rang, or more rings
        than one batch."""
        self.waited = False
        now = self._clock()
        if self._position is None:
            await self._start()
        elif block_ms > 0 and now < self._full_read_due:
            self.waited = True
            wait_ms = max(1, min(block_ms, int((self._full_read_due - now) * 1000)))
            response = await self._client.xread(
                {keys.DOORBELL: self._position}, count=self.BATCH, block=wait_ms
            )
            rung = self._rung(response, clusters)
            if rung is None:  # the full read this asks for is the periodic one too
                self._full_read_due = self._clock() + block_ms / 1000
            return rung
        self._full_read_due = now + block_ms / 1000
        return None

    def _rung(self, response: object, clusters: Iterable[str]) -> set[str] | None:
        rings = [entry for _, entries in xread_streams(response) for entry in entries]
        if not rings:
            return None
        self._position = _text(rings[-1][0] or self._position or "0-0")
        if len(rings) >= self.BATCH:
            return None
        wanted = set(clusters)
        named = (_text(fields.get(_FIELD.encode(), b"")) for _, fields in rings)
        return {c for c in named if c in wanted}
