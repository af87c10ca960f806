"""Golden-file tests of the first translation stage (federation.translate.gateway).

Each case is a pair of files in ``tests/golden/gateway``:

- ``<case>.in.yaml``: ``cluster`` (the member cluster whose Envoys and statuses are
  computed), optionally ``programmed`` (the hub's ACK state: a list of ``{namespace,
  name, generation, rejected, envoys}``), and ``records``: registry records of any kind
  in their JSON shape without ``"v"`` (``kind`` says which), of any clusters.
  A leading comment says what the case shows.
- ``<case>.out.yaml``: the cluster's ``gateways`` (a GatewayIR per Gateway: what its own
  Envoys serve) and ``statuses``, in the JSON shape of the registry codec.

Both go through the same assembly as the hub and the agents:
``cluster_inputs(cluster, records, imports_of(services), programmed)`` then ``resolve``.
Run ``pytest tests/unit/test_gateway_golden.py --update-golden`` to rewrite outputs, then
review their diff.
"""

from __future__ import annotations

import json

import pytest
import yaml

from federation.programmed import HubFacts
from federation.registry.codec import to_json
from federation.registry.kinds import Kind, Record, decode_record
from federation.registry.policies import BackendTrafficPolicyRecord
from federation.registry.records import SCHEMA_VERSION, ExportedService
from federation.translate.gateway import Resolved, resolve
from federation.translate.gateway.inputs import (
    PatchFact,
    ProgrammedFact,
    cluster_inputs,
    imports_of,
)
from tests import golden_files

GOLDEN = golden_files.ROOT / "gateway"
CASES = golden_files.cases(GOLDEN)


def load(case: str) -> tuple[str, list[Record], HubFacts]:
    """A case's cluster, records and what the hub says (``programmed``: Gateways' ACK
    state; ``patches``: verdicts on EnvoyPatchPolicies, PatchFact's fields)."""
    raw = yaml.safe_load((GOLDEN / f"{case}.in.yaml").read_text())
    unknown = set(raw) - {"cluster", "programmed", "patches", "records"}
    assert not unknown, f"{case}.in.yaml: unknown keys {sorted(unknown)}"
    records = [
        decode_record(Kind(item["kind"]), json.dumps({"v": SCHEMA_VERSION, **item}).encode())
        for item in raw["records"]
    ]
    programmed = {
        (p["namespace"], p["name"]): ProgrammedFact(
            p.get("generation"), p.get("rejected"), p.get("envoys", 0)
        )
        for p in raw.get("programmed") or []
    }
    patches = {
        (p.pop("namespace"), p.pop("name")): PatchFact(**p) for p in raw.get("patches") or []
    }
    return raw["cluster"], records, HubFacts(programmed, patches)


def run(cluster: str, records: list[Record], facts: HubFacts) -> Resolved:
    """As the agent assembles it: every cluster's exports, and the other clusters'
    BackendTrafficPolicies (whether one on a ServiceImport applies depends on them)."""
    exports = [r for r in records if isinstance(r, ExportedService)]
    others = [r for r in records if isinstance(r, BackendTrafficPolicyRecord)]
    inputs = cluster_inputs(
        cluster, records, imports_of(exports), facts.gateways, others, facts.patches
    )
    return resolve(inputs)


def render(resolved: Resolved) -> str:
    doc = {
        "gateways": [to_json(g) for g in resolved.gateways],
        "statuses": to_json(resolved.statuses),
    }
    if resolved.clusterset_patches:
        doc["clustersetPatches"] = [to_json(p) for p in resolved.clusterset_patches]
    return yaml.safe_dump(doc, sort_keys=False, width=10_000, allow_unicode=True)


def test_there_are_cases() -> None:
    assert len(CASES) >= 8


def test_every_output_has_an_input() -> None:
    assert golden_files.orphan_outputs(GOLDEN) == []


@pytest.mark.parametrize("case", CASES)
def test_gateway_golden(case: str, update_golden: bool) -> None:
    cluster, records, programmed = load(case)
    resolved = run(cluster, records, programmed)
    # Nothing depends on the order the registry listed the records in.
    assert run(cluster, records[::-1], programmed) == resolved
    golden_files.check(GOLDEN, case, render(resolved), update_golden)


def test_every_status_reason_is_covered_by_a_case() -> None:
    from federation.translate.gateway.status import (
        GatewayReason,
        ListenerReason,
        PolicyReason,
        RouteReason,
    )

    outputs = "\n".join((GOLDEN / f"{c}.out.yaml").read_text() for c in CASES)
    for reasons in (RouteReason, GatewayReason, ListenerReason, PolicyReason):
        missing = [r.value for r in reasons if f"reason: {r.value}\n" not in outputs]
        assert not missing, f"no golden case shows {reasons.__name__} {missing}"
