"""FailoverPolicies (``federation.translate.failover``): which applies to which cluster's
Envoys, the statuses that say why, and the priorities they give (``failover_levels``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from federation.model.imports import merge_exports
from federation.registry.codec import from_json
from federation.registry.failover import FailoverPolicyRecord, FailoverPolicySpec
from federation.translate.failover import failover_policies
from federation.translate.ir import FailoverIR
from federation.translate.proxy.clusters import failover_levels
from tests import samples

TARGET = [{"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "web"}]


def policy(cluster: str, name: str, created: str, **spec: Any) -> FailoverPolicyRecord:
    parsed = from_json(FailoverPolicySpec, {"targetRefs": TARGET, **spec})
    return FailoverPolicyRecord(cluster, "shop", name, parsed, created=created)


def imports() -> dict[tuple[str, str], Any]:
    exports = [replace(samples.service(c, "web"), namespace="shop") for c in ("a", "c")]
    return {("shop", "web"): merge_exports(exports)}


def accepted(book: Any, record: FailoverPolicyRecord) -> tuple[str, str, str]:
    (ancestor,) = book.status(record).ancestors
    (cond,) = ancestor.conditions
    return cond.status, cond.reason, cond.message


def test_each_cluster_gets_its_oldest_policy_and_the_others_are_conflicted() -> None:
    first = policy("b", "first", "2026-01-01T00:00:00Z", order=["c", "x"])
    second = policy("b", "second", "2026-01-02T00:00:00Z", order=["a"])
    theirs = policy("a", "theirs", "2026-01-03T00:00:00Z", weights=[{"cluster": "c", "weight": 3}])
    book = failover_policies([second, theirs, first], imports())
    assert book.applied[("shop", "web")] == (
        FailoverIR("a", weights=(("c", 3),)),
        FailoverIR("b", order=("c", "x")),
    )
    assert accepted(book, first) == (
        "True",
        "Accepted",
        "Policy has been accepted. Not exporting the service (skipped until they do): x.",
    )
    assert accepted(book, second)[:2] == ("False", "Conflicted")
    assert "shop/first" in accepted(book, second)[2]
    assert accepted(book, theirs)[:2] == ("True", "Accepted")


def test_what_cannot_be_served_is_invalid_by_name_and_applies_nowhere() -> None:
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "both": ({"order": ["a"], "weights": [{"cluster": "c", "weight": 1}]}, "exactly one"),
        "neither": ({}, "exactly one of order and weights"),
        "twice": ({"order": ["a", "a"]}, "spec.order[1]: cluster 'a' is named twice"),
        "bad-id": ({"order": ["Not_A_Cluster"]}, "spec.order[0]"),
        "weight": ({"weights": [{"cluster": "a", "weight": 0}]}, "spec.weights[0].weight: 0"),
    }
    for name, (spec, fragment) in cases.items():
        record = policy("b", name, "2026-01-01T00:00:00Z", **spec)
        book = failover_policies([record], imports())
        status, reason, message = accepted(book, record)
        assert (status, reason) == ("False", "Invalid"), name
        assert fragment in message, (name, message)
        assert book.applied == {}, name


def test_a_policy_on_a_service_nobody_exports_has_no_status_entry() -> None:
    record = policy("b", "early", "2026-01-01T00:00:00Z", order=["a"])
    book = failover_policies([record], {})
    assert book.status(record).ancestors == () and book.applied == {}


def test_levels_are_contiguous_and_unlisted_exporters_come_last() -> None:
    order = FailoverIR("b", order=("c", "x", "a"))
    assert failover_levels(order, ["a", "b", "c"]) == {"c": (0, 0), "a": (1, 0), "b": (2, 0)}
    assert failover_levels(order, ["c", "a"]) == {"c": (0, 0), "a": (1, 0)}
    weights = FailoverIR("d", weights=(("a", 80), ("c", 20)))
    assert failover_levels(weights, ["a", "b", "c"]) == {"a": (0, 80), "c": (0, 20), "b": (1, 0)}
    # No listed exporter left: everything at level 0, with its own weight.
    assert failover_levels(weights, ["b"]) == {"b": (0, 0)}
