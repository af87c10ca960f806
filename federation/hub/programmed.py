"""Which Gateway generations each cluster's Envoys have applied, computed and published.

A Gateway is ``Programmed`` once every connected Envoy of its own node group
(:mod:`federation.node_groups`) has ACKed the listeners and routes built from its current
generation; another Gateway's rejected configuration does not touch it. Only the hub
sees ACKs, and only the cluster's agent writes the Gateway, so:

* :func:`facts` computes, per cluster, a :class:`ProgrammedFact` for each Gateway from
  the sync state of that Gateway's Envoys (pure);
* :class:`ProgrammedPublisher` (run by the hub) writes the facts of every cluster to the
  registry's hub state whenever they change, and again every ``heartbeat`` seconds;
* :func:`federation.programmed.merged_facts` (called by the agent) reads them back,
  merging hub replicas; the format both sides share is in :mod:`federation.programmed`.

A generation counts as applied only when each Envoy of the Gateway has ACKed the
listener and route types of the snapshot now served: until then the last applied
generation is kept, so ``Programmed`` never claims a change that has not landed. A NACK of
either type is reported with Envoy's message until an ACK replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from federation.errors import FederationError
from federation.node_groups import gateway_group
from federation.programmed import encode
from federation.registry.hub_state import HubStateWriter
from federation.retry import Backoff, retry_call
from federation.translate.gateway.inputs import ObjectName, ProgrammedFact
from federation.xds.snapshot import LISTENER, ROUTE, SECRET
from federation.xds.status import ProxyStatus, SyncRegistry, SyncState

log = logging.getLogger("federation.hub")

#: Types whose ACK makes a Gateway programmed.
GATEWAY_TYPES = (LISTENER, ROUTE)
#: Types that count too once an Envoy subscribes to them: certificates (SDS), which a
#: Gateway without HTTPS listeners never asks for. A rejected certificate (a file that
#: is missing or unreadable) is a rejected Gateway.
SUBSCRIBED_TYPES = (SECRET,)


def facts(
    generations: Mapping[ObjectName, int],
    proxies: Callable[[ObjectName], Iterable[ProxyStatus]],
    applied: Mapping[ObjectName, int],
) -> dict[ObjectName, ProgrammedFact]:
    """The facts of one cluster's Gateways: their current ``generations``, the sync
    state of each Gateway's own Envoys (``proxies(gateway)``), and the generations
    ``applied`` earlier (kept until a newer one lands)."""
    out = {}
    for key, generation in sorted(generations.items()):
        streams = list(proxies(key))
        rejected = None
        synced = bool(streams)
        for proxy in streams:
            for type_url in (*GATEWAY_TYPES, *SUBSCRIBED_TYPES):
                status = proxy.type(type_url)
                required = type_url in GATEWAY_TYPES
                if (status is None and required) or (
                    status is not None and status.state is not SyncState.SYNCED
                ):
                    synced = False
                if status is not None and status.state is SyncState.NACKED and rejected is None:
                    nack = status.last_nack
                    rejected = f"{proxy.node_id}: {nack.message if nack else 'rejected'}"
        done = generation if synced else applied.get(key)
        out[key] = ProgrammedFact(done, rejected, len(streams))
    return out


@dataclass
class _Cluster:
    applied: dict[ObjectName, int]
    published: dict[ObjectName, ProgrammedFact]
    at: float = 0.0


class ProgrammedPublisher:
    """Publishes every cluster's facts while the hub runs (see the module docstring)."""

    def __init__(
        self,
        writer: HubStateWriter,
        sync: SyncRegistry,
        generations: Callable[[], Mapping[str, Mapping[ObjectName, int]]],
        hub_id: str,
        *,
        interval: float = 0.1,
        heartbeat: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._writer = writer
        self._sync = sync
        self._generations = generations
        self.hub_id = hub_id
        self._interval = interval
        self._heartbeat = heartbeat
        self._clock = clock
        self._clusters: dict[str, _Cluster] = {}
        self.writes = 0

    def _proxies_of(self, cluster: str) -> Callable[[ObjectName], Iterable[ProxyStatus]]:
        def proxies(gateway: ObjectName) -> Iterable[ProxyStatus]:
            return self._sync.list(gateway_group(cluster, *gateway))

        return proxies

    async def publish_once(self) -> None:
        """Compute every cluster's facts and write those that changed (or are due)."""
        now = self._clock()
        current = self._generations()
        for cluster, generations in sorted(current.items()):
            state = self._clusters.setdefault(cluster, _Cluster({}, {}))
            cluster_facts = facts(generations, self._proxies_of(cluster), state.applied)
            state.applied = {
                k: f.generation for k, f in cluster_facts.items() if f.generation is not None
            }
            if cluster_facts != state.published or now - state.at >= self._heartbeat:
                await self._writer.put(
                    cluster, self.hub_id, encode(self.hub_id, cluster_facts, now)
                )
                state.published, state.at = cluster_facts, now
                self.writes += 1
        for cluster in sorted(set(self._clusters) - set(current)):
            await self._writer.drop(cluster, self.hub_id)
            del self._clusters[cluster]

    async def run(self) -> None:
        """Publish every interval until cancelled; a registry error is retried with backoff
        (at most an interval apart), logged once when it starts and once when it ends."""
        while True:
            await retry_call(
                "gateway-state-publish",
                self.publish_once,
                retry_if=lambda err: isinstance(err, FederationError),
                backoff=Backoff(maximum=self._interval),
                logger=log,
            )
            await asyncio.sleep(self._interval)  # the publishing period, not synchronisation
