"""The registry format of the Gateways' ``Programmed`` state, shared by hub and agents.

The hub (:mod:`federation.hub.programmed`) writes, per member cluster, which generation of
each Gateway that cluster's Envoys have applied, and its verdict on each of the cluster's
EnvoyPatchPolicies (:func:`encode`); the cluster's agent
reads every hub replica's entry back and merges them (:func:`merged_facts`) to write the
Gateways' ``Programmed`` condition. Kept out of ``federation.hub`` so that agents depend
on the shared library only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from federation.registry.hub_state import HubStateReader
from federation.translate.gateway.inputs import ObjectName, PatchFact, ProgrammedFact

log = logging.getLogger("federation.programmed")

#: A replica's state older than this is ignored by agents (the replica is gone).
STALE_AFTER = 60.0


@dataclass(frozen=True)
class HubFacts:
    """What the hub replicas say of one cluster: its Gateways' ACK state and the
    verdicts on its EnvoyPatchPolicies."""

    gateways: Mapping[ObjectName, ProgrammedFact] = field(default_factory=dict)
    patches: Mapping[ObjectName, PatchFact] = field(default_factory=dict)


def encode(
    hub_id: str,
    group_facts: Mapping[ObjectName, ProgrammedFact],
    at: float,
    patches: Mapping[ObjectName, PatchFact] | None = None,
) -> bytes:
    doc = {
        "hub": hub_id,
        "at": at,
        "gateways": [
            {
                "namespace": ns,
                "name": name,
                "generation": fact.generation,
                "rejected": fact.rejected,
                "envoys": fact.envoys,
            }
            for (ns, name), fact in sorted(group_facts.items())
        ],
        "patches": [
            {"namespace": ns, "name": name, **dataclasses.asdict(fact)}
            for (ns, name), fact in sorted((patches or {}).items())
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes) -> tuple[float, HubFacts]:
    """(time written, facts); raises ValueError on anything malformed."""
    doc = json.loads(data)
    out = {}
    for g in doc["gateways"]:
        generation = g.get("generation")
        if generation is not None and not isinstance(generation, int):
            raise ValueError("generation must be an integer")
        out[str(g["namespace"]), str(g["name"])] = ProgrammedFact(
            generation, g.get("rejected"), int(g.get("envoys") or 0)
        )
    patches = {}
    for entry in doc.get("patches") or ():  # none from hubs older than EnvoyPatchPolicy
        patches[str(entry["namespace"]), str(entry["name"])] = PatchFact(
            generation=int(entry["generation"]),
            disabled=bool(entry.get("disabled")),
            invalid=_text(entry.get("invalid")),
            rejected=_text(entry.get("rejected")),
            programmed=bool(entry.get("programmed")),
            envoys=int(entry.get("envoys") or 0),
            missing=bool(entry.get("missing")),
        )
    return float(doc["at"]), HubFacts(out, patches)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def merge(
    replicas: Iterable[Mapping[ObjectName, ProgrammedFact]],
) -> dict[ObjectName, ProgrammedFact]:
    """One fact per Gateway from every hub replica's: only replicas with Envoys of the
    cluster count; applied is the oldest generation they agree on, and any rejection wins."""
    out: dict[ObjectName, ProgrammedFact] = {}
    for replica in replicas:
        for key, fact in replica.items():
            seen = out.get(key)
            if seen is None or seen.envoys == 0:
                out[key] = fact
                continue
            if fact.envoys == 0:
                continue
            generations = [x for x in (seen.generation, fact.generation) if x is not None]
            both = seen.generation is not None and fact.generation is not None
            out[key] = ProgrammedFact(
                min(generations) if both else None,
                seen.rejected or fact.rejected,
                seen.envoys + fact.envoys,
            )
    return out


def merge_patches(
    replicas: Iterable[Mapping[ObjectName, PatchFact]],
) -> dict[ObjectName, PatchFact]:
    """One verdict per EnvoyPatchPolicy from every hub replica's: about the oldest
    generation they report; any refusal or rejection wins; programmed only when every
    replica with Envoys of the cluster says so."""
    out: dict[ObjectName, PatchFact] = {}
    for replica in replicas:
        for key, fact in replica.items():
            seen = out.get(key)
            if seen is None or (seen.envoys == 0 and fact.generation <= seen.generation):
                out[key] = fact
                continue
            if fact.generation != seen.generation:
                out[key] = min(seen, fact, key=lambda f: f.generation)
                continue
            with_envoys = [f for f in (seen, fact) if f.envoys] or [seen, fact]
            out[key] = PatchFact(
                generation=seen.generation,
                disabled=seen.disabled or fact.disabled,
                invalid=seen.invalid or fact.invalid,
                rejected=seen.rejected or fact.rejected,
                programmed=all(f.programmed for f in with_envoys),
                envoys=seen.envoys + fact.envoys,
                missing=seen.missing or fact.missing,
            )
    return out


async def merged_facts(reader: HubStateReader, cluster: str, now: float | None = None) -> HubFacts:
    """What the hub replicas say of ``cluster``; stale or bad entries skipped."""
    now = time.time() if now is None else now
    replicas = []
    for hub_id, data in sorted((await reader.states(cluster)).items()):
        try:
            at, facts = decode(data)
        except (ValueError, KeyError, TypeError) as err:
            log.warning("skipping bad hub state", extra={"hub": hub_id, "error": str(err)})
            continue
        if now - at <= STALE_AFTER:
            replicas.append(facts)
    return HubFacts(merge(r.gateways for r in replicas), merge_patches(r.patches for r in replicas))
