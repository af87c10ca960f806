"""Golden-file tests of the MCS merge (federation.model.imports) and export conditions.

Each case is a pair of files in ``tests/golden/merge``:

- ``<case>.in.yaml``: a list of exports of one Service, one per cluster, each
  in the JSON shape of ``records.service_to_json`` without the ``"v"`` key.
  Fields the codec defaults may be left out (``ports``, ``sessionAffinity``,
  ``exportedLabels``, ``created``, ``endpoints``...). Quote ``created``:
  YAML would otherwise read it as a timestamp, which the codec rejects.
  A leading comment says what the case shows.
- ``<case>.out.yaml``: the merged import and the ``Valid``/``Ready``/``Conflict``
  conditions of every exporter (valid and published), as rendered by
  :func:`render`.

Run ``pytest tests/unit/test_merge_golden.py --update-golden`` to rewrite the
``.out.yaml`` files, then read their diff: a golden file is only as right as
the review it got.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from federation.model.conditions import export_conditions
from federation.model.imports import MergedImport, merge_exports
from federation.registry.records import (
    SCHEMA_VERSION,
    ExportedService,
    ServicePort,
    decode_service,
)
from tests import golden_files

GOLDEN = golden_files.ROOT / "merge"
CASES = golden_files.cases(GOLDEN)


def load_case(case: str) -> list[ExportedService]:
    raw = yaml.safe_load((GOLDEN / f"{case}.in.yaml").read_text())
    assert isinstance(raw, list), f"{case}.in.yaml must hold a list of exports"
    # Through the registry codec, so cases are checked exactly like real records.
    return [decode_service(json.dumps({"v": SCHEMA_VERSION, **item})) for item in raw]


def _port(p: ServicePort) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "protocol": p.protocol, "port": p.port}
    if p.app_protocol is not None:
        out["appProtocol"] = p.app_protocol
    return out


def render(merged: MergedImport) -> str:
    """The merged import and every exporter's conditions as YAML, in a fixed key order."""
    doc: dict[str, Any] = {
        "merged": {
            "namespace": merged.namespace,
            "name": merged.name,
            "type": str(merged.type),
            "ports": [_port(p) for p in merged.ports],
            "sessionAffinity": merged.session_affinity,
            "sessionAffinityTimeout": merged.session_affinity_timeout,
            "labels": dict(merged.labels),
            "annotations": dict(merged.annotations),
            "clusters": list(merged.clusters),
            "winner": merged.winner,
            "ipFamilies": list(merged.ip_families),
            "ipFamilyPolicy": merged.ip_family_policy,
            "internalTrafficPolicy": merged.internal_traffic_policy,
            "trafficDistribution": merged.traffic_distribution,
            "reasons": [str(r) for r in merged.reasons],
            "details": [
                {
                    "reason": str(d.reason),
                    "kept": d.kept,
                    "dropped": d.dropped,
                    "message": d.message,
                }
                for d in merged.details
            ],
        },
        "exportConditions": {
            cluster: [
                {
                    "type": str(c.type),
                    "status": str(c.status),
                    "reason": str(c.reason),
                    "message": c.message,
                }
                for c in export_conditions(
                    cluster=cluster, service_problem=None, published=True, merged=merged
                )
            ]
            for cluster in merged.clusters
        },
    }
    # Wide lines: a condition message stays on one line, which keeps diffs readable.
    return yaml.safe_dump(doc, sort_keys=False, width=10_000, allow_unicode=True)


def test_there_are_cases() -> None:
    assert len(CASES) >= 9


def test_every_output_has_an_input() -> None:
    assert golden_files.orphan_outputs(GOLDEN) == []


@pytest.mark.parametrize("case", CASES)
def test_merge_golden(case: str, update_golden: bool) -> None:
    exports = load_case(case)
    actual = render(merge_exports(exports))
    # The merge must not depend on the order the registry listed the exports in.
    assert render(merge_exports(exports[::-1])) == actual
    golden_files.check(GOLDEN, case, actual, update_golden)
