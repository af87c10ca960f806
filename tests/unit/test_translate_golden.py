"""Golden-file tests of the xDS translator (federation.translate).

Each case is a pair of files in ``tests/golden/translate``:

- ``<case>.in.yaml``: one YAML document with

  - ``viewer``: the member cluster whose Envoys get the config (null: none);
  - ``listener``: ``{address, port}`` of the clusterset listener;
  - ``options`` (optional): ``localFirst``, ``clusterWeights`` (cluster ->
    weight), ``addressMaps`` (a list of ``CLUSTER=SOURCE_CIDR=TARGET_CIDR``
    flags), ``outlierDetection``, ``connectTimeoutMs``, ``ipFamilies`` (a list
    of ``[CLUSTER=]IPv4|IPv6`` flags);
  - ``stale`` (optional): clusters whose lease expired;
  - ``records``: exports in the JSON shape of ``records.service_to_json``
    without ``"v"``, of one or more Services (grouped and merged here);
  - ``policies`` (optional): BackendTrafficPolicy records of any clusters; those on
    ServiceImports are resolved as the hub resolves them (``service_policies``);
  - ``failover`` (optional): FailoverPolicy records of any clusters, resolved as the hub
    resolves them (``failover_policies``).

  A leading comment says what the case shows.
- ``<case>.out.yaml``: what :func:`federation.translate.proxy.node_config` gives the
  viewer's Envoys (the function the hub's snapshot builder assembles with; see
  ``tests/unit/test_hub_assembly.py``), each resource in protobuf's JSON
  mapping (``json_format``, proto field names; fields at their default value,
  such as ``priority: 0``, ``codec_type: AUTO`` or ``lb_policy: ROUND_ROBIN``,
  are omitted as on the wire), resources sorted by name.

Run ``pytest tests/unit/test_translate_golden.py --update-golden`` to rewrite
the ``.out.yaml`` files, then read their diff: a golden file is only as right
as the review it got.
"""

# xds-protos and protobuf ship no type stubs: their modules are untyped to mypy.

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from federation.model.imports import group_by_service
from federation.registry.failover import FailoverPolicyRecord
from federation.registry.kinds import Kind, decode_record
from federation.registry.policies import BackendTrafficPolicyRecord
from federation.registry.records import SCHEMA_VERSION, ExportedService, decode_service
from federation.translate.failover import failover_policies
from federation.translate.gateway.inputs import imports_of
from federation.translate.gateway.service_policies import service_policies
from federation.translate.inputs import (
    ImportView,
    TranslateOptions,
    address_maps_from_flags,
    ip_families_from_flags,
)
from federation.translate.proxy import XdsResources, consistent
from tests import golden_files
from tests.translation import build_node_config

GOLDEN = golden_files.ROOT / "translate"
CASES = golden_files.cases(GOLDEN)


@dataclasses.dataclass(frozen=True)
class Case:
    viewer: str | None
    listener: tuple[str, int]
    options: TranslateOptions
    stale: frozenset[str]
    records: tuple[ExportedService, ...]
    policies: tuple[BackendTrafficPolicyRecord, ...] = ()
    failover: tuple[FailoverPolicyRecord, ...] = ()


def load_case(case: str) -> Case:
    raw = yaml.safe_load((GOLDEN / f"{case}.in.yaml").read_text())
    assert isinstance(raw, dict), f"{case}.in.yaml must hold a mapping"
    keys = {"viewer", "listener", "options", "stale", "records", "policies", "failover"}
    unknown = set(raw) - keys
    assert not unknown, f"{case}.in.yaml: unknown keys {sorted(unknown)}"
    opts = raw.get("options") or {}
    unknown = set(opts) - {
        "localFirst",
        "clusterWeights",
        "addressMaps",
        "outlierDetection",
        "connectTimeoutMs",
        "ipFamilies",
    }
    assert not unknown, f"{case}.in.yaml: unknown options {sorted(unknown)}"
    families, default_family = ip_families_from_flags(opts.get("ipFamilies", []))
    options = TranslateOptions(
        local_first=opts.get("localFirst", True),
        cluster_weights=opts.get("clusterWeights", {}),
        address_maps=address_maps_from_flags(opts.get("addressMaps", [])),
        outlier_detection=opts.get("outlierDetection", True),
        connect_timeout_ms=opts.get("connectTimeoutMs", 1000),
        ip_families=families,
        default_ip_family=default_family,
    )
    # Through the registry codec, so cases are checked exactly like real records.
    records = tuple(
        decode_service(json.dumps({"v": SCHEMA_VERSION, **item})) for item in raw["records"]
    )
    policies = tuple(
        p
        for p in _decoded(raw.get("policies"), Kind.BACKEND_TRAFFIC_POLICY)
        if isinstance(p, BackendTrafficPolicyRecord)
    )
    failover = tuple(
        p
        for p in _decoded(raw.get("failover"), Kind.FAILOVER_POLICY)
        if isinstance(p, FailoverPolicyRecord)
    )
    listener = raw["listener"]
    return Case(
        viewer=raw["viewer"],
        listener=(listener["address"], listener["port"]),
        options=options,
        stale=frozenset(raw.get("stale") or ()),
        records=records,
        policies=policies,
        failover=failover,
    )


