"""Golden-file tests of the second translation stage (federation.translate.proxy).

Each case is a pair of files in ``tests/golden/proxy``:

- ``<case>.in.yaml``: ``host`` (the address the listeners bind), optionally
  ``secretDir`` and ``options`` (``addressMaps``, ``ipFamilies``: hub flags), and ``ir``:
  a GatewayIR in the JSON shape of the registry codec. A leading comment says what the
  case shows.
- ``<case>.out.yaml``: the resources :func:`federation.translate.proxy.node_config`
  gives a node group with these Gateways and no clusterset listener (the function the
  hub assembles with), each in protobuf's JSON mapping, by kind and name.

Run ``pytest tests/unit/test_proxy_golden.py --update-golden`` to rewrite outputs, then
review their diff.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from federation.registry.codec import from_json
from federation.translate.inputs import (
    TranslateOptions,
    address_maps_from_flags,
    ip_families_from_flags,
)
from federation.translate.ir import ClustersetIR, GatewayIR, NodeGroupIR
from federation.translate.proxy import DEFAULT_SECRET_DIR, XdsResources, consistent, node_config
from tests import golden_files

GOLDEN = golden_files.ROOT / "proxy"
CASES = golden_files.cases(GOLDEN)
KINDS = ("clusters", "endpoints", "listeners", "routes")


def load_case(case: str) -> tuple[dict[str, Any], GatewayIR, TranslateOptions, str]:
    """The case's raw document, its IR, the translation options and the secret dir."""
    raw = yaml.safe_load((GOLDEN / f"{case}.in.yaml").read_text())
    unknown = set(raw) - {"host", "secretDir", "options", "ir"}
    assert not unknown, f"{case}.in.yaml: unknown keys {sorted(unknown)}"
    opts = raw.get("options") or {}
    families, default_family = ip_families_from_flags(opts.get("ipFamilies", []))
    options = TranslateOptions(
        address_maps=address_maps_from_flags(opts.get("addressMaps", [])),
        ip_families=families,
        default_ip_family=default_family,
    )
    ir = from_json(GatewayIR, raw["ir"], path=f"{case}.in.yaml ir")
    return raw, ir, options, raw.get("secretDir", DEFAULT_SECRET_DIR)


def build(case: str) -> XdsResources[Any]:
    raw, ir, options, secret_dir = load_case(case)
    group = NodeGroupIR(ir.cluster, gateway=ir)
    return node_config(ClustersetIR(), group, raw["host"], options, secret_dir=secret_dir)


def render(resources: XdsResources[Any]) -> str:
    doc: dict[str, Any] = {
        kind: {
            name: json.loads(json_format.MessageToJson(msg, preserving_proto_field_name=True))
            for name, msg in sorted(getattr(resources, kind).items())
        }
        for kind in KINDS
    }
    return yaml.safe_dump(doc, sort_keys=False, width=10_000, allow_unicode=True)


def test_there_are_cases() -> None:
    assert len(CASES) >= 3


def test_every_output_has_an_input() -> None:
    assert golden_files.orphan_outputs(GOLDEN) == []


@pytest.mark.parametrize("case", CASES)
def test_proxy_golden(case: str, update_golden: bool) -> None:
    resources = build(case)
    # The cases hold no ServiceImports (the clusterset goldens cover those): routes to
    # them are the only references allowed to dangle here.
    problems = consistent(resources)
    assert [p for p in problems if "missing cluster clusterset/" not in p] == []
    golden_files.check(GOLDEN, case, render(resources), update_golden)
