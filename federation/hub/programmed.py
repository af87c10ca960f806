"""Which Gateway generations each cluster's Envoys have applied, computed and published.

A Gateway is ``Programmed`` once every connected Envoy of its own node group
(:mod:`federation.node_groups`) has ACKed the listeners and routes built from its current
generation; another Gateway's rejected configuration does not touch it. Only the hub
sees ACKs, and only the cluster's agent writes the Gateway, so:

* :func:`facts` computes, per cluster, a :class:`ProgrammedFact` for each Gateway from
  the sync state of that Gateway's Envoys (pure);
* :func:`patch_facts` the verdict on each EnvoyPatchPolicy of a Gateway, from what the
  snapshot builder did with it (:mod:`federation.hub.patches`) and the same sync state;
* :class:`ProgrammedPublisher` (run by the hub) writes the facts of every cluster to the
  registry's hub state whenever they change, and again every ``heartbeat`` seconds; it
  removes its own when the hub stops (:meth:`~ProgrammedPublisher.withdraw`), and
  every replica deletes those of replicas gone without that, once agents ignore them
  (older than :data:`~federation.programmed.STALE_AFTER`), so that the hash does not
  grow with every hub pod ever started;
* :func:`federation.programmed.merged_facts` (called by the agent) reads them back,
  merging hub replicas; the format both sides share is in :mod:`federation.programmed`.

A generation counts as applied only when each Envoy of the Gateway has ACKed the
listener and route types of the snapshot now served: until then the last applied
generation is kept, so ``Programmed`` never claims a change that has not landed. A NACK of
either type is reported with Envoy's message until an ACK replaces it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from federation.errors import FederationError
from federation.hub.patches import PatchOutcome
from federation.node_groups import cluster_of_group, gateway_group
from federation.programmed import STALE_AFTER, decode, encode
from federation.registry.hub_state import HubStateWriter
from federation.retry import Backoff, retry_call
from federation.translate.gateway.inputs import ObjectName, PatchFact, ProgrammedFact
from federation.xds.snapshot import LISTENER, ROUTE, SECRET
from federation.xds.status import ProxyStatus, SyncRegistry, SyncState

#: How often a replica deletes the hub states of replicas that are gone.
SWEEP_EVERY = 60.0

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


def patch_facts(
    outcomes: Mapping[ObjectName, PatchOutcome], proxies: Iterable[ProxyStatus]
) -> dict[ObjectName, PatchFact]:
    """The verdicts on one Gateway's EnvoyPatchPolicies: what the hub did with each
    (``outcomes``) and, for those applied, the sync state of the Gateway's Envoys on the
    resource types the policy changed (a NACK of one of them is the policy's)."""
    streams = list(proxies)
    out = {}
    for key, outcome in sorted(outcomes.items()):
        rejected = None
        synced = bool(streams)
        for proxy in streams:
            for type_url in sorted(outcome.types):
                status = proxy.type(type_url)
                if status is None or status.state is not SyncState.SYNCED:
                    synced = False
                if status is not None and status.state is SyncState.NACKED and rejected is None:
                    nack = status.last_nack
                    rejected = f"{proxy.node_id}: {nack.message if nack else 'rejected'}"
        applied = not outcome.disabled and outcome.invalid is None
        out[key] = PatchFact(
            generation=outcome.generation,
            disabled=outcome.disabled,
            invalid=outcome.invalid,
            rejected=rejected if applied else None,
            programmed=applied and synced and rejected is None,
            envoys=len(streams),
            missing=outcome.missing,
        )
    return out


@dataclass
class _Cluster:
    applied: dict[ObjectName, int]
    published: dict[ObjectName, ProgrammedFact]
    at: float = 0.0
    patches: dict[ObjectName, PatchFact] = field(default_factory=dict)


class ProgrammedPublisher:
    """Publishes every cluster's facts while the hub runs (see the module docstring)."""

    def __init__(
        self,
        writer: HubStateWriter,
        sync: SyncRegistry,
        generations: Callable[[], Mapping[str, Mapping[ObjectName, int]]],
        hub_id: str,
        *,
        patches: Callable[[], Mapping[str, Mapping[ObjectName, PatchOutcome]]] | None = None,
        held_back: Callable[[], Mapping[str, str]] | None = None,
        interval: float = 0.1,
        heartbeat: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._writer = writer
        self._sync = sync
        self._generations = generations
        #: Per node group, what became of its EnvoyPatchPolicies.
        self._patches = patches or dict
        #: The node groups whose newest translation is not served yet, and why ("" while
        #: an extension server works on it; its error when it failed closed): their
        #: Gateways and patches are not Programmed, whatever the ACKs.
        self._held_back = held_back or dict
        self.hub_id = hub_id
        self._interval = interval
        self._heartbeat = heartbeat
        self._clock = clock
        self._clusters: dict[str, _Cluster] = {}
        self.writes = 0
        #: When the hub states of gone replicas were last deleted.
        self._swept = -math.inf

    def _proxies_of(self, cluster: str) -> Callable[[ObjectName], Iterable[ProxyStatus]]:
        def proxies(gateway: ObjectName) -> Iterable[ProxyStatus]:
            return self._sync.list(gateway_group(cluster, *gateway))

        return proxies

    async def publish_once(self) -> None:
        """Compute every cluster's facts and write those that changed (or are due)."""
        now = self._clock()
        outcomes = self._patches()
        held_back = self._held_back()
        # Clusters with Gateways, and those with patches on their clusterset listener only.
        current: dict[str, Mapping[ObjectName, int]] = {cluster_of_group(g): {} for g in outcomes}
        current.update(self._generations())
        for cluster, generations in sorted(current.items()):
            state = self._clusters.setdefault(cluster, _Cluster({}, {}))
            cluster_facts = facts(generations, self._proxies_of(cluster), state.applied)
            for key, fact in cluster_facts.items():
                why = held_back.get(gateway_group(cluster, *key))
                if why is not None:
                    # Its Envoys ACK what they have, which is not this generation.
                    cluster_facts[key] = ProgrammedFact(
                        state.applied.get(key), why or None, fact.envoys
                    )
            state.applied = {
                k: f.generation for k, f in cluster_facts.items() if f.generation is not None
            }
            patches = {
                key: fact if group not in held_back else dataclasses.replace(fact, programmed=False)
                for group, of_group in sorted(outcomes.items())
                if cluster_of_group(group) == cluster
                for key, fact in patch_facts(of_group, self._sync.list(group)).items()
            }
            if (
                cluster_facts != state.published
                or patches != state.patches
                or now - state.at >= self._heartbeat
            ):
                await self._writer.put(
                    cluster, self.hub_id, encode(self.hub_id, cluster_facts, now, patches)
                )
                state.published, state.patches, state.at = cluster_facts, patches, now
                self.writes += 1
        for cluster in sorted(set(self._clusters) - set(current)):
            await self._writer.drop(cluster, self.hub_id)
            del self._clusters[cluster]
        if now - self._swept >= SWEEP_EVERY:
            await self.sweep(now)
            self._swept = now

    async def sweep(self, now: float) -> list[tuple[str, str]]:
        """Delete the states that agents no longer count (older than STALE_AFTER:
        replicas gone without :meth:`withdraw`, such as one killed); those deleted, by
        (cluster, hub id). A state that cannot be decoded (a newer hub's?) is left."""
        gone = []
        for (cluster, hub_id), data in sorted((await self._writer.every_state()).items()):
            try:
                at, _ = decode(data)
            except (ValueError, KeyError, TypeError):
                continue
            if now - at > STALE_AFTER and hub_id != self.hub_id:
                await self._writer.drop(cluster, hub_id)
                gone.append((cluster, hub_id))
        if gone:
            log.info("deleted the hub states of gone replicas", extra={"states": len(gone)})
        return gone

    async def withdraw(self) -> None:
        """Delete this replica's states (the hub stops): its Envoys, which reconnect to
        other replicas, are counted by those alone at once."""
        for cluster in sorted(self._clusters):
            await self._writer.drop(cluster, self.hub_id)
        self._clusters.clear()

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