def _decoded(items: list[dict[str, Any]] | None, kind: Kind) -> list[Any]:
    """Records of ``kind`` through the registry codec, as real records are read."""
    return [
        decode_record(kind, json.dumps({"v": SCHEMA_VERSION, "kind": kind.value, **i}).encode())
        for i in items or ()
    ]


def views(
    records: tuple[ExportedService, ...],
    stale: frozenset[str],
    policies: tuple[BackendTrafficPolicyRecord, ...] = (),
    failover: tuple[FailoverPolicyRecord, ...] = (),
) -> list[ImportView]:
    """One view per Service, with the settings of the policy on its ServiceImport that
    applies and the FailoverPolicies that apply (as the hub resolves them)."""
    groups = group_by_service(records)
    applied = service_policies(policies, imports_of(records)).applied
    preferences = failover_policies(failover, imports_of(records)).applied
    return [
        ImportView.of(
            group,
            stale,
            None if (p := applied.get(key)) is None else p.settings,
            preferences.get(key, ()),
        )
        for key, group in groups.items()
    ]


def shuffled(records: tuple[ExportedService, ...]) -> tuple[ExportedService, ...]:
    """``records`` in reverse, with their slices and endpoints reversed too."""
    return tuple(
        dataclasses.replace(
            r,
            endpoints=tuple(
                dataclasses.replace(s, endpoints=s.endpoints[::-1]) for s in r.endpoints[::-1]
            ),
        )
        for r in records[::-1]
    )


def build(case: Case, records: tuple[ExportedService, ...]) -> XdsResources[Any]:
    return build_node_config(
        views(records, case.stale, case.policies, case.failover),
        case.viewer,
        case.listener,
        case.options,
    )


def wire(config: XdsResources[Any]) -> dict[str, dict[str, bytes]]:
    return {
        kind: {
            name: msg.SerializeToString(deterministic=True)
            for name, msg in getattr(config, kind).items()
        }
        for kind in ("clusters", "endpoints", "listeners", "routes")
    }


def render(config: XdsResources[Any]) -> str:
    doc: dict[str, Any] = {
        kind: {
            # Through JSON: Any fields come back as OrderedDicts, which safe_dump refuses.
            name: golden_files.sorted_maps(
                json.loads(json_format.MessageToJson(msg, preserving_proto_field_name=True))
            )
            for name, msg in sorted(getattr(config, kind).items())
        }
        for kind in ("clusters", "endpoints", "listeners", "routes")
    }
    return yaml.safe_dump(doc, sort_keys=False, width=10_000, allow_unicode=True)


def test_there_are_cases() -> None:
    assert len(CASES) >= 9


def test_every_output_has_an_input() -> None:
    assert golden_files.orphan_outputs(GOLDEN) == []


@pytest.mark.parametrize("case", CASES)
def test_translate_golden(case: str, update_golden: bool) -> None:
    loaded = load_case(case)
    config = build(loaded, loaded.records)
    actual = render(config)
    # The output must not depend on the order the registry listed anything in.
    assert wire(build(loaded, shuffled(loaded.records))) == wire(config)
    assert consistent(config) == []
    golden_files.check(GOLDEN, case, actual, update_golden)
